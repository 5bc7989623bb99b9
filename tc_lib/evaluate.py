"""Evaluation at the speed of training's batching: batches of similar length (the split sorted by
length), padded per batch, under torch.inference_mode, logits mapped back to the split's order.
The Trainer's own evaluation walks the split in file order in batches of 8 and pads each batch to its
longest member; bench/eval_speed.py compares the two side by side (identical predictions)."""

from __future__ import annotations

from typing import Any

import numpy as np

from .metrics import classification_metrics
from .precision import autocast

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def predict(model: Any, split: Any, *, collator: Any, batch_size: int, mixed_precision: str = "no") -> np.ndarray:
    """Logits (float32) for every example of `split`, in the split's order."""
    import torch

    columns = [c for c in MODEL_INPUTS if c in split.column_names]
    lengths = np.fromiter((len(ids) for ids in split["input_ids"]), dtype=np.int64, count=len(split))
    order = np.argsort(lengths, kind="stable")
    values = {c: split[c] for c in columns}  # python lists once: row access on an Arrow table is slow
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out: np.ndarray | None = None
    try:
        with torch.inference_mode(), autocast(mixed_precision, device.type):
            for start in range(0, len(order), batch_size):
                index = order[start:start + batch_size]
                batch = collator([{c: values[c][i] for c in columns} for i in index])
                logits = model(**{k: v.to(device) for k, v in batch.items() if k in columns}).logits
                logits = logits.float().cpu().numpy()
                if out is None:
                    out = np.empty((len(split), logits.shape[-1]), dtype=np.float32)
                out[index] = logits
    finally:
        model.train(was_training)
    return out if out is not None else np.empty((0, 0), dtype=np.float32)


def cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean cross-entropy of float32 logits (log-sum-exp, stable)."""
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return float(-log_probs[np.arange(len(labels)), labels].mean())


def evaluate(model: Any, split: Any, *, collator: Any, batch_size: int, num_classes: int,
             mixed_precision: str = "no") -> dict[str, Any]:
    """Loss and classification metrics (tc_lib.metrics) of `model` on `split`."""
    logits = predict(model, split, collator=collator, batch_size=batch_size, mixed_precision=mixed_precision)
    labels = np.asarray(split["labels"], dtype=np.int64)
    scores = classification_metrics(labels=labels, predictions=logits.argmax(axis=-1), num_classes=num_classes)
    return {"loss": cross_entropy(logits, labels), **scores}
