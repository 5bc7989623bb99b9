"""`python -m tc_lib {data,train,models,run,status,report,memory,predict,export-model} ...` — the one place that parses arguments and prints.

Each command lives beside what it drives and registers itself with `register(subparsers)`."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from .errors import TcError, first_line


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)  # `--gpus` must never be read as `--gpus-per-run`
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # one line, exit 2 — no usage dump
        print(f"error: {self.prog}: {message}", file=sys.stderr)
        raise SystemExit(2)


# ---------------------------------------------------------------- data


def _cmd_data(args: argparse.Namespace) -> int:
    from . import data

    root = Path(args.root) if args.root else None
    if args.action == "fetch":
        for row in data.fetch(args.names, root=root, base_url=args.mirror):
            print(f"{row['status']:>10}  {row['file']}")
        return 0
    if args.action == "verify":
        rows = data.verify(args.names, root=root)
        for row in rows:
            print(f"{row['status']:>8}  {row['file']}")
        print(f"data root: {root or data.data_root()}")
        bad = [row for row in rows if row["status"] != "ok"]
        if bad:
            print(f"error: {len(bad)} of {len(rows)} files missing or wrong; first: {bad[0]['detail']}", file=sys.stderr)
            return 2
        return 0
    if not 0 <= args.data_seed < 2**32:  # numpy's seeds; a run's data_seed is checked the same way
        raise TcError(f"--data-seed must be an integer in [0, 2**32), got {args.data_seed}")
    rows = data.dataset_info(args.names, root=root, data_seed=args.data_seed,
                             verify_checksums=not args.no_verify)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    print(f"{'dataset':<16}{'split':<7}{'size':>6}  label counts")
    for row in rows:
        counts = ", ".join(f"{k} {v}" for k, v in row["label_counts"].items())
        print(f"{row['dataset']:<16}{row['split']:<7}{row['size']:>6}  {counts}")
    return 0


# ---------------------------------------------------------------- train


def _cmd_train(args: argparse.Namespace) -> int:
    from .config import RunConfig
    from .grid.params import check_options, parse_assignments
    from .model_cache import check_available
    from .train import train_and_evaluate

    values: dict[str, Any] = {"model": args.model, "dataset": args.dataset[0] if len(args.dataset) == 1
                              else list(args.dataset), "method": args.method, "seed": args.seed}
    for key in ("epochs", "max_train_samples", "output_dir", "learning_rate", "device"):
        if getattr(args, key) is not None:
            values[key] = getattr(args, key)
    values.update(parse_assignments(args.set))
    check_options(values, source="--set")
    cfg = RunConfig.from_dict(values, source="--set")
    check_available([cfg.model])  # a hub id neither cached nor reachable: one line now, not after retries
    try:
        result = train_and_evaluate(cfg)
    except KeyboardInterrupt:
        print(f"interrupted: the run is left 'interrupted' ({cfg.run_dir}/metrics.json); run the same command to "
              "train it again", file=sys.stderr)
        return 130
    except TcError:
        raise
    except Exception as err:
        run_dir = cfg.run_dir
        print(f"error: run failed ({err.__class__.__name__}: {first_line(err)}); record: {run_dir}/metrics.json",
              file=sys.stderr)
        return 1
    print(result.run_dir)
    return 0


def _register_data(sub) -> None:
    from .data import DATASET_NAMES, DEFAULT_DATA_SEED

    p = sub.add_parser("data", help="fetch, verify and describe the datasets")
    p.add_argument("action", choices=["fetch", "verify", "info"])
    p.add_argument("names", nargs="*", metavar="NAME", help=f"dataset names (default: all): {', '.join(DATASET_NAMES)}")
    p.add_argument("--root", help="data root (default: $TC_DATA_DIR or data/)")
    p.add_argument("--mirror", help="base URL replacing the raw-file host (fetch; also $TC_DATA_MIRROR)")
    p.add_argument("--json", action="store_true", help="info: print JSON")
    p.add_argument("--data-seed", type=int, default=DEFAULT_DATA_SEED, help="AG News split / few-shot seed")
    p.add_argument("--no-verify", action="store_true", help="info: read files without checking sha256")
    p.set_defaults(func=_cmd_data)


def _register_train(sub) -> None:
    from .methods import METHODS

    p = sub.add_parser("train", help="train one configuration and print its run folder")
    p.add_argument("--model", default="minilm")
    p.add_argument("--dataset", nargs="+", default=["restaurant_sup"], help="one name, or several to concatenate")
    p.add_argument("--method", choices=list(METHODS), default="full")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--epochs", type=int)
    p.add_argument("--learning-rate", type=float, dest="learning_rate")
    p.add_argument("--max-train-samples", type=int)
    p.add_argument("--output-dir")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"),
                   help="auto (default): CUDA when usable, else CPU; cuda: fail rather than train on the CPU")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="any RunConfig field")
    p.set_defaults(func=_cmd_train)


def _cmd_models(args: argparse.Namespace) -> int:
    from . import model_cache
    from .grid.params import iter_grid

    if args.action == "list":
        rows = model_cache.list_cached()
        for row in rows:
            print(f"{row['model']:<48}{row['size_mb']:>10.1f} MB  {', '.join(row['revisions'])}")
        print(f"{len(rows)} models in {model_cache.model_dir()}")
        return 0
    names = list(args.names)
    for name in names:  # a name that is no hub id, no registry model and no folder would be skipped silently
        if not model_cache.is_hub_id(name) and name not in model_cache.REGISTRY_NAMES and not Path(name).exists():
            raise TcError(f"models fetch {name}: not a hub id (org/name or name), a registry model "
                          f"({', '.join(model_cache.REGISTRY_NAMES)}) or an existing folder")
    for params in args.params:
        names += [cfg.model for cfg in iter_grid(params)]
    if not names:
        print("error: models fetch: name hub ids or give --params FILE", file=sys.stderr)
        return 2
    from huggingface_hub.utils import disable_progress_bars

    disable_progress_bars()  # one line per model below, and errors stay one line
    fetched = model_cache.fetch(names)
    for name, path in fetched:
        print(f"ok  {name}  ->  {path}")
    print(f"{len(fetched)} models verified in {model_cache.model_dir()}. On the compute nodes set:\n"
          f"  export TC_MODEL_DIR={model_cache.model_dir()} HF_HUB_OFFLINE=1")
    return 0


def _register_models(sub) -> None:
    p = sub.add_parser("models", help="fetch hub models into a shared cache (for nodes without internet), list it")
    p.add_argument("action", choices=["fetch", "list"])
    p.add_argument("names", nargs="*", metavar="HUB_ID", help="hub ids to fetch")
    p.add_argument("--params", action="append", default=[], metavar="FILE", help="fetch every model a grid needs")
    p.set_defaults(func=_cmd_models)


def _cmd_methods(args: argparse.Namespace) -> int:
    from .methods import METHODS, OPTIONS

    for method in METHODS.values():
        print(f"{method.name:<8} {method.label} ({method.library}; default learning rate {method.learning_rate:g})")
        for name in method.options:
            option = OPTIONS[name]
            print(f"    {name} = {option.default!r}  # {option.kind}, {option.expected()}: {option.help}")
    print("Set an option as a params-file key, with `train --set NAME=VALUE`, or in the training notebook's "
          "method_options = {NAME: VALUE}.")
    return 0


def _register_methods(sub) -> None:
    p = sub.add_parser("methods", help="the fine-tuning methods and each one's options (name, default, help)")
    p.set_defaults(func=_cmd_methods)


def build_parser() -> argparse.ArgumentParser:
    from . import inference_command
    from .grid import command as grid_command
    from .grid import status as grid_status
    from .memory import command as memory_command
    from .report import command as report_command

    parser = _Parser(prog="python -m tc_lib", description="Fine-tuning study kit: data, training, grids, "
                     "report and memory estimates.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for register in (_register_data, _register_train, _register_models, _register_methods, grid_command.register, grid_status.register,
                     report_command.register, report_command.register_plan, memory_command.register, inference_command.register):
        register(sub)
    return parser


def _quiet_libraries() -> None:
    """Errors reach the user as one line from us; the libraries' retry and load chatter would bury it.
    (The command line is the application: it, not the library, sets logging.)"""
    import logging

    for name in ("huggingface_hub", "transformers", "urllib3"):
        logging.getLogger(name).setLevel(logging.ERROR)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return args.func(args)
    except TcError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head`
        return 0
