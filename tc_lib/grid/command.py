"""`python -m tc_lib run PARAMS`: expand a grid and execute it, with a progress bar and a summary."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from ..device import parse_gpus, visible_gpus
from ..errors import ConfigError
from .execute import TRAIN_NOTEBOOK, is_done
from .lease import check_settings
from .local import GridInterrupted, run_grid
from .params import iter_grid, parse_assignments, select
from .preflight import preflight, require
from .tuning import load_plan, stage_note, tune_spec


class _ProgressBar:
    """Turns the executor's events into a tqdm bar, a line per failure and the plan line."""

    def __init__(self, stream=None, where: str = "") -> None:
        # sys.stderr when the bar is made, not when this module was imported (it may have been replaced since)
        self.stream, self.bar, self.where = stream or sys.stderr, None, where

    def __call__(self, kind: str, info: dict) -> None:
        from tqdm.auto import tqdm

        if kind == "plan":
            jobs = f" ({info['jobs']} at a time)" if info["jobs"] > 1 else ""
            print(f"{info['total']} runs: {info['skipped']} already done, {info['todo']} to run{jobs}{self.where}",
                  file=self.stream)
            self.bar = tqdm(total=info["todo"], unit="run", file=self.stream, dynamic_ncols=True, mininterval=0)
        elif kind == "done":
            if info["error"] is not None:  # tqdm.write would print to stdout: keep the grid's talk on one stream
                self.bar.write(f"FAILED {info['run_id']}: {info['error']}", file=self.stream)
            elif info.get("warning"):
                self.bar.write(f"warning {info['run_id']}: {info['warning']}", file=self.stream)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _cmd_run(args) -> int:
    _check_executor_flags(args)
    check_settings()
    only = parse_assignments(args.only, option="--only")
    spec = tune_spec(args.params)
    if spec is not None:
        return _run_tuned(args, load_plan(args.params, output_dir=args.output_dir, only=only))
    configs = select(iter_grid(args.params, output_dir=args.output_dir), only)
    if args.dry_run:  # streams: the first runs print before a large grid is expanded
        listed, done = [], 0
        for cfg in configs:
            finished = is_done(cfg)
            listed.append(cfg)
            done += finished
            print(f"{'done' if finished else 'todo':<5} {cfg.run_id}", flush=True)
        if not listed:
            raise ConfigError(f"{args.params}: no runs left after --only")
        print(f"{len(listed)} runs ({done} done) -> {listed[0].output_dir}")
        return _dry_preflight(args, listed)
    return _run_stage(args, list(configs))


def _dry_preflight(args, listed) -> int:
    found = preflight(listed, fetch=False, local=args.executor == "local")  # a dry run downloads nothing
    print("preflight:\n" + "\n".join(f.line() for f in found))
    if args.executor == "slurm":
        from .slurm import describe, parse_slurm_args

        print("slurm " + describe(*_slurm_resources(args, listed, parse_slurm_args(args.slurm_arg))))
    require(found)
    return 0


def _run_tuned(args, plan) -> int:
    """Stage 1 (the trials on dev, and the runs the space does not apply to), then stage 2 (the seed axis
    at each arm's chosen setting). Run again, the command resumes whichever stage is unfinished."""
    first = plan.first_stage()
    if not first:
        raise ConfigError(f"{args.params}: no runs left after --only")
    if args.dry_run:
        print(plan.spec.describe())
        print(f"stage 1: {len(first)} runs (tuning trials on dev, and the untuned runs)")
        for cfg in first:
            print(f"{'done' if is_done(cfg) else 'todo':<5} {cfg.run_id}  {stage_note(cfg)}", flush=True)
        finals, waiting = plan.final_stage()
        print(f"stage 2 (final, after tuning): {len(finals)} runs listed, {len(waiting)} arm(s) waiting")
        for cfg in finals:
            print(f"{'done' if is_done(cfg) else 'todo':<5} {cfg.run_id}  {stage_note(cfg)}")
        for line in waiting:
            print(f"after tuning  {line}")
        print(f"-> {first[0].output_dir}")
        return _dry_preflight(args, first)
    print(plan.spec.describe(), file=sys.stderr)
    print("stage 1: tuning trials on dev", file=sys.stderr)
    code = _run_stage(args, first)
    if code == 130:
        return code
    if args.executor == "slurm" and not args.wait and not all(is_done(c) for c in first):
        print("stage 2 (final) is submitted once the trials have succeeded: run the same command again then "
              f"(python -m tc_lib status {args.params})")
        return code
    finals, waiting = plan.final_stage()
    for line in waiting:
        print(f"stage 2 not started for {line}", file=sys.stderr)
    if args.force:  # a trial that is also a final run was just rerun: once is enough
        ran = {c.run_id for c in first}
        finals = [c for c in finals if c.run_id not in ran]
    if finals:
        print("stage 2: the final runs at each arm's chosen setting", file=sys.stderr)
        final_code = _run_stage(args, finals)
        if final_code == 130:
            return final_code
        code = max(code, final_code)
    return max(code, 1 if waiting else 0)


