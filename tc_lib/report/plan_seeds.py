"""`python -m tc_lib plan-seeds RECORDS --delta 0.01`: how many seeds a study needs, from the
between-seed spread of runs already made (a pilot), before the study is run."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from . import stats


def plan_tables(runs_dir: Path, *, delta: float, alpha: float, power: float,
                metric: str = "macro_f1") -> tuple[pd.DataFrame, pd.DataFrame]:
    """(per arm, per compared pair). An arm's difference to another arm is taken to have sqrt(2) x its own
    between-seed std (independent arms, no pairing benefit assumed); a compared pair uses the observed std
    of its seed-wise differences."""
    from . import arms as arm_lib
    from .runs import current_runs, read_runs
    from .tables import comparisons

    runs, _ = current_runs(read_runs(runs_dir))
    arms = arm_lib.arms(runs)
    rows = []
    for arm in arms.itertuples():
        values = runs.loc[runs["arm_id"] == arm.arm_id, metric].dropna().to_numpy(float)
        if len(values) < 2:
            continue
        sd = float(values.std(ddof=1))
        plan = stats.seed_plan(sd_diff=math.sqrt(2) * sd, n=len(values), diff=delta, alpha=alpha, power=power)
        rows.append({"dataset": arm.dataset, "arm": f"{arm.model} · {arm.name}", "n": len(values), "sd": sd, **plan})
    pairs = []
    compared, _ = comparisons(runs, arms, metric=metric)
    for r in compared.itertuples():
        plan = stats.seed_plan(sd_diff=r.sd_diff, n=r.n, diff=delta, alpha=alpha, power=power)
        seen = stats.seed_plan(sd_diff=r.sd_diff, n=r.n, diff=r.diff, alpha=alpha, power=power)
        pairs.append({"dataset": r.dataset, "pair": f"{r.a} vs {r.b}", "n": r.n, "diff": r.diff, "sd_diff": r.sd_diff,
                      "detectable": plan["detectable"], "n_needed": plan["n_needed"], "n_for_diff": seen["n_needed"]})
    return pd.DataFrame(rows), pd.DataFrame(pairs)
