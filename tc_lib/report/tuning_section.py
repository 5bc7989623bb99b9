"""The report's tuning section: per tuned arm the searched range, the trials, the chosen setting and
flags (an optimum at the edge of the range, a flat optimum), and the expected best dev score against
the number of trials (the budget curve, Dodge et al. 2019; the unbiased estimator of Tang et al. 2020)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

from ..tuned import TIE_RULE, trial_table
from . import stats
from .display import fmt, md, show, table

EDGE_SHARE = 0.1  # a chosen value in the outer 10 % of the range (log scale for log_uniform) is at its edge
FLAT_FACTOR = 3.0  # the best two trials' values further apart than this: a flat optimum


def _position(value: float, dist: Any) -> float | None:
    """Where `value` lies in a searched range, 0 (low end) to 1 (high end); None for a categorical list."""
    if isinstance(dist, list):
        numbers = sorted(v for v in dist if isinstance(v, (int, float)) and not isinstance(v, bool))
        if len(numbers) != len(dist) or len(numbers) < 2:
            return None
        return numbers.index(value) / (len(numbers) - 1) if value in numbers else None
    (kind, (low, high)), = dist.items()
    if kind == "log_uniform":
        return (math.log(value) - math.log(low)) / (math.log(high) - math.log(low))
    return (value - low) / (high - low)


def flags(trials: pd.DataFrame) -> list[str]:
    """The warnings for one tuning group's trials (one row per trial, `chosen` marking the choice)."""
    out = []
    chosen = trials[trials["chosen"]].iloc[0]
    space = chosen["space"] or {}
    ranked = trials.dropna(subset=["dev_score"]).sort_values(["dev_score", "trial"], ascending=[False, True])
    for field, dist in space.items():
        value = chosen["settings"].get(field)
        where = _position(value, dist) if isinstance(value, (int, float)) else None
        if where is not None and (where <= EDGE_SHARE or where >= 1 - EDGE_SHARE):
            side = "low" if where <= EDGE_SHARE else "high"
            out.append(f"{field} at the {side} edge of the range: widen the range / 在搜索范围边缘，请扩大范围")
        if len(ranked) >= 2:
            a, b = (ranked.iloc[i]["settings"].get(field) for i in (0, 1))
            if all(isinstance(v, (int, float)) and v > 0 for v in (a, b)) and max(a, b) / min(a, b) > FLAT_FACTOR:
                out.append(f"flat optimum: the best two trials' {field} ({a:g}, {b:g}) are more than "
                           f"{FLAT_FACTOR:g}× apart / 最优区域平坦")
    return out


def _range_text(space: dict) -> str:
    parts = []
    for field, dist in space.items():
        if isinstance(dist, list):
            parts.append(f"{field} ∈ {{{', '.join(f'{v:g}' if isinstance(v, float) else str(v) for v in dist)}}}")
        else:
            (kind, (low, high)), = dist.items()
            parts.append(f"{field} ~ {kind}[{low:g}, {high:g}]")
    return "; ".join(parts)


def tuning_table(trials: pd.DataFrame) -> pd.DataFrame:
    """One row per tuning group: dataset, model, method, searched range, trials scored, chosen, flags."""
    rows = []
    for _, g in trials.groupby("group_key", sort=False):
        chosen = g[g["chosen"]]
        pick = chosen.iloc[0] if len(chosen) else None
        rows.append({
            "dataset": g["dataset"].iloc[0], "model": g["model"].iloc[0], "method": g["method"].iloc[0],
            "searched": _range_text(g["space"].iloc[0] or {}), "trials": f"{len(g)} / {g['n_trials'].iloc[0]}",
            "seeds": int(g["n_seeds"].max()),
            "chosen": ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                for k, v in (pick["settings"] if pick is not None else {}).items()) or "—",
            "dev": fmt(pick["dev_score"]) if pick is not None else "—",
            "flags": "; ".join(flags(g)) if pick is not None else "",
        })
    return pd.DataFrame(rows).sort_values(["dataset", "model", "method"]).reset_index(drop=True)


def budget_curves(trials: pd.DataFrame) -> pd.DataFrame:
    """Per tuning group: the expected best dev score of k trials (k = 1..trials scored)."""
    rows = []
    for _, g in trials.groupby("group_key", sort=False):
        scores = g["dev_score"].dropna().tolist()
        for k, value in enumerate(stats.expected_max(scores), start=1):
            rows.append({"dataset": g["dataset"].iloc[0], "line": f"{g['model'].iloc[0]} · {g['method'].iloc[0]}",
                         "k": k, "expected_max": value, "spent": len(scores), "grid": bool(g["grid"].iloc[0])})
    return pd.DataFrame(rows, columns=["dataset", "line", "k", "expected_max", "spent", "grid"])


def tuning_section(all_runs: pd.DataFrame) -> None:
    """Renders the section; nothing when no run of these records was a tuning trial."""
    trials = trial_table(all_runs)
    if trials.empty:
        return
    n_trials = sorted({int(n) for n in trials["n_trials"].dropna()})
    search = ("every value of one list" if trials["grid"].fillna(False).all() else "one seeded random search"
              if not trials["grid"].fillna(False).any() else "lists and seeded random searches")
    md("## 超参数调优 · Tuning on dev\n\n每个臂以相同预算在开发集上调优（同样的试验次数、同样的试验设置），再以选中的设置运行全部种子；"
       f"测试集不参与选择。平局取较小的试验编号。  \nEvery arm was tuned on dev with the same budget ({' / '.join(map(str, n_trials))} "
       f"trials each, {search}) and its seeds were then run at the chosen setting; the test "
       f"split takes no part in the choice; {TIE_RULE}. Flags: the choice in the outer {EDGE_SHARE:.0%} of the "
       f"range (widen it), or the best two trials more than {FLAT_FACTOR:g}× apart (a flat optimum).")
    table(tuning_table(trials).rename(columns={
        "dataset": "数据集 Dataset", "model": "模型 Model", "method": "方法 Method", "searched": "搜索范围 Searched",
        "trials": "试验 Trials", "seeds": "调优种子 Tuning seeds", "chosen": "选中 Chosen",
        "dev": "开发集 Dev macro-F1", "flags": "提示 Flags"}), caption="Tuning: chosen by mean dev macro-F1")
    curves = budget_curves(trials)
    import matplotlib.pyplot as plt

    from .plots import budget_figure

    md("期望最佳开发集分数随试验次数的变化（无放回的无偏估计）；方块标出实际花费的预算。列表空间是网格搜索，并非独立同分布抽样，曲线仅作参考。  \n"
       "Expected best dev macro-F1 against the number of trials (the unbiased estimator without replacement, "
       "Tang et al. 2020); the marker is the budget spent. For a list space (a grid, not i.i.d. random "
       "search) the curve is indicative only." + (" (this study searched a list)" if curves["grid"].any() else ""))
    fig = budget_figure(curves)
    show(fig)
    plt.close(fig)