def _run_stage(args, configs) -> int:
    if not configs:
        raise ConfigError(f"{args.params}: no runs left after --only")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be a positive integer, got {args.jobs}")
    notebook = Path(args.notebook).resolve()
    if not notebook.is_file():
        raise ConfigError(f"--notebook {args.notebook}: no such notebook")
    found = preflight(configs, fetch=True, progressbar=sys.stderr.isatty(),  # before any run starts
                      local=args.executor == "local")
    require(found)  # a problem is one error line; `--dry-run` lists every finding
    for finding in found:
        if finding.changed:
            print(f"preflight {finding.line().strip()}", file=sys.stderr)
    if args.executor == "slurm":
        return _run_slurm(args, configs, notebook)
    try:
        if args.executor == "ray":
            progress = _ProgressBar()
            outcome = _run_ray(args, configs, notebook, progress)
        else:
            gpus = parse_gpus(args.gpus) if args.gpus is not None else visible_gpus()
            device = next(f.detail for f in found if f.check == "device")
            progress = _ProgressBar(where=f"; {device}" + (f"; GPUs {','.join(gpus)} x {args.runs_per_gpu or 1} "
                                                           "run(s) each" if gpus else ""))
            outcome = run_grid(configs, force=args.force, jobs=args.jobs, gpus=gpus,
                               runs_per_gpu=args.runs_per_gpu or 1, on_event=progress, notebook=notebook)
    except GridInterrupted as stop:
        progress.close()
        print(f"interrupted: nothing new was started, {stop.in_flight} run(s) in flight left 'interrupted'; "
              "run the same command again to finish the grid (finished runs are kept)", file=sys.stderr)
        return 130
    progress.close()
    busy = f", {len(outcome.busy)} running elsewhere" if outcome.busy else ""
    print(f"done: {len(outcome.succeeded)} succeeded, {len(outcome.skipped)} skipped, "
          f"{len(outcome.failed)} failed{busy}", file=sys.stderr)
    for run_id, message in outcome.failed:
        print(f"  failed {run_id}: {message} (see {Path(configs[0].output_dir) / run_id / 'train.ipynb'})",
              file=sys.stderr)
    return 1 if outcome.failed else 0


# which executor each option belongs to; any other given with it is one clear error
EXECUTOR_FLAGS = {"--jobs": ("local",), "--gpus": ("local",), "--runs-per-gpu": ("local",),
                  "--address": ("ray",), "--max-retries": ("ray",),
                  "--gpus-per-run": ("ray", "slurm"), "--cpus-per-run": ("ray", "slurm"),
                  "--partition": ("slurm",), "--account": ("slurm",), "--mem": ("slurm",), "--time-min": ("slurm",),
                  "--max-parallel": ("slurm",), "--slurm-arg": ("slurm",), "--wait": ("slurm",)}


def _check_executor_flags(args) -> None:
    for flag, executors in EXECUTOR_FLAGS.items():
        value = getattr(args, flag[2:].replace("-", "_"))
        if value not in (None, [], False) and args.executor not in executors:
            raise ConfigError(f"{flag} is an option of --executor {' or '.join(executors)}, not {args.executor}")
    gpus = args.gpus_per_run
    if gpus is not None and not (math.isfinite(gpus) and gpus >= 0):
        raise ConfigError(f"--gpus-per-run must be a number >= 0, got {gpus:g}")
    if args.executor == "slurm" and gpus is not None and gpus != int(gpus):
        raise ConfigError(f"--gpus-per-run {gpus:g}: SLURM hands out whole GPUs (--gres=gpu:G); to share a GPU "
                          "between runs use --executor ray (fractions) or local (--runs-per-gpu)")
    for flag, value, low in (("--runs-per-gpu", args.runs_per_gpu, 1), ("--cpus-per-run", args.cpus_per_run, 1),
                             ("--time-min", args.time_min, 1), ("--max-parallel", args.max_parallel, 1),
                             ("--max-retries", args.max_retries, 0)):
        if value is not None and value < low:
            raise ConfigError(f"{flag} must be an integer >= {low}, got {value}")


def _run_ray(args, configs, notebook: Path, progress):
    from .ray_exec import RayResources, run_grid_ray, target_address

    if target_address(args.address) is not None:  # other nodes must find the same folder
        _require_shared_folder(args)
    resources = RayResources(address=args.address, cpus_per_run=args.cpus_per_run or 1,
                             gpus_per_run=args.gpus_per_run or 0,
                             max_retries=2 if args.max_retries is None else args.max_retries)
    return run_grid_ray(configs, resources, force=args.force, notebook=notebook, on_event=progress)


def _require_shared_folder(args) -> None:
    """On a cluster the output folder must be the same path on every node: refuse a relative one."""
    from .params import given_output_dirs

    for given in [args.output_dir] if args.output_dir else sorted(given_output_dirs(args.params)):
        if not Path(given).is_absolute():
            raise ConfigError(f"output_dir {given!r} is relative: on a Ray cluster it would name a different folder "
                              "on each node; pass --output-dir /path/on/shared/storage (a folder every node mounts)")


