"""Fonts for every figure of the kit (report and memory estimator): a CJK-capable sans-serif first, so
the bilingual labels render; a low-level module both may use without importing each other."""

from __future__ import annotations

import warnings

CJK_FONTS = ("Noto Sans CJK SC", "WenQuanYi Micro Hei", "Source Han Sans SC", "SimHei")


def setup_fonts() -> str | None:
    """Put the first installed CJK font first in the sans-serif list; returns its name (None if none)."""
    import matplotlib
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    chosen = next((name for name in CJK_FONTS if name in installed), None)
    if chosen is None:  # the font cache may predate the fonts: rebuild once
        font_manager.fontManager = font_manager.FontManager()
        installed = {f.name for f in font_manager.fontManager.ttflist}
        chosen = next((name for name in CJK_FONTS if name in installed), None)
    if chosen:
        matplotlib.rcParams["font.family"] = "sans-serif"
        matplotlib.rcParams["font.sans-serif"] = [chosen, "DejaVu Sans"]
    else:
        warnings.warn("no CJK font found (install fonts-noto-cjk): Chinese labels will show as boxes")
    matplotlib.rcParams["axes.unicode_minus"] = False
    return chosen
