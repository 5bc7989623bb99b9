"""Training throughput, three ways side by side in one process (MiniLM, restaurant_sup, same batches):

  (a) tc_lib.train_and_evaluate: length-grouped batches, dynamic padding per batch, Trainer;
  (b) the common course recipe: Trainer with every example padded to max_length=128;
  (c) a bare PyTorch loop (AdamW + linear schedule) over the batches of (a).

Prints examples/s of each, a/b and a/c, and the macro-F1 of (a) and (b). Targets: a/b >= 3 at equal
macro-F1 (within 1 point), a/c >= 0.9; exit 1 when one is missed. It uses the run core's public API
(`train_and_evaluate`, `prepare_splits`, `training_arguments`, `build_model`); tests/test_bench.py runs it
end to end on a tiny model. Run: `OMP_NUM_THREADS=1 .venv/bin/python bench/throughput.py [--train-samples N]`.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def bench_tc_lib(cfg):
    from tc_lib.train import train_and_evaluate

    rec = train_and_evaluate(cfg).record
    return rec.timing.train_samples_per_s, rec.metrics["macro_f1"]


def bench_padded_trainer(cfg, splits, tokenizer, num_labels: int):
    from transformers import Trainer, TrainingArguments, set_seed

    from tc_lib.metrics import classification_metrics
    from tc_lib.models import build_model

    def pad128(split):
        ids = tokenizer.pad({"input_ids": list(split["input_ids"])}, padding="max_length",
                            max_length=cfg.max_seq_length)
        return split.remove_columns(["input_ids", "attention_mask"] + [c for c in split.column_names
                                                                      if c == "token_type_ids"]) \
            .add_column("input_ids", ids["input_ids"]).add_column("attention_mask", ids["attention_mask"])

    train, test = pad128(splits["train"]), pad128(splits["test"])
    set_seed(cfg.seed)
    model, _ = build_model(cfg, num_labels)
    with tempfile.TemporaryDirectory() as out:
        args = TrainingArguments(output_dir=out, seed=cfg.seed, num_train_epochs=cfg.epochs,
                                 learning_rate=cfg.learning_rate, per_device_train_batch_size=cfg.train_batch_size,
                                 per_device_eval_batch_size=cfg.eval_batch_size, warmup_ratio=cfg.warmup_ratio,
                                 weight_decay=cfg.weight_decay, save_strategy="no", report_to="none",
                                 disable_tqdm=True, use_cpu=True, logging_strategy="no")
        trainer = Trainer(model=model, args=args, train_dataset=train)
        start = time.perf_counter()
        trainer.train()
        speed = len(train) * cfg.epochs / (time.perf_counter() - start)
        logits = trainer.predict(test).predictions
    f1 = classification_metrics(labels=list(test["labels"]), predictions=np.argmax(logits, -1), num_classes=num_labels)
    return speed, f1["macro_f1"]


def bench_bare_loop(cfg, splits, tokenizer, num_labels: int):
    from transformers import DataCollatorWithPadding, Trainer, get_linear_schedule_with_warmup, set_seed

    from tc_lib.models import build_model
    from tc_lib.train import training_arguments

    set_seed(cfg.seed)
    model, _ = build_model(cfg, num_labels)
    model.train()
    with tempfile.TemporaryDirectory() as out:  # the batches of (a): tc_lib's sampler and collator
        args = training_arguments(cfg, output_dir=out, run_dir=Path(out), device="cpu")
        loader = Trainer(model=model, args=args, train_dataset=splits["train"],
                         eval_dataset=splits["test"], data_collator=DataCollatorWithPadding(tokenizer)
                         ).get_train_dataloader()
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    steps = len(loader) * cfg.epochs
    schedule = get_linear_schedule_with_warmup(optimizer, int(cfg.warmup_ratio * steps), steps)
    start = time.perf_counter()
    for _ in range(cfg.epochs):
        for batch in loader:
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            schedule.step()
            optimizer.zero_grad(set_to_none=True)
    return len(splits["train"]) * cfg.epochs / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)
    parser.add_argument("--model", default="minilm", help="a tc_lib model name, hub id or local folder")
    parser.add_argument("--dataset", default="restaurant_sup")
    parser.add_argument("--train-samples", type=int, default=None, help="subsample of train (default: all 3,452)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--max-seq-length", type=int, default=128, help="(b) pads every example to this length")
    parser.add_argument("--method", default="full", choices=["full", "lora", "adapter"])
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from tc_lib.config import RunConfig
    from tc_lib.train import prepare_splits

    cfg = RunConfig(model=args.model, dataset=args.dataset, method=args.method, epochs=args.epochs,
                    max_train_samples=args.train_samples, max_seq_length=args.max_seq_length,
                    output_dir=tempfile.mkdtemp(prefix="bench_runs_"), save_weights="none")
    prepared = prepare_splits(cfg)
    tokenizer, splits, labels = prepared.tokenizer, prepared.splits, len(prepared.label_names)
    a_speed, a_f1 = bench_tc_lib(cfg)
    b_speed, b_f1 = bench_padded_trainer(cfg, splits, tokenizer, labels)
    c_speed = bench_bare_loop(cfg, splits, tokenizer, labels)
    n = len(splits["train"])
    print(f"\n{args.model} · {args.dataset} · {args.method} · {n} train examples × {args.epochs} epoch(s) · "
          f"batch {cfg.train_batch_size} · torch threads {torch.get_num_threads()}")
    print(f"(a) tc_lib, length-grouped     {a_speed:8.1f} ex/s   test macro-F1 {a_f1:.4f}")
    print(f"(b) Trainer, padded to {cfg.max_seq_length:<4}    {b_speed:8.1f} ex/s   test macro-F1 {b_f1:.4f}")
    print(f"(c) bare PyTorch loop          {c_speed:8.1f} ex/s")
    a_b, a_c, gap = a_speed / b_speed, a_speed / c_speed, abs(a_f1 - b_f1) * 100
    print(f"a/b = {a_b:.2f}  (target >= 3)   a/c = {a_c:.2f}  (target >= 0.9)   "
          f"|F1(a) - F1(b)| = {gap:.2f} points (target <= 1)")
    return 0 if a_b >= 3 and a_c >= 0.9 and gap <= 1 else 1


if __name__ == "__main__":
    raise SystemExit(main())
