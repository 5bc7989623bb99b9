"""Grids of runs: params files expanded into RunConfigs (params), one run executed through papermill
(execute: `run_one`, the one run function), run leases (lease), executors (local, ray_exec, slurm),
`status`, and the `run` command."""

from __future__ import annotations

from .execute import TRAIN_NOTEBOOK, is_done, run_one
from .local import GridOutcome, run_grid
from .params import iter_grid, load_grid, select

__all__ = ["GridOutcome", "TRAIN_NOTEBOOK", "is_done", "iter_grid", "load_grid", "run_grid", "run_one",
           "select"]
