"""The choice a tuned grid makes, as one rule for the grid (which runs the final stage) and for the
readers of the records (which runs count, the report's tuning section): per tuning group, the trial
with the best mean dev score over the tuning seeds; ties go to the lower trial index."""

from __future__ import annotations

import json
from typing import Mapping

import pandas as pd

TIE_RULE = "ties go to the lower trial index"


def best_trial(scores: Mapping[int, float]) -> int:
    """The chosen trial index of {trial index: mean dev score}."""
    return max(scores, key=lambda trial: (scores[trial], -trial))


def group_key(tuning: Mapping) -> str:
    """One tuning: its group (the `per` fields' values) and what it searched, so two grids with one group
    label but other spaces or seeds never mix."""
    return json.dumps({k: tuning.get(k) for k in ("group", "space", "seeds", "trials")}, sort_keys=True)


def trial_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Per tuning group and trial (successful stage `tune` runs): the settings, the arm, the mean dev score
    over the tuning seeds, the seeds scored and whether the trial is the chosen one."""
    rows = []
    trials = runs[(runs["stage"] == "tune") & (runs["status"] == "success")]
    for run in trials.to_dict("records"):
        tuning = run["tuning"] or {}
        rows.append({"group_key": group_key(tuning), "group": tuning.get("group"), "trial": run["trial"],
                     "arm_id": run["arm_id"], "dataset": run["dataset"], "model": run["model"],
                     "method": run["method"], "seed": run["seed"], "dev_score": run["dev_score"],
                     "settings": {f: run["config"].get(f) for f in tuning.get("space", {})},
                     "space": tuning.get("space"), "n_trials": tuning.get("trials"), "grid": tuning.get("grid")})
    columns = ["group_key", "group", "trial", "arm_id", "dataset", "model", "method", "dev_score", "n_seeds",
               "settings", "space", "n_trials", "grid", "chosen"]
    if not rows:
        return pd.DataFrame(columns=columns)
    frame = pd.DataFrame(rows)
    out = (frame.groupby(["group_key", "trial"], sort=True)
           .agg(group=("group", "first"), arm_id=("arm_id", "first"), dataset=("dataset", "first"),
                model=("model", "first"), method=("method", "first"), dev_score=("dev_score", "mean"),
                n_seeds=("seed", "nunique"), settings=("settings", "first"), space=("space", "first"),
                n_trials=("n_trials", "first"), grid=("grid", "first"))
           .reset_index())
    out["chosen"] = False
    for _, g in out.groupby("group_key"):
        scored = g.dropna(subset=["dev_score"])
        if len(scored):
            chosen = best_trial(dict(zip(scored["trial"].astype(int), scored["dev_score"].astype(float))))
            out.loc[g.index[g["trial"] == chosen], "chosen"] = True
    return out[columns]


def counted(runs: pd.DataFrame) -> pd.Series:
    """Which runs count in the study: all but the trials of settings that were not chosen (those only
    feed the tuning section). A chosen trial at a final seed is that final run."""
    if "stage" not in runs.columns:  # a frame built before stages existed: every run counts
        return pd.Series(True, index=runs.index)
    chosen = trial_table(runs)
    chosen_arms = set(chosen.loc[chosen["chosen"], "arm_id"])
    final_arms = set(runs.loc[runs["stage"] != "tune", "arm_id"])
    return (runs["stage"] != "tune") | runs["arm_id"].isin(chosen_arms | final_arms)
