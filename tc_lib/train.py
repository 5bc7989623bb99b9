"""`train_and_evaluate(cfg)`: train one configuration with the HF Trainer and write its run record."""

from __future__ import annotations

import functools
import logging
import os
import resource
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from .config import RunConfig
from .data import data_root, files_for, get_dataset, label_names
from .errors import ConfigError, TcError
from .metrics import classification_metrics, majority_floor
from .models import build_model, load_tokenizer, save_weights
from .results import RunResult, finish_run, start_run, unwritable, write_history

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _tokenized(model: str, datasets: tuple[str, ...], data_seed: int, max_length: int, root: str):
    """Tokenize once per (tokenizer, dataset, max_length) in this process; no padding here."""
    import datasets as hf_datasets

    hf_datasets.disable_progress_bars()
    tokenizer = load_tokenizer(model)
    raw = get_dataset(list(datasets), tokenizer.sep_token, root=Path(root), data_seed=data_seed)
    tokenized = raw.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
                        batched=True, remove_columns=["text"])
    return tokenizer, tokenized


def _by_length(split):
    """Evaluation order sorted by length so each padded batch wastes little; metrics ignore order."""
    order = np.argsort([len(ids) for ids in split["input_ids"]], kind="stable")
    return split.select(order)


def prepare_splits(cfg: RunConfig):
    """(tokenizer, {"train", "dev"?, "test"}, label names). Dev is carved from train, never from test."""
    tokenizer, tokenized = _tokenized(cfg.model, cfg.datasets, cfg.data_seed, cfg.max_seq_length,
                                      str(data_root()))
    train, splits = tokenized["train"], {"test": _by_length(tokenized["test"])}
    if cfg.selection == "dev":
        try:
            parts = train.train_test_split(test_size=cfg.dev_fraction, seed=cfg.data_seed,
                                           stratify_by_column="labels")
        except ValueError:  # a class too rare to stratify (few-shot): plain seeded split
            parts = train.train_test_split(test_size=cfg.dev_fraction, seed=cfg.data_seed)
        train, splits["dev"] = parts["train"], _by_length(parts["test"])
    if cfg.max_train_samples is not None and cfg.max_train_samples < len(train):
        train = train.shuffle(seed=cfg.data_seed).select(range(cfg.max_train_samples))
    splits["train"] = train
    return tokenizer, splits, label_names(tokenized)


class _Recorder:
    """Trainer callback state: per-epoch timings, train loss, evaluations and the dev-best snapshot."""

    def __init__(self, cfg: RunConfig, num_classes: int) -> None:
        self.cfg, self.num_classes = cfg, num_classes
        self.history: list[dict[str, Any]] = []
        self.detail: dict[str, Any] | None = None  # set by compute_metrics, consumed by on_evaluate
        self.train_time = self.eval_time = 0.0
        self.best: tuple[float, int, dict] | None = None
        self._epoch_start = self._eval_start = 0.0

    def compute_metrics(self, eval_pred) -> dict[str, float]:
        logits = eval_pred.predictions[0] if isinstance(eval_pred.predictions, tuple) else eval_pred.predictions
        self.detail = classification_metrics(labels=eval_pred.label_ids, predictions=np.argmax(logits, axis=-1),
                                             num_classes=self.num_classes)
        return {k: self.detail[k] for k in ("accuracy", "micro_f1", "macro_f1")}

    def callback(self, run_dir: Path):
        from transformers import TrainerCallback

        recorder = self

        class Callback(TrainerCallback):
            def on_epoch_begin(self, args, state, control, **kwargs):
                recorder._epoch_start = time.perf_counter()
                recorder.history.append({"epoch": len(recorder.history) + 1, "train_loss": None})

            def on_epoch_end(self, args, state, control, **kwargs):
                recorder.train_time += time.perf_counter() - recorder._epoch_start
                recorder._eval_start = time.perf_counter()

            def on_log(self, args, state, control, logs=None, **kwargs):
                if logs and "loss" in logs and recorder.history:
                    recorder.history[-1]["train_loss"] = float(logs["loss"])

            def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
                split = "dev" if any(k.startswith("eval_dev_") for k in metrics) else "test"
                row = recorder.history[-1]
                row[split] = {"loss": float(metrics[f"eval_{split}_loss"]), **recorder.detail}
                if split == "dev" and (recorder.best is None or row["dev"]["macro_f1"] > recorder.best[0]):
                    snapshot = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
                    recorder.best = (row["dev"]["macro_f1"], row["epoch"], snapshot)
                if split == "test":
                    recorder.eval_time += time.perf_counter() - recorder._eval_start
                    row["train_time_s"] = round(recorder.train_time, 3)
                    write_history(run_dir, recorder.history)
                    _log_epoch(recorder.cfg, row)

        return Callback()


def _log_epoch(cfg: RunConfig, row: dict[str, Any]) -> None:
    dev = f" | dev macro-F1 {row['dev']['macro_f1']:.4f}" if "dev" in row else ""
    loss = f"{row['train_loss']:.4f}" if row["train_loss"] is not None else "n/a"
    logger.info("epoch %d/%d | train loss %s%s | test loss %.4f acc %.4f macro-F1 %.4f", row["epoch"], cfg.epochs,
                loss, dev, row["test"]["loss"], row["test"]["accuracy"], row["test"]["macro_f1"])


