"""The splits one run uses: dev carved from train (never from test), a dev cap, the training subsample."""

from __future__ import annotations


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
