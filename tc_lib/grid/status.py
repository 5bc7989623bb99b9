"""`python -m tc_lib status PARAMS`: where every run of a grid stands, from its record and its lease
alone (no scheduler is asked), with totals and the compute spent."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone

from ..config import RunConfig
from ..errors import ConfigError
from ..results import load_record
from .lease import check_settings, is_stale, read_lease
from .params import iter_grid, parse_assignments, select
from .tuning import load_plan, stage_note, tune_spec

STATES = ("done", "running", "stale", "interrupted", "failed", "pending")


@dataclass(frozen=True)
class RunState:
    run_id: str
    state: str  # one of STATES
    detail: str
    wall_time_s: float


def _ago(epoch: float) -> str:
    seconds = time.time() - epoch
    return f"{seconds:.0f} s ago" if seconds >= 0 else f"{-seconds:.0f} s in the future (a clock is off)"


def _when(epoch: float) -> str:
    try:
        return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"an impossible time ({epoch!r})"


def run_state(cfg: RunConfig) -> RunState:
    record, lease = load_record(cfg.run_dir), read_lease(cfg.run_dir)
    wall = float(record.timing.wall_time_s or 0) if record else 0.0
    if record and record.status == "success" and record.config_hash == cfg.config_hash:
        return RunState(cfg.run_id, "done", f"finished {record.finished_at}", wall)
    if lease is not None and lease.get("unusable"):
        return RunState(cfg.run_id, "stale", f"lease file unusable: {lease['unusable']}", wall)
    if lease is not None:
        where = (f"{lease.get('host')} pid {lease.get('pid')}, {lease.get('executor')} attempt {lease.get('attempt')}, "
                 f"since {_when(lease['since'])}, heartbeat {_ago(lease['heartbeat'])}")
        return RunState(cfg.run_id, "stale" if is_stale(lease) else "running", where, wall)
    if record is None:
        return RunState(cfg.run_id, "pending", "", 0.0)
    error = (record.error.message if record.error else None) or ""
    if record.status == "failed":
        return RunState(cfg.run_id, "failed", error.splitlines()[0] if error else "", wall)
    if record.status == "interrupted":
        return RunState(cfg.run_id, "interrupted", "stopped by the user; run the grid again", wall)
    # a `running` record with no lease: its holder died before it could hand the run back
    return RunState(cfg.run_id, "stale", f"record says running since {record.started_at}, no lease", wall)


def _cmd_status(args) -> int:
    check_settings()
    only = parse_assignments(args.only, option="--only")
    waiting, notes = [], {}
    if tune_spec(args.params) is None:
        configs = list(select(iter_grid(args.params, output_dir=args.output_dir), only))
    else:  # a tuned grid: its trials, then the final runs of the arms whose trials are done
        plan = load_plan(args.params, output_dir=args.output_dir, only=only)
        finals, waiting = plan.final_stage()
        configs = plan.first_stage()
        ids = {c.run_id for c in configs}
        configs += [c for c in finals if c.run_id not in ids]
        notes = {c.run_id: stage_note(c) for c in configs}
    if not configs:
        raise ConfigError(f"{args.params}: no runs left after --only")
    states = [run_state(cfg) for cfg in configs]
    for s in states:
        detail = "; ".join(x for x in (notes.get(s.run_id), s.detail) if x)
        print(f"{s.state:<12} {s.run_id}" + (f"  ({detail})" if detail else ""))
    for line in waiting:
        print(f"{'after tuning':<12} {line}")
    counts = Counter(s.state for s in states)
    compute = sum(s.wall_time_s for s in states)
    print(f"{len(states)} runs: " + ", ".join(f"{counts[k]} {k}" for k in STATES if counts[k])
          + f"; compute spent {compute / 3600:.2f} h -> {configs[0].output_dir}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("status", help="where every run of a grid stands (records and leases)")
    p.add_argument("params", help="params/*.yaml")
    p.add_argument("--only", action="append", default=[], metavar="KEY=VALUE", help="keep matching runs")
    p.add_argument("--output-dir", help="where run folders go (default: the grid's output_dir)")
    p.set_defaults(func=_cmd_status)
