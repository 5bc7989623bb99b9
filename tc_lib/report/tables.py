"""The report's sections as data: each function takes the current runs (and the arms) and returns a
DataFrame or lines of text; sections.Report only renders them. Unit-tested on planted records."""

from __future__ import annotations

import pandas as pd

from .arms import COMPANIONS, comparable, data_seed_rule, differing, fmt_value, method_settings
from ..methods import METHODS, REFERENCES
from ..metrics import LABELS
from . import stats
from .display import fmt, fmt_p

METRIC_NAMES = LABELS  # metrics.METRICS' bilingual labels
# Settings every arm shows (besides the fields in which arms differ): what a reader needs to judge a number.
SETTING_COLUMNS = {"epochs": "轮数 Epochs", "learning_rate": "学习率 LR", "train_batch_size": "批大小 Batch",
                   "max_seq_length": "最大长度 Max len", "selection": "选择 Selection"}
# Titles of the settings table's extra columns (fields in which arms differ); others show the field name.
EXTRA_TITLES = {"class_weights": "类别权重 Class weights (class_weights)",
                "max_train_samples": "训练子集 Subsample (max_train_samples)"}
METHOD_RANK = {name: i for i, name in enumerate([*METHODS, *REFERENCES])}  # full, PEFT methods, references
SHOWN_ELSEWHERE = {"dataset", "model", "method", *SETTING_COLUMNS, "torch_dtype", "mixed_precision", "data_seed", "device",
                   *COMPANIONS["method"]}


def main_table(summary: pd.DataFrame, arm_frame: pd.DataFrame, metric: str) -> pd.DataFrame:
    """Rows dataset · arm (method and what sets it apart), columns models; cells mean ± std (n)."""
    sub = summary[summary["metric"] == metric].merge(arm_frame[["arm_id", "name"]], on="arm_id")
    if sub.empty:
        return pd.DataFrame()
    sub["cell"] = [stats.format_mean_std(m, s, n) + (f" (n={n})" if n > 1 else "")
                   for m, s, n in zip(sub["mean"], sub["std"], sub["n"])]
    wide = sub.pivot(index=["dataset", "name"], columns="model", values="cell").reset_index()
    wide.columns.name = None
    order = arm_frame.drop_duplicates("name").set_index("name")["method"].map(lambda m: METHOD_RANK.get(m, 99))
    wide = wide.sort_values(["dataset", "name"], key=lambda col: col.map(order) if col.name == "name" else col,
                            kind="stable")
    return wide.rename(columns={"dataset": "数据集 Dataset", "name": "方法 Method (arm)"})


# which peak a run measured, best first: GPU reserved (what nvidia-smi and an OOM see), allocated, CPU RSS
PEAK_KINDS = {"peak_cuda_reserved_mb": "GPU reserved", "peak_cuda_allocated_mb": "GPU allocated",
              "peak_rss_mb": "CPU RSS"}


def peak_memory(runs: pd.DataFrame) -> tuple[float | None, str]:
    """The largest peak (MB) of an arm's runs and what it measures, never two kinds in one number."""
    for column, kind in PEAK_KINDS.items():
        if column in runs and runs[column].notna().any():
            return float(runs[column].max()), kind
    return None, "—"


def settings_table(arm_frame: pd.DataFrame, runs: pd.DataFrame) -> pd.DataFrame:
    """Per arm: train size, epochs, learning rate, batch, max length, selection, precision, data seed, the
    method's own settings, and every other config field in which the arms differ."""
    extra = [f for f in differing(arm_frame["config"]) if f not in SHOWN_ELSEWHERE]
    rows = []
    for arm in arm_frame.itertuples():
        cfg = arm.config
        targets = runs.loc[runs["arm_id"] == arm.arm_id, "peft_target_modules"].dropna()
        row = {"臂 Arm": arm.arm_id, "数据集 Dataset": arm.dataset, "模型 Model": arm.model,
               "方法 Method": arm.name, "种子 Seeds": f"{arm.seeds} (n={arm.n})",
               "训练量 Train size": "—" if arm.train_size is None else f"{arm.train_size:,}"}
        neural = arm.method not in REFERENCES
        for field, title in SETTING_COLUMNS.items():
            row[title] = fmt_value(cfg.get(field), field) if neural or field == "selection" else "—"
        row["精度 Precision"] = f"{cfg['torch_dtype']} / autocast {cfg['mixed_precision']}" if neural else "float64"
        row["设备 Device"] = _devices(runs[runs["arm_id"] == arm.arm_id])
        row["数据种子 Data seed"] = data_seed_rule(cfg)
        row["方法设置 Method settings"] = method_settings(cfg, targets.iloc[0] if len(targets) else None)
        for field in extra:
            row[EXTRA_TITLES.get(field, field)] = fmt_value(cfg.get(field), field)
        rows.append(row)
    return pd.DataFrame(rows)


