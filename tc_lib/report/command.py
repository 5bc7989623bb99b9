"""`python -m tc_lib report` (build the report from a folder of run records) and `python -m tc_lib export`."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import TcError
from .render import build_report


NO_SUCCESS = ("note: no run in {runs} succeeded; the {what} lists each run's status and first error line "
              "(`python -m tc_lib status PARAMS` shows the same for a grid)")


def _no_success(runs_dir: Path, params: list[str]) -> bool:
    from ..runs import current_runs, read_runs
    from .export import select_runs

    return current_runs(select_runs(read_runs(runs_dir), params))[0].empty


def _cmd_report(args) -> int:
    for path in build_report(runs_dir=Path(args.runs), out_dir=Path(args.out), pdf=args.pdf,
                             params=[Path(p) for p in args.params], memory_dir=Path(args.memory)):
        print(path)
    if _no_success(Path(args.runs), args.params):
        print(NO_SUCCESS.format(runs=args.runs, what="report"), file=sys.stderr)
    return 0


def _cmd_export(args) -> int:
    from .export import write_export

    if args.csv is None and args.xlsx is None:
        raise TcError("export: give --csv PATH and/or --xlsx PATH")
    if not Path(args.runs).is_dir():
        raise TcError(f"{args.runs}: no runs folder; run a grid first (python -m tc_lib run params/quick.yaml)")
    try:
        written = write_export(Path(args.runs), csv=args.csv and Path(args.csv), xlsx=args.xlsx and Path(args.xlsx),
                               params=[Path(p) for p in args.params])
    except OSError as err:
        where = err.filename or " / ".join(str(x) for x in (args.csv, args.xlsx) if x)  # a full disk names none
        raise TcError(f"export: cannot write {where}: {err.strerror or err.__class__.__name__}") from None
    for path in written:
        print(path)
    if _no_success(Path(args.runs), args.params):
        print(NO_SUCCESS.format(runs=args.runs, what="table"), file=sys.stderr)
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="execute notebooks/report.ipynb and export HTML (and PDF)")
    p.add_argument("--runs", default="outputs/runs", help="folder of run records")
    p.add_argument("--out", default="outputs/report", help="where report.{ipynb,html,pdf} and results.{csv,xlsx} go")
    p.add_argument("--pdf", action="store_true", help="also print report.pdf with headless Chromium")
    p.add_argument("--params", action="append", default=[], metavar="FILE",
                   help="only the runs of this grid file (repeatable)")
    p.add_argument("--memory", default="outputs/memory", help="folder of `memory validate`'s memory.json")
    p.set_defaults(func=_cmd_report)
    e = sub.add_parser("export", help="the current runs as a tidy CSV and an XLSX (runs, arms, hand-in sheets)")
    e.add_argument("--runs", default="outputs/runs", help="folder of run records")
    e.add_argument("--params", action="append", default=[], metavar="FILE",
                   help="only the runs of this grid file (repeatable)")
    e.add_argument("--csv", metavar="PATH", help="per-run table")
    e.add_argument("--xlsx", metavar="PATH", help="workbook with the runs, arms and hand-in sheets")
    e.set_defaults(func=_cmd_export)
