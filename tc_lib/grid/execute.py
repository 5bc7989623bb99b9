"""One run of a grid: a papermill execution of notebooks/train.ipynb in a fresh kernel; the notebook
writes the run record, and a kernel that dies before it can still leaves a `failed` record."""

from __future__ import annotations

from pathlib import Path

from ..config import RunConfig
from ..results import finish_run, load_record, new_record

REPO = Path(__file__).resolve().parents[2]
TRAIN_NOTEBOOK = REPO / "notebooks" / "train.ipynb"


def is_done(cfg: RunConfig) -> bool:
    """A run is done when its record says success for the same resolved config."""
    record = load_record(cfg.run_dir)
    return bool(record and record["status"] == "success" and record["config_hash"] == cfg.config_hash)


def execute(cfg: RunConfig, *, notebook: Path = TRAIN_NOTEBOOK, timeout_s: int | None = None) -> None:
    """Run one config through papermill in a fresh kernel; the executed notebook is kept in the run folder.

    The notebook writes the record itself. If the kernel dies before it can (killed, out of memory),
    the record still says `running`: it is marked failed here with papermill's message.
    """
    import papermill as pm

    run_dir = cfg.run_dir
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
            record["error"] = {"type": err.__class__.__name__, "message": first_line(err), "traceback": None}
            finish_run(run_dir, record)
        raise


def first_line(err: BaseException) -> str:
    text = str(err).strip()
    for line in text.splitlines():
        if line.strip() and not set(line.strip()) <= set("-"):
            return line.strip()[:500]
    return err.__class__.__name__
