"""tc_lib — fine-tune pretrained text encoders (full, LoRA, adapters) and report on the runs.

The public names load lazily, so `python -m tc_lib data info` does not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .errors import ConfigError, DataError, TcError

__version__ = "0.1.0"
_LAZY = {
    "Breakdown": "memory", "Report": "report", "RunConfig": "config", "RunResult": "results",
    "build_model": "models", "dataset_info": "data", "estimate": "memory", "get_dataset": "data",
    "load_grid": "runner", "read_history": "results", "read_runs": "results", "run_grid": "runner",
    "train_and_evaluate": "train",
}
__all__ = sorted(["ConfigError", "DataError", "TcError", *_LAZY])


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'tc_lib' has no attribute {name!r}")