def _devices(runs: pd.DataFrame) -> str:
    """The devices an arm's runs used, e.g. `cuda (NVIDIA H200)` or `cpu`."""
    names = [f"{d} ({g})" if d == "cuda" and isinstance(g, str) else str(d)
             for d, g in zip(runs["device"].fillna("?"), runs.get("gpu_name", pd.Series(None, index=runs.index)))]
    return ", ".join(sorted(set(names))) or "—"


def methods_table(runs: pd.DataFrame, arm_frame: pd.DataFrame) -> pd.DataFrame:
    """Per arm: accuracy and macro-F1 with CIs, trainable parameters, training time, throughput, memory."""
    rows = []
    for arm in arm_frame.itertuples():
        g = runs[runs["arm_id"] == arm.arm_id]
        acc, f1 = stats.summarize(g["accuracy"].tolist()), stats.summarize(g["macro_f1"].tolist())
        peak, kind = peak_memory(g)
        rows.append({
            "数据集 Dataset": arm.dataset, "模型 Model": arm.model, "方法 Method": arm.name, "n": acc["n"],
            "准确率 Accuracy [95% CI]": f"{fmt(acc['mean'])} [{fmt(acc['ci_low'])}, {fmt(acc['ci_high'])}]",
            "Macro-F1 [95% CI]": f"{fmt(f1['mean'])} [{fmt(f1['ci_low'])}, {fmt(f1['ci_high'])}]",
            "可训练参数(含头) Trainable incl. head": f"{int(g['params_trainable'].iloc[0]):,}",
            "可训练参数(不含头) Trainable excl. head": f"{int(g['params_trainable_no_head'].iloc[0]):,}",
            "占比 % of total": f"{100 * g['params_trainable'].iloc[0] / g['params_total'].iloc[0]:.2f}%",
            "训练时间 Train time (s)": fmt(g["train_time_s"].mean(), 1),
            "吞吐 Throughput (ex/s)": fmt(g["train_samples_per_s"].mean(), 1),
            "峰值内存 Peak memory (MB)": "—" if peak is None else f"{fmt(peak, 0)} {kind}",
        })
    return pd.DataFrame(rows)


def _order(a, b, factor: str):
    """Full fine-tuning first, then the registry's order; models by name: diff = a − b."""
    key = (lambda r: METHOD_RANK.get(r.method, 99)) if factor == "method" else (lambda r: r.model)
    return (a, b) if key(a) <= key(b) else (b, a)


