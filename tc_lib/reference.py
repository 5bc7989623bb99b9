"""The classical reference as runs: TF-IDF (uni+bigrams, sublinear tf) + logistic regression (C=10),
method `tfidf_lr`, model `tfidf`. It trains on exactly the examples an encoder run with the same data
settings trains on (splits.run_splits), honours seed and subsample, and returns the same Fit."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from .config import RunConfig
from .data import data_root, get_dataset, label_names
from .metrics import classification_metrics
from .record import Timing
from .results import DataNoted, Fit
from .splits import describe_splits, run_splits

SEP = " [SEP] "  # joins aspect and sentence of the pair datasets; a token of its own for TF-IDF
C = 10.0
NGRAMS = (1, 2)
REFERENCE_FILE = "model.joblib"  # the fitted pipeline, under the run's weights/


def _pipeline(seed: int, class_weights: str):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(ngram_range=NGRAMS, sublinear_tf=True, min_df=1),
                         LogisticRegression(max_iter=2000, C=C, random_state=seed,
                                            class_weight="balanced" if class_weights == "balanced" else None))


def reference_splits(cfg: RunConfig) -> tuple[dict, list[str], int]:
    """({"train", "dev"?, "test"} as raw text, label names, full train size): an encoder run with the
    same data settings trains on exactly these examples."""
    raw = get_dataset(list(cfg.datasets), SEP, root=data_root(), data_seed=cfg.effective_data_seed)
    splits = run_splits(cfg, raw)
    return splits, label_names(raw), len(raw["train"])


def fit_reference(cfg: RunConfig, run_dir: Path, started: float, on_data: DataNoted) -> Fit:
    """Fit on the run's train split, score dev (if any) and test."""
    splits, names, split_size = reference_splits(cfg)
    data, dev_size = describe_splits(cfg, splits, names=names, train_split_size=split_size)
    on_data(data, dev_size)
    model = _pipeline(cfg.seed, cfg.class_weights)
    setup_s = round(time.perf_counter() - started, 3)
    started = time.perf_counter()
    model.fit(list(splits["train"]["text"]), list(splits["train"]["labels"]))
    train_time = time.perf_counter() - started
    started = time.perf_counter()
    row: dict[str, Any] = {"epoch": 1, "train_loss": None, "train_time_s": round(train_time, 3)}
    for split in ("dev", "test"):
        if split in splits:
            row[split] = _scores(model, splits[split], len(names))
    eval_time = time.perf_counter() - started
    classifier = model[-1]
    n = int(classifier.coef_.size + classifier.intercept_.size)
    # trainable_no_head 0: the logistic regression is all head
    return Fit(params={"total": n, "trainable": n, "trainable_no_head": 0},
               chosen_epoch=1, score=row["dev"]["macro_f1"] if "dev" in row else None, metrics=row["test"],
               history=[row], timing=Timing(setup_s=setup_s, train_time_s=round(train_time, 3),
                                            eval_time_s=round(eval_time, 3),
                                            train_samples_per_s=round(len(splits["train"]) / max(train_time, 1e-9), 3)),
               weights_dir=str(_save(model, run_dir / "weights")) if cfg.save_weights != "none" else None)


def _save(model, directory: Path) -> Path:
    """The fitted pipeline (a few MB), for tc_lib.inference.predict."""
    import joblib

    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, directory / REFERENCE_FILE)
    return directory


def _scores(model, split, num_classes: int) -> dict[str, Any]:
    from sklearn.metrics import log_loss

    texts, labels = list(split["text"]), list(split["labels"])
    proba = model.predict_proba(texts)
    predictions = model.classes_[proba.argmax(axis=1)]
    scores = classification_metrics(labels=labels, predictions=predictions, num_classes=num_classes)
    # classes missing from a small train subsample get probability 0: log_loss needs the full label set
    full = np.zeros((len(labels), num_classes))
    full[:, model.classes_] = proba
    return {"loss": float(log_loss(labels, full, labels=list(range(num_classes)))), **scores}
