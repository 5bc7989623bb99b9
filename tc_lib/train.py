"""`train_and_evaluate(cfg)`: train one configuration with the HF Trainer and write its run record."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import resource
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, NamedTuple

from .config import RunConfig
from .data import data_root, get_dataset, label_names
from .device import check as check_device
from .device import describe as describe_device
from .device import memory_peaks
from .device import resolve as resolve_device
from .device import resolve_autocast
from .errors import ConfigError, TcError
from .epochs import Recorder, trainer_class
from .methods import REFERENCES
from .precision import trainer_flags
from .models import build_model, load_tokenizer, save_weights
from .splits import describe_splits, run_splits
from .record import ErrorInfo, Memory, Timing
from .results import (DataNoted, Fit, RunResult, finish_run, process_age_s, record_data, record_fit, start_run,
                      unwritable)

logger = logging.getLogger(__name__)


@functools.lru_cache(maxsize=8)
def _raw(model: str, datasets: tuple[str, ...], data_seed: int, root: str):
    """(tokenizer, raw DatasetDict), once per (model, datasets, data seed) in this process."""
    tokenizer = load_tokenizer(model)
    return tokenizer, get_dataset(list(datasets), tokenizer.sep_token, root=Path(root), data_seed=data_seed)


class Prepared(NamedTuple):
    """What a run trains and scores on: the tokenizer, the tokenized splits, the label names and the size
    of the whole train split (before dev was carved and the subsample drawn)."""

    tokenizer: Any
    splits: dict
    label_names: list[str]
    train_split_size: int


def prepare_splits(cfg: RunConfig) -> Prepared:
    """The run's splits ({"train", "dev"?, "test"}), tokenized. Dev is carved from train, never from test;
    only the examples a run uses are tokenized (no padding here)."""
    import datasets as hf_datasets

    hf_datasets.disable_progress_bars()
    tokenizer, raw = _raw(cfg.model, cfg.datasets, cfg.effective_data_seed, str(data_root()))
    splits = run_splits(cfg, raw)
    tokenized = {name: split.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=cfg.max_seq_length),
                                 batched=True, remove_columns=["text"]) for name, split in splits.items()}
    return Prepared(tokenizer, tokenized, label_names(raw), len(raw["train"]))


def _interactive() -> bool:
    """In a Jupyter kernel the user opened (not a grid's papermill kernel): show progress bars."""
    return "ipykernel" in sys.modules and "TC_EXECUTOR" not in os.environ


def _check_reporter(cfg: RunConfig) -> None:
    # each report_to value (tensorboard, mlflow) is also the name of the package it needs
    if cfg.report_to != "none" and importlib.util.find_spec(cfg.report_to) is None:
        raise ConfigError(f"field 'report_to': {cfg.report_to} needs the optional package {cfg.report_to!r} "
                          f"(pip install {cfg.report_to}); or report_to: none")


def training_arguments(cfg: RunConfig, *, output_dir: str, run_dir: Path, device: str):
    """The Trainer's arguments for `cfg` (benchmarks build their Trainer with these too)."""
    from accelerate.state import AcceleratorState
    from transformers import TrainingArguments

    # TrainingArguments(bf16=True) exports ACCELERATE_MIXED_PRECISION=bf16 and accelerate keeps a
    # process-wide state: without clearing both, a later run in the same process (a notebook run twice,
    # the tests) would silently train under the previous run's autocast
    os.environ.pop("ACCELERATE_MIXED_PRECISION", None)
    AcceleratorState._reset_state(reset_partial_state=True)
    return TrainingArguments(
        output_dir=output_dir, seed=cfg.seed, num_train_epochs=cfg.epochs, learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.train_batch_size, per_device_eval_batch_size=cfg.eval_batch_size,
        warmup_ratio=cfg.warmup_ratio, weight_decay=cfg.weight_decay, eval_strategy="epoch",
        logging_strategy="epoch", save_strategy="no", disable_tqdm=not _interactive(),
        report_to=[] if cfg.report_to == "none" else [cfg.report_to], logging_dir=str(run_dir / "tensorboard"),
        label_names=["labels"],  # PeftModel hides `labels` from Trainer's signature check
        use_cpu=device == "cpu", **trainer_flags(resolve_autocast(cfg.mixed_precision, device)),
        dataloader_num_workers=0, group_by_length=cfg.group_by_length,
    )


def _loss_function(class_weights: list[float] | None):
    """The Trainer's compute_loss_func: cross-entropy weighted per class, PyTorch's weighted mean per
    batch (None: the model's own unweighted loss). A run is one process on one device, so the Trainer's
    num_items_in_batch (for losses summed across devices) is not needed. Evaluation losses stay
    unweighted, comparable across runs."""
    if class_weights is None:
        return None
    import torch

    weight = torch.tensor(class_weights, dtype=torch.float32)

    def weighted_cross_entropy(outputs, labels, num_items_in_batch=None):
        logits = outputs.logits.float()
        return torch.nn.functional.cross_entropy(logits, labels, weight=weight.to(logits.device))

    return weighted_cross_entropy


def _fit(cfg: RunConfig, run_dir: Path, started: float, device: str, on_data: DataNoted, autocast: str) -> Fit:
    import torch
    from transformers import DataCollatorWithPadding, PrinterCallback, set_seed

    tokenizer, splits, names, split_size = prepare_splits(cfg)
    train = splits["train"]
    data, dev_size = describe_splits(cfg, splits, names=names, train_split_size=split_size)
    on_data(data, dev_size)

    set_seed(cfg.seed)  # before the model is built: the new head's initialisation depends on it
    model, counts = build_model(cfg, len(names), id2label=dict(enumerate(names)))
    # the modules peft wrapped (prompt-learning methods such as prefix tuning wrap none)
    targets = getattr(getattr(model, "peft_config", {}).get("default"), "target_modules", None)

    collator = DataCollatorWithPadding(tokenizer)
    recorder = Recorder(cfg, len(names), splits, collator, autocast=autocast)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats(0)
    with tempfile.TemporaryDirectory(prefix="tc_trainer_") as scratch:
        # eval_dataset only satisfies the Trainer's check: Recorder.evaluate_epoch decides what is scored
        args = training_arguments(cfg, output_dir=scratch, run_dir=run_dir, device=device)
        trainer = trainer_class(recorder)(model=model, args=args, train_dataset=train, eval_dataset=splits["test"],
                                          data_collator=collator, callbacks=[recorder.callback(run_dir)],
                                          compute_loss_func=_loss_function(data.class_weights))
        trainer.remove_callback(PrinterCallback)
        trainer.train()

    score, chosen = None, cfg.epochs
    if cfg.selection == "dev":
        score, chosen, snapshot = recorder.best
        with torch.no_grad():
            for name, param in model.named_parameters():
                if name in snapshot:
                    param.copy_(snapshot[name])
    metrics = recorder.test_scores(model, chosen)  # the history row of the chosen epoch gets them too
    tokens = int(sum(len(ids) for ids in train["input_ids"])) * cfg.epochs
    timing = Timing(setup_s=round(recorder.train_started - started, 3), train_time_s=round(recorder.train_time, 3),
                    eval_time_s=round(recorder.eval_time, 3),
                    train_samples_per_s=round(len(train) * cfg.epochs / recorder.train_time, 3),
                    train_tokens_per_s=round(tokens / recorder.train_time, 3))
    weights = save_weights(model, cfg, run_dir / "weights")
    return Fit(params=counts.to_dict(), chosen_epoch=chosen, score=score, metrics=metrics,
               history=recorder.history, timing=timing,
               memory=Memory(**memory_peaks()) if device == "cuda" else Memory(),
               peft_target_modules=sorted(targets) if targets else None,
               weights_dir=str(weights) if weights else None)


def train_and_evaluate(cfg: RunConfig) -> RunResult:
    """Train `cfg` (dev scored after every epoch, test once at the chosen epoch), write outputs/runs/<run_id>/.

    On any error the record says `failed` with the message and traceback, and the error is re-raised.
    """
    import torch

    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no fork warnings from the fast tokenizer
    # before the record: a missing optional package or an unusable device is a config error, not a failed run
    _check_reporter(cfg)
    device = "cpu" if cfg.method in REFERENCES else resolve_device(cfg.device)  # scikit-learn: the CPU
    if cfg.method not in REFERENCES:
        check_device(cfg, device)
    try:
        run_dir, record = start_run(cfg)
    except OSError as err:  # nothing was written: say where, and do not point at a record
        raise TcError(unwritable(cfg.run_dir, err)) from None
    record.device = describe_device(device, cfg.device)
    record.environment.device = device
    record.environment.gpu_name = record.device["name"] if device == "cuda" else None
    if cfg.method not in REFERENCES:
        record.environment.autocast = resolve_autocast(cfg.mixed_precision, device)
    started, age = time.perf_counter(), process_age_s()  # age: kernel start and imports, for a grid run
    on_data = functools.partial(record_data, record)  # the fitter says which splits it uses, once it knows
    try:
        if cfg.method in REFERENCES:
            from .reference import fit_reference

            fit = fit_reference(cfg, run_dir, started, on_data)
        else:
            fit = _fit(cfg, run_dir, started, device, on_data, record.environment.autocast)
        record_fit(run_dir, record, fit)
        if age is not None:
            record.timing.startup_s = round(age + record.timing.setup_s, 3)
        record.status = "success"
    except BaseException as err:  # KeyboardInterrupt too: the record must not stay `running` if we can help it
        # Ctrl-C is the user's stop, as in a grid: resumable, not a failure of the run
        record.status = "interrupted" if isinstance(err, KeyboardInterrupt) else "failed"
        record.error = ErrorInfo(type=err.__class__.__name__, message=str(err) or err.__class__.__name__,
                                 traceback=traceback.format_exc())
        raise
    finally:
        record.timing.wall_time_s = round(time.perf_counter() - started, 3)
        record.memory.peak_rss_mb = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        finish_run(run_dir, record)
    return RunResult(run_dir, record)

