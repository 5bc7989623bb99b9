"""tc_lib — fine-tune pretrained text encoders (full, LoRA, adapters, IA3) and report on the runs.

The public names load lazily, so `python -m tc_lib data info` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ConfigError, DataError, TcError

__version__ = "0.1.0"
_LAZY = {
    "Breakdown": "memory", "METHODS": "methods", "Report": "report.sections", "RunConfig": "config",
    "RunResult": "results", "apply_method": "methods", "build_model": "models", "dataset_info": "data",
    "best_run": "report.best", "estimate": "memory", "export_model": "inference", "get_dataset": "data",
    "load_grid": "grid", "load_run": "inference", "predict": "inference", "read_history": "report.runs",
    "read_runs": "report.runs", "run_grid": "grid", "train_and_evaluate": "train",
}
__all__ = sorted(["ConfigError", "DataError", "TcError", *_LAZY])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'tc_lib' has no attribute {name!r}")
