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


def table(frame: pd.DataFrame, *, caption: str | None = None, index: bool = False) -> None:
    from IPython.display import HTML

    cap = f"<p class='tc-caption'><em>{html.escape(caption)}</em></p>" if caption else ""
    show(HTML(cap + frame.to_html(index=index, escape=True, na_rep="—", border=0, classes="tc-table")))


def fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or pd.isna(x):
        return "—"
    return f"{x:.{digits}f}"


def fmt_p(x: float) -> str:
    return "—" if pd.isna(x) else ("<0.001" if x < 0.001 else f"{x:.3f}")
