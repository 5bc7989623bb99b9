"""`python -m tc_lib memory`: print an estimate (tc_lib.memory) as a breakdown or a side-by-side comparison."""

from __future__ import annotations

import json

from .errors import ConfigError
from .memory import (ATTENTIONS, GIB, METHODS, OPTIMIZERS, PRECISIONS, Breakdown, accelerate_estimate, estimate,
                     load_config, shipped_models)

ROWS = (("weights", "W  weights"), ("gradients", "G  gradients"), ("optimizer_states", "O  optimizer states"),
        ("optimizer_temporaries", "T  optimizer-step temporaries"), ("autocast_copies", "C  autocast weight copies"),
        ("activations", "A  activations (saved for backward)"), ("logits_loss", "Λ  logits / loss (saved)"),
        ("transients", "X  transients at the forward/backward peak"), ("inputs", "   inputs"))


def gib(nbytes: float) -> str:
    return f"{nbytes / GIB:,.2f} GiB"


def format_breakdown(b: Breakdown) -> str:
    s = b.setup
    lines = [f"{b.model}: {s.method}, batch {s.batch_size} × seq {s.seq_len}, {s.precision}, {s.optimizer}, "
             f"{s.attention}, checkpointing {'on' if s.gradient_checkpointing else 'off'}",
             f"parameters: {b.params_total:,} total, {b.params_trainable:,} trainable "
             f"({100 * b.params_trainable / b.params_total:.3f} %)"]
    lines += [f"  {label:<44}{gib(getattr(b, key)):>14}" for key, label in ROWS]
    lines += [f"  {'phase: ' + name:<44}{gib(value):>14}" for name, value in b.phases.items()]
    lines.append(f"  {'PEAK (' + b.peak_phase + ')':<44}{gib(b.peak):>14}")
    return "\n".join(lines)


def format_comparison(rows: list[Breakdown]) -> str:
    base = rows[0]
    head = f"{'':<46}" + "".join(f"{r.setup.method:>16}" for r in rows)
    lines = [f"{base.model}: batch {base.setup.batch_size} × seq {base.setup.seq_len}, {base.setup.precision}, "
             f"{base.setup.optimizer}, checkpointing {'on' if base.setup.gradient_checkpointing else 'off'}", head]
    lines.append(f"{'trainable parameters':<46}" + "".join(f"{r.params_trainable:>16,}" for r in rows))
    for key, label in ROWS:
        lines.append(f"{label:<46}" + "".join(f"{gib(getattr(r, key)):>16}" for r in rows))
    lines.append(f"{'PEAK':<46}" + "".join(f"{gib(r.peak):>16}" for r in rows))
    lines.append(f"{'saving vs ' + base.setup.method:<46}" + "".join(
        f"{gib(base.peak - r.peak) + f' ({100 * (1 - r.peak / base.peak):.0f}%)':>16}" for r in rows))
    return "\n".join(lines)


def _cmd_memory(args) -> int:
    options = dict(batch_size=args.batch_size, seq_len=args.seq_len, precision=args.precision,
                   optimizer=args.optimizer, attention=args.attention, gradient_checkpointing=args.gradient_checkpointing,
                   lora_r=args.lora_r, lora_targets=args.lora_targets, adapter_config=args.adapter_config)
    for key in ("batch_size", "seq_len", "lora_r"):
        if options[key] < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be a positive integer, got {options[key]}")
    config = load_config(args.model)
    methods = list(METHODS) if args.compare else [args.method]
    rows = [estimate(config, method=m, **options) for m in methods]
    for row in rows:
        object.__setattr__(row, "model", args.model)
    if args.json:
        print(json.dumps([r.to_dict() for r in rows] if args.compare else rows[0].to_dict(), indent=2))
    else:
        print(format_comparison(rows) if args.compare else format_breakdown(rows[0]))
        print(f"(accelerate estimate-memory would say {gib(accelerate_estimate(config, precision=args.precision))} "
              "for any method and batch; plan the GPU with ~1–2 GB CUDA context and 5–10 % allocator slack on top)")
    return 0


def register(sub) -> None:
    p = sub.add_parser("memory", help="estimate the GPU memory of one training step")
    p.add_argument("--model", default="open_llama_3b",
                   help=f"shipped config ({', '.join(shipped_models())}), a local config.json, or a hub id")
    p.add_argument("--method", choices=METHODS, default="full")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--precision", choices=PRECISIONS, default="amp_bf16")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw")
    p.add_argument("--attention", choices=ATTENTIONS, default="sdpa")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-targets", nargs="+", help="module names (default: the q and v projections)")
    p.add_argument("--adapter-config", choices=("seq_bn", "double_seq_bn"), default="seq_bn")
    p.add_argument("--compare", action="store_true", help="full vs LoRA vs adapter side by side")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_memory)
