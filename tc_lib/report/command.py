"""`python -m tc_lib report` (build the report from a folder of run records), `python -m tc_lib export` and
`python -m tc_lib plan-seeds` (the seeds a study needs, from pilot records)."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from ..config import DEFAULT_OUTPUT_DIR
from ..errors import TcError
from . import plan_seeds
from .render import build_report


NO_SUCCESS = ("note: no run in {runs} succeeded; the {what} lists each run's status and first error line "
              "(`python -m tc_lib status PARAMS` shows the same for a grid)")


def _no_success(runs_dir: Path, params: list[str]) -> bool:
    from .runs import current_runs, read_runs
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
    p.add_argument("--runs", default=DEFAULT_OUTPUT_DIR, help="folder of run records")
    p.add_argument("--out", default="outputs/report", help="where report.{ipynb,html,pdf} and results.{csv,xlsx} go")
    p.add_argument("--pdf", action="store_true", help="also print report.pdf with headless Chromium")
    p.add_argument("--params", action="append", default=[], metavar="FILE",
                   help="only the runs of this grid file (repeatable)")
    p.add_argument("--memory", default="outputs/memory", help="folder of `memory validate`'s memory.json")
    p.set_defaults(func=_cmd_report)
    e = sub.add_parser("export", help="the current runs as a tidy CSV and an XLSX (runs, arms, hand-in sheets)")
    e.add_argument("--runs", default=DEFAULT_OUTPUT_DIR, help="folder of run records")
    e.add_argument("--params", action="append", default=[], metavar="FILE",
                   help="only the runs of this grid file (repeatable)")
    e.add_argument("--csv", metavar="PATH", help="per-run table")
    e.add_argument("--xlsx", metavar="PATH", help="workbook with the runs, arms and hand-in sheets")
    e.set_defaults(func=_cmd_export)


def _pts(x: float) -> str:
    return "—" if math.isnan(x) else f"{100 * x:.2f} pts"


def _seeds(x: float) -> str:
    return "—" if math.isnan(x) else ("never (no gap)" if x == math.inf else f"{int(x)} seeds")


def _cmd_plan(args) -> int:
    if not (0 < args.delta < 1):
        raise TcError(f"--delta {args.delta:g}: expected a difference of {args.metric} in (0, 1), e.g. 0.01 for one point")
    if not (0 < args.alpha < 1) or not (0 < args.power < 1):
        raise TcError("--alpha and --power: expected numbers in (0, 1)")
    if not Path(args.records).is_dir():
        raise TcError(f"{args.records}: no folder of run records (e.g. outputs/runs of a pilot grid)")
    arms, pairs = plan_seeds.plan_tables(Path(args.records), delta=args.delta, alpha=args.alpha, power=args.power,
                              metric=args.metric)
    if arms.empty:
        raise TcError(f"{args.records}: no arm with at least 2 successful seeds: the between-seed spread cannot be "
                      "estimated; run a pilot with 2-3 seeds per arm first")
    print(f"seed plan for a {_pts(args.delta)} {args.metric} difference: paired t-test on seed-wise differences "
          f"(statsmodels TTestPower), {args.power:.0%} power, two-sided alpha {args.alpha:g}")
    print("per arm (the sd of a difference taken as sqrt(2) x the arm's between-seed sd):")
    for r in arms.itertuples():
        print(f"  {r.dataset:<16} {r.arm:<40} n={r.n}  sd {_pts(r.sd)}  detects >= {_pts(r.detectable)} with n={r.n}; "
              f"{_pts(args.delta)} needs {_seeds(r.n_needed)}")
    if len(pairs):
        print("per compared pair (the observed sd of the paired differences):")
        for r in pairs.itertuples():
            print(f"  {r.dataset:<16} {r.pair}  n={r.n}  diff {_pts(r.diff)}  sd_diff {_pts(r.sd_diff)}  detects >= "
                  f"{_pts(r.detectable)}; {_pts(args.delta)} needs {_seeds(r.n_needed)}; the observed gap needs "
                  f"{_seeds(r.n_for_diff)}")
    return 0


def register_plan(sub) -> None:
    p = sub.add_parser("plan-seeds", help="seeds a study needs to detect a difference, from pilot records")
    p.add_argument("records", help="folder of run records with 2+ seeds per arm (e.g. outputs/runs)")
    p.add_argument("--delta", type=float, required=True, help="the difference to detect, e.g. 0.01 (one point)")
    p.add_argument("--metric", default="macro_f1", choices=plan_seeds.stats.METRICS, help="the score (default macro_f1)")
    p.add_argument("--alpha", type=float, default=0.05, help="two-sided significance level (default 0.05; divide "
                                                             "by the number of planned tests for a Holm-safe plan)")
    p.add_argument("--power", type=float, default=plan_seeds.stats.POWER, help="the power wanted (default 0.8)")
    p.set_defaults(func=_cmd_plan)
