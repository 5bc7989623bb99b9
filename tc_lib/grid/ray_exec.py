"""The grid on Ray core tasks: every pending run is one task asking for `num_cpus`/`num_gpus`, and every
task calls grid.execute.run_one — the same run function, leases and records as the local and SLURM
executors. Ray schedules (at most as many runs as the resources allow) and retries a task whose worker
died (`max_retries`); a notebook that fails is a `failed` record, returned, never retried.

Without an address an embedded single-node Ray is started on loopback; with `--address` (`auto`,
`host:port`, `ray://host:10001`) or RAY_ADDRESS — set by `ray job submit` — the driver joins that cluster.
The run records stay the only source of truth: nothing of Ray's (no Tune store) is read back."""

from __future__ import annotations

import logging
import os
import socket
import tempfile
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence
from urllib.parse import urlsplit

from ..config import RunConfig
from ..errors import ConfigError, TcError, first_line
from ..results import load_record
from .execute import TRAIN_NOTEBOOK, RunOutcome, mark_stopped, run_one
from .lease import is_stale, read_lease
from .local import EventHandler, GridInterrupted, GridOutcome, plan

logger = logging.getLogger(__name__)
FORWARDED_ENV = ("TC_", "HF_", "TRANSFORMERS_")  # the driver's settings that the runs' kernels need too
PROBE_TIMEOUT_S = 5.0
CANCEL_GRACE_S = 15.0


@dataclass(frozen=True)
class RayResources:
    address: str | None = None  # None: RAY_ADDRESS if set, else an embedded instance
    cpus_per_run: int = 1
    gpus_per_run: float = 0
    max_retries: int = 2  # retries after a worker died (crash, node lost); not after a failed notebook


def target_address(address: str | None) -> str | None:
    """The cluster the driver will join, or None for an embedded instance."""
    return address or os.environ.get("RAY_ADDRESS") or None


