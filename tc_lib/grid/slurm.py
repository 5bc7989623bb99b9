"""The grid on SLURM through submitit: the pending runs become one job array (throttled with `%N`), and
every array task calls grid.execute.run_one — the same run function, leases and records as the local
executor — in the same Python environment (tc_lib installed there). Progress and completion come from
the run records and leases (`status`), never from sacct; `squeue` only tells which submitted tasks are
still queued or running, so a second `run` neither resubmits them nor misses a task SLURM killed."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

from ..config import RunConfig
from ..errors import ConfigError, TcError, first_line
from ..record import RunRecord
from ..results import load_record, scan_records, write_text_atomic
from .execute import TRAIN_NOTEBOOK, is_done, run_one
from .lease import is_stale, read_lease

MARKER = "slurm_task"  # in a run folder: "<array job id>_<task>" of the task it was last submitted as
# options tc_lib sets itself; --slurm-arg may not override them
OWN = {"partition", "account", "array", "gres", "gpus", "cpus-per-task", "mem", "time", "job-name", "output",
       "error", "wrap"}
SLURM_ARG = re.compile(r"^([a-z][a-z0-9-]*)=(.+)$")


# the time limit of a run with no finished run of its arm to go by: a base-size encoder's 10-epoch run of
# params/paper.yaml takes well under an hour on one GPU (README, "On a SLURM cluster")
DEFAULT_TIME_MIN = 120
TIME_FACTOR = 3  # else: this many times the slowest finished run of the same arm
MIN_TIME_MIN = 10


@dataclass(frozen=True)
class Resources:
    partition: str
    account: str | None = None
    gpus_per_run: int = 0
    cpus_per_run: int = 1
    mem: str | None = None  # e.g. 16G
    time_min: int = DEFAULT_TIME_MIN  # never submitit's own default (5 minutes)
    max_parallel: int | None = None
    extra: Mapping[str, str] = dataclasses.field(default_factory=dict)


def time_limit(configs: Sequence[RunConfig], *, given: int | None, source: str) -> tuple[int, str]:
    """(minutes, why) for one array of `configs`: `given` (from `source`), else per arm TIME_FACTOR x its
    slowest finished run in the output folder, or DEFAULT_TIME_MIN for an arm with none; the largest."""
    import math

    if given is not None:
        return given, source
    arms = {cfg.arm_id for cfg in configs}
    slowest: dict[str, float] = {}
    for _, record in scan_records(configs[0].output_dir)[0] if configs else ():
        seconds = _run_seconds(record)
        if record.status == "success" and record.arm_id in arms and seconds is not None:
            slowest[record.arm_id] = max(slowest.get(record.arm_id, 0.0), seconds)
    if not slowest:
        return DEFAULT_TIME_MIN, "default: no finished run of these arms yet (set --time-min or slurm: {time_min: M})"
    derived = max(MIN_TIME_MIN, math.ceil(TIME_FACTOR * max(slowest.values()) / 60))
    if len(slowest) < len(arms):
        return max(derived, DEFAULT_TIME_MIN), (f"{TIME_FACTOR}x the slowest finished run of its arm ({derived} min), "
                                                f"and the default {DEFAULT_TIME_MIN} min for arms with none")
    return derived, f"{TIME_FACTOR}x the slowest finished run of the same arm ({max(slowest.values()) / 60:.1f} min)"


def _run_seconds(record: RunRecord) -> float | None:
    """How long a finished run held its task: start to finish of the record, plus the kernel's start-up."""
    from datetime import datetime

    try:
        held = (datetime.fromisoformat(record.finished_at) - datetime.fromisoformat(record.started_at))
    except (TypeError, ValueError):
        return None
    return max(held.total_seconds(), 0.0) + (record.timing.startup_s or 0)


def describe(resources: Resources, why: str) -> str:
    """What each array task asks SLURM for, in sbatch's terms."""
    gres = f"gres=gpu:{resources.gpus_per_run}" if resources.gpus_per_run else "no GPU"
    extra = "".join(f", {key}={value}" for key, value in resources.extra.items())
    return (f"per task: time {resources.time_min} min ({why}), {gres}, cpus-per-task={resources.cpus_per_run}, "
            f"mem={resources.mem or 'the partition default'}{extra}")


def parse_slurm_args(items: Sequence[str]) -> dict[str, str]:
    """--slurm-arg KEY=VALUE (an sbatch long option without its dashes, e.g. constraint=a100)."""
    out = {}
    for item in items:
        match = SLURM_ARG.match(item)
        if not match:
            raise ConfigError(f"--slurm-arg {item!r}: expected KEY=VALUE with KEY an sbatch option name "
                              "(e.g. constraint=a100, qos=normal)")
        key, value = match.groups()
        if key in OWN:
            raise ConfigError(f"--slurm-arg {item!r}: {key} is set by tc_lib's own flags (--partition, --account, "
                              "--gpus-per-run, --cpus-per-run, --mem, --time-min, --max-parallel)")
        out[key] = value
    return out


