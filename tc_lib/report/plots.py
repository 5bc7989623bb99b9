"""matplotlib figures for the report: training curves with ±std bands, CJK-capable."""

from __future__ import annotations

import warnings

import pandas as pd

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


def curves_figure(curve_frames: dict[str, pd.DataFrame], *, titles: dict[str, str]):
    """One column per dataset, one row per metric (fits a landscape page); a line per (model, method)
    with a ±std band."""
    import matplotlib.pyplot as plt

    setup_fonts()
    metrics = list(curve_frames)
    datasets = sorted(set().union(*(set(f["dataset"]) for f in curve_frames.values())))
    fig, axes = plt.subplots(len(metrics), len(datasets), figsize=(4.6 * len(datasets), 3.0 * len(metrics)),
                             squeeze=False)
    for col, dataset in enumerate(datasets):
        for row, metric in enumerate(metrics):
            ax = axes[row][col]
            frame = curve_frames[metric]
            frame = frame[frame["dataset"] == dataset]
            for (model, method), line in frame.groupby(["model", "method"]):
                line = line.sort_values("epoch")
                ax.plot(line["epoch"], line["mean"], marker="o", label=f"{model} · {method}")
                std = line["std"].fillna(0).astype(float)
                ax.fill_between(line["epoch"].astype(float), line["mean"] - std, line["mean"] + std, alpha=0.2)
            ax.set_title(f"{dataset} — {titles[metric]}", fontsize=10)
            ax.set_xlabel("轮次 epoch")
            ax.grid(alpha=0.3)
            if not frame.empty:
                ax.set_xticks(sorted(frame["epoch"].unique()))
            if row == 0 and col == len(datasets) - 1:
                ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig
