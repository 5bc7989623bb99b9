"""The one precision map, used by training, evaluation, reloading and the memory estimator: the dtype
names a model's weights are loaded in (`torch_dtype`) and the autocast settings over them
(`mixed_precision`, accelerate's word)."""

from __future__ import annotations

import contextlib
from typing import Any

# torch_dtype -> the torch dtype's name; mixed_precision -> the autocast dtype's name (None: no autocast)
TORCH_DTYPES = {"float32": "float32", "bfloat16": "bfloat16"}
MIXED_PRECISIONS = {"no": None, "bf16": "bfloat16", "fp16": "float16"}
# mixed_precision auto: bf16 where the run's device computes it natively, else no — resolved where the run
# trains (tc_lib.device.resolve_autocast), never by the machine that planned the grid
AUTO = "auto"
MIXED_PRECISION_CHOICES = (*MIXED_PRECISIONS, AUTO)


def torch_dtype(name: str) -> Any:
    """The torch dtype the weights are loaded in, for a `torch_dtype` name."""
    import torch

    return getattr(torch, TORCH_DTYPES[name])


def autocast(mixed_precision: str, device_type: str) -> contextlib.AbstractContextManager:
    """torch.autocast for `mixed_precision` on `device_type` (a no-op context for "no")."""
    import torch

    dtype = MIXED_PRECISIONS[mixed_precision]
    return contextlib.nullcontext() if dtype is None else torch.autocast(device_type, dtype=getattr(torch, dtype))


def trainer_flags(mixed_precision: str) -> dict[str, bool]:
    """The HF Trainer's bf16 / fp16 arguments for `mixed_precision` (auto must be resolved first)."""
    if mixed_precision not in MIXED_PRECISIONS:
        raise ValueError(f"mixed_precision {mixed_precision!r}: resolve it on the run's device first "
                         "(tc_lib.device.resolve_autocast)")  # never a silent fp32 for auto
    return {"bf16": mixed_precision == "bf16", "fp16": mixed_precision == "fp16"}


# ---------------------------------------------------------------- PEFT on a half-precision base

def _cast_to_weight(module: Any, args: tuple) -> tuple:
    """Forward pre-hook: a half-precision input meets fp32 weights; autocast, when on, does this itself."""
    import torch

    first = next((a for a in args if isinstance(a, torch.Tensor) and a.is_floating_point()), None)
    module._tc_input_dtype = None
    if first is None or torch.is_autocast_enabled(first.device.type):
        return args
    dtype = next(p.dtype for p in module.parameters(recurse=False))
    if first.dtype == dtype:
        return args
    module._tc_input_dtype = first.dtype
    return tuple(a.to(dtype) if isinstance(a, torch.Tensor) and a.is_floating_point() else a for a in args)


def _cast_back(module: Any, args: tuple, output: Any) -> Any:
    """Forward hook: hand the output back in the dtype the module received (the stream stays bf16)."""
    dtype = getattr(module, "_tc_input_dtype", None)
    return output.to(dtype) if dtype is not None else output


def keep_trainables_fp32(model: Any) -> None:
    """Trainable PEFT parameters stay fp32 on a half-precision base (peft's default, for every method).

    peft's LoRA/IA3 layers cast their inputs themselves; the plain layers we train (adapters' bottlenecks,
    the head) get hooks that cast their input up and their output back, so training without autocast works.
    """
    import torch

    for module in model.modules():
        own = list(module.parameters(recurse=False))
        if not own or not all(p.requires_grad for p in own):
            continue
        if any(p.dtype != torch.float32 for p in own):
            for p in own:
                p.data = p.data.float()
        if isinstance(module, (torch.nn.Linear, torch.nn.LayerNorm)):
            module.register_forward_pre_hook(_cast_to_weight)
            module.register_forward_hook(_cast_back)
