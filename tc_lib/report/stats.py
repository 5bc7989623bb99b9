"""Aggregation over seeds and paired comparisons (scipy): what every number in the report rests on."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

METRICS = ("loss", "accuracy", "micro_f1", "macro_f1")
CONFIDENCE = 0.95


def summarize(values: Sequence[float], *, confidence: float = CONFIDENCE) -> dict[str, float]:
    """n, mean, sample std (ddof=1) and the t-interval of the mean; std and CI are NaN for n < 2."""
    x = np.asarray([v for v in values if v is not None and not pd.isna(v)], dtype=float)
    n = len(x)
    if n == 0:
        return {"n": 0, "mean": math.nan, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    mean = float(x.mean())
    if n < 2:
        return {"n": 1, "mean": mean, "std": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    std = float(x.std(ddof=1))
    half = float(sps.t.ppf(0.5 + confidence / 2, df=n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "ci_low": mean - half, "ci_high": mean + half}


def aggregate(runs: pd.DataFrame, *, metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Tidy table: one row per arm and metric with n, mean, std, ci_low, ci_high and the seeds.
    `runs` are the current successful runs (runs.current_runs); arms are never pooled."""
    rows = []
    for (arm_id, dataset, model, method), group in runs.groupby(["arm_id", "dataset", "model", "method"], sort=True):
        seeds = ",".join(str(s) for s in sorted(group["seed"].dropna().astype(int)))
        for metric in metrics:
            rows.append({"arm_id": arm_id, "dataset": dataset, "model": model, "method": method, "metric": metric,
                         **summarize(group[metric].tolist()), "seeds": seeds})
    columns = ["arm_id", "dataset", "model", "method", "metric", "n", "mean", "std", "ci_low", "ci_high", "seeds"]
    return pd.DataFrame(rows, columns=columns)


def paired(a: pd.DataFrame, b: pd.DataFrame, *, metric: str = "macro_f1") -> dict[str, float]:
    """Runs of arm a against runs of arm b, paired by seed (one run per seed each).

    diff = mean(a - b) over the seeds both ran; p from the paired t-test (two-sided); Cohen's
    d_z = mean difference / std of the differences. p and d_z are NaN for n < 2 or no spread.
    """
    pairs = pd.merge(a[["seed", metric]], b[["seed", metric]], on="seed", suffixes=("_a", "_b")).dropna()
    x, y = pairs[f"{metric}_a"].to_numpy(float), pairs[f"{metric}_b"].to_numpy(float)
    diff, n = x - y, len(pairs)
    sd = float(diff.std(ddof=1)) if n > 1 else math.nan
    if n > 1 and sd > 0:
        p, d = float(sps.ttest_rel(x, y).pvalue), float(diff.mean() / sd)
    else:
        p = d = math.nan
    nan = math.nan
    return {"n": n, "mean_a": float(x.mean()) if n else nan, "mean_b": float(y.mean()) if n else nan,
            "diff": float(diff.mean()) if n else nan, "p_value": p, "cohens_dz": d}


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm–Bonferroni adjusted p-values (statsmodels); NaN stays NaN and is not counted as a test."""
    from statsmodels.stats.multitest import multipletests

    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), math.nan)
    tested = ~np.isnan(p)
    if tested.any():
        out[tested] = multipletests(p[tested], method="holm")[1]
    return out.tolist()


def curves(history: pd.DataFrame, *, split: str = "test", metric: str = "macro_f1") -> pd.DataFrame:
    """Per arm and epoch: mean and sample std of a metric over seeds."""
    sub = history[history["split"] == split]
    grouped = sub.groupby(["arm_id", "dataset", "model", "method", "epoch"])[metric]
    return grouped.agg(mean="mean", std=lambda s: s.std(ddof=1), n="count").reset_index()


def format_mean_std(mean: float, std: float, n: int, *, digits: int = 4) -> str:
    if n == 0 or pd.isna(mean):
        return "—"
    if n < 2 or pd.isna(std):
        return f"{mean:.{digits}f} (n=1)"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
