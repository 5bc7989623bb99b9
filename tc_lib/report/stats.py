"""Aggregation over seeds and paired comparisons (scipy): what every number in the report rests on."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import pandas as pd
from scipy import stats as sps

from ..metrics import SCORE_NAMES

METRICS = SCORE_NAMES  # every score of metrics.METRICS
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
            "diff": float(diff.mean()) if n else nan, "p_value": p, "cohens_dz": d, "sd_diff": sd,
            **bootstrap_diff(diff), "p_a_better": float(((diff > 0) + 0.5 * (diff == 0)).mean()) if n else nan}


BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0  # a fixed generator: the report's intervals do not move between renders


def bootstrap_diff(diff: np.ndarray, *, confidence: float = CONFIDENCE) -> dict[str, float]:
    """Percentile-bootstrap CI of the mean paired difference (scipy.stats.bootstrap, resampling seeds).
    Percentile rather than BCa: with 3-5 seeds BCa's acceleration is undefined as often as not. NaN for n < 2."""
    if len(diff) < 2 or float(np.ptp(diff)) == 0:
        value = float(diff[0]) if len(diff) else math.nan
        return {"boot_low": value if len(diff) > 1 else math.nan, "boot_high": value if len(diff) > 1 else math.nan}
    result = sps.bootstrap((diff,), np.mean, confidence_level=confidence, n_resamples=BOOTSTRAP_RESAMPLES,
                           method="percentile", rng=np.random.default_rng(BOOTSTRAP_SEED))
    return {"boot_low": float(result.confidence_interval.low), "boot_high": float(result.confidence_interval.high)}


POWER = 0.8


def seed_plan(*, sd_diff: float, n: int, diff: float | None = None, alpha: float = 0.05,
              power: float = POWER) -> dict[str, float]:
    """For a paired comparison (a t-test on the seed-wise differences; statsmodels TTestPower gives the
    power, scipy's brentq inverts it): the smallest difference n seeds detect with `power` at `alpha`
    (two-sided), and the seeds a difference `diff` would need (inf for no difference). NaN where the std
    of the differences is unknown (n < 2) or zero."""
    from scipy.optimize import brentq
    from statsmodels.stats.power import TTestPower

    nan = math.nan
    if not (sd_diff > 1e-12) or n < 2:  # 1e-12: identical scores whose std is rounding noise
        return {"detectable": nan, "n_needed": nan}
    solver = TTestPower()

    def short(effect: float, nobs: float) -> float:
        # the two-sided test's power in the direction of the effect (its other tail adds < alpha/2 and
        # comes out NaN in scipy's noncentral t for the large effects that 2-3 seeds need)
        reached = float(solver.power(effect_size=effect, nobs=nobs, alpha=alpha / 2, alternative="larger"))
        return (1.0 if math.isnan(reached) else reached) - power  # NaN: a noncentrality past scipy's range, power 1

    # statsmodels' own solve_power gives up (NaN) on those effects too: bracket the root instead
    detectable = brentq(short, 1e-9, 1e4, args=(n,)) * sd_diff if short(1e4, n) > 0 else math.inf
    if diff is None or not math.isfinite(diff):
        return {"detectable": detectable, "n_needed": nan}
    if diff == 0:
        return {"detectable": detectable, "n_needed": math.inf}
    effect = abs(diff) / sd_diff
    if short(effect, MAX_SEEDS) < 0:
        return {"detectable": detectable, "n_needed": math.inf}
    needed = 2.0 if short(effect, 2) >= 0 else brentq(lambda nobs: short(effect, nobs), 2, MAX_SEEDS)
    return {"detectable": detectable, "n_needed": float(math.ceil(needed - 1e-9))}


MAX_SEEDS = 1e6  # beyond this a difference counts as undetectable (inf)


def expected_max(scores: Sequence[float]) -> list[float]:
    """The expected best of k trials, k = 1..N, from N random-search trial scores: the unbiased estimator
    without replacement (Tang et al. 2020; Dodge et al. 2019 sample with replacement):
    E[max_k] = sum_i v_(i) C(i-1, k-1) / C(N, k) over the sorted scores v_(1) <= ... <= v_(N)."""
    from scipy.special import comb

    v = np.sort(np.asarray(scores, dtype=float))
    n = len(v)
    ranks = np.arange(1, n + 1)
    return [float(np.sum(v * comb(ranks - 1, k - 1) / comb(n, k))) for k in range(1, n + 1)]


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
