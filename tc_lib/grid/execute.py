"""The one run function every executor calls (`run_one`): claim the run's lease, execute
notebooks/train.ipynb with papermill in a fresh kernel, release the lease. The notebook writes the run
record; a kernel that dies before it can still leaves a `failed` record, and the kernel never outlives
the process that started it (Linux: it is sent SIGKILL when that process dies)."""

from __future__ import annotations

import functools
import os
import re
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ..config import RunConfig
from ..errors import first_line
from ..record import ErrorInfo
from ..results import end_run, load_record, new_record, now, unwritable
from .lease import acquire, is_stale, read_lease

REPO = Path(__file__).resolve().parents[2]
TRAIN_NOTEBOOK = REPO / "notebooks" / "train.ipynb"
PATH_VARIABLES = ("TC_DATA_DIR", "TC_MODEL_DIR", "TC_CACHE_DIR", "HF_HOME", "HF_HUB_CACHE")
UNFINISHED = ("running", "interrupted", "failed")  # a rerun of one of these is its next attempt
# Runs first in the kernel's process: ask Linux to SIGKILL it when its parent (this process) dies, then
# become the kernel. Papermill starts kernels in a session of their own, out of reach of a group kill.
_DEATH_GUARD = ("import ctypes, os, signal, sys\n"
                "ctypes.CDLL(None).prctl(1, signal.SIGKILL)\n"  # PR_SET_PDEATHSIG
                "os.getppid() == int(sys.argv[1]) or os._exit(1)\n"
                "os.execvp(sys.argv[2], sys.argv[2:])")
KERNEL_PIDS: set[int] = set()  # kernels this process started and that may still run


class Interrupted(BaseException):
    """Raised in a worker told to stop (SIGTERM): the run is left `interrupted`, resumable."""


@functools.cache
def guarded_kernel_manager(launch_dir: str, env: tuple[tuple[str, str], ...] = ()):
    """A kernel manager whose kernels die with the process that started them, and whose pids we know.
    `launch_dir`: the caller's working directory (papermill moves into notebooks/ before the launch),
    against which relative folder variables are made absolute for the kernel; `env`: (name, value) pairs
    added to the kernel's environment only (this process's stays as it is; pairs, so the class is cached)."""
    from jupyter_client.manager import AsyncKernelManager

    class GuardedKernelManager(AsyncKernelManager):
        """A kernel that dies with this process, talks over IPC sockets in a private folder (no
        unencrypted TCP ports; ipykernel warns about those), and is not sent SIGINT at shutdown."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = str(Path(tempfile.mkdtemp(prefix="tc_kernel_")) / "kernel")

        async def _async_interrupt_kernel(self):
            # jupyter_client interrupts every kernel before shutting it down; the notebook has finished,
            # so the SIGINT would only make ipykernel log "KeyboardInterrupt caught in kernel"
            if not self.shutting_down:
                await super()._async_interrupt_kernel()

        async def _async_cleanup_resources(self, restart=False):
            await super()._async_cleanup_resources(restart=restart)
            if not restart:
                shutil.rmtree(Path(self.ip).parent, ignore_errors=True)

        def format_kernel_cmd(self, extra_arguments=None):
            cmd = super().format_kernel_cmd(extra_arguments)
            return [sys.executable, "-c", _DEATH_GUARD, str(os.getpid()), *cmd] if sys.platform == "linux" else cmd

        async def _async_launch_kernel(self, kernel_cmd, **kw):
            kw["env"] = absolute_path_variables({**(kw.get("env") or os.environ), **dict(env)}, base=launch_dir)
            await super()._async_launch_kernel(kernel_cmd, **kw)
            process = getattr(self.provisioner, "process", None)
            if process is not None:
                KERNEL_PIDS.add(process.pid)

    return GuardedKernelManager


def absolute_path_variables(env: dict[str, str], *, base: str) -> dict[str, str]:
    """`env` with the folder variables made absolute against `base`: the kernel runs in notebooks/,
    where a relative TC_DATA_DIR would name another folder."""
    out = dict(env)
    for name in PATH_VARIABLES:
        value = os.path.expanduser(out.get(name) or "")
        if value and not os.path.isabs(value):
            out[name] = os.path.normpath(os.path.join(base, value))
    return out


def die_with_parent(parent: int) -> None:
    """Linux: have this process sent SIGKILL when its parent dies; exit now if it already has."""
    if sys.platform == "linux":
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(1)


def kill_kernels() -> None:
    """SIGKILL the kernels (and their process groups) this process started."""
    for pid in list(KERNEL_PIDS):
        for kill in (os.killpg, os.kill):
            try:
                kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        KERNEL_PIDS.discard(pid)


def is_done(cfg: RunConfig) -> bool:
    """A run is done when its record says success for the same resolved config."""
    record = load_record(cfg.run_dir)
    return bool(record and record.status == "success" and record.config_hash == cfg.config_hash)


def execute(cfg: RunConfig, *, notebook: Path = TRAIN_NOTEBOOK, timeout_s: int | None = None,
            kernel_env: dict[str, str] | None = None) -> str | None:
    """Run one config through papermill in a fresh kernel (with `kernel_env` added to its environment);
    the executed notebook is kept in the run folder.

    If the kernel dies before the notebook writes its record (killed, out of memory), the record still
    says `running`: it is marked failed here with the cause. A success record this attempt wrote is
    final: when the kernel dies after it, the run stands and a warning is returned.
    """
    import papermill as pm

    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    attempt_started = now()
    try:
        pm.execute_notebook(str(notebook), str(run_dir / "train.ipynb"), parameters=cfg.notebook_parameters(),
                            kernel_name="python3", progress_bar=False, cwd=str(notebook.parent), start_timeout=180,
                            execution_timeout=timeout_s,
                            kernel_manager_class=guarded_kernel_manager(os.getcwd(), tuple(sorted((kernel_env or {}).items()))))
    except Exception as err:
        record = load_record(run_dir)
        if (record is not None and record.status == "success" and record.config_hash == cfg.config_hash
                and (record.started_at or "") >= attempt_started):
            return f"finished, then the kernel died ({cause(err)}); its success record stands"
        if record is None or record.status != "failed":
            record = record if record and record.status == "running" else new_record(cfg, status="failed")
            end_run(run_dir, record, status="failed",
                    error=ErrorInfo(type=err.__class__.__name__, message=cause(err), traceback=cell_traceback(err)))
        raise
    finally:
        kill_kernels()  # papermill shuts the kernel down; this only catches one that would not go
    return None


def cause(err: BaseException) -> str:
    """What went wrong, in one line: for a notebook cell that raised, its exception — not papermill's header."""
    ename, evalue = getattr(err, "ename", None), getattr(err, "evalue", None)
    if ename:
        return f"{ename}: {first_line(Exception(evalue)) if evalue else ''}".rstrip(": ")
    return first_line(err)


