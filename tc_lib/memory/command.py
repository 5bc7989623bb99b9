"""`python -m tc_lib memory`: print an estimate (tc_lib.memory) as a breakdown or a side-by-side comparison."""

from __future__ import annotations

import argparse
import json
import sys
import os

from ..errors import ConfigError
from ..methods import METHODS, OPTIONS
from .configs import load_config, shipped_models
from .estimate import GIB, Breakdown, accelerate_estimate, estimate
from .setup import ATTENTIONS, MIXED_PRECISIONS, OPTIMIZERS, TORCH_DTYPES


ROWS = (("weights", "W  weights"), ("gradients", "G  gradients"), ("optimizer_states", "O  optimizer states"),
        ("optimizer_temporaries", "T  optimizer-step temporaries"), ("autocast_copies", "C  autocast weight copies"),
        ("activations", "A  activations (saved for backward)"), ("logits_loss", "Λ  logits / loss (saved)"),
        ("transients", "X  transients at the forward/backward peak"), ("inputs", "   inputs"))


def gib(nbytes: float) -> str:
    return f"{nbytes / GIB:,.2f} GiB"


def _precision(setup) -> str:
    return f"weights {setup.torch_dtype}, mixed precision {setup.mixed_precision}"


def format_breakdown(b: Breakdown) -> str:
    s = b.setup
    lines = [f"{b.model}: {s.method}, batch {s.batch_size} × seq {s.seq_len}, {_precision(s)}, {s.optimizer}, "
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
    lines = [f"{base.model}: batch {base.setup.batch_size} × seq {base.setup.seq_len}, {_precision(base.setup)}, "
             f"{base.setup.optimizer}, checkpointing {'on' if base.setup.gradient_checkpointing else 'off'}", head]
    lines.append(f"{'trainable parameters':<46}" + "".join(f"{r.params_trainable:>16,}" for r in rows))
    for key, label in ROWS:
        lines.append(f"{label:<46}" + "".join(f"{gib(getattr(r, key)):>16}" for r in rows))
    lines.append(f"{'PEAK':<46}" + "".join(f"{gib(r.peak):>16}" for r in rows))
    lines.append(f"{'saving vs ' + base.setup.method:<46}" + "".join(
        f"{gib(base.peak - r.peak) + f' ({100 * (1 - r.peak / base.peak):.0f}%)':>16}" for r in rows))
    return "\n".join(lines)


def _cmd_validate(args) -> int:
    from pathlib import Path

    from .records import write_records

    if args.jobs < 1:
        raise ConfigError(f"--jobs must be a positive integer, got {args.jobs}")
    out = Path(args.out)
    try:  # before minutes of estimates: a folder that cannot take the file fails now
        out.mkdir(parents=True, exist_ok=True)
        (out / ".write-test").touch()
        (out / ".write-test").unlink()
    except OSError as err:
        raise ConfigError(f"--out {args.out}: cannot write memory.json there ({err.strerror or err})") from None
    path = write_records(out, jobs=args.jobs)
    data = json.loads(path.read_text(encoding="utf-8"))
    worst = max(abs(r["error %"]) for r in data["validation"])
    modelled = [abs(r["error %"]) for r in data["ledger"] if r["error %"] is not None]
    print(f"{path}: {len(data['practice'])} practitioner settings estimated; {len(data['validation'])} measured "
          f"validations, largest error {worst:.3f} %; ledger of {len(data['ledger'])} published figures, "
          f"{len(modelled)} modelled" + (f", largest error {max(modelled):.1f} %" if modelled else "")
          + " (`memory ledger` shows them)")
    return 0


def _cmd_ledger(args) -> int:
    from .ledger import LEDGER_FILE, format_ledger, ledger_rows

    rows = ledger_rows(args.ledger or LEDGER_FILE)
    print(json.dumps(rows, indent=2, ensure_ascii=False) if args.json else format_ledger(rows))
    return 0


def _cmd_memory(args) -> int:
    if args.action == "validate":
        return _cmd_validate(args)
    if args.action == "ledger":
        return _cmd_ledger(args)
    if args.precision is not None:
        raise ConfigError("--precision was split into --torch-dtype (float32 | bfloat16: the dtype the weights "
                          "are loaded in) and --mixed-precision (no | bf16 | fp16); amp_bf16 = --torch-dtype float32 "
                          "--mixed-precision bf16, bf16 = --torch-dtype bfloat16 --mixed-precision no")
    for key in ("batch_size", "seq_len"):
        if getattr(args, key) < 1:
            raise ConfigError(f"--{key.replace('_', '-')} must be a positive integer, got {getattr(args, key)}")
    options = {key: getattr(args, key) for key in OPTIONS if getattr(args, key) is not None}  # the flags given
    setting = dict(batch_size=args.batch_size, seq_len=args.seq_len, torch_dtype=args.torch_dtype,
                   mixed_precision=args.mixed_precision, optimizer=args.optimizer, attention=args.attention,
                   gradient_checkpointing=args.gradient_checkpointing)
    config = load_config(args.model, online=args.online)
    if args.compare:  # each method gets the options that apply to it
        rows = [estimate(config, method=m, **setting, **{k: v for k, v in options.items() if k in METHODS[m].options})
                for m in METHODS]
    else:
        rows = [estimate(config, method=args.method, **setting, **options)]
    for row in rows:
        object.__setattr__(row, "model", args.model)
    if args.plot:
        from .answer import stacked_bars

        fig = stacked_bars([(f"{r.setup.method}", r) for r in rows], title=f"{args.model}: batch {args.batch_size} × "
                           f"seq {args.seq_len}, weights {args.torch_dtype}, autocast {args.mixed_precision}")
        try:
            fig.savefig(args.plot)
        except (OSError, ValueError) as err:
            raise ConfigError(f"--plot {args.plot}: cannot write it ({str(err).splitlines()[0]})") from None
    if args.json:
        print(json.dumps([r.to_dict() for r in rows] if args.compare else rows[0].to_dict(), indent=2))
    else:
        print(format_comparison(rows) if args.compare else format_breakdown(rows[0]))
        half = args.torch_dtype != "float32" or args.mixed_precision != "no"
        print(f"(accelerate estimate-memory would say {gib(accelerate_estimate(config, half_precision=half))} "
              "for any method and batch; plan the GPU with ~1–2 GB CUDA context and 5–10 % allocator slack on top)")
    if args.torch_dtype == "bfloat16" and any(r.setup.method == "full" for r in rows):  # as training says it
        print("note: full fine-tuning with bfloat16 weights keeps no fp32 master copy (updates below bf16's "
              "rounding are lost); `tc_lib train` refuses it unless allow_pure_bf16: true", file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("memory", help="estimate the GPU memory of one training step; `memory validate` writes the "
                                      "report's memory records (estimates + a measured CPU validation)")
    p.add_argument("action", nargs="?", choices=("estimate", "validate", "ledger"), default="estimate",
                   help="estimate (default): print one estimate; validate: write <--out>/memory.json for the report; "
                        "ledger: published CUDA measurements beside the estimate of the same kind")
    p.add_argument("--ledger", metavar="FILE", help="with ledger: another ledger file (default: the shipped "
                                                    "tc_lib/memory/published.yaml)")
    p.add_argument("--out", default="outputs/memory", help="with validate: where memory.json goes")
    p.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                   help="with validate: processes for the estimates (default: one per CPU core)")
    p.add_argument("--model", default="open_llama_3b",
                   help=f"shipped config ({', '.join(shipped_models())}), a local config.json, or a hub id")
    p.add_argument("--method", choices=list(METHODS), default="full")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--seq-len", type=int, default=2048)
    p.add_argument("--torch-dtype", choices=TORCH_DTYPES, default="float32",
                   help="dtype the weights are loaded in (trainable PEFT weights stay float32)")
    p.add_argument("--mixed-precision", choices=MIXED_PRECISIONS, default="bf16", help="autocast over the weights")
    p.add_argument("--precision", help=argparse.SUPPRESS)  # the old flag: answered with what replaced it
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adamw_fused",
                   help="adamw_fused is the HF Trainer's default (adamw_torch_fused); adamw is foreach")
    p.add_argument("--attention", choices=ATTENTIONS, default="sdpa")
    p.add_argument("--gradient-checkpointing", action="store_true")
    for option in OPTIONS.values():  # the method options, from the registry; only those given are passed on
        kind = {"nargs": "+"} if option.kind == "modules" else {"type": {"int": int, "float": float, "str": str}[option.kind]}
        p.add_argument(option.cli_flag, dest=option.name, choices=option.choices or None, help=option.help, **kind)
    p.add_argument("--online", action="store_true", help="look a hub id up on the Hugging Face hub")
    p.add_argument("--plot", metavar="FILE", help="also draw the breakdown as stacked bars (.png, .svg or .pdf)")
    p.add_argument("--compare", action="store_true", help="every method side by side")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_memory)