def comparisons(runs: pd.DataFrame, arm_frame: pd.DataFrame, *, metric: str = "macro_f1"
                ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(compared, refused) over every pair of encoder arms of one dataset that differ in method or
    model. A pair is compared only when it differs in that factor alone (a method with its own learning
    rate and options); its p-value is Holm-adjusted over all comparisons made; refused pairs say why."""
    done, refused = [], []
    encoders = arm_frame[~arm_frame["method"].isin(list(REFERENCES))]
    for dataset, g in encoders.groupby("dataset", sort=True):
        arms = list(g.itertuples())
        for i, first in enumerate(arms):
            for second in arms[i + 1:]:
                fields = differing([first.config, second.config])
                factors = [f for f in ("method", "model") if f in fields]
                if len(factors) != 1:  # the same method and model, or both differ: no factor to compare
                    continue
                factor = factors[0]
                a, b = _order(first, second, factor)
                base = {"dataset": dataset, "factor": factor, "a": f"{a.model} · {a.name}",
                        "b": f"{b.model} · {b.name}", "arm_a": a.arm_id, "arm_b": b.arm_id,
                        "method_a": a.method, "method_b": b.method}
                ok, why = comparable(a.config, b.config, factor=factor)
                if ok:
                    result = stats.paired(runs[runs["arm_id"] == a.arm_id], runs[runs["arm_id"] == b.arm_id],
                                          metric=metric)
                    ok, why = result["n"] > 0, "no seed in common"
                if ok:
                    done.append({**base, "metric": metric, **result})
                else:
                    refused.append({**base, "reason": why})
    columns = ["dataset", "factor", "a", "b", "arm_a", "arm_b", "method_a", "method_b", "metric", "n", "mean_a", "mean_b", "diff",
               "boot_low", "boot_high", "p_a_better", "p_value", "p_holm", "cohens_dz", "sd_diff", "detectable",
               "n_needed", "plan_alpha"]
    compared = pd.DataFrame(done, columns=[c for c in columns if c not in PLAN_COLUMNS])
    compared["p_holm"] = stats.holm(compared["p_value"].tolist())
    # the seed planner at the strictest level Holm applies here (Bonferroni's alpha / m)
    alpha = stats_alpha(compared["p_value"].notna().sum())
    plans = [stats.seed_plan(sd_diff=r.sd_diff, n=r.n, diff=r.diff, alpha=alpha) for r in compared.itertuples()]
    compared["detectable"] = [p["detectable"] for p in plans]
    compared["n_needed"] = [p["n_needed"] for p in plans]
    compared["plan_alpha"] = alpha
    return compared[columns], pd.DataFrame(refused, columns=[*columns[:8], "reason"])


PLAN_COLUMNS = ("p_holm", "detectable", "n_needed", "plan_alpha")
ALPHA = 0.05


def stats_alpha(tests: int) -> float:
    return ALPHA / max(1, int(tests))


def plan_text(row) -> str:
    """'n=3 detects >= 4.1 pts; this 1.2-pt gap would need 27 seeds' (macro-F1 points)."""
    if pd.isna(row["detectable"]):
        return "— (n < 2 or no spread)"
    text = f"n={row['n']} detects ≥ {100 * row['detectable']:.1f} pts"
    if row["n_needed"] == float("inf"):
        return text + "; no gap to detect"
    if pd.notna(row["n_needed"]):
        verb = "is within reach" if row["n_needed"] <= row["n"] else f"would need {int(row['n_needed'])} seeds"
        text += f"; this {100 * abs(row['diff']):.1f}-pt gap {verb}"
    return text


def comparisons_shown(compared: pd.DataFrame) -> pd.DataFrame:
    shown = compared[["dataset", "factor", "a", "b", "n", "mean_a", "mean_b", "diff", "p_value", "p_holm",
                      "cohens_dz"]].copy()
    for col in ("mean_a", "mean_b", "diff"):
        shown[col] = shown[col].map(fmt)
    shown.insert(8, "boot", [f"[{fmt(lo)}, {fmt(hi)}]" if pd.notna(lo) else "—"
                             for lo, hi in zip(compared["boot_low"], compared["boot_high"])])
    shown.insert(9, "p_a_better", compared["p_a_better"].map(lambda x: fmt(x, 2)))
    shown["plan"] = [plan_text(row) for _, row in compared.iterrows()]
    for col in ("p_value", "p_holm"):
        shown[col] = shown[col].map(fmt_p)
    shown["cohens_dz"] = shown["cohens_dz"].map(lambda x: fmt(x, 2))
    return shown.rename(columns={"dataset": "数据集 Dataset", "factor": "因素 Factor", "diff": "差值 Diff (a−b)",
                                 "p_value": "p (raw)", "p_holm": "p (Holm)", "cohens_dz": "d_z",
                                 "boot": "95% bootstrap CI", "p_a_better": "P(a>b)",
                                 "plan": "种子规划 Seed plan (80% power)"})


def floors(runs: pd.DataFrame) -> dict[str, float]:
    """Majority-class macro-F1 of each dataset's test split, from the records."""
    return {d: float(g["majority_macro_f1"].max()) for d, g in runs.groupby("dataset") if g["majority_macro_f1"].notna().any()}


def datasets_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, from the records: classes, split sizes, train sizes used, label distribution, floor."""
    rows = []
    for dataset, g in runs.groupby("dataset", sort=True):
        names = next((n for n in g["label_names"] if isinstance(n, list)), None) or []
        full = g["train_split_size"].dropna()
        known = [(c, size) for c, size in zip(g["train_label_counts"], g["train_size"]) if isinstance(c, list)]
        whole = [c for c, size in known if len(full) and size == full.max()]
        counts = whole[0] if whole else (known[0][0] if known else None)
        distribution = ", ".join(f"{n} {c / sum(counts):.1%}" for n, c in zip(names, counts)) if counts else "—"
        if counts and not whole:
            distribution += f" (of a {sum(counts)}-example subsample)"
        rows.append({
            "数据集 Dataset": dataset, "类别数 Classes": len(names) or "—",
            "训练/测试 Train/test": f"{int(full.max()) if len(full) else '—'} / {int(g['test_size'].max())}",
            "运行所用训练量 Train used by runs": ", ".join(map(str, sorted({int(x) for x in g["train_size"].dropna()}))),
            "训练集标签分布 Train label distribution": distribution,
            "多数类基线 Majority floor (acc / macro-F1)":
                f"{g['majority_accuracy'].max():.4f} / {g['majority_macro_f1'].max():.4f}",
            "数据种子 Data seed": ", ".join(sorted({data_seed_rule(c) for c in g["config"]})),
        })
    return pd.DataFrame(rows)


def cost_quality(runs: pd.DataFrame, arm_frame: pd.DataFrame, summary: pd.DataFrame) -> pd.DataFrame:
    """Per arm: macro-F1 (mean, 95 % CI) beside what it cost: trainable parameters, training time
    (mean seconds per run) and peak memory (MB; `peak_kind` says which peak: GPU reserved, else allocated,
    else CPU RSS)."""
    f1 = summary[summary["metric"] == "macro_f1"].set_index("arm_id")
    rows = []
    for arm in arm_frame.itertuples():
        g = runs[runs["arm_id"] == arm.arm_id]
        rows.append({"arm_id": arm.arm_id, "dataset": arm.dataset, "model": arm.model, "method": arm.method,
                     "name": f"{arm.model} · {arm.name}", "macro_f1": f1.loc[arm.arm_id, "mean"],
                     "ci_low": f1.loc[arm.arm_id, "ci_low"], "ci_high": f1.loc[arm.arm_id, "ci_high"],
                     "trainable": float(g["params_trainable"].median()), "train_time_s": float(g["train_time_s"].mean()),
                     **dict(zip(("peak_mb", "peak_kind"), peak_memory(g)))})
    return pd.DataFrame(rows)
