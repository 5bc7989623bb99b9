"""Reading a folder of run records into typed DataFrames — any folder: a record that cannot be used
(torn, foreign, of another schema version, missing a section) is reported with its file and reason,
never counted and never fatal."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from ..config import DATA_SEED_FOLLOWS, DEFAULT_OUTPUT_DIR, LATER_FIELDS, arm_id_of, tuning_info
from ..metrics import SCORE_NAMES
from ..precision import AUTO
from ..record import Memory, RunRecord, Timing, column_dtype, field_type
from ..results import Problem, read_history_file, scan_records

# runs-table column -> the record field it shows (its dtype follows from the field's type)
FROM_RECORD: dict[str, str] = {
    "run_id": "run_id", "status": "status", "finished_at": "finished_at", "stage": "stage", "trial": "trial",
    "dev_score": "selection.score", "selection": "selection.rule", "chosen_epoch": "selection.chosen_epoch",
    **{name: f"timing.{name}" for name in Timing.__dataclass_fields__},
    **{name: f"memory.{name}" for name in Memory.__dataclass_fields__},
    "train_size": "data.train_size", "test_size": "data.test_size", "train_split_size": "data.train_split_size",
    "gpu_name": "environment.gpu_name", "torch_threads": "environment.torch_threads",
    "autocast": "environment.autocast",
    "cuda_visible_devices": "execution.cuda_visible_devices", "error": "error.message",
    "peft_target_modules": "peft_target_modules", "label_names": "data.label_names",
    "train_label_counts": "data.train_label_counts",
}
# columns computed from a record (its config, metrics, params or folder)
DERIVED: dict[str, str] = {
    "arm_id": "string", "model": "string", "dataset": "string", "method": "string", "seed": "Int64",
    "tuning": "object", "epochs": "Int64", "learning_rate": "Float64", **{name: "Float64" for name in SCORE_NAMES},
    "majority_accuracy": "Float64", "majority_macro_f1": "Float64", "collapsed": "boolean",
    "params_total": "Int64", "params_trainable": "Int64", "params_trainable_no_head": "Int64",
    "max_train_samples": "Int64", "data_seed": "Int64", "data_seed_follows_seed": "boolean", "device": "string",
    "run_dir": "string", "config": "object", "environment": "object",
}
RUN_COLUMNS: dict[str, str] = {**{column: column_dtype(field_type(path)) for column, path in FROM_RECORD.items()},
                               **DERIVED}


def _field(record: RunRecord, path: str) -> Any:
    value: Any = record
    for name in path.split("."):
        value = getattr(value, name, None) if value is not None else None
    return value


def _arm(rec: RunRecord) -> tuple[str, dict[str, Any], str | None]:
    """(arm id, config, device used) of a record. Records written before arms existed get the id from
    their config; `device: auto` becomes the device that ran it, and an `auto` run on a GPU is an arm of
    its own (never pooled with the CPU runs of the same config); likewise `mixed_precision: auto` becomes
    the autocast the run used, and an `auto` run that trained in fp32 is an arm of its own."""
    cfg = {**LATER_FIELDS, **rec.config}
    used = rec.used_device
    arm_id = rec.arm_id or arm_id_of(rec.config)
    if cfg["device"] == "auto" and used:
        cfg["device"] = used
        arm_id += "-cuda" if used == "cuda" else ""
    if cfg.get("mixed_precision") == AUTO and rec.environment.autocast:
        cfg["mixed_precision"] = rec.environment.autocast
        arm_id += "-fp32" if rec.environment.autocast == "no" else ""
    return arm_id, cfg, used


def _dataset(cfg: dict[str, Any]) -> str:
    return cfg["dataset"] if isinstance(cfg["dataset"], str) else "+".join(cfg["dataset"])


def _row(run_dir: Path, rec: RunRecord) -> dict[str, Any]:
    arm_id, cfg, used = _arm(rec)
    metrics, params = rec.metrics or {}, rec.params or {}
    floor = rec.data.majority_floor or {}
    macro, floor_macro = metrics.get("macro_f1"), floor.get("macro_f1")
    follows = cfg.get("data_seed") == DATA_SEED_FOLLOWS
    data_seed = rec.data.data_seed  # records before data seeds were recorded: from the config
    if data_seed is None:
        data_seed = cfg["seed"] if follows else cfg.get("data_seed")
    return {
        **{column: _field(rec, path) for column, path in FROM_RECORD.items()},
        "arm_id": arm_id, "model": cfg["model"], "dataset": _dataset(cfg), "method": cfg["method"],
        "seed": cfg["seed"], "tuning": tuning_info(cfg) or None, "epochs": cfg["epochs"],
        "learning_rate": cfg["learning_rate"], **{name: metrics.get(name) for name in SCORE_NAMES},
        "majority_accuracy": floor.get("accuracy"), "majority_macro_f1": floor_macro,
        "collapsed": None if macro is None or floor_macro is None else bool(macro <= floor_macro + 1e-9),
        "params_total": params.get("total"), "params_trainable": params.get("trainable"),
        "params_trainable_no_head": params.get("trainable_no_head"),
        "max_train_samples": cfg.get("max_train_samples"),
        "data_seed": data_seed,
        "data_seed_follows_seed": follows, "device": used, "run_dir": str(run_dir), "config": cfg,
        "environment": rec.environment,
    }


def _runs_frame(records: list[tuple[Path, RunRecord]]) -> pd.DataFrame:
    frame = pd.DataFrame([_row(run_dir, rec) for run_dir, rec in records], columns=list(RUN_COLUMNS))
    return frame.astype(RUN_COLUMNS)


def read_runs(root: str | Path = DEFAULT_OUTPUT_DIR, *, problems: list[Problem] | None = None) -> pd.DataFrame:
    """One row per run folder with a valid record (any status); columns and dtypes as RUN_COLUMNS.
    Folders whose record cannot be used are appended to `problems`, each with its file and reason."""
    records, found = scan_records(root)
    if problems is not None:
        problems.extend(found)
    return _runs_frame(records)


def read_study(root: str | Path = DEFAULT_OUTPUT_DIR, *,
               problems: list[Problem] | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(read_runs, read_history of the successful runs) from one pass over the folder."""
    records, found = scan_records(root)
    if problems is not None:
        problems.extend(found)
    return _runs_frame(records), _history_frame(records, status="success", problems=problems)


