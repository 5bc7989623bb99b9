"""Planting run records with known values (no training): the report and export tests read these."""

from __future__ import annotations

from pathlib import Path

from tc_lib.config import RunConfig
from tc_lib.results import finish_run, new_record, write_history


def plant_run(root: Path, cfg: RunConfig, f1: float, *, folder: str | None = None, finished_at: str | None = None,
              num_classes: int = 6, floor: float = 0.1127) -> Path:
    """A successful record of `cfg` with macro-F1 `f1` (accuracy f1 + 0.1, loss 1 - f1) and two epochs."""
    record = new_record(cfg, status="success")
    scores = {"loss": 1.0 - f1, "accuracy": f1 + 0.1, "micro_f1": f1 + 0.1, "macro_f1": f1,
              "per_class_f1": [f1] * num_classes, "confusion_matrix": [[0] * num_classes] * num_classes}
    full = cfg.method in ("full", "tfidf_lr")
    record.update(metrics=scores, params={"total": 1000, "trainable": 1000 if full else 10,
                                          "trainable_no_head": 900 if full else 5})
    record["selection"]["chosen_epoch"] = 2
    record["data"].update(label_names=[f"c{i}" for i in range(num_classes)], train_size=cfg.max_train_samples or 1688,
                          test_size=139, train_split_size=1688, train_label_counts=[10] * num_classes,
                          majority_floor={"majority_class": 0, "accuracy": 71 / 139, "macro_f1": floor})
    record["timing"].update(wall_time_s=60.0, train_time_s=50.0, eval_time_s=5.0,
                            train_samples_per_s=100.0 if full else 150.0, train_tokens_per_s=1e4)
    record["memory"]["peak_rss_mb"] = 1500.0
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
