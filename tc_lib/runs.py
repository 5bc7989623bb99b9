"""Reading a folder of run records into typed DataFrames — any folder: a record that cannot be used
(torn, foreign, of another schema version, missing a section) is reported with its file and reason,
never counted and never fatal."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from .metrics import SCORE_NAMES
from .config import DATA_SEED_FOLLOWS, DEFAULT_OUTPUT_DIR, LATER_FIELDS, arm_id_of, tuning_info
from .results import read_record

@dataclass(frozen=True)
class Problem:
    file: str
    reason: str


def scan_records(root: str | Path) -> tuple[list[tuple[Path, dict]], list[Problem]]:
    """(run folder, record) for every usable record under root, and a Problem for every other folder."""
    records, problems = [], []
    for run_dir in sorted(p for p in Path(root).glob("*/") if not p.name.startswith(".")):
        record, reason = read_record(run_dir)
        if reason:
            problems.append(Problem(str(run_dir / "metrics.json"), reason))
        else:
            records.append((run_dir, record))
    return records, problems


RUN_COLUMNS: dict[str, str] = {
    "run_id": "string", "arm_id": "string", "status": "string", "finished_at": "string", "model": "string",
    "dataset": "string", "method": "string",
    "seed": "Int64", "stage": "string", "trial": "Int64", "tuning": "object", "dev_score": "Float64",
    "epochs": "Int64", "learning_rate": "Float64", "selection": "string",
    "chosen_epoch": "Int64", **{name: "Float64" for name in SCORE_NAMES}, "majority_accuracy": "Float64", "majority_macro_f1": "Float64",
    "collapsed": "boolean", "params_total": "Int64", "params_trainable": "Int64",
    "params_trainable_no_head": "Int64", "wall_time_s": "Float64", "startup_s": "Float64", "setup_s": "Float64",
    "train_time_s": "Float64", "eval_time_s": "Float64",
    "train_samples_per_s": "Float64", "train_tokens_per_s": "Float64", "peak_rss_mb": "Float64",
    "peak_cuda_allocated_mb": "Float64", "peak_cuda_reserved_mb": "Float64", "train_size": "Int64", "test_size": "Int64",
    "max_train_samples": "Int64", "data_seed": "Int64", "data_seed_follows_seed": "boolean",
    "train_split_size": "Int64", "device": "string", "gpu_name": "string",
    "cuda_visible_devices": "string", "torch_threads": "Int64", "error": "string",
    "run_dir": "string", "config": "object", "peft_target_modules": "object", "label_names": "object",
    "train_label_counts": "object",
}


def _arm(rec: dict[str, Any]) -> tuple[str, dict[str, Any], str | None]:
    """(arm id, config, device used) of a record. Records written before arms existed get the id from
    their config; `device: auto` becomes the device that ran it, and an `auto` run on a GPU is an arm of
    its own (never pooled with the CPU runs of the same config)."""
    cfg = {**LATER_FIELDS, **rec["config"]}
    used = (rec.get("device") or {}).get("type") or rec["environment"].get("device")
    arm_id = rec.get("arm_id") or arm_id_of(rec["config"])
    if cfg["device"] == "auto" and used:
        cfg["device"] = used
        arm_id += "-cuda" if used == "cuda" else ""
    return arm_id, cfg, used


def _row(run_dir: Path, rec: dict[str, Any]) -> dict[str, Any]:
    arm_id, cfg, used = _arm(rec)
    metrics = rec.get("metrics") or {}
    floor = (rec.get("data") or {}).get("majority_floor") or {}
    params, timing, memory = rec.get("params") or {}, rec["timing"], rec["memory"]
    dataset = cfg["dataset"] if isinstance(cfg["dataset"], str) else "+".join(cfg["dataset"])
    macro, floor_macro = metrics.get("macro_f1"), floor.get("macro_f1")
    data = rec["data"]
    follows = cfg.get("data_seed") == DATA_SEED_FOLLOWS
    return {
        "run_id": rec["run_id"], "arm_id": arm_id, "status": rec["status"],
        "finished_at": rec.get("finished_at"), "model": cfg["model"], "dataset": dataset,
        "method": cfg["method"], "seed": cfg["seed"], "stage": rec.get("stage", "final"), "trial": rec.get("trial"),
        "tuning": tuning_info(cfg) or None, "dev_score": rec["selection"].get("score"), "epochs": cfg["epochs"],
        "learning_rate": cfg["learning_rate"], "selection": rec["selection"]["rule"],
        "chosen_epoch": rec["selection"]["chosen_epoch"], **{name: metrics.get(name) for name in SCORE_NAMES},
        "majority_accuracy": floor.get("accuracy"), "majority_macro_f1": floor_macro,
        "collapsed": None if macro is None or floor_macro is None else bool(macro <= floor_macro + 1e-9),
        "params_total": params.get("total"), "params_trainable": params.get("trainable"),
        "params_trainable_no_head": params.get("trainable_no_head"), **timing, **memory,
        "train_size": data["train_size"], "test_size": data["test_size"],
        "max_train_samples": cfg.get("max_train_samples"),
        "data_seed": data.get("data_seed", cfg["seed"] if follows else cfg.get("data_seed")),
        "data_seed_follows_seed": follows, "train_split_size": data.get("train_split_size"),
        "device": used, "gpu_name": rec["environment"].get("gpu_name"),
        "cuda_visible_devices": (rec.get("execution") or {}).get("cuda_visible_devices"), "torch_threads": rec["environment"].get("torch_threads"),
        "error": (rec.get("error") or {}).get("message"), "run_dir": str(run_dir), "config": cfg,
        "peft_target_modules": rec.get("peft_target_modules"), "label_names": data.get("label_names"),
        "train_label_counts": data.get("train_label_counts"),
    }


def read_runs(root: str | Path = DEFAULT_OUTPUT_DIR, *, problems: list[Problem] | None = None) -> pd.DataFrame:
    """One row per run folder with a valid record (any status); columns and dtypes as RUN_COLUMNS.
    Folders whose record cannot be used are appended to `problems`, each with its file and reason."""
    records, found = scan_records(root)
    if problems is not None:
        problems.extend(found)
    frame = pd.DataFrame([_row(run_dir, rec) for run_dir, rec in records], columns=list(RUN_COLUMNS))
    return frame.astype(RUN_COLUMNS)


def current_runs(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(current, superseded) among the successful runs: per arm and seed the newest record (by
    finished_at) counts; older successful runs of the same arm and seed are returned, never counted.
    Tuning trials of settings that were not chosen count in neither (tc_lib.tuned.counted)."""
    from .tuned import counted

    ok = runs[(runs["status"] == "success") & counted(runs)]
    ok = ok.sort_values(["finished_at", "run_id"], na_position="first")
    newest = ~ok.duplicated(subset=["arm_id", "seed"], keep="last")
    return ok[newest].sort_index().reset_index(drop=True), ok[~newest].reset_index(drop=True)


