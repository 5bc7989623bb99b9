"""Grids of runs: params files expanded into RunConfigs (params), one run executed through papermill
(execute), executors that run a grid (local), and the `run` command."""

from __future__ import annotations

from .execute import TRAIN_NOTEBOOK, execute, is_done
from .local import GridOutcome, run_grid
from .params import load_grid, select

__all__ = ["GridOutcome", "TRAIN_NOTEBOOK", "execute", "is_done", "load_grid", "run_grid", "select"]
