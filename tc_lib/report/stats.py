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


def aggregate(runs: pd.DataFrame, *, by: Sequence[str] = ("dataset", "model", "method"),
              metrics: Sequence[str] = METRICS) -> pd.DataFrame:
    """Tidy table: one row per group and metric with n, mean, std, ci_low, ci_high (successful runs only)."""
    ok = runs[runs["status"] == "success"]
    rows = []
    for keys, group in ok.groupby(list(by), sort=True, dropna=False):
        keys = keys if isinstance(keys, tuple) else (keys,)
        for metric in metrics:
            rows.append({**dict(zip(by, keys)), "metric": metric, **summarize(group[metric].tolist()),
                         "seeds": ",".join(str(s) for s in sorted(group["seed"].dropna().astype(int)))})
    columns = [*by, "metric", "n", "mean", "std", "ci_low", "ci_high", "seeds"]
    return pd.DataFrame(rows, columns=columns)


def paired_comparison(runs: pd.DataFrame, *, factor: str, a: str, b: str, metric: str = "macro_f1",
                      within: Sequence[str] = ("dataset", "model")) -> pd.DataFrame:
    """For each group of `within`, compare level `a` with level `b` of `factor` on the seeds both ran.

    Difference = mean(a - b) over paired seeds; p from the paired t-test (two-sided); effect size
    Cohen's d_z = mean difference / std of the differences. p and d are NaN when n < 2 or the
    differences have no spread.
    """
    ok = runs[(runs["status"] == "success") & runs[factor].isin([a, b])]
    rows = []
    for keys, group in ok.groupby(list(within), sort=True):
        keys = keys if isinstance(keys, tuple) else (keys,)
        wide = group.pivot_table(index="seed", columns=factor, values=metric, aggfunc="first")
        if a not in wide or b not in wide:
            continue
        pairs = wide[[a, b]].dropna()
        diff = (pairs[a] - pairs[b]).to_numpy(dtype=float)
        n = len(diff)
        if n == 0:
            continue
        sd = float(diff.std(ddof=1)) if n > 1 else math.nan
        if n > 1 and sd > 0:
            p = float(sps.ttest_rel(pairs[a].to_numpy(float), pairs[b].to_numpy(float)).pvalue)
            d = float(diff.mean() / sd)
        else:
            p = d = math.nan
        rows.append({**dict(zip(within, keys)), "factor": factor, "a": a, "b": b, "metric": metric, "n": n,
                     "mean_a": float(pairs[a].mean()), "mean_b": float(pairs[b].mean()),
                     "diff": float(diff.mean()), "p_value": p, "cohens_dz": d})
    columns = [*within, "factor", "a", "b", "metric", "n", "mean_a", "mean_b", "diff", "p_value", "cohens_dz"]
    return pd.DataFrame(rows, columns=columns)


def curves(history: pd.DataFrame, *, split: str = "test", metric: str = "macro_f1") -> pd.DataFrame:
    """Per dataset, model, method and epoch: mean and sample std of a metric over seeds."""
    sub = history[history["split"] == split]
    grouped = sub.groupby(["dataset", "model", "method", "epoch"])[metric]
    out = grouped.agg(mean="mean", std=lambda s: s.std(ddof=1), n="count").reset_index()
    return out


def format_mean_std(mean: float, std: float, n: int, *, digits: int = 4) -> str:
    if n == 0 or pd.isna(mean):
        return "—"
    if n < 2 or pd.isna(std):
        return f"{mean:.{digits}f} (n=1)"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"
