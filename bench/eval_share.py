"""Evaluation's share of a quick run, side by side in one process: the quick profile's restaurant_sup full
fine-tuning run (MiniLM, 256 training examples, dev capped at 128, 3 epochs, class weights, its tuned lr
2e-4, seed 1, mixed_precision auto) twice through the run core (`train_and_evaluate`):

  (a) the default: dev scored after every epoch, the test split (1,120 examples) once, at the chosen epoch;
  (b) `test_every_epoch: true`: test scored after every epoch too (the recipe before test-once).

`--max-dev-samples N` caps the dev split scored every epoch (default 128, as in params/quick.yaml; 0: all of it). Prints eval and wall seconds of each, eval's share of the wall time, the torch thread count, and that
(a) and (b) report the same test numbers. Target: (a)'s eval share <= 1/3 (exit 1 past it).
Run: `OMP_NUM_THREADS=1 .venv/bin/python bench/eval_share.py`.
"""

from __future__ import annotations

import argparse
import tempfile

TARGET = 1 / 3


def main(argv: list[str] | None = None) -> int:
    import torch

    from tc_lib.config import RunConfig
    from tc_lib.precision import MIXED_PRECISION_CHOICES
    from tc_lib.train import train_and_evaluate

    parser = argparse.ArgumentParser(allow_abbrev=False)
    parser.add_argument("--model", default="minilm")
    parser.add_argument("--dataset", default="restaurant_sup")
    parser.add_argument("--max-train-samples", type=int, default=256)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--max-seq-length", type=int, default=128)
    parser.add_argument("--max-dev-samples", type=int, default=128,
                        help="cap the dev split (default 128, the quick profile's; 0: all of its 10 %%)")
    parser.add_argument("--mixed-precision", default="auto", choices=MIXED_PRECISION_CHOICES,
                        help="autocast (default auto, the quick profile's: bf16 where the CPU has it natively)")
    args = parser.parse_args(argv)

    shares = {}
    with tempfile.TemporaryDirectory(prefix="tc_eval_share_") as folder:
        results = {}
        for label, every in (("a test once", False), ("b test every epoch", True)):
            cfg = RunConfig(model=args.model, dataset=args.dataset, method="full", seed=1, epochs=args.epochs,
                            learning_rate=2e-4, max_train_samples=args.max_train_samples, selection="dev",
                            class_weights="balanced", max_seq_length=args.max_seq_length, save_weights="none",
                            max_dev_samples=args.max_dev_samples or None, test_every_epoch=every, output_dir=folder,
                            mixed_precision=args.mixed_precision)
            result = train_and_evaluate(cfg)
            timing = result.record.timing
            shares[label] = timing.eval_time_s / timing.wall_time_s
            dev = result.record.selection.dev_size
            results[label] = result.metrics
            print(f"{label:<20} eval {timing.eval_time_s:7.2f} s of wall {timing.wall_time_s:7.2f} s: "
                  f"{shares[label]:.1%} (train {timing.train_time_s:.2f} s; dev {dev}, test {result.record.data.test_size})")
    same = results["a test once"] == results["b test every epoch"]
    print(f"torch threads {torch.get_num_threads()}; autocast {result.record.environment.autocast}; "
          f"same test numbers: {same}; target: (a) <= {TARGET:.0%} of wall")
    return 0 if same and shares["a test once"] <= TARGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
