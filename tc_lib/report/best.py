"""The study's best model per dataset, chosen on dev only: the arm with the highest mean dev macro-F1
over its seeds (at each run's chosen epoch), then that arm's seed with the highest dev macro-F1. The
test split never takes part. Ties go to the arm id, then the seed, in sorted order."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import TcError
from .arms import arms as arm_table
from .runs import current_runs, read_study

SCORE = "macro_f1"
BEST_COLUMNS = ["dataset", "arm_id", "model", "method", "name", "n_seeds", "dev_mean", "seed", "dev_score",
                "run_id", "run_dir", "has_weights", "n_arms"]


def dev_scores(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """The runs (current successes) with their dev macro-F1 at the chosen epoch; runs without dev dropped."""
    dev = history[history["split"] == "dev"][["run_id", "epoch", SCORE]].rename(columns={SCORE: "dev_score"})
    # from the history, which records of every version have (a run's own selection.score is newer)
    merged = runs.drop(columns=["dev_score"], errors="ignore").merge(dev, left_on=["run_id", "chosen_epoch"], right_on=["run_id", "epoch"], how="inner")
    return merged.dropna(subset=["dev_score"])


def best_runs(runs: pd.DataFrame, history: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset with a dev-scored run: the best arm by mean dev score and its best seed."""
    scored = dev_scores(runs, history)
    names = arm_table(runs).set_index("arm_id")["name"] if len(runs) else pd.Series(dtype=object)
    rows = []
    for dataset, group in scored.groupby("dataset", sort=True):
        means = group.groupby("arm_id")["dev_score"].agg(["mean", "size"]).reset_index()
        means = means.sort_values(["mean", "arm_id"], ascending=[False, True], kind="stable")
        arm = means.iloc[0]
        seeds = group[group["arm_id"] == arm["arm_id"]].sort_values(["dev_score", "seed"], ascending=[False, True],
                                                                      kind="stable")
        run = seeds.iloc[0]
        rows.append({"dataset": dataset, "arm_id": arm["arm_id"], "model": run["model"], "method": run["method"],
                     "name": names.get(arm["arm_id"], run["method"]), "n_seeds": int(arm["size"]),
                     "dev_mean": float(arm["mean"]), "seed": int(run["seed"]), "dev_score": float(run["dev_score"]),
                     "run_id": run["run_id"], "run_dir": run["run_dir"],
                     "has_weights": (Path(run["run_dir"]) / "weights").is_dir(), "n_arms": len(means)})
    return pd.DataFrame(rows, columns=BEST_COLUMNS)


def best_run(runs_dir: str | Path, *, dataset: str, method: str | None = None) -> dict:
    """The best run of `dataset` under runs_dir (see the module doc), as a row of best_runs; with
    `method`, the best among that method's arms."""
    everything, history = read_study(runs_dir)
    runs, _ = current_runs(everything)
    if method is not None and len(runs):
        methods = sorted(set(runs["method"]))
        if method not in methods:
            raise TcError(f"--method {method}: no successful run of it under {runs_dir}; methods there: "
                          f"{', '.join(methods)}")
        runs = runs[runs["method"] == method]
    if not len(runs):
        raise TcError(f"{runs_dir}: no successful run record; run a grid first (python -m tc_lib run PARAMS)")
    known = sorted(set(runs["dataset"]))
    if dataset not in known:
        raise TcError(f"--dataset {dataset}: no successful run of it under {runs_dir}; datasets there: "
                      f"{', '.join(known)}")
    table = best_runs(runs[runs["dataset"] == dataset], history)
    if table.empty:
        raise TcError(f"--dataset {dataset}: no run of it was scored on dev (selection: dev), and the best run is "
                      "chosen on dev only, never on test; rerun the grid with selection: dev")
    return table.iloc[0].to_dict()


def plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def predict_command(row: dict) -> str:
    """The shell command that classifies with this best run."""
    return f"python -m tc_lib predict {row['run_dir']} --text \"...\""
