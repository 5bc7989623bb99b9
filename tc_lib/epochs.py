"""The Trainer's epoch loop as a run sees it: per-epoch timings, train loss, dev (and, when asked, test)
evaluations, the dev-best snapshot, and the one test evaluation at the chosen epoch."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from .config import RunConfig
from .evaluate import evaluate
from .metrics import METRICS, SCORE_NAMES
from .results import write_history

logger = logging.getLogger(__name__)


class Recorder:
    """Trainer callback state. Dev is scored after every epoch (selection, curves); test once, at the
    chosen epoch, unless `test_every_epoch` asks for test curves too."""

    def __init__(self, cfg: RunConfig, num_classes: int, splits: dict, collator: Any, *, autocast: str) -> None:
        # autocast: cfg.mixed_precision as resolved on the run's device (training's, so evaluation's too)
        self.cfg, self.num_classes, self.collator, self.autocast = cfg, num_classes, collator, autocast
        self.test = splits["test"]
        self.epoch_sets = {name: splits[name] for name in ("dev", "test")
                           if name in splits and (name == "dev" or cfg.test_every_epoch)}
        self.history: list[dict[str, Any]] = []
        self.train_time = self.eval_time = 0.0
        self.train_started: float | None = None  # perf_counter when the first step starts
        self.best: tuple[float, int, dict] | None = None
        self._epoch_start = 0.0

    def _evaluate(self, model: Any, data: Any) -> dict[str, Any]:
        started = time.perf_counter()
        scores = evaluate(model, data, collator=self.collator, batch_size=self.cfg.eval_batch_size,
                          num_classes=self.num_classes, mixed_precision=self.autocast)
        self.eval_time += time.perf_counter() - started
        return scores

    def evaluate_epoch(self, model: Any) -> dict[str, float]:
        """This epoch's evaluations into its history row; the flat numbers for the Trainer's loggers
        (report_to) and its notebook progress table."""
        row = self.history[-1]
        for split, data in self.epoch_sets.items():
            row[split] = self._evaluate(model, data)
        return {f"eval_{split}_{key}": row[split][key] for split in self.epoch_sets
                for key in SCORE_NAMES}

    def test_scores(self, model: Any, chosen: int) -> dict[str, Any]:
        """Test metrics of the model as restored to the chosen epoch: scored now, once, or read from the
        history when test was scored every epoch (the same weights give the same numbers)."""
        row = self.history[chosen - 1]
        if "test" not in row:
            row["test"] = self._evaluate(model, self.test)
        return row["test"]

    def callback(self, run_dir: Path):
        from transformers import TrainerCallback

        recorder = self

        class Callback(TrainerCallback):
            def on_train_begin(self, args, state, control, **kwargs):
                recorder.train_started = time.perf_counter()

            def on_epoch_begin(self, args, state, control, **kwargs):
                recorder._epoch_start = time.perf_counter()
                recorder.history.append({"epoch": len(recorder.history) + 1, "train_loss": None})

            def on_epoch_end(self, args, state, control, **kwargs):
                recorder.train_time += time.perf_counter() - recorder._epoch_start

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs and recorder.history:
                    recorder.history[-1]["train_loss"] = float(logs["loss"])

            def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
                row = recorder.history[-1]
                if "dev" in row and (recorder.best is None or row["dev"]["macro_f1"] > recorder.best[0]):
                    # kept in CPU memory: a copy on the GPU would count in the run's peak (~0.5 GB for a base model)
                    snapshot = {n: p.detach().to("cpu", copy=True) for n, p in model.named_parameters()
                                if p.requires_grad}
                    recorder.best = (row["dev"]["macro_f1"], row["epoch"], snapshot)
                row["train_time_s"] = round(recorder.train_time, 3)
                write_history(run_dir, recorder.history)
                log_epoch(recorder.cfg, row)

        return Callback()


def trainer_class(recorder: Recorder):
    """The HF Trainer with its evaluation replaced by tc_lib.evaluate (length-sorted batches, inference
    mode); the epoch's numbers still go through Trainer.log and on_evaluate to every callback."""
    from transformers import Trainer

    class EpochTrainer(Trainer):
        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix="eval"):
            metrics = recorder.evaluate_epoch(self.model)
            self.log(dict(metrics))
            self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, dict(metrics))
            return metrics

    return EpochTrainer


def log_epoch(cfg: RunConfig, row: dict[str, Any]) -> None:
    loss = f"{row['train_loss']:.4f}" if row["train_loss"] is not None else "n/a"
    scores = "".join(f" | {split} " + " ".join(f"{m.name} {row[split][m.name]:{m.format}}" for m in METRICS)
                     for split in ("dev", "test") if split in row)
    logger.info("epoch %d/%d | train loss %s%s", row["epoch"], cfg.epochs, loss, scores)