def _probe(address: str) -> None:
    """Fail fast on a cluster that cannot be reached: ray.init would wait minutes for it."""
    if address == "auto":
        return  # ray.init finds the local head itself, or says that there is none
    url = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        host, port = url.hostname, url.port
    except ValueError:
        host = port = None
    if not host or not port:
        raise ConfigError(f"--address {address!r}: expected auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
    except OSError as err:
        raise TcError(f"cannot reach Ray at {address}: {first_line(err)} (is the head node started? "
                      "`ray start --head`, then pass the address it prints)") from None


def connect(resources: RayResources):
    """Start or join Ray; returns the ray module. The kernels get the driver's TC_/HF_ settings."""
    address = target_address(resources.address)
    if address is None:
        # one machine: bind every Ray process to loopback instead of the machine's network address, and
        # guard it with a token of its own (Ray would write one to ~/.ray and warn about it)
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        if "RAY_AUTH_MODE" not in os.environ and not {"RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"} & set(os.environ):
            os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN=uuid.uuid4().hex)
    else:
        _probe(address)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV)}
    kwargs = dict(runtime_env={"env_vars": env}, logging_level=logging.WARNING, log_to_driver=False)
    try:
        if address is None:
            ray.init(address="local", include_dashboard=False, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except Exception as err:  # noqa: BLE001 — ray raises ConnectionError, RuntimeError, ValueError here
        raise TcError(f"cannot start or join Ray{f' at {address}' if address else ''}: {first_line(err)}") from None
    logger.info("%s Ray: %s", "joined" if address else "started an embedded", ray.cluster_resources())
    return ray


def check_resources(ray, resources: RayResources) -> None:
    """Say before anything is submitted that a run asks for more than any node of the cluster has
    (Ray would keep such a task pending forever)."""
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    for name, wanted, flag in (("GPU", resources.gpus_per_run, "--gpus-per-run"),
                               ("CPU", resources.cpus_per_run, "--cpus-per-run")):
        have = max((node.get(name, 0) for node in nodes), default=0)
        if wanted and have < wanted:
            raise ConfigError(f"{flag} {wanted:g}: no node of the Ray cluster has that many {name}s (the most on "
                              f"one node: {have:g}); no run could ever be scheduled (see `ray status`)")


def _task(config: dict, notebook_text: str, force: bool, gpus: float, driver: str) -> tuple[str, str, str | None]:
    """A Ray task, on a worker: the run function on a copy of the driver's notebook (worker nodes need
    tc_lib installed, not the driver's checkout). ray.cancel raises KeyboardInterrupt here, and run_one
    then leaves the run `interrupted`. Ray sets CUDA_VISIBLE_DEVICES to the ids it assigned a task that
    asks for GPUs (a fraction too); a task that asks for none is hidden from every GPU here."""
    import ray

    cfg = RunConfig.from_dict(config)
    # the same for the retries of one task and never for two drivers' tasks: every embedded Ray numbers
    # its jobs and tasks alike (job 01000000), so the task id alone would let one driver take the other's lease
    task = f"{driver}:{ray.get_runtime_context().get_task_id()}"
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    if not gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    try:
        with tempfile.TemporaryDirectory(prefix="tc_ray_") as folder:
            notebook = Path(folder) / "train.ipynb"
            notebook.write_text(notebook_text, encoding="utf-8")
            outcome = run_one(cfg, notebook=notebook, executor="ray", force=force, task=task)
    finally:  # the worker process may run the next task, one with GPUs
        if not gpus and before is None:
            os.environ.pop("CUDA_VISIBLE_DEVICES")
        elif not gpus:
            os.environ["CUDA_VISIBLE_DEVICES"] = before
    return outcome.run_id, outcome.status, outcome.message


def run_grid_ray(configs: Sequence[RunConfig], resources: RayResources, *, force: bool = False,
                 notebook: Path = TRAIN_NOTEBOOK, on_event: EventHandler | None = None) -> GridOutcome:
    """Every config not already done becomes one Ray task; outcomes arrive as tasks finish. Ctrl-C
    cancels the tasks in flight (their runs are left `interrupted`). An embedded Ray is shut down at the
    end; a joined cluster keeps running."""
    emit = on_event or (lambda kind, info: None)
    outcome, todo = plan(configs, force=force)
    ray = connect(resources)
    try:
        check_resources(ray, resources)
        total = ray.cluster_resources()
        slots = int(min(total.get("CPU", 1) // resources.cpus_per_run,
                        total.get("GPU", 0) // resources.gpus_per_run if resources.gpus_per_run else float("inf")))
        emit("plan", {"total": len(configs), "skipped": len(outcome.skipped), "todo": len(todo),
                      "jobs": max(1, slots)})
        remote = ray.remote(_task).options(num_cpus=resources.cpus_per_run, num_gpus=resources.gpus_per_run,
                                           max_retries=resources.max_retries, retry_exceptions=False)
        text, driver = Path(notebook).read_text(encoding="utf-8"), uuid.uuid4().hex
        refs = {}
        for cfg in todo:
            run = replace(cfg, num_threads=cfg.num_threads or resources.cpus_per_run)
            refs[remote.remote(run.to_dict(), text, force, resources.gpus_per_run, driver)] = cfg
        try:
            while refs:
                ready, _ = ray.wait(list(refs), num_returns=1)
                cfg = refs.pop(ready[0])
                result = _result(ray, ready[0], cfg, resources.max_retries)
                outcome.add(result)
                emit("done", {"run_id": result.run_id, "status": result.status,
                              "error": result.message if result.status == "failed" else None,
                              "warning": result.message if result.status == "success" else None})
        except KeyboardInterrupt:
            raise GridInterrupted(_cancel(ray, refs)) from None
    finally:
        if target_address(resources.address) is None:
            ray.shutdown()
    return outcome


def _result(ray, ref, cfg: RunConfig, retries: int) -> RunOutcome:
    try:
        run_id, status, message = ray.get(ref)
        return RunOutcome(run_id, status, message)
    except ray.exceptions.RayTaskError as err:  # raised in the task, outside the notebook (not retried)
        message = first_line(err.cause if isinstance(err.cause, BaseException) else err)
    except ray.exceptions.RayError as err:  # the worker died on every attempt, or its node was lost
        message = f"Ray task died {retries + 1} times ({err.__class__.__name__}); run the grid again to retry it"
    lease = read_lease(cfg.run_dir)
    if lease is None or is_stale(lease):  # nobody holds the run any more: its record says why it stopped
        mark_stopped(cfg, "failed", message)
    return RunOutcome(cfg.run_id, "failed", message)


def _cancel(ray, refs: dict) -> int:
    """Cancel the tasks not finished yet, give them a moment to leave their runs interrupted, and count
    the runs that were executing (queued tasks just vanish; runs left interrupted earlier do not count)."""
    def interrupted() -> set[str]:
        return {cfg.run_id for cfg in refs.values() if getattr(load_record(cfg.run_dir), "status", None) == "interrupted"}

    before = interrupted()
    for ref in refs:
        ray.cancel(ref)
    ray.wait(list(refs), num_returns=len(refs), timeout=CANCEL_GRACE_S)
    return len(interrupted() - before)
