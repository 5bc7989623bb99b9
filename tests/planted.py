"""Planting run records with known values (no training), which the report and export tests read; grids
of fast notebook runs for the executor tests, and the helpers that read and wait for them."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from tc_lib.config import RunConfig
from tc_lib.record import DataInfo, Timing
from tc_lib.results import finish_run, new_record, write_history


def plant_run(root: Path, cfg: RunConfig, f1: float, *, folder: str | None = None, finished_at: str | None = None,
              num_classes: int = 6, floor: float = 0.1127) -> Path:
    """A successful record of `cfg` with macro-F1 `f1` (accuracy f1 + 0.1, loss 1 - f1) and two epochs."""
    record = new_record(cfg, status="success")
    scores = {"loss": 1.0 - f1, "accuracy": f1 + 0.1, "micro_f1": f1 + 0.1, "macro_f1": f1,
              "per_class_f1": [f1] * num_classes, "confusion_matrix": [[0] * num_classes] * num_classes}
    full = cfg.method in ("full", "tfidf_lr")
    record.metrics = scores
    record.params = {"total": 1000, "trainable": 1000 if full else 10, "trainable_no_head": 900 if full else 5}
    record.selection.chosen_epoch = 2
    record.data = DataInfo(label_names=[f"c{i}" for i in range(num_classes)], train_size=cfg.max_train_samples or 1688,
                           test_size=139, train_split_size=1688, data_seed=cfg.effective_data_seed,
                           train_label_counts=[10] * num_classes,
                           majority_floor={"majority_class": 0, "accuracy": 71 / 139, "macro_f1": floor})
    record.timing = Timing(wall_time_s=60.0, train_time_s=50.0, eval_time_s=5.0,
                           train_samples_per_s=100.0 if full else 150.0, train_tokens_per_s=1e4)
    record.memory.peak_rss_mb = 1500.0
    run_dir = root / (folder or cfg.run_id)
    run_dir.mkdir(parents=True)
    write_history(run_dir, [{"epoch": e, "train_loss": 1.0 / e, "test": {**scores, "macro_f1": f1 * e / 2}}
                            for e in (1, 2)])
    finish_run(run_dir, record)
    if finished_at is not None:  # finish_run stamps now(); a planted rerun needs a chosen time
        import json

        path = run_dir / "metrics.json"
        data = json.loads(path.read_text())
        data["finished_at"] = finished_at
        path.write_text(json.dumps(data))
    return run_dir


def plant_grid(root: Path, values: dict[tuple, list[float]], **fields) -> None:
    """values: (model, method) -> macro-F1 per seed (seed 1, 2, ...)."""
    for (model, method), scores in values.items():
        for seed, f1 in enumerate(scores, start=1):
            plant_run(root, RunConfig(model=model, method=method, seed=seed, output_dir=str(root), **fields), f1)


FAST_NOTEBOOK = """
import os, time
from tc_lib.config import RunConfig
from tc_lib.results import finish_run, start_run

cfg = RunConfig.from_namespace(globals())
log = os.environ["TC_TEST_LOG"]
with open(log, "a") as fh:
    fh.write(f"start {cfg.run_id} {os.getpid()} {time.time()} {os.environ.get('CUDA_VISIBLE_DEVICES')}\\n")
run_dir, record = start_run(cfg)
time.sleep(float(os.environ.get("TC_TEST_SLEEP", "2")))
if str(cfg.seed) == os.environ.get("TC_TEST_FAIL_SEED"):
    raise RuntimeError(f"planted failure of seed {cfg.seed}")
record.status = "success"
finish_run(run_dir, record)
with open(log, "a") as fh:
    fh.write(f"end {cfg.run_id} {os.getpid()} {time.time()}\\n")
if str(cfg.seed) == os.environ.get("TC_TEST_DIE_AFTER_SUCCESS"):  # the kernel dies after writing its record
    import signal
    os.kill(os.getpid(), signal.SIGKILL)
"""


def write_fast_notebook(path: Path, code: str = FAST_NOTEBOOK) -> Path:
    """A notebook with RunConfig's parameters cell that logs its executions and sleeps instead of training
    (or runs `code`)."""
    import nbformat

    params = "\n".join(f"{name} = {default!r}" for name, default in RunConfig.notebook_defaults().items())
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
                                         nbformat.v4.new_code_cell(code)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def write_fast_grid(folder: Path) -> tuple[Path, Path, Path, Path]:
    """A grid of four fast runs (seeds 1-4) in `folder`: (params file, notebook, executions log, runs folder)."""
    notebook = write_fast_notebook(folder / "fast.ipynb")
    params = folder / "grid.yaml"
    params.write_text(f"defaults: {{output_dir: {folder / 'runs'}}}\naxes:\n  seed: [1, 2, 3, 4]\n")
    log = folder / "executions.log"
    log.touch()
    return params, notebook, log, folder / "runs"


def events(log: Path, kind: str) -> list[list[str]]:
    """The fast notebook's log lines of one kind (start | end), split: kind, run id, pid, time[, devices]."""
    return [line.split() for line in log.read_text().splitlines() if line.startswith(kind + " ")]


def records(runs: Path) -> dict[str, dict]:
    return {d.name: json.loads((d / "metrics.json").read_text()) for d in runs.iterdir()
            if (d / "metrics.json").is_file()}


def wait_for(predicate, timeout: float = 120, every: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 (for the servers the tests start there)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
