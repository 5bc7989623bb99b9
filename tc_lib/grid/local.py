"""The local executor: a grid's runs in worker processes on this machine, each through `run_one`.

Workers die with the driver (Linux: SIGKILL on the driver's death; their kernels follow them), ignore
the terminal's Ctrl-C, and on the driver's Ctrl-C are told to stop: nothing new starts, in-flight runs
are left `interrupted` (resumable) and their kernels killed."""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from ..config import RunConfig
from ..errors import ConfigError
from .execute import TRAIN_NOTEBOOK, Interrupted, RunOutcome, die_with_parent, is_done, kill_kernels, run_one

logger = logging.getLogger(__name__)
# on_event(kind, info): "plan" {total, skipped, todo, jobs}, then "done" {run_id, status, error} per run
EventHandler = Callable[[str, dict], None]
STOP_GRACE_S = 10


@dataclass
class GridOutcome:
    succeeded: list[str]
    skipped: list[str]
    failed: list[tuple[str, str]]
    busy: list[tuple[str, str]] = field(default_factory=list)  # held by another driver

    def add(self, result: RunOutcome) -> None:
        if result.status == "success":
            self.succeeded.append(result.run_id)
        elif result.status == "skipped":
            self.skipped.append(result.run_id)
        elif result.status == "busy":
            self.busy.append((result.run_id, result.message or ""))
        else:
            self.failed.append((result.run_id, result.message or ""))
            logger.info("run %s failed: %s", result.run_id, result.message)


class GridInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped the grid; `in_flight` runs were left `interrupted`."""

    def __init__(self, in_flight: int) -> None:
        super().__init__(in_flight)
        self.in_flight = in_flight


def _on_sigterm(signum, frame) -> None:
    kill_kernels()  # first: papermill's clean-up would otherwise interrupt the kernel, which prints a traceback
    raise Interrupted()


def _worker_init(parent: int) -> None:
    """In each worker: die with the driver, leave Ctrl-C to it, turn SIGTERM into Interrupted."""
    die_with_parent(parent)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _on_sigterm)
    # papermill's "Kernel died while waiting for execute reply" would reach the driver's terminal raw; the
    # run's outcome (its record, the grid's FAILED or warning line) says it in one line instead
    logging.getLogger("papermill").setLevel(logging.CRITICAL)


def _worker_main(cfg: RunConfig, notebook: str, force: bool, parent: int, results, gpu: str | None) -> None:
    """A worker process: one run through `run_one`, on GPU `gpu` alone when given (set before anything
    here or in the kernel initialises CUDA); its outcome goes back on `results`."""
    _worker_init(parent)
    if gpu is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    try:
        results.put(run_one(cfg, notebook=Path(notebook), executor="local", force=force))
    except Interrupted:
        os._exit(130)  # run_one left the run interrupted and released its lease


def plan(configs: Sequence[RunConfig], *, force: bool = False) -> tuple[GridOutcome, list[RunConfig]]:
    """An outcome that counts the runs already done as skipped (none with `force`), and the runs to execute."""
    outcome, todo = GridOutcome([], [], []), []
    for cfg in configs:
        if not force and is_done(cfg):
            outcome.skipped.append(cfg.run_id)
        else:
            todo.append(cfg)
    return outcome, todo


class GpuPool:
    """`runs_per_gpu` slots on each GPU id: a starting run takes a free slot of the least busy GPU."""

    def __init__(self, gpus: Sequence[str], runs_per_gpu: int) -> None:
        self.busy = {gpu: 0 for gpu in gpus}
        self.runs_per_gpu = runs_per_gpu

    @property
    def slots(self) -> int:
        return len(self.busy) * self.runs_per_gpu

    def take(self) -> str:
        gpu = min(self.busy, key=lambda g: self.busy[g])
        assert self.busy[gpu] < self.runs_per_gpu, "no free GPU slot"
        self.busy[gpu] += 1
        return gpu

    def give_back(self, gpu: str) -> None:
        self.busy[gpu] -= 1


def run_grid(configs: Sequence[RunConfig], *, force: bool = False, notebook: Path = TRAIN_NOTEBOOK,
             jobs: int | None = None, gpus: Sequence[str] = (), runs_per_gpu: int = 1,
             on_event: EventHandler | None = None) -> GridOutcome:
    """Execute every config not already done, `jobs` at a time, each in a fresh worker process; one
    failure does not stop the grid.

    With `gpus` (ids as CUDA_VISIBLE_DEVICES spells them) every run sees exactly one of them, at most
    `runs_per_gpu` runs per GPU at a time; `jobs` defaults to len(gpus) * runs_per_gpu (else 1) and may
    not exceed it. Each kernel gets cpu_count // jobs torch threads (two OpenMP teams on the same cores
    slow each other down badly). `force` reruns finished runs (their records are replaced).
    """
    from multiprocessing import get_context

    pool = GpuPool(gpus, runs_per_gpu) if gpus else None
    jobs = jobs or (pool.slots if pool else 1)
    if pool and jobs > pool.slots:
        raise ConfigError(f"--jobs {jobs}: more runs at a time than GPU slots ({len(gpus)} GPUs x "
                          f"{runs_per_gpu} runs per GPU); raise --runs-per-gpu or lower --jobs")
    emit = on_event or (lambda kind, info: None)
    outcome, todo = plan(configs, force=force)
    emit("plan", {"total": len(configs), "skipped": len(outcome.skipped), "todo": len(todo), "jobs": jobs})
    threads = max(1, (os.cpu_count() or jobs) // jobs)
    context = get_context("spawn")
    results = context.Queue()
    pending, running, gpu_of = list(reversed(todo)), {}, {}

    def finish(result: RunOutcome) -> None:
        running.pop(result.run_id).join()
        if pool:
            pool.give_back(gpu_of.pop(result.run_id))
        outcome.add(result)
        emit("done", {"run_id": result.run_id, "status": result.status,
                      "error": result.message if result.status == "failed" else None,
                      "warning": result.message if result.status == "success" else None})

    try:
        while pending or running:
            while pending and len(running) < jobs:
                cfg = pending.pop()
                run = cfg if cfg.num_threads else RunConfig.from_dict({**cfg.to_dict(), "num_threads": threads})
                gpu = gpu_of[cfg.run_id] = pool.take() if pool else None
                running[cfg.run_id] = context.Process(target=_worker_main, name=f"tc-run-{cfg.run_id}",
                                                      args=(run, str(notebook), force, os.getpid(), results, gpu))
                running[cfg.run_id].start()
            result = _next_result(results, running)
            if result is not None:
                finish(result)
    except KeyboardInterrupt:
        raise GridInterrupted(_stop(list(running.values()))) from None
    return outcome


def _next_result(results, running: dict) -> RunOutcome | None:
    """The next outcome on the queue; a worker that died without one (killed, out of memory) is a
    failed outcome of its own."""
    import queue

    try:
        return results.get(timeout=0.5)
    except queue.Empty:
        pass
    for run_id, process in running.items():
        if process.exitcode is not None:
            try:  # its outcome may still be on its way
                return results.get(timeout=1)
            except queue.Empty:
                return RunOutcome(run_id, "failed", f"worker process died (exit code {process.exitcode}); "
                                                    "run the grid again to retry it")
    return None


def _stop(processes: list) -> int:
    """Tell the running workers to stop (SIGTERM: their run is left interrupted) and make sure they end."""
    import time

    for p in processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1)
    return len(processes)