def _training_args(cfg: RunConfig, output_dir: str):
    import torch
    from accelerate.state import AcceleratorState
    from transformers import TrainingArguments

    cuda = torch.cuda.is_available()
    if cfg.mixed_precision == "fp16" and not cuda:
        raise ConfigError("field 'mixed_precision': fp16 autocast needs a CUDA device; use bf16 on this machine")
    # TrainingArguments(bf16=True) exports ACCELERATE_MIXED_PRECISION=bf16 and accelerate keeps a
    # process-wide state: without clearing both, a later run in the same process (a notebook run twice,
    # the tests) would silently train under the previous run's autocast
    os.environ.pop("ACCELERATE_MIXED_PRECISION", None)
    AcceleratorState._reset_state(reset_partial_state=True)
    return TrainingArguments(
        output_dir=output_dir, seed=cfg.seed, num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.train_batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay, eval_strategy="epoch",
        logging_strategy="epoch", save_strategy="no", report_to="none", disable_tqdm=True,
        label_names=["labels"],  # PeftModel hides `labels` from Trainer's signature check
        use_cpu=not cuda, bf16=cfg.mixed_precision == "bf16", fp16=cfg.mixed_precision == "fp16",
        dataloader_num_workers=0, group_by_length=cfg.group_by_length,
    )


def _run(cfg: RunConfig, run_dir: Path, record: dict[str, Any]) -> None:
    import torch
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, set_seed

    tokenizer, splits, names = prepare_splits(cfg)
    train = splits["train"]
    test_labels = splits["test"]["labels"]
    record["data"].update(label_names=names, train_size=len(train), test_size=len(test_labels),
                          majority_floor=majority_floor(labels=test_labels, num_classes=len(names)),
                          files={f.relpath: f.sha256 for f in files_for(cfg.datasets)})  # verified on load
    record["selection"]["dev_size"] = len(splits["dev"]) if "dev" in splits else None

    set_seed(cfg.seed)  # before the model is built: the new head's initialisation depends on it
    model, counts = build_model(cfg, len(names), id2label=dict(enumerate(names)))
    record["params"] = counts.to_dict()
    peft_config = getattr(model, "peft_config", None)
    if peft_config:
        record["peft_target_modules"] = sorted(peft_config["default"].target_modules)

    recorder = _Recorder(cfg, len(names))
    eval_sets = {"dev": splits["dev"], "test": splits["test"]} if "dev" in splits else {"test": splits["test"]}
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="tc_trainer_") as scratch:
        trainer = Trainer(model=model, args=_training_args(cfg, scratch), train_dataset=train,
                          eval_dataset=eval_sets, data_collator=DataCollatorWithPadding(tokenizer),
                          compute_metrics=recorder.compute_metrics, callbacks=[recorder.callback(run_dir)])
        trainer.remove_callback(PrinterCallback)
        trainer.train()

    if cfg.selection == "dev":
        _, chosen, snapshot = recorder.best
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in snapshot:
                    param.copy_(snapshot[name])
    else:
        chosen = cfg.epochs
    record["selection"]["chosen_epoch"] = chosen
    record["metrics"] = recorder.history[chosen - 1]["test"]
    tokens = int(sum(len(ids) for ids in train["input_ids"])) * cfg.epochs
    record["timing"].update(train_time_s=round(recorder.train_time, 3), eval_time_s=round(recorder.eval_time, 3),
                            train_samples_per_s=round(len(train) * cfg.epochs / recorder.train_time, 3),
                            train_tokens_per_s=round(tokens / recorder.train_time, 3))
    if torch.cuda.is_available():
        record["memory"]["peak_cuda_allocated_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    weights = save_weights(model, cfg, run_dir / "weights")
    record["weights_dir"] = str(weights) if weights else None


def train_and_evaluate(cfg: RunConfig) -> RunResult:
    """Train `cfg`, evaluate on test after every epoch, and write outputs/runs/<run_id>/.

    On any error the record says `failed` with the message and traceback, and the error is re-raised.
    """
    import torch

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings from the fast tokenizer
    try:
        run_dir, record = start_run(cfg)
    except OSError as err:  # nothing was written: say where, and do not point at a record
        raise TcError(unwritable(cfg.run_dir, err)) from None
    started = time.perf_counter()
    try:
        _run(cfg, run_dir, record)
        record["status"] = "success"
    except BaseException as err:  # KeyboardInterrupt too: the record must not stay `running` if we can help it
        record["status"] = "failed"
        record["error"] = {"type": err.__class__.__name__, "message": str(err) or err.__class__.__name__,
                           "traceback": traceback.format_exc()}
        raise
    finally:
        record["timing"]["wall_time_s"] = round(time.perf_counter() - started, 3)
        record["memory"]["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        finish_run(run_dir, record)
    return RunResult(run_dir, record)