def check_cluster(partition: str | None) -> None:
    """sbatch on PATH, and the partition one that `sinfo` knows: checked before anything is submitted."""
    if not partition:
        raise ConfigError("--executor slurm needs --partition (see `sinfo` for this cluster's partitions)")
    if shutil.which("sbatch") is None:
        raise TcError("--executor slurm: no sbatch on PATH (run on the cluster's login node, or load its slurm module)")
    out = _slurm("sinfo", "-h", "-o", "%P")
    partitions = sorted({p.rstrip("*") for p in out.split()})
    if partition not in partitions:
        raise ConfigError(f"--partition {partition}: unknown partition; this cluster has: {', '.join(partitions)}")


def _slurm(*cmd: str) -> str:
    try:
        done = subprocess.run(list(cmd), capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError) as err:
        raise TcError(f"{cmd[0]}: {first_line(err)}") from None
    if done.returncode != 0:
        raise TcError(f"{cmd[0]} failed: {first_line(Exception(done.stderr or done.stdout))}")
    return done.stdout


def active_tasks() -> set[str]:
    """Array tasks SLURM still has (pending, running, completing), one id per task: `123_4`."""
    return {line.strip() for line in _slurm("squeue", "-h", "-r", "-o", "%i").splitlines() if line.strip()}


def pending(configs: Sequence[RunConfig], *, force: bool = False) -> tuple[list[RunConfig], list[str]]:
    """(runs to submit, runs left alone): done runs, runs whose last submitted task SLURM still has,
    and runs another executor holds a live lease on are left alone."""
    queued = active_tasks()
    todo, kept = [], []
    for cfg in configs:
        marker = cfg.run_dir / MARKER
        task = marker.read_text().strip() if marker.is_file() else None
        lease = read_lease(cfg.run_dir)
        if (not force and is_done(cfg)) or (task and task in queued) or (lease and not is_stale(lease)):
            kept.append(cfg.run_id)
        else:
            todo.append(cfg)
    return todo, kept


def array_task(config: dict[str, Any], notebook: str, force: bool) -> str:
    """One array task, on the node: the run function, with the task's log named in the record."""
    import submitit

    os.environ["TC_LOG"] = str(submitit.JobEnvironment().paths.stdout)
    return run_one(RunConfig.from_dict(config), notebook=Path(notebook), executor="slurm", force=force).status


def submit(configs: Sequence[RunConfig], resources: Resources, *, notebook: Path = TRAIN_NOTEBOOK,
           log_root: Path, force: bool = False) -> str:
    """Submit `configs` as one job array; returns its job id. Torch threads = cpus per run."""
    import submitit

    executor = submitit.SlurmExecutor(folder=str(log_root / "%A"), python=sys.executable)
    params: dict[str, Any] = dict(partition=resources.partition, cpus_per_task=resources.cpus_per_run,
                                  job_name="tc_lib", additional_parameters=dict(resources.extra))
    params["time"] = resources.time_min
    for key, value in (("account", resources.account), ("mem", resources.mem),
                       ("array_parallelism", resources.max_parallel)):
        if value is not None:
            params[key] = value
    if resources.gpus_per_run:
        params["gres"] = f"gpu:{resources.gpus_per_run}"
    executor.update_parameters(**params)
    runs = [dataclasses.replace(c, num_threads=resources.cpus_per_run) for c in configs]
    try:
        jobs = executor.map_array(array_task, [c.to_dict() for c in runs], [str(notebook)] * len(runs),
                                  [force] * len(runs))
    except Exception as err:  # submitit raises on sbatch's refusal: say what sbatch said
        raise TcError(f"sbatch refused the job array: {first_line(err)}") from None
    for cfg, job in zip(runs, jobs):
        cfg.run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(cfg.run_dir / MARKER, job.job_id + "\n")
    return jobs[0].job_id.split("_")[0]


def wait(job_id: str, configs: Sequence[RunConfig], *, poll_s: float = 2.0) -> dict[str, str]:
    """Block until SLURM has none of the array's tasks; then each run's status from its record."""
    while any(task.split("_")[0] == job_id for task in active_tasks()):
        time.sleep(poll_s)
    return {cfg.run_id: record.status if (record := load_record(cfg.run_dir)) else "not started" for cfg in configs}