def _run_slurm(args, configs, notebook: Path) -> int:
    from .slurm import check_cluster, describe, parse_slurm_args, pending, submit, wait

    extra = parse_slurm_args(args.slurm_arg)
    check_cluster(args.partition)
    todo, kept = pending(configs, force=args.force)
    if not todo:
        print(f"nothing to submit: all {len(kept)} runs are done, queued or running (python -m tc_lib status "
              f"{args.params})")
        return 0
    resources, why = _slurm_resources(args, todo, extra)
    print(describe(resources, why))
    log_root = Path(configs[0].output_dir) / ".slurm"
    job = submit(todo, resources, notebook=notebook, log_root=log_root, force=args.force)
    throttle = f", at most {args.max_parallel} at a time" if args.max_parallel else ""
    print(f"submitted job array {job}: {len(todo)} runs{throttle} on partition {args.partition} "
          f"({len(kept)} done, queued or running)")
    print(f"watch: python -m tc_lib status {args.params}  |  squeue -j {job}  |  logs: {log_root / job}")
    if not args.wait:
        return 0
    statuses = wait(job, todo)
    failed = [run_id for run_id, status in statuses.items() if status != "success"]
    print(f"done: {len(statuses) - len(failed)} succeeded, {len(failed)} not (run the same command to resubmit "
          "unfinished runs)")
    for run_id in failed:
        print(f"  {statuses[run_id]} {run_id}: see {Path(configs[0].output_dir) / run_id}", file=sys.stderr)
    return 1 if failed else 0


def _slurm_resources(args, configs, extra: dict):
    """(Resources, why its time limit): --time-min, else the params' slurm.time_min, else derived."""
    from .params import slurm_settings
    from .slurm import Resources, time_limit

    given, source = args.time_min, "--time-min"
    if given is None:
        given, source = slurm_settings(args.params).get("time_min"), f"slurm.time_min in {args.params}"
    minutes, why = time_limit(configs, given=given, source=source)
    return Resources(partition=args.partition, account=args.account, gpus_per_run=int(args.gpus_per_run or 0),
                     cpus_per_run=args.cpus_per_run or 1, mem=args.mem, time_min=minutes,
                     max_parallel=args.max_parallel, extra=extra), why


def register(sub) -> None:
    p = sub.add_parser("run", help="run a params grid through papermill (resumable)")
    p.add_argument("params", help="params/*.yaml")
    p.add_argument("--dry-run", action="store_true", help="list the runs and whether each is done")
    p.add_argument("--force", action="store_true", help="rerun finished runs too")
    p.add_argument("--only", action="append", default=[], metavar="KEY=VALUE", help="keep matching runs")
    p.add_argument("--output-dir", help="where run folders go (default: the grid's output_dir)")
    p.add_argument("--jobs", type=int, help="--executor local: runs executed in parallel (default: GPUs x "
                                            "--runs-per-gpu on a GPU host, else 1)")
    p.add_argument("--gpus", help="--executor local: GPU ids to share out, one per run, e.g. 0,1,2,3 (default: "
                                  "every visible GPU)")
    p.add_argument("--runs-per-gpu", type=int, help="--executor local: runs sharing one GPU at a time (default 1)")
    p.add_argument("--notebook", default=str(TRAIN_NOTEBOOK),
                   help="the training notebook each run executes (default: notebooks/train.ipynb)")
    p.add_argument("--executor", choices=("local", "ray", "slurm"), default="local",
                   help="local: worker processes here (default); ray: Ray tasks, embedded or on a cluster; "
                        "slurm: one job array through submitit")
    r = p.add_argument_group("--executor ray or slurm")
    r.add_argument("--gpus-per-run", type=float, help="GPUs per run: ray num_gpus, fractions share a GPU (0.25: four "
                                                      "runs per GPU); slurm --gres=gpu:G, whole GPUs (default 0)")
    r.add_argument("--cpus-per-run", type=int, help="CPUs per run (also its torch threads; default 1)")
    r.add_argument("--address", help="ray: the cluster to join (auto, HOST:PORT, ray://HOST:10001; default "
                                     "RAY_ADDRESS, else an embedded Ray on this machine)")
    r.add_argument("--max-retries", type=int, help="ray: retries of a run whose worker died (default 2); "
                                                   "a failed notebook is not retried")
    s = p.add_argument_group("--executor slurm")
    s.add_argument("--partition", help="SLURM partition (required)")
    s.add_argument("--account", help="SLURM account")
    s.add_argument("--mem", help="memory per run, e.g. 16G")
    s.add_argument("--time-min", type=int, help="time limit per run in minutes")
    s.add_argument("--max-parallel", type=int, help="array throttle: at most N runs at a time (%%N)")
    s.add_argument("--slurm-arg", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sbatch option, e.g. constraint=a100 (repeatable)")
    s.add_argument("--wait", action="store_true", help="wait for the array to finish and summarise it")
    p.set_defaults(func=_cmd_run)
