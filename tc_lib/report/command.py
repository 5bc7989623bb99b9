"""`python -m tc_lib report`: build the report from a folder of run records."""

from __future__ import annotations

from pathlib import Path

from .render import build_report


def _cmd_report(args) -> int:
    for path in build_report(runs_dir=Path(args.runs), out_dir=Path(args.out), pdf=args.pdf):
        print(path)
    return 0


def register(sub) -> None:
    p = sub.add_parser("report", help="execute notebooks/report.ipynb and export HTML (and PDF)")
    p.add_argument("--runs", default="outputs/runs", help="folder of run records")
    p.add_argument("--out", default="outputs/report", help="where report.{ipynb,html,pdf} go")
    p.add_argument("--pdf", action="store_true", help="also print report.pdf with headless Chromium")
    p.set_defaults(func=_cmd_report)
