"""The memory answer in the settings practitioners train with, and its picture (stacked bars).

Each bar is the peak of one setting split into what holds it at that moment; the parts add up to the
peak exactly (at a forward/backward peak: weights, optimizer states, autocast copies, activations, and
logits + transients — which include the gradients produced so far; at an optimizer-step peak: weights,
and optimizer states + all gradients + step temporaries).
"""

from __future__ import annotations

import functools
from typing import Any, Sequence

from .estimate import GIB, Breakdown, estimate

MODELS = ("open_llama_3b", "llama-3.2-3b")
SHAPES = ((1, 2048), (64, 128))
# (method, setting label, torch_dtype, mixed_precision, optimizer): how each is trained in practice
SETTINGS = (
    ("full", "fp32 + bf16 autocast", "float32", "bf16", "adamw_fused"),
    ("full", "pure bf16", "bfloat16", "no", "adamw_fused"),
    ("full", "fp32 + autocast, 8-bit AdamW", "float32", "bf16", "adamw_8bit"),
    ("lora", "bf16 base, fp32 LoRA, autocast", "bfloat16", "bf16", "adamw_fused"),
    ("lora", "fp32 base + autocast", "float32", "bf16", "adamw_fused"),
    ("adapter", "bf16 base, fp32 adapters, autocast", "bfloat16", "bf16", "adamw_fused"),
    ("adapter", "fp32 base + autocast", "float32", "bf16", "adamw_fused"),
)
SEGMENTS = ("weights", "optimizer (+ gradients)", "autocast copies", "activations", "logits + transients")
GPU_SIZES_GB = (16, 24, 32, 40, 48, 80, 94, 141, 192)  # common accelerator memory sizes (decimal GB)


def plan_bytes(peak: int) -> int:
    """What to plan for: +10 % allocator slack and 2 GiB for the CUDA context and kernels."""
    return int(peak * 1.10 + 2 * GIB)


def smallest_gpu(nbytes: int) -> str:
    fits = [g for g in GPU_SIZES_GB if g * 1e9 >= nbytes]
    return f"{fits[0]} GB" if fits else f"> {GPU_SIZES_GB[-1]} GB (shard: ZeRO / FSDP)"


def segments(b: Breakdown) -> dict[str, int]:
    """The peak split into SEGMENTS; the values add up to b.peak."""
    if b.peak_phase == "optimizer step":
        return {"weights": b.weights, "optimizer (+ gradients)": b.gradients + b.optimizer_states
                + b.optimizer_temporaries, "autocast copies": 0, "activations": 0, "logits + transients": b.inputs}
    return {"weights": b.weights, "optimizer (+ gradients)": b.optimizer_states, "autocast copies": b.autocast_copies,
            "activations": b.activations, "logits + transients": b.logits_loss + b.transients + b.inputs}


@functools.lru_cache(maxsize=4)
def practice(models: Sequence[str] = MODELS, shapes: Sequence[tuple[int, int]] = SHAPES) -> tuple[dict, ...]:
    """One row per model × shape × checkpointing × setting: the estimate and its parts (cached: the
    report's table and figure share it)."""
    rows = []
    for model in models:
        for batch, seq in shapes:
            for ckpt in (False, True):
                for method, label, dtype, mixed, optimizer in SETTINGS:
                    b = estimate(model, method=method, batch_size=batch, seq_len=seq, torch_dtype=dtype,
                                 mixed_precision=mixed, optimizer=optimizer, gradient_checkpointing=ckpt)
                    rows.append({"model": model, "shape": f"{batch}×{seq}", "checkpointing": ckpt, "method": method,
                                 "setting": label, "breakdown": b, **segments(b), "peak": b.peak,
                                 "plan": plan_bytes(b.peak), "gpu": smallest_gpu(plan_bytes(b.peak))})
    return tuple(rows)


def stacked_bars(bars: Sequence[tuple[str, Breakdown]], *, title: str):
    """One stacked bar per (label, breakdown), parts in GiB; each bar's patches carry gid `bar-<i>`."""
    import matplotlib.pyplot as plt

    from ..fonts import setup_fonts

    setup_fonts()
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(bars) + 2), 4.2))
    bottoms = [0.0] * len(bars)
    for name in SEGMENTS:
        heights = [segments(b)[name] / GIB for _, b in bars]
        patches = ax.bar(range(len(bars)), heights, bottom=bottoms, label=name, width=0.7)
        for i, patch in enumerate(patches):
            patch.set_gid(f"bar-{i}-{name.replace(' ', '_')}")
        bottoms = [x + h for x, h in zip(bottoms, heights)]
    for i, top in enumerate(bottoms):
        ax.text(i, top, f"{top:.1f}", ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(bars)), [label for label, _ in bars], rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("GiB")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper right")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return fig


def figure_for(rows: Sequence[dict[str, Any]], *, model: str, shape: str, checkpointing: bool):
    chosen = [r for r in rows if r["model"] == model and r["shape"] == shape and r["checkpointing"] == checkpointing]
    return stacked_bars([(f"{r['method']}: {r['setting']}", r["breakdown"]) for r in chosen],
                        title=f"{model}, batch×seq {shape}, checkpointing {'on' if checkpointing else 'off'}")
