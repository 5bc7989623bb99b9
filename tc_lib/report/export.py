"""Export for hand-in and other tools: a tidy per-run table (CSV and a sheet), a per-arm summary and a
sheet laid out like the study's hand-in spreadsheet (rows dataset · method, columns model × metric, one
block per seed plus mean and std). Only the current runs count (runs.current_runs)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from . import arms as arm_lib
from .runs import current_runs, read_runs
from ..metrics import SCORE_NAMES
from . import stats

RUN_FIELDS = ["run_id", "arm_id", "dataset", "model", "method", "seed", "data_seed", "train_size", "epochs",
              "learning_rate", "stage", "selection", "chosen_epoch", "dev_score", *SCORE_NAMES,
              "majority_accuracy", "majority_macro_f1", "collapsed", "params_total", "params_trainable",
              "params_trainable_no_head", "wall_time_s", "train_time_s", "eval_time_s", "train_samples_per_s",
              "train_tokens_per_s", "peak_rss_mb", "peak_cuda_allocated_mb", "peak_cuda_reserved_mb", "autocast",
              "device", "gpu_name", "cuda_visible_devices", "finished_at", "run_dir"]
HANDIN_METRICS = ("accuracy", "macro_f1")
SHEETS = ("runs", "arms", "hand-in")  # export_tables' keys, in workbook order; only hand-in has an index


def select_runs(runs: pd.DataFrame, params: Sequence[str | Path] = ()) -> pd.DataFrame:
    """The runs of the given grid files (all runs when none are given)."""
    if not params:
        return runs
    from ..grid.tuning import grid_run_ids

    # a tuned grid's final runs depend on its trials' records: read them where these runs are
    folder = str(Path(runs["run_dir"].iloc[0]).parent) if len(runs) else None
    wanted = {run_id for path in params for run_id in grid_run_ids(path, output_dir=folder)}
    return runs[runs["run_id"].isin(wanted)].reset_index(drop=True)


def runs_table(runs: pd.DataFrame, arm_frame: pd.DataFrame) -> pd.DataFrame:
    """One row per run: its arm (id and name), seed, every metric and the cost columns."""
    names = arm_frame.set_index("arm_id")["name"]
    out = runs[RUN_FIELDS].copy()
    out.insert(2, "arm", out["arm_id"].map(names))
    return out.sort_values(["dataset", "model", "arm", "seed"], kind="stable").reset_index(drop=True)


def arms_table(summary: pd.DataFrame, arm_frame: pd.DataFrame) -> pd.DataFrame:
    """One row per arm: n, seeds and mean / std / 95 % CI of every metric."""
    wide = summary.pivot(index="arm_id", columns="metric", values=["mean", "std", "ci_low", "ci_high"])
    wide.columns = [f"{metric}_{stat}" for stat, metric in wide.columns]
    ordered = [f"{m}_{s}" for m in stats.METRICS for s in ("mean", "std", "ci_low", "ci_high")]
    base = arm_frame[["arm_id", "dataset", "model", "method", "name", "n", "seeds", "train_size"]]
    return base.merge(wide[ordered].reset_index(), on="arm_id").rename(columns={"name": "arm"})


def handin_table(runs: pd.DataFrame, arm_frame: pd.DataFrame, *, metrics: Sequence[str] = HANDIN_METRICS) -> pd.DataFrame:
    """Index (block, dataset, arm), columns (model, metric); blocks `seed N` for each seed, then mean, std."""
    names = arm_frame.set_index("arm_id")["name"]
    frame = runs.assign(arm=runs["arm_id"].map(names))
    blocks = []
    for seed in sorted(frame["seed"].dropna().unique()):
        sub = frame[frame["seed"] == seed]
        blocks.append(sub.pivot_table(index=["dataset", "arm"], columns="model", values=list(metrics),
                                      aggfunc="first").assign(block=f"seed {int(seed)}"))
    grouped = frame.groupby(["dataset", "arm", "model"])[list(metrics)]
    for stat, values in (("mean", grouped.mean()), ("std", grouped.std(ddof=1))):
        blocks.append(values.unstack("model").assign(block=stat))
    table = pd.concat(blocks).reset_index().set_index(["block", "dataset", "arm"])
    table.columns = pd.MultiIndex.from_tuples([(c[1], c[0]) for c in table.columns], names=["model", "metric"])
    order = [(m, metric) for m in sorted(frame["model"].unique()) for metric in metrics]
    return table[[c for c in order if c in table.columns]].astype(float)


FAILURE_FIELDS = ["run_id", "status", "dataset", "model", "method", "seed", "error", "finished_at", "run_dir"]


def failures_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Every run that did not succeed, with its status and the first line of its error."""
    out = runs.loc[runs["status"] != "success", FAILURE_FIELDS].copy()
    out["error"] = [e.splitlines()[0] if isinstance(e, str) and e.strip() else None for e in out["error"]]
    return out.reset_index(drop=True)


def export_tables(runs_dir: str | Path, *, params: Sequence[str | Path] = ()) -> dict[str, pd.DataFrame]:
    """{"runs", "arms", "hand-in"} from the current successful runs under runs_dir. With none (an empty
    folder, every run failed or interrupted) "runs" is the failure table — each run's status and first
    error line — and the other two are empty."""
    runs = select_runs(read_runs(runs_dir), params)
    current, _ = current_runs(runs)
    if current.empty:  # nothing to aggregate: what there is to hand over is why
        return {"runs": failures_table(runs), "arms": pd.DataFrame(), "hand-in": pd.DataFrame()}
    arm_frame = arm_lib.arms(current)
    summary = stats.aggregate(current)
    return {"runs": runs_table(current, arm_frame), "arms": arms_table(summary, arm_frame),
            "hand-in": handin_table(current, arm_frame)}


def write_export(runs_dir: str | Path, *, csv: Path | None = None, xlsx: Path | None = None,
                 params: Sequence[str | Path] = ()) -> list[Path]:
    """The per-run table as CSV and all three tables as sheets of one workbook (openpyxl)."""
    frames = export_tables(runs_dir, params=params)
    written = []
    if csv is not None:
        csv.parent.mkdir(parents=True, exist_ok=True)
        frames["runs"].to_csv(csv, index=False)
        written.append(csv)
    if xlsx is not None:
        xlsx.parent.mkdir(parents=True, exist_ok=True)
        with pd.ExcelWriter(xlsx, engine="openpyxl") as writer:
            for name in SHEETS:
                frames[name].to_excel(writer, sheet_name=name, index=name == "hand-in")
        written.append(xlsx)
    return written
