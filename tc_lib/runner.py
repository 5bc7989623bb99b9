"""Params grids: load and expand a YAML grid, and run it — one papermill execution of
notebooks/train.ipynb per run, skipping finished runs and isolating failures.

A grid file has these keys, all optional:
    defaults:  {field: value}             RunConfig fields shared by every run
    axes:      {field: [values]}          the cartesian product of these (in file order)
    overrides: {field: {value: {field: value}}}   e.g. method: {lora: {learning_rate: 1e-3}}
    grids:     [{defaults: ..., axes: ...}, ...]  several products in one file (instead of `axes`)
"""

from __future__ import annotations

import itertools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .config import RunConfig
from .errors import ConfigError
from .results import finish_run, load_record, new_record

REPO = Path(__file__).resolve().parents[1]
TRAIN_NOTEBOOK = REPO / "notebooks" / "train.ipynb"
GRID_KEYS = ("defaults", "axes", "overrides", "grids")


def _mapping(path: Path, where: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: '{where}' must be a mapping")
    return value


def load_grid(path: str | Path, *, output_dir: str | None = None) -> list[RunConfig]:
    """Expand a grid file into validated RunConfigs; errors name the file and the key.

    A relative output_dir is resolved against the current directory, so the notebook (run in
    notebooks/) writes where the caller expects.
    """
    import yaml

    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(GRID_KEYS)}")
    unknown = sorted(set(map(str, spec)) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; expected {', '.join(GRID_KEYS)}")
    if "grids" in spec and "axes" in spec:
        raise ConfigError(f"{path}: give either 'axes' or 'grids', not both")
    defaults, overrides = _mapping(path, "defaults", spec.get("defaults")), _mapping(path, "overrides",
                                                                                     spec.get("overrides"))
    grids = spec.get("grids", [{"axes": spec.get("axes")}])
    if not isinstance(grids, list) or not grids:
        raise ConfigError(f"{path}: 'grids' must be a non-empty list of mappings")
    configs, seen = [], set()
    for number, grid in enumerate(grids, start=1):
        label = f"grids[{number}]" if "grids" in spec else "axes"
        grid = _mapping(path, label, grid)
        extra = sorted(set(grid) - {"defaults", "axes"})
        if extra:
            raise ConfigError(f"{path}: {label} has unknown key(s) {', '.join(map(str, extra))}")
        axes = _mapping(path, f"{label}.axes", grid.get("axes"))
        for name, values in axes.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{path}: {label}.{name} must be a non-empty list")
        base = {**defaults, **_mapping(path, f"{label}.defaults", grid.get("defaults"))}
        for combo in itertools.product(*axes.values()):
            point = dict(zip(axes, combo))
            values: dict[str, Any] = {**base, **point}
            for field, table in overrides.items():
                table = _mapping(path, f"overrides.{field}", table)
                values.update(_mapping(path, f"overrides.{field}.{_key(values.get(field))}",
                                       table.get(_key(values.get(field)))))
            values["output_dir"] = str(Path(output_dir or values.get("output_dir", "outputs/runs")).resolve())
            where = ", ".join(f"{k}={v}" for k, v in point.items())
            cfg = RunConfig.from_dict(values, source=f"{path} ({where})")
            if cfg.run_id not in seen:
                seen.add(cfg.run_id)
                configs.append(cfg)
    return configs


def _key(value: Any) -> Any:
    return "+".join(value) if isinstance(value, (list, tuple)) else value


def select(configs: Sequence[RunConfig], only: dict[str, Any]) -> list[RunConfig]:
    """Keep configs whose fields equal every `only` value (a list dataset compares as 'a+b')."""
    fields = set(RunConfig.__dataclass_fields__)
    for key in only:
        if key not in fields:
            raise ConfigError(f"--only {key}: unknown field; valid fields: {', '.join(sorted(fields))}")
    return [c for c in configs if all(str(_key(getattr(c, k))) == str(_key(v)) for k, v in only.items())]


def is_done(cfg: RunConfig) -> bool:
    """A run is done when its record says success for the same resolved config."""
    record = load_record(Path(cfg.output_dir) / cfg.run_id)
    return bool(record and record["status"] == "success" and record["config_hash"] == cfg.config_hash)


@dataclass
class GridOutcome:
    succeeded: list[str]
    skipped: list[str]
    failed: list[tuple[str, str]]


def execute(cfg: RunConfig, *, notebook: Path = TRAIN_NOTEBOOK, timeout_s: int | None = None) -> None:
    """Run one config through papermill in a fresh kernel; the executed notebook is kept in the run folder.

    The notebook writes the record itself. If the kernel dies before it can (killed, out of memory),
    the record still says `running`: it is marked failed here with papermill's message.
    """
    import papermill as pm

    run_dir = Path(cfg.output_dir) / cfg.run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        pm.execute_notebook(str(notebook), str(run_dir / "train.ipynb"), parameters=cfg.to_dict(),
                            kernel_name="python3", progress_bar=False, cwd=str(notebook.parent), start_timeout=180,
                            execution_timeout=timeout_s)
    except Exception as err:
        record = load_record(run_dir)
        if record is None or record["status"] != "failed":
            record = record if record and record["status"] == "running" else new_record(cfg, status="failed")
            record["status"] = "failed"
            record["error"] = {"type": err.__class__.__name__, "message": _first_line(err), "traceback": None}
            finish_run(run_dir, record)
        raise


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    for line in text.splitlines():
        if line.strip() and not set(line.strip()) <= set("-"):
            return line.strip()[:500]
    return err.__class__.__name__


def _execute_in_worker(cfg: RunConfig, notebook: str) -> tuple[str, str | None]:
    """Process-pool entry point: (run_id, None) on success, (run_id, message) on failure."""
    import logging

    logging.getLogger("papermill").setLevel(logging.ERROR)  # "unknown parameter" notes for RunConfig defaults
    try:
        execute(cfg, notebook=Path(notebook))
        return cfg.run_id, None
    except Exception as err:  # noqa: BLE001 — reported back to the parent
        return cfg.run_id, _first_line(err)


def run_grid(configs: Sequence[RunConfig], *, force: bool = False, notebook: Path = TRAIN_NOTEBOOK,
             jobs: int = 1, stream=sys.stderr) -> GridOutcome:
    """Execute every config not already done; one failure does not stop the grid.

    With jobs > 1, runs execute in parallel worker processes, each kernel limited to
    cpu_count // jobs torch threads (two OpenMP teams on the same cores slow each other down badly).
    """
    import logging
    import os
    from concurrent.futures import ProcessPoolExecutor, as_completed
    from multiprocessing import get_context

    from tqdm.auto import tqdm

    logging.getLogger("papermill").setLevel(logging.ERROR)
    outcome = GridOutcome([], [], [])
    todo = []
    for cfg in configs:
        if not force and is_done(cfg):
            outcome.skipped.append(cfg.run_id)
        else:
            todo.append(cfg)
    print(f"{len(configs)} runs: {len(outcome.skipped)} already done, {len(todo)} to run"
          + (f" ({jobs} at a time)" if jobs > 1 else ""), file=stream)
    bar = tqdm(total=len(todo), unit="run", file=stream, dynamic_ncols=True, mininterval=0)

    def record(run_id: str, message: str | None) -> None:
        if message is None:
            outcome.succeeded.append(run_id)
        else:
            outcome.failed.append((run_id, message))
            bar.write(f"FAILED {run_id}: {message}")
        bar.update(1)

    try:
        if jobs <= 1:
            for cfg in todo:
                bar.set_postfix_str(cfg.run_id, refresh=True)
                record(*_execute_in_worker(cfg, str(notebook)))
        else:
            threads = max(1, (os.cpu_count() or jobs) // jobs)
            with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
                futures = [pool.submit(_execute_in_worker, cfg if cfg.num_threads else
                                       RunConfig.from_dict({**cfg.to_dict(), "num_threads": threads}), str(notebook))
                           for cfg in todo]
                for future in as_completed(futures):
                    record(*future.result())
    except KeyboardInterrupt:
        bar.close()
        print("interrupted; run the same command again to finish the grid (finished runs are kept)", file=stream)
        raise
    bar.close()
    print(f"done: {len(outcome.succeeded)} succeeded, {len(outcome.skipped)} skipped, "
          f"{len(outcome.failed)} failed", file=stream)
    for run_id, message in outcome.failed:
        print(f"  failed {run_id}: {message} (see {Path(configs[0].output_dir) / run_id / 'train.ipynb'})",
              file=stream)
    return outcome


def config_from_namespace(namespace: dict[str, Any]) -> RunConfig:
    """Freeze a notebook's parameter variables (the RunConfig fields found in it) into a RunConfig."""
    fields = RunConfig.__dataclass_fields__
    return RunConfig.from_dict({k: namespace[k] for k in fields if k in namespace}, source="notebook parameters")


# ---------------------------------------------------------------- CLI


def _cmd_run(args) -> int:
    from .cli import parse_assignments

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
    outcome = run_grid(configs, force=args.force, jobs=args.jobs)
    return 1 if outcome.failed else 0


def register_run(sub) -> None:
    p = sub.add_parser("run", help="run a params grid through papermill (resumable)")
    p.add_argument("params", help="params/*.yaml")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether each is done")
    p.add_argument("--force", action="store_true", help="rerun finished runs too")
    p.add_argument("--only", action="append", default=[], metavar="KEY=VALUE", help="keep matching runs")
    p.add_argument("--output-dir", help="where run folders go (default: the grid's output_dir)")
    p.add_argument("--jobs", type=int, default=1, help="runs executed in parallel (default 1)")
    p.set_defaults(func=_cmd_run)