def current_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(current, superseded) among the successful runs: per arm and seed the newest record (by
    finished_at) counts; older successful runs of the same arm and seed are returned, never counted.
    Tuning trials of settings that were not chosen count in neither (tc_lib.tuned.counted)."""
    from ..tuned import counted

    ok = runs[(runs["status"] == "success") & counted(runs)]
    ok = ok.sort_values(["finished_at", "run_id"], na_position="first")
    newest = ~ok.duplicated(subset=["arm_id", "seed"], keep="last")
    return ok[newest].sort_index().reset_index(drop=True), ok[~newest].reset_index(drop=True)


HISTORY_COLUMNS: dict[str, str] = {
    "run_id": "string", "arm_id": "string", "model": "string", "dataset": "string", "method": "string",
    "seed": "Int64", "epoch": "Int64", "split": "string", "train_loss": "Float64",
    **{name: "Float64" for name in SCORE_NAMES},
}


def read_history(root: str | Path = DEFAULT_OUTPUT_DIR, *, status: str | None = "success",
                 problems: list[Problem] | None = None) -> pd.DataFrame:
    """Per-epoch evaluations of the runs (long format: one row per run, epoch and split). A history
    file that cannot be read is left out and appended to `problems` with its line."""
    return _history_frame(scan_records(root)[0], status=status, problems=problems)


def _history_frame(records: list[tuple[Path, RunRecord]], *, status: str | None,
                   problems: list[Problem] | None) -> pd.DataFrame:
    rows = []
    for run_dir, rec in records:
        path = run_dir / "history.jsonl"
        if (status and rec.status != status) or not path.is_file():
            continue
        try:
            epochs = read_history_file(run_dir)
        except (OSError, ValueError) as err:
            if problems is not None:
                problems.append(Problem(str(path), f"history left out: {err}"))
            continue
        arm_id, cfg, _ = _arm(rec)
        for epoch in epochs:
            for split in ("dev", "test"):
                scores = epoch.get(split)
                if scores:
                    rows.append({"run_id": rec.run_id, "arm_id": arm_id, "model": cfg["model"],
                                 "dataset": _dataset(cfg), "method": cfg["method"], "seed": cfg["seed"], "epoch": epoch["epoch"],
                                 "split": split, "train_loss": epoch.get("train_loss"),
                                 **{k: scores.get(k) for k in SCORE_NAMES}})
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS)).astype(HISTORY_COLUMNS)
