"""`python -m tc_lib predict` and `python -m tc_lib export-model`: a finished run as a classifier."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path

from .errors import ConfigError, DataError

TEXT_SHOWN = 60  # characters of each text in the terminal table


def read_inputs(path: Path, *, column: str) -> list[str]:
    """Texts from a .txt (one per line), .csv or .jsonl file (the `column` field); errors name file and line."""
    try:
        content = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"--file {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"--file {path}: cannot read it as UTF-8 text ({err.__class__.__name__})") from None
    suffix = path.suffix.lower()
    if suffix == ".txt":
        texts = [line for line in content.splitlines() if line.strip()]
    elif suffix == ".csv":
        reader = csv.DictReader(io.StringIO(content))
        if column not in (reader.fieldnames or []):
            raise DataError(f"--file {path}: no column {column!r} (columns: {', '.join(reader.fieldnames or [])}); "
                            "name it with --column")
        texts = [row[column] or "" for row in reader]
    elif suffix == ".jsonl":
        texts = []
        for lineno, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                raise DataError(f"--file {path} line {lineno}: not JSON") from None
            if not isinstance(row, dict) or not isinstance(row.get(column), str):
                raise DataError(f"--file {path} line {lineno}: expected an object with a string field {column!r}")
            texts.append(row[column])
    else:
        raise DataError(f"--file {path}: expected a .txt, .csv or .jsonl file")
    if not texts:
        raise DataError(f"--file {path}: no texts in it")
    return texts


def _print_table(rows: list[dict]) -> None:
    names = list(rows[0]["probabilities"])
    width = max(len("label"), *(len(n) for n in names))
    print(f"{'label':<{width}}  " + "  ".join(f"{n:>{max(len(n), 6)}}" for n in names) + "  text")
    for row in rows:
        text = row["text"] if len(row["text"]) <= TEXT_SHOWN else row["text"][:TEXT_SHOWN - 1] + "…"
        print(f"{row['label']:<{width}}  " + "  ".join(f"{row['probabilities'][n]:>{max(len(n), 6)}.4f}"
                                                     for n in names) + f"  {text}")


def _print_csv(rows: list[dict]) -> None:
    names = list(rows[0]["probabilities"])
    writer = csv.writer(sys.stdout)
    writer.writerow(["text", "label", *(f"p_{n}" for n in names)])
    for row in rows:
        writer.writerow([row["text"], row["label"], *(f"{row['probabilities'][n]:.6f}" for n in names)])


def _chosen_run(args) -> Path:
    from .report.best import best_run, plural

    if args.best is None:
        if args.run_dir is None:
            raise ConfigError("predict: name a RUN_DIR, or --best RUNS_DIR --dataset D")
        if args.dataset is not None or args.method is not None:
            raise ConfigError("predict: --dataset and --method go with --best RUNS_DIR")
        return Path(args.run_dir)
    if args.run_dir is not None:
        raise ConfigError("predict: give a RUN_DIR or --best RUNS_DIR, not both")
    if args.dataset is None:
        raise ConfigError("predict --best: name the dataset with --dataset")
    row = best_run(args.best, dataset=args.dataset, method=args.method)
    print(f"best of {plural(row['n_arms'], 'arm')} on {row['dataset']} by mean dev macro-F1 (test never used): "
          f"{row['model']} · {row['name']} ({plural(row['n_seeds'], 'seed')}, dev {row['dev_mean']:.4f}); its best seed "
          f"{row['seed']} (dev {row['dev_score']:.4f}): {row['run_dir']}", file=sys.stderr)
    return Path(row["run_dir"])


def _quiet_loading() -> None:
    """transformers would say the base's head is "newly initialized" — the run's trained head is loaded
    right after — and which device a pipeline uses; the command line is the application, it may say so."""
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()


def _cmd_predict(args) -> int:
    from .inference import predict

    if bool(args.text) == bool(args.file):
        raise ConfigError("predict: give --text (repeatable) or --file, one of the two")
    if args.json and args.csv:
        raise ConfigError("predict: --json or --csv, not both")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be a positive integer, got {args.batch_size}")
    run_dir = _chosen_run(args)
    texts = list(args.text) if args.text else read_inputs(Path(args.file), column=args.column)
    _quiet_loading()
    rows = predict(run_dir, texts, batch_size=args.batch_size, device=args.device)
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
    elif args.csv or not sys.stdout.isatty():
        _print_csv(rows)
    else:
        _print_table(rows)
    return 0


def _cmd_export_model(args) -> int:
    from .inference import export_model

    _quiet_loading()
    target = export_model(args.run_dir, to=args.to)
    print(f"wrote {target} (see its README.md): AutoModelForSequenceClassification.from_pretrained(\"{target}\")")
    return 0


def register(sub) -> None:
    p = sub.add_parser("predict", help="classify texts with a finished run's saved model")
    p.add_argument("run_dir", nargs="?", metavar="RUN_DIR", help="a run folder (outputs/runs/<run_id>)")
    p.add_argument("--best", metavar="RUNS_DIR", help="pick the best run of --dataset under RUNS_DIR, on dev only")
    p.add_argument("--dataset", help="with --best: the dataset (as the report names it, e.g. restaurant_sup)")
    p.add_argument("--method", help="with --best: only this method's arms (e.g. lora)")
    p.add_argument("--text", action="append", default=[], help="a text to classify (repeatable); aspect "
                   "datasets: 'aspect [SEP] sentence'")
    p.add_argument("--file", help="texts from a .txt (one per line), .csv or .jsonl file")
    p.add_argument("--column", default="text", help="--file .csv/.jsonl: the field holding the text (default text)")
    p.add_argument("--json", action="store_true", help="print a JSON list of {text, label, probabilities}")
    p.add_argument("--csv", action="store_true", help="print CSV (the default when stdout is not a terminal)")
    p.add_argument("--batch-size", type=int, default=32, help="texts per forward pass (default 32)")
    p.add_argument("--device", default="cpu", help="torch device for the model (default cpu; e.g. cuda:0)")
    p.set_defaults(func=_cmd_predict)
    e = sub.add_parser("export-model", help="write a run's model as a plain Hugging Face model folder")
    e.add_argument("run_dir", metavar="RUN_DIR", help="a run folder (outputs/runs/<run_id>)")
    e.add_argument("--to", required=True, metavar="DIR", help="a new folder for the model")
    e.set_defaults(func=_cmd_export_model)