HISTORY_COLUMNS: dict[str, str] = {
    "run_id": "string", "arm_id": "string", "model": "string", "dataset": "string", "method": "string",
    "seed": "Int64", "epoch": "Int64", "split": "string", "train_loss": "Float64",
    **{name: "Float64" for name in SCORE_NAMES},
}


def _history_lines(path: Path) -> list[dict]:
    out = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), start=1):
        try:
            epoch = json.loads(line)
        except ValueError:
            raise ValueError(f"line {lineno}: not JSON") from None
        if not isinstance(epoch, dict) or not isinstance(epoch.get("epoch"), int):
            raise ValueError(f"line {lineno}: expected an object with an integer 'epoch'")
        out.append(epoch)
    return out


def read_history(root: str | Path = DEFAULT_OUTPUT_DIR, *, status: str | None = "success",
                 problems: list[Problem] | None = None) -> pd.DataFrame:
    """Per-epoch evaluations of the runs (long format: one row per run, epoch and split). A history
    file that cannot be read is left out and appended to `problems` with its line."""
    rows = []
    records, _ = scan_records(root)
    for run_dir, rec in records:
        path = run_dir / "history.jsonl"
        if (status and rec["status"] != status) or not path.is_file():
            continue
        cfg = rec["config"]
        dataset = cfg["dataset"] if isinstance(cfg["dataset"], str) else "+".join(cfg["dataset"])
        try:
            epochs = _history_lines(path)
        except ValueError as err:
            if problems is not None:
                problems.append(Problem(str(path), f"history left out: {err}"))
            continue
        for epoch in epochs:
            for split in ("dev", "test"):
                scores = epoch.get(split)
                if scores:
                    rows.append({"run_id": rec["run_id"], "arm_id": _arm(rec)[0],
                                 "model": cfg["model"], "dataset": dataset,
                                 "method": cfg["method"], "seed": cfg["seed"], "epoch": epoch["epoch"],
                                 "split": split, "train_loss": epoch.get("train_loss"),
                                 **{k: scores.get(k) for k in SCORE_NAMES}})
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS)).astype(HISTORY_COLUMNS)
