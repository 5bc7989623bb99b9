"""The conclusions, computed from the arms: the best arm per dataset (or that none clears the
majority floor), each model's best dataset, and what PEFT costs and saves against full fine-tuning."""

from __future__ import annotations

import pandas as pd

from ..methods import REFERENCES
from . import stats
from .display import fmt, fmt_p
from .tables import floors

ALPHA = 0.05


def conclusions(runs: pd.DataFrame, summary: pd.DataFrame, arm_frame: pd.DataFrame,
                compared: pd.DataFrame) -> list[str]:
    f1 = summary[summary["metric"] == "macro_f1"].merge(arm_frame[["arm_id", "name", "label"]], on="arm_id")
    if f1.empty:
        return []
    floor = floors(runs)
    configs = arm_frame.set_index("arm_id")["config"]
    lines = []
    for dataset, g in f1.groupby("dataset", sort=True):
        best = g.loc[g["mean"].idxmax()]
        bar = floor.get(dataset)
        cell = stats.format_mean_std(best["mean"], best["std"], best["n"])
        if bar is not None and best["mean"] <= bar + 1e-9:
            lines.append(f"- **{dataset}**: 没有任何臂超过多数类基线 no arm clears the majority floor "
                         f"(macro-F1 {bar:.4f}); the highest is `{best['model']}` · {best['name']} ({cell}).")
            continue
        lines.append(f"- **{dataset}**: 最佳臂 best arm = `{best['model']}` · {best['name']}, macro-F1 {cell}"
                     + (f" (majority floor {bar:.4f})" if bar is not None else "") + ".")
        is_reference = g["method"].isin(list(REFERENCES))
        encoders, refs = g[~is_reference], g[is_reference]
        if best["method"] in REFERENCES and len(encoders):
            top = encoders.loc[encoders["mean"].idxmax()]
            lines.append(f"    - 最佳微调臂 best fine-tuned arm = `{top['model']}` · {top['name']}, macro-F1 "
                         f"{stats.format_mean_std(top['mean'], top['std'], top['n'])}.")
        below = g[g["mean"] <= (bar if bar is not None else -1) + 1e-9]
        if len(below):
            lines.append(f"    - 未超过多数类基线 at or below the floor: "
                         + "; ".join(f"`{r.model}` · {r.name} ({fmt(r.mean)})" for r in below.itertuples()))
        for ref in refs.itertuples():
            same = encoders[[_same_data(configs[ref.arm_id], configs[e]) for e in encoders["arm_id"]]]
            if len(same):
                top = same.loc[same["mean"].idxmax()]
                verdict = "胜过 beats" if top["mean"] > ref.mean else "不及 does not beat"
                lines.append(f"    - 同样训练样本上 on the same training examples, the best encoder arm "
                             f"(`{top['model']}` · {top['name']}, {fmt(top['mean'])}) {verdict} {ref.name} "
                             f"({fmt(ref.mean)}).")
    for model, g in f1[~f1["method"].isin(list(REFERENCES))].groupby("model", sort=True):
        best = g.loc[g["mean"].idxmax()]
        lines.append(f"- `{model}` 表现最好的数据集 its best dataset = **{best['dataset']}** "
                     f"(macro-F1 {fmt(best['mean'])}, {best['name']}).")
    for r in compared[(compared["factor"] == "method") & (compared["method_a"] == "full")].itertuples():
        a, b = (runs[runs["arm_id"] == arm] for arm in (r.arm_a, r.arm_b))
        sig = "显著 significant" if pd.notna(r.p_holm) and r.p_holm < ALPHA else "不显著 not significant"
        ratio = b["params_trainable"].median() / a["params_trainable"].median()
        speed = b["train_samples_per_s"].mean() / a["train_samples_per_s"].mean()
        lines.append(
            f"- {r.dataset} · {r.a} − {r.b}: {100 * r.diff:+.2f} 个 macro-F1 点 (n={r.n}, "
            f"p={fmt_p(r.p_value)}, Holm p={fmt_p(r.p_holm)}, {sig} at α={ALPHA}); PEFT 仅训练 {ratio:.2%} 的参数，"
            f"训练吞吐为 {speed:.2f} 倍。 Full fine-tuning minus PEFT: {100 * r.diff:+.2f} macro-F1 points; the "
            f"PEFT arm trains {ratio:.2%} of the parameters at {speed:.2f}× the training throughput.")
    return lines


def _same_data(a: dict, b: dict) -> bool:
    """Whether two arms' configs (of one dataset) train on the same examples (subsample, data seed,
    selection) with the same weighting of them (class_weights): an encoder and a reference compared fairly."""
    return all(a.get(k) == b.get(k) for k in ("max_train_samples", "data_seed", "selection", "dev_fraction",
                                              "max_dev_samples", "class_weights"))
