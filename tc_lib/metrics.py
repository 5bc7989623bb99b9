"""Classification metrics (scikit-learn), the one list of the scores every split gets (METRICS), and the
majority-class floor."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Sequence

import numpy as np


@dataclass(frozen=True)
class Metric:
    """A score each scored split gets: the trainer's log, the runs table, the statistics, the report's
    tables and the export all read this list, so a new metric is one entry (and its computation)."""

    name: str
    label: str  # bilingual, for the report
    higher_is_better: bool
    format: str = ".4f"


METRICS = (Metric("loss", "损失 Loss", False), Metric("accuracy", "准确率 Accuracy", True),
           Metric("micro_f1", "Micro-F1", True), Metric("macro_f1", "Macro-F1", True))
SCORE_NAMES = tuple(m.name for m in METRICS)
LABELS = {m.name: m.label for m in METRICS}


def classification_metrics(*, labels: Sequence[int], predictions: Sequence[int], num_classes: int) -> dict:
    """Accuracy, micro/macro F1, per-class F1 and the confusion matrix (rows = true, cols = predicted).

    Classes absent from both labels and predictions get F1 0 (scikit-learn's zero_division=0) and
    still count in the macro average, so every run of a dataset averages over the same classes.
    """
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

    classes = list(range(num_classes))
    return {
        "accuracy": float(accuracy_score(labels, predictions)),
        "micro_f1": float(f1_score(labels, predictions, labels=classes, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(labels, predictions, labels=classes, average="macro", zero_division=0)),
        "per_class_f1": [float(x) for x in f1_score(labels, predictions, labels=classes, average=None,
                                                     zero_division=0)],
        "confusion_matrix": confusion_matrix(labels, predictions, labels=classes).tolist(),
    }


def majority_floor(*, labels: Sequence[int], num_classes: int) -> dict:
    """Scores of always predicting the most frequent class of `labels` (ties: lowest label id)."""
    counts = Counter(int(x) for x in labels)
    majority = min(counts, key=lambda c: (-counts[c], c))
    scores = classification_metrics(labels=labels, predictions=np.full(len(labels), majority),
                                    num_classes=num_classes)
    return {"majority_class": majority, "accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"]}


def balanced_class_weights(*, labels: Sequence[int], num_classes: int) -> list[float]:
    """Loss weights n / (k * count_c) over the k classes present in `labels` (scikit-learn's "balanced",
    the rule LogisticRegression(class_weight="balanced") applies); 0 for a class with no example."""
    from sklearn.utils.class_weight import compute_class_weight

    present = np.unique(np.asarray(labels, dtype=np.int64))
    weights = np.zeros(num_classes)
    weights[present] = compute_class_weight("balanced", classes=present, y=np.asarray(labels))
    return weights.tolist()
