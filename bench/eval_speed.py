"""Evaluation speed, side by side in one process on the same model and test split (MiniLM with a
fresh head, restaurant_sup test, 1,120 examples):

  (a) tc_lib.evaluate.predict: length-sorted batches, dynamic padding, inference mode, batch 64;
  (b) the HF Trainer's default evaluation: `Trainer.predict` in file order, batch 8 (its default).

Prints examples/s of each (best of --repeats), the ratio a/b and the torch thread count, and asserts
identical predictions. Target: a/b >= 3 at the best batch size (exit 1 below it). Also prints the tokens each way computes (padding included)
per real token: their quotient is what batching alone can gain, the rest must come from faster compute. Run: `OMP_NUM_THREADS=1 .venv/bin/python bench/eval_speed.py`.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch


def best_of(repeats: int, fn):
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def padded_per_real(lengths: np.ndarray, batch_size: int) -> float:
    """Tokens computed (every batch padded to its longest member) per real token."""
    padded = sum(int(lengths[i:i + batch_size].max()) * len(lengths[i:i + batch_size])
                 for i in range(0, len(lengths), batch_size))
    return padded / int(lengths.sum())


def main(argv: list[str] | None = None) -> int:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed

    from tc_lib.config import RunConfig
    from tc_lib.evaluate import predict
    from tc_lib.models import build_model
    from tc_lib.train import prepare_splits

    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--model", default="minilm", help="a tc_lib model name, hub id or local folder")
    parser.add_argument("--dataset", default="restaurant_sup")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 64, 128])
    args = parser.parse_args(argv)

    cfg = RunConfig(model=args.model, dataset=args.dataset)
    tokenizer, splits, names, _ = prepare_splits(cfg)
    test = splits["test"]  # file order
    set_seed(1)
    model, _ = build_model(cfg, len(names))
    model.eval()
    collator = DataCollatorWithPadding(tokenizer)
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(model=model, args=TrainingArguments(output_dir=scratch, report_to="none", use_cpu=True,
                                                              disable_tqdm=True), data_collator=collator)
        t_trainer, out = best_of(args.repeats, lambda: trainer.predict(test).predictions)
    reference = np.argmax(out, axis=-1)
    print(f"threads {torch.get_num_threads()}, {len(test)} test examples of {args.dataset}")
    lengths = np.array([len(ids) for ids in test["input_ids"]])
    print(f"(b) Trainer default evaluation (file order, batch 8): {len(test) / t_trainer:8.1f} ex/s   "
          f"{padded_per_real(lengths, 8):.2f} tokens computed per real token")
    ratios = []
    for batch_size in args.batch_sizes:
        sorted_waste = padded_per_real(np.sort(lengths, kind="stable"), batch_size)
        t_ours, logits = best_of(args.repeats, lambda: predict(model, test, collator=collator, batch_size=batch_size))
        if not (np.argmax(logits, axis=-1) == reference).all():
            print(f"(a) tc_lib.evaluate, batch {batch_size}: predictions differ from (b)")
            return 1
        ratios.append(t_trainer / t_ours)
        print(f"(a) tc_lib.evaluate, batch {batch_size:>3}: {len(test) / t_ours:8.1f} ex/s   "
              f"a/b = {t_trainer / t_ours:.2f}x   identical predictions   {sorted_waste:.2f} tokens per real token "
              f"(padding bound on a/b: {padded_per_real(lengths, 8) / sorted_waste:.2f}x)")
    print(f"best a/b = {max(ratios):.2f} (target >= 3)")
    return 0 if max(ratios) >= 3 else 1


if __name__ == "__main__":
    raise SystemExit(main())
