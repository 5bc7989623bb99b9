"""Showing report pieces in a notebook: Markdown, HTML tables and number formatting."""

from __future__ import annotations

import html
import math
from typing import Any

import pandas as pd

def show(obj: Any) -> None:
    from IPython.display import display

    display(obj)


def md(text: str) -> None:
    from IPython.display import Markdown

    show(Markdown(text))


# What fits across an A4 landscape page at the printed table font (9 px): about this many characters.
PAGE_CHARACTERS = 170


def _width(frame: pd.DataFrame, column: str) -> int:
    """Characters the column needs: its longest header word (headers wrap between words) or value."""
    values = frame[column].map(lambda v: len("—" if v is None else str(v)))
    longest_value = int(values.max()) if len(values) else 0
    return max(max(len(word) for word in str(column).split() or [""]), longest_value) + 2


def column_groups(frame: pd.DataFrame, *, keys: int = 1, budget: int = PAGE_CHARACTERS) -> list[list[str]]:
    """The columns in groups that each fit the page, every group led by the first `keys` columns."""
    columns = [str(c) for c in frame.columns]
    head, rest = columns[:keys], columns[keys:]
    used = sum(_width(frame, c) for c in head)
    groups: list[list[str]] = [[]]
    width = used
    for column in rest:
        need = _width(frame, column)
        if groups[-1] and width + need > budget:
            groups.append([])
            width = used
        groups[-1].append(column)
        width += need
    return [head + group for group in groups]


def table(frame: pd.DataFrame, *, caption: str | None = None, index: bool = False, keys: int = 1) -> None:
    """An HTML table; one wider than the printed page is split into column groups, each repeating the
    first `keys` columns, so the PDF holds every column the HTML does."""
    from IPython.display import HTML

    if index:
        frame, keys = frame.reset_index(), keys + frame.index.nlevels
    frame = frame.rename(columns=str)
    groups = column_groups(frame, keys=keys) if len(frame.columns) > keys else [list(frame.columns)]
    for number, columns in enumerate(groups, start=1):
        part = f" ({number}/{len(groups)} 列组 column group)" if len(groups) > 1 else ""
        text = (caption or "") + part
        cap = f"<p class='tc-caption'><em>{html.escape(text)}</em></p>" if text else ""
        show(HTML(cap + frame[columns].to_html(index=False, escape=True, na_rep="—", border=0, classes="tc-table")))


def fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or pd.isna(x):
        return "—"
    return f"{x:.{digits}f}"


def fmt_p(x: float) -> str:
    return "—" if pd.isna(x) else ("<0.001" if x < 0.001 else f"{x:.3f}")
