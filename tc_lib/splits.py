"""The splits one run uses: dev carved from train (never from test), a dev cap, the training subsample;
and what the record says of them (`record.DataInfo`)."""

from __future__ import annotations

import numpy as np

from .config import RunConfig
from .data import files_for
from .metrics import balanced_class_weights, majority_floor
from .record import DataInfo


def describe_splits(cfg: RunConfig, splits: dict, *, names: list[str],
                    train_split_size: int) -> tuple[DataInfo, int | None]:
    """(the record's data section, the dev size its selection names). Sizes, the train label counts, the
    majority floor on test, the files (verified on load) and, with class_weights: balanced, the weights
    the training loss (or logistic regression) gives each class."""
    train_labels, test_labels = list(splits["train"]["labels"]), list(splits["test"]["labels"])
    weights = (balanced_class_weights(labels=train_labels, num_classes=len(names))
               if cfg.class_weights == "balanced" else None)
    data = DataInfo(label_names=list(names), train_size=len(train_labels), test_size=len(test_labels),
                    train_split_size=train_split_size, data_seed=cfg.effective_data_seed,
                    train_label_counts=np.bincount(train_labels, minlength=len(names)).tolist(),
                    majority_floor=majority_floor(labels=test_labels, num_classes=len(names)),
                    files={f.relpath: f.sha256 for f in files_for(cfg.datasets)}, class_weights=weights)
    return data, len(splits["dev"]) if "dev" in splits else None


def run_splits(cfg: RunConfig, dataset) -> dict:
    """carve_splits with the run's data settings: an encoder and the TF-IDF reference with the same
    settings get the same examples."""
    return carve_splits(dataset, selection=cfg.selection, dev_fraction=cfg.dev_fraction,
                        max_dev_samples=cfg.max_dev_samples, max_train_samples=cfg.max_train_samples,
                        data_seed=cfg.effective_data_seed)


def carve_splits(dataset, *, selection: str, dev_fraction: float, max_train_samples: int | None,
                 data_seed: int, max_dev_samples: int | None = None) -> dict:
    """{"train", "dev" (selection "dev"), "test"}: dev carved from train (stratified when every class
    allows it; then, with max_dev_samples, a seeded subsample of it, the rest unused), then the seeded
    subsample of what is left. Only sizes, labels and the seed decide which examples, so raw text (the
    TF-IDF reference) and token ids (the encoders) get the same examples."""
    train, splits = dataset["train"], {"test": dataset["test"]}
    if selection == "dev":
        train, splits["dev"] = _split_off(train, dev_fraction, data_seed)
        if max_dev_samples is not None and max_dev_samples < len(splits["dev"]):
            splits["dev"] = _split_off(splits["dev"], max_dev_samples, data_seed)[1]
    if max_train_samples is not None and max_train_samples < len(train):
        train = train.shuffle(seed=data_seed).select(range(max_train_samples))
    splits["train"] = train
    return splits


def _split_off(split, size: float | int, seed: int):
    """(rest, the part split off): `size` a fraction or a count; stratified unless a class is too rare."""
    try:
        parts = split.train_test_split(test_size=size, seed=seed, stratify_by_column="labels")
    except ValueError:  # a class too rare to stratify (few-shot): plain seeded split
        parts = split.train_test_split(test_size=size, seed=seed)
    return parts["train"], parts["test"]
