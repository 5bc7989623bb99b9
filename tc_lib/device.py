"""The device a run trains on. `device: auto | cpu | cuda` is resolved against what torch sees — `cuda`
fails with the reason when CUDA is not usable, never falling back to the CPU — and the run is checked
for what would otherwise go wrong without a word there: several visible GPUs (the HF Trainer would wrap
the model in DataParallel: another effective batch size) and bf16 on a GPU that only emulates it."""

from __future__ import annotations

import functools
import os
import platform
from typing import Any

from .errors import ConfigError
from .precision import AUTO

DEVICES = ("auto", "cpu", "cuda")
NATIVE_BF16_CAPABILITY = (8, 0)  # Ampere and newer; older GPUs emulate bf16 (slowly)
# x86 instructions that compute bf16 (oneDNN's bf16 kernels use them); without them a CPU emulates bf16,
# slower than fp32. Measured here (AMD EPYC, AVX512-BF16): bf16 autocast trains MiniLM 2.0-2.2x faster.
NATIVE_BF16_CPU_FLAGS = frozenset({"avx512_bf16", "amx_bf16"})


def cuda_problem() -> str | None:
    """Why this process cannot train on CUDA, in words a user can act on; None when it can."""
    import torch

    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build (install a CUDA build of torch)"
    if visible is not None and visible.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={visible!r} hides every GPU from this process"
    if not torch.cuda.is_available():
        return (f"torch {torch.__version__} (CUDA {torch.version.cuda}) finds no usable GPU: no NVIDIA driver, "
                f"a driver too old for CUDA {torch.version.cuda}, or no GPU (see nvidia-smi)")
    return None


def resolve(requested: str) -> str:
    """`cpu` or `cuda` for a run's `device` field; ConfigError when `cuda` is asked and cannot be had."""
    if requested == "cpu":
        return "cpu"
    problem = cuda_problem()
    if requested == "cuda" and problem is not None:
        raise ConfigError(f"field 'device': cuda, but {problem}; use device: auto or cpu to train on the CPU")
    return "cpu" if problem else "cuda"


def uses_bf16(cfg: Any) -> str | None:
    """The field that puts bf16 arithmetic on the device, or None."""
    if cfg.mixed_precision == "bf16":
        return "mixed_precision"
    return "torch_dtype" if cfg.torch_dtype == "bfloat16" else None


def check(cfg: Any, device: str) -> None:
    """Refuse a run that would not do what its config says on `device` (torch.cuda is read, so a
    patched torch.cuda tests this without a GPU)."""
    import torch

    if device == "cpu":
        if cfg.mixed_precision == "fp16":
            raise ConfigError("field 'mixed_precision': fp16 autocast needs a CUDA device; use bf16 on this machine")
        return
    count = torch.cuda.device_count()
    if count > 1:
        raise ConfigError(f"this run sees {count} GPUs (CUDA_VISIBLE_DEVICES="
                          f"{os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); a run trains on exactly one — the "
                          f"Trainer would spread it over all {count} with DataParallel ({count}x the batch size). "
                          "Set CUDA_VISIBLE_DEVICES to one id, or start it through `tc_lib run` (one GPU per run)")
    field = uses_bf16(cfg)
    emulated = emulated_bf16([0])
    if field and emulated:
        raise ConfigError(f"field {field!r}: bf16 is emulated, not native, on {emulated}: slow, and "
                          "not what was asked; use mixed_precision: fp16 with torch_dtype: float32 on this GPU")


@functools.cache  # read once per process: the record, the Trainer and the preflight ask; flags do not change
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo); empty elsewhere."""
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def native_bf16(device: str) -> bool:
    """Whether `device` (cpu | cuda, the run's one GPU) computes bf16 natively rather than emulating it."""
    if device == "cuda":
        return emulated_bf16([0]) is None
    return bool(NATIVE_BF16_CPU_FLAGS & cpu_flags())


def resolve_autocast(mixed_precision: str, device: str) -> str:
    """The autocast a run trains under on `device`: `auto` is bf16 where the device computes bf16 natively
    (a GPU of compute capability 8.0+, a CPU with AVX512-BF16 or AMX) and no elsewhere; any other value
    stands as it is. Resolved in the run, on the machine that trains it; the record keeps the result."""
    if mixed_precision != AUTO:
        return mixed_precision
    return "bf16" if native_bf16(device) else "no"


def emulated_bf16(indices) -> str | None:
    """The first of these GPUs that only emulates bf16, as `name (compute capability x.y; native from
    8.0, Ampere)`; None when all of them do it natively."""
    import torch

    for index in indices:
        capability = tuple(torch.cuda.get_device_capability(index))
        if capability < NATIVE_BF16_CAPABILITY:
            return (f"{torch.cuda.get_device_name(index)} (compute capability {capability[0]}.{capability[1]}; "
                    "native from 8.0, Ampere)")
    return None


def describe(device: str, requested: str) -> dict[str, Any]:
    """The record's device section: what the run actually used and what it saw."""
    import torch

    info: dict[str, Any] = {"requested": requested, "type": device, "name": None, "capability": None,
                            "count_visible": torch.cuda.device_count() if torch.cuda.is_available() else 0,
                            "torch": torch.__version__, "cuda": torch.version.cuda,
                            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if device == "cuda":
        major, minor = torch.cuda.get_device_capability(0)
        info.update(name=torch.cuda.get_device_name(0), capability=f"{major}.{minor}")
    else:
        info["name"] = cpu_model()
    return info


def cpu_model() -> str | None:
    """The processor's model name (Linux /proc/cpuinfo, else what platform says)."""
    from pathlib import Path

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def memory_peaks() -> dict[str, float]:
    """Peak CUDA memory of the run's GPU since the last reset: allocated (tensors) and reserved (what
    the caching allocator holds: what nvidia-smi and an out-of-memory error see)."""
    import torch

    return {"peak_cuda_allocated_mb": round(torch.cuda.max_memory_allocated(0) / 2**20, 1),
            "peak_cuda_reserved_mb": round(torch.cuda.max_memory_reserved(0) / 2**20, 1)}


def visible_gpus() -> list[str]:
    """The GPU ids a local grid hands out, one per run: CUDA_VISIBLE_DEVICES as this process has it
    (ids or UUIDs), else every GPU torch counts; none on a machine without a usable GPU."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [gpu.strip() for gpu in visible.split(",") if gpu.strip() not in ("", "-1")]
    if cuda_problem() is not None:
        return []
    import torch

    return [str(i) for i in range(torch.cuda.device_count())]


def parse_gpus(text: str) -> list[str]:
    """--gpus 0,1,3 (or GPU UUIDs): distinct, non-empty ids."""
    gpus = [gpu.strip() for gpu in text.split(",")]
    if not all(gpus) or len(set(gpus)) != len(gpus):
        raise ConfigError(f"--gpus {text!r}: expected distinct GPU ids separated by commas, e.g. 0,1,2,3")
    return gpus
