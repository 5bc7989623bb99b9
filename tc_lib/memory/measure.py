"""Measuring the peak of real training steps on the CPU (the estimator's validation)."""

from __future__ import annotations

import weakref
from typing import Any

from ..precision import autocast
from .setup import Setup, build, make_batch, make_optimizer



class PeakTracker:
    """Live bytes of tensor storages created while active (and of those passed to `track`), and their peak.

    A TorchDispatchMode sees every op's outputs; a weakref finalizer subtracts a storage when it is freed.
    On CPU this is what the CUDA caching allocator's max_memory_allocated would report, less its rounding.
    """

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        tracker = self
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    tracker.track(t)
                return out

        self.mode = Mode()

    def track(self, tensor: Any) -> None:
        import torch

        if not isinstance(tensor, torch.Tensor):
            return
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr == 0 or ptr in self.live:
            return
        self.live[ptr] = storage.nbytes()
        self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, ptr)

    def _free(self, ptr: int) -> None:
        self.current -= self.live.pop(ptr, 0)

    def reset_peak(self) -> None:
        self.peak = self.current

    def __enter__(self) -> "PeakTracker":
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)


def measure_peak(config: Any, setup: Setup, *, steps: int = 3, seed: int = 0) -> int:
    """Peak bytes over steady-state training steps (2..steps) of a real model on CPU."""
    import torch

    torch.manual_seed(seed)
    model = build(config, setup)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], setup.optimizer)
    batch = make_batch(config, setup)
    tracker = PeakTracker()
    for tensor in [*model.parameters(), *model.buffers(), *batch.values()]:
        tracker.track(tensor)
    with tracker:
        for step in range(steps):
            if step == 1:  # optimizer states now exist: from here on every step is alike
                tracker.reset_peak()
            with autocast(setup.mixed_precision, "cpu"):
                loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return tracker.peak
