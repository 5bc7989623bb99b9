"""`python -m tc_lib run PARAMS`: expand a grid and execute it, with a progress bar and a summary."""

from __future__ import annotations

import sys
from pathlib import Path

from ..errors import ConfigError
from .execute import is_done
from .local import run_grid
from .params import load_grid, parse_assignments, select


class _ProgressBar:
    """Turns the executor's events into a tqdm bar, a line per failure and the plan line."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream, self.bar = stream, None

    def __call__(self, kind: str, info: dict) -> None:
        from tqdm.auto import tqdm

        if kind == "plan":
            jobs = f" ({info['jobs']} at a time)" if info["jobs"] > 1 else ""
            print(f"{info['total']} runs: {info['skipped']} already done, {info['todo']} to run{jobs}", file=self.stream)
            self.bar = tqdm(total=info["todo"], unit="run", file=self.stream, dynamic_ncols=True, mininterval=0)
        elif kind == "start":
            self.bar.set_postfix_str(info["run_id"], refresh=True)
        elif kind == "done":
            if info["error"] is not None:
                self.bar.write(f"FAILED {info['run_id']}: {info['error']}")
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _cmd_run(args) -> int:
    configs = load_grid(args.params, output_dir=args.output_dir)
    if args.only:
        configs = select(configs, parse_assignments(args.only, option="--only"))
    if not configs:
        raise ConfigError(f"{args.params}: no runs left after --only")
    if args.dry_run:
        for cfg in configs:
            print(f"{'done' if is_done(cfg) else 'todo':<5} {cfg.run_id}")
        print(f"{len(configs)} runs ({sum(map(is_done, configs))} done) -> {configs[0].output_dir}")
        return 0
    if args.jobs < 1:
        raise ConfigError(f"--jobs must be a positive integer, got {args.jobs}")
    progress = _ProgressBar()
    try:
        outcome = run_grid(configs, force=args.force, jobs=args.jobs, on_event=progress)
    except KeyboardInterrupt:
        progress.close()
        print("interrupted; run the same command again to finish the grid (finished runs are kept)", file=sys.stderr)
        raise
    progress.close()
    print(f"done: {len(outcome.succeeded)} succeeded, {len(outcome.skipped)} skipped, "
          f"{len(outcome.failed)} failed", file=sys.stderr)
    for run_id, message in outcome.failed:
        print(f"  failed {run_id}: {message} (see {Path(configs[0].output_dir) / run_id / 'train.ipynb'})",
              file=sys.stderr)
    return 1 if outcome.failed else 0


def register(sub) -> None:
    p = sub.add_parser("run", help="run a params grid through papermill (resumable)")
    p.add_argument("params", help="params/*.yaml")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether each is done")
    p.add_argument("--force", action="store_true", help="rerun finished runs too")
    p.add_argument("--only", action="append", default=[], metavar="KEY=VALUE", help="keep matching runs")
    p.add_argument("--output-dir", help="where run folders go (default: the grid's output_dir)")
    p.add_argument("--jobs", type=int, default=1, help="runs executed in parallel (default 1)")
    p.set_defaults(func=_cmd_run)