def cell_traceback(err: BaseException) -> str | None:
    """The failing cell's traceback as plain text (papermill keeps it with terminal colours)."""
    lines = getattr(err, "traceback", None)
    if not lines:
        return None
    return re.sub(r"\x1b\[[0-9;]*m", "", "\n".join(map(str, lines)))


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    status: str  # success | failed | skipped (done already) | busy (another driver holds it)
    message: str | None = None  # why it failed; for a success, a warning (the kernel died after the record)


def mark_stopped(cfg: RunConfig, status: str, message: str) -> None:
    """A `running` record whose kernel is gone gets the status (interrupted | failed) and the reason."""
    record = load_record(cfg.run_dir)
    if record is not None and record.status == "running":
        end_run(cfg.run_dir, record, status=status, error=ErrorInfo(type=status.capitalize(), message=message))


def next_attempt(cfg: RunConfig) -> int:
    """1 for a fresh run; one more than the last attempt that a record or a dead holder's lease names."""
    previous = load_record(cfg.run_dir)
    attempt = 1
    if previous is not None and previous.status in UNFINISHED:
        attempt = (previous.execution.attempt if previous.execution else 1) + 1
    holder = read_lease(cfg.run_dir)
    if holder is not None and is_stale(holder):  # died before its kernel could write a record
        attempt = max(attempt, int(holder.get("attempt") or 1) + 1)
    return attempt


def run_one(cfg: RunConfig, *, notebook: Path = TRAIN_NOTEBOOK, executor: str = "local", force: bool = False,
            timeout_s: int | None = None, task: str | None = None) -> RunOutcome:
    """The one run function: resolved config -> executed notebook -> run record, under the run's lease.
    A finished run is skipped unless `force`. `task` names the scheduler's task (kept across its
    retries): a lease left by the same task is its own dead earlier attempt and is taken over."""
    if not force and is_done(cfg):
        return RunOutcome(cfg.run_id, "skipped")
    attempt = next_attempt(cfg)
    try:
        lease = acquire(cfg.run_dir, executor=executor, attempt=attempt, task=task)
    except OSError as err:
        return RunOutcome(cfg.run_id, "failed", unwritable(cfg.run_dir, err))
    if lease is None:
        holder = read_lease(cfg.run_dir) or {}
        return RunOutcome(cfg.run_id, "busy", f"held by {holder.get('host')} pid {holder.get('pid')}")
    try:
        if not force and is_done(cfg):  # another driver finished it between our check and our claim
            return RunOutcome(cfg.run_id, "skipped")
        # the record's execution section reads them in the kernel
        warning = execute(cfg, notebook=notebook, timeout_s=timeout_s,
                          kernel_env={"TC_EXECUTOR": executor, "TC_ATTEMPT": str(attempt)})
        return RunOutcome(cfg.run_id, "success", warning)
    except (Interrupted, KeyboardInterrupt):  # SIGTERM to a local worker, ray.cancel in a Ray task
        kill_kernels()
        mark_stopped(cfg, "interrupted", "stopped by the user; run the grid again to finish it")
        raise
    except Exception as err:  # noqa: BLE001 — a failed run is an outcome, not a crash of the grid
        return RunOutcome(cfg.run_id, "failed", cause(err))
    finally:
        lease.release()
