"""The local executor: a grid's runs one after another, or in parallel worker processes."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from ..config import RunConfig
from .execute import TRAIN_NOTEBOOK, execute, first_line, is_done

logger = logging.getLogger(__name__)


@dataclass
class GridOutcome:
    succeeded: list[str]
    skipped: list[str]
    failed: list[tuple[str, str]]


# on_event(kind, info): "plan" {total, skipped, todo, jobs}, "start" {run_id}, "done" {run_id, error}
EventHandler = Callable[[str, dict], None]


def _execute_in_worker(cfg: RunConfig, notebook: str) -> tuple[str, str | None]:
    """Process-pool entry point: (run_id, None) on success, (run_id, message) on failure."""
    try:
        execute(cfg, notebook=Path(notebook))
        return cfg.run_id, None
    except Exception as err:  # noqa: BLE001 — reported back to the parent
        return cfg.run_id, first_line(err)


def run_grid(configs: Sequence[RunConfig], *, force: bool = False, notebook: Path = TRAIN_NOTEBOOK,
             jobs: int = 1, on_event: EventHandler | None = None) -> GridOutcome:
    """Execute every config not already done; one failure does not stop the grid.

    With jobs > 1, runs execute in parallel worker processes, each kernel limited to
    cpu_count // jobs torch threads (two OpenMP teams on the same cores slow each other down badly).
    """
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    emit = on_event or (lambda kind, info: None)
    outcome = GridOutcome([], [], [])
    todo = []
    for cfg in configs:
        if not force and is_done(cfg):
            outcome.skipped.append(cfg.run_id)
        else:
            todo.append(cfg)
    emit("plan", {"total": len(configs), "skipped": len(outcome.skipped), "todo": len(todo), "jobs": jobs})

    def record(run_id: str, error: str | None) -> None:
        if error is None:
            outcome.succeeded.append(run_id)
        else:
            outcome.failed.append((run_id, error))
            logger.info("run %s failed: %s", run_id, error)
        emit("done", {"run_id": run_id, "error": error})

    if jobs <= 1:
        for cfg in todo:
            emit("start", {"run_id": cfg.run_id})
            record(*_execute_in_worker(cfg, str(notebook)))
        return outcome
    threads = max(1, (os.cpu_count() or jobs) // jobs)
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        futures = [pool.submit(_execute_in_worker, cfg if cfg.num_threads else
                               RunConfig.from_dict({**cfg.to_dict(), "num_threads": threads}), str(notebook))
                   for cfg in todo]
        for future in as_completed(futures):
            record(*future.result())
    return outcome
