"""matplotlib figures for the report: training curves with ±std bands, CJK-capable."""

from __future__ import annotations

import pandas as pd

from ..fonts import setup_fonts


def curves_figure(curve_frames: dict[str, pd.DataFrame], *, titles: dict[str, str]):
    """One column per dataset, one row per metric (fits a landscape page); a line per arm (the frames'
    `line` column names it) with a ±std band."""
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
            for name, line in frame.groupby("line"):
                line = line.sort_values("epoch")
                ax.plot(line["epoch"], line["mean"], marker="o", label=name)
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


SWEEP_AXES = {"max_train_samples": "训练样本数 training examples", "learning_rate": "学习率 learning rate",
              "lora_r": "LoRA 秩 rank r"}


def sweep_figure(sweeps: list[dict], f1: pd.DataFrame, arms: pd.DataFrame):
    """One panel per (dataset, swept field); a line per (model, method): mean macro-F1 with 95 % CI bars.
    `f1` and `arms` are indexed by arm_id; training-set size is plotted as the size actually trained on."""
    import matplotlib.pyplot as plt

    setup_fonts()
    panels = sorted({(s["dataset"], s["field"]) for s in sweeps})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.8 * len(panels), 3.4), squeeze=False)
    for ax, (dataset, field) in zip(axes[0], panels):
        for s in (s for s in sweeps if (s["dataset"], s["field"]) == (dataset, field)):
            ids = s["arm_ids"]
            x = [arms.loc[a, "train_size"] if field == "max_train_samples" else arms.loc[a, "config"][field]
                 for a in ids]
            mean = f1.loc[ids, "mean"].to_numpy(float)
            low = (mean - f1.loc[ids, "ci_low"].to_numpy(float))
            high = (f1.loc[ids, "ci_high"].to_numpy(float) - mean)
            yerr = [[0 if pd.isna(v) else v for v in low], [0 if pd.isna(v) else v for v in high]]
            ax.errorbar(x, mean, yerr=yerr, marker="o", capsize=3, label=f"{s['model']} · {s['method']}")
        if field in ("max_train_samples", "learning_rate"):
            ax.set_xscale("log")
        ax.set_title(f"{dataset} — Macro-F1", fontsize=10)
        ax.set_xlabel(SWEEP_AXES[field])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


COST_AXES = {"trainable": "可训练参数 trainable parameters", "train_time_s": "训练时间 training time (s)",
             "peak_mb": "峰值内存 peak memory (MB)"}


def cost_quality_figure(frame: pd.DataFrame):
    """One row per dataset, one column per cost: each arm's macro-F1 (mean, 95 % CI bar) against it."""
    import matplotlib.pyplot as plt

    setup_fonts()
    datasets = sorted(frame["dataset"].unique())
    fig, axes = plt.subplots(len(datasets), len(COST_AXES), figsize=(4.4 * len(COST_AXES), 3.0 * len(datasets)),
                             squeeze=False)
    colors = {name: f"C{i}" for i, name in enumerate(sorted(frame["name"].unique()))}
    for row, dataset in enumerate(datasets):
        sub = frame[frame["dataset"] == dataset]
        for col, (cost, title) in enumerate(COST_AXES.items()):
            ax = axes[row][col]
            for r in sub.itertuples():
                low = 0 if pd.isna(r.ci_low) else r.macro_f1 - r.ci_low
                high = 0 if pd.isna(r.ci_high) else r.ci_high - r.macro_f1
                ax.errorbar([getattr(r, cost)], [r.macro_f1], yerr=[[low], [high]], marker="o", capsize=3,
                            color=colors[r.name], label=r.name)
            if cost == "trainable":
                ax.set_xscale("log")
            if cost == "peak_mb":  # say which peak; CPU RSS and GPU memory on one axis are flagged
                kinds = sorted(set(sub["peak_kind"]))
                title += f" — {' + '.join(kinds)}" + ("（不可比 not comparable）" if len(kinds) > 1 else "")
            ax.set_xlabel(title, fontsize=9)
            ax.set_title(f"{dataset} — Macro-F1", fontsize=10)
            ax.grid(alpha=0.3)
        axes[row][-1].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return fig


def budget_figure(curves: pd.DataFrame):
    """One panel per dataset, a line per model · method: expected best dev macro-F1 against trials, the
    spent budget marked."""
    import matplotlib.pyplot as plt

    setup_fonts()
    datasets = sorted(curves["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(4.6 * len(datasets), 3.3), squeeze=False)
    for ax, dataset in zip(axes[0], datasets):
        for line, g in curves[curves["dataset"] == dataset].groupby("line", sort=True):
            drawn = ax.plot(g["k"], g["expected_max"], marker=".", label=line)
            last = g[g["k"] == g["spent"]]
            ax.plot(last["k"], last["expected_max"], marker="s", markersize=7, color=drawn[0].get_color())
        ax.set_title(f"{dataset} — 期望最佳 expected best dev", fontsize=10)
        ax.xaxis.get_major_locator().set_params(integer=True)  # a number of trials
        ax.set_xlabel("试验次数 trials (■ = spent)")
        ax.set_ylabel("Macro-F1 (dev)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig
