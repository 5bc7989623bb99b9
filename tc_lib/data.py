"""Datasets: pinned raw files, checksummed fetch, strict readers and `get_dataset`.

Label orders are fixed here and decide what `labels` means in every run record:
- restaurant / laptop (SemEval-2014 Task 4 aspect polarity): positive=0, neutral=1, negative=2
  (the ContinualLM order);
- acl (ACL-ARC citation intent): alphabetical — Background, CompareOrContrast, Extends, Future,
  Motivation, Uses;
- agnews: World, Sports, Business, Sci/Tech (the CSV class index minus one, as in classes.txt).
"""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import DataError
from .sources import RAW_FILES, RawFile, data_root, fetch_files, verify_file, verify_files

DEFAULT_DATA_SEED = 2022  # the AG News split seed of the 2024 course cohort (see README)
FEW_SHOT_SIZE = 32
AGNEWS_TEST_FRACTION = 0.1


Examples = tuple[list[str], list[int]]


# ---------------------------------------------------------------- strict readers


def _read_text(path: Path) -> str:
    """The file as UTF-8 text; a missing, empty or undecodable file names the file (and the line)."""
    if not path.is_file():
        raise DataError(f"{path}: file is missing")
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line, byte = raw[:err.start].count(b"\n") + 1, raw[err.start]
        raise DataError(f"{path} line {line}: not UTF-8 text (byte {byte:#04x} at offset {err.start})") from None
    if not text.strip():
        raise DataError(f"{path}: file is empty")
    return text


def _label_id(path: Path, where: str, value: object, labels: Sequence[str]) -> int:
    if value not in labels:
        raise DataError(f"{path} {where}: unknown label {value!r}; expected one of {', '.join(labels)}")
    return labels.index(value)


def _read_semeval(path: Path, labels: Sequence[str], sep_token: str) -> Examples:
    """SemEval-2014 ASC JSON: one dict {id: {"term", "sentence", "polarity"}}; text = term SEP sentence."""
    try:
        records = json.loads(_read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path} line {err.lineno} column {err.colno}: malformed JSON ({err.msg})") from None
    except RecursionError:
        raise DataError(f"{path}: JSON nested too deeply; expected an object mapping id -> record") from None
    if not isinstance(records, dict):
        raise DataError(f"{path}: expected a JSON object mapping id -> record, got {type(records).__name__}")
    texts, ids = [], []
    for key, rec in records.items():
        where = f"record {key!r}"
        if not isinstance(rec, dict):
            raise DataError(f"{path} {where}: expected an object with term, sentence, polarity")
        for field in ("term", "sentence", "polarity"):
            if not isinstance(rec.get(field), str):
                raise DataError(f"{path} {where}: field {field!r} missing or not a string")
        texts.append(f"{rec['term']} {sep_token} {rec['sentence']}")
        ids.append(_label_id(path, where, rec["polarity"], labels))
    return texts, ids


def _read_jsonl(path: Path, labels: Sequence[str], sep_token: str) -> Examples:
    """ACL-ARC JSON lines: {"text": str, "label": str, ...} per line."""
    texts, ids = [], []
    for lineno, line in enumerate(_read_text(path).splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            raise DataError(f"{path} line {lineno}: malformed JSON ({err.msg})") from None
        except RecursionError:
            raise DataError(f"{path} line {lineno}: JSON nested too deeply; expected one flat object") from None
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str) or "label" not in rec:
            raise DataError(f"{path} line {lineno}: expected an object with string 'text' and 'label'")
        texts.append(rec["text"])
        ids.append(_label_id(path, f"line {lineno}", rec["label"], labels))
    return texts, ids


def _read_agnews_csv(path: Path, labels: Sequence[str], sep_token: str) -> Examples:
    """AG News CSV without header: class index 1..4, title, description; text = title + ' ' + description."""
    texts, ids = [], []
    valid = [str(i) for i in range(1, len(labels) + 1)]
    with io.StringIO(_read_text(path), newline="") as fh:
        rows = csv.reader(fh)
        for rowno in itertools.count(1):
            try:
                row = next(rows)
            except StopIteration:
                break
            except csv.Error as err:  # e.g. a field larger than the csv module's limit (128 KiB)
                raise DataError(f"{path} row {rowno}: not readable as CSV ({err})") from None
            if len(row) != 3:
                raise DataError(f"{path} row {rowno}: expected 3 columns (class index, title, description), "
                                f"got {len(row)}")
            index = row[0].strip()
            if index not in valid:
                raise DataError(f"{path} row {rowno}: unknown class index {row[0]!r}; expected one of "
                                f"{', '.join(valid)}")
            texts.append(f"{row[1]} {row[2]}")
            ids.append(int(index) - 1)
    return texts, ids


# ---------------------------------------------------------------- registry


@dataclass(frozen=True)
class Source:
    """One base dataset: its label order, raw files per split and reader."""

    labels: tuple[str, ...]
    files: dict[str, str]  # split -> RAW_FILES key
    reader: Callable[[Path, Sequence[str], str], Examples]


_POLARITY = ("positive", "neutral", "negative")
SOURCES: dict[str, Source] = {
    "restaurant": Source(_POLARITY, {"train": "semeval14_restaurant/train.json",
                                     "test": "semeval14_restaurant/test.json"}, _read_semeval),
    "laptop": Source(_POLARITY, {"train": "semeval14_laptop/train.json",
                                 "test": "semeval14_laptop/test.json"}, _read_semeval),
    "acl": Source(("Background", "CompareOrContrast", "Extends", "Future", "Motivation", "Uses"),
                  {"train": "acl_arc/train.jsonl", "test": "acl_arc/test.jsonl"}, _read_jsonl),
    # One file: the 7,600-row AG News test split, divided 9:1 into our train/test.
    "agnews": Source(("World", "Sports", "Business", "Sci/Tech"), {"all": "agnews/test.csv"}, _read_agnews_csv),
}
DATASET_NAMES: tuple[str, ...] = tuple(f"{s}_{v}" for s in SOURCES for v in ("sup", "fs"))


def _split_name(name: object) -> tuple[str, str]:
    if not isinstance(name, str) or name not in DATASET_NAMES:
        raise DataError(f"unknown dataset {name!r}; valid names: {', '.join(DATASET_NAMES)}")
    base, variant = name.rsplit("_", 1)
    return base, variant


def files_for(names: Sequence[str] | None = None) -> list[RawFile]:
    """The raw files that the named datasets need (all when `names` is empty or None)."""
    bases = [_split_name(n)[0] for n in names] if names else list(SOURCES)
    keys = dict.fromkeys(k for b in bases for k in SOURCES[b].files.values())
    return [RAW_FILES[k] for k in keys]


def verify(names: Sequence[str] | None = None, *, root: Path | None = None) -> list[dict]:
    """Check every raw file of the named datasets that is present; rows {file, status: ok | missing}."""
    return verify_files(files_for(names), root=root)


def fetch(names: Sequence[str] | None = None, *, root: Path | None = None,
          base_url: str | None = None) -> list[dict]:
    """Download the named datasets' missing raw files (sha256-checked); present files are only verified."""
    return fetch_files(files_for(names), root=root, base_url=base_url)


# ---------------------------------------------------------------- building the DatasetDict


def _read_source(base: str, root: Path, sep_token: str, data_seed: int, verify_checksums: bool) -> dict[str, Examples]:
    source = SOURCES[base]
    read = {}
    for split, key in source.files.items():
        raw = RAW_FILES[key]
        path = verify_file(raw, root) if verify_checksums else root / raw.relpath
        read[split] = source.reader(path, source.labels, sep_token)
    if "all" in read:
        texts, labels = read.pop("all")
        order = np.random.default_rng(data_seed).permutation(len(texts))
        n_test = int(np.ceil(AGNEWS_TEST_FRACTION * len(texts)))
        test_idx, train_idx = np.sort(order[:n_test]), np.sort(order[n_test:])
        read["train"] = ([texts[i] for i in train_idx], [labels[i] for i in train_idx])
        read["test"] = ([texts[i] for i in test_idx], [labels[i] for i in test_idx])
    return read


def few_shot_indices(labels: Sequence[int], num_classes: int, *, size: int = FEW_SHOT_SIZE,
                     seed: int = DEFAULT_DATA_SEED) -> list[int]:
    """Indices of a class-balanced few-shot sample.

    Each class gets size // num_classes examples; the size % num_classes extra places go to classes
    in a seeded random order; a class short of examples gives its places to the others. Within a
    class, examples are drawn uniformly without replacement. Returned sorted (file order).
    """
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    pools = [rng.permutation(np.flatnonzero(labels == c)) for c in range(num_classes)]
    quota = np.full(num_classes, size // num_classes)
    quota[rng.permutation(num_classes)[: size % num_classes]] += 1
    quota = np.minimum(quota, [len(p) for p in pools])
    while quota.sum() < min(size, len(labels)):  # hand unfilled places to classes that still have examples
        room = [c for c in range(num_classes) if quota[c] < len(pools[c])]
        quota[room[int(rng.integers(len(room)))]] += 1
    return sorted(int(i) for c in range(num_classes) for i in pools[c][: quota[c]])


def _to_dataset(examples: Examples, label_names: Sequence[str]):
    from datasets import ClassLabel, Dataset, Features, Value

    features = Features({"text": Value("string"), "labels": ClassLabel(names=list(label_names))})
    texts, labels = examples
    return Dataset.from_dict({"text": texts, "labels": labels}, features=features)


def get_dataset(dataset_name: str | Sequence[str], sep_token: str, *, root: Path | None = None,
                data_seed: int = DEFAULT_DATA_SEED, verify_checksums: bool = True):
    """Load one dataset or a list of them as a DatasetDict with `train`/`test`, columns text/labels.

    A list concatenates the datasets; each one's labels are offset by the number of classes of the
    datasets before it and its label names are prefixed with its dataset name ("acl_sup:Uses").
    """
    from datasets import DatasetDict, concatenate_datasets

    if not isinstance(sep_token, str):
        raise DataError(f"sep_token must be a string, got {type(sep_token).__name__}")
    names = [dataset_name] if isinstance(dataset_name, str) else list(dataset_name)
    if not names:
        raise DataError("dataset list is empty; give at least one of: " + ", ".join(DATASET_NAMES))
    for name in names:
        _split_name(name)
    if len(set(names)) != len(names):
        raise DataError(f"dataset list {names} names a dataset twice")
    root = Path(root) if root else data_root()

    parts, all_names, offset = {"train": [], "test": []}, [], 0
    for name in names:
        base, variant = _split_name(name)
        labels = SOURCES[base].labels
        read = _read_source(base, root, sep_token, data_seed, verify_checksums)
        if variant == "fs":
            keep = few_shot_indices(read["train"][1], len(labels), seed=data_seed)
            read["train"] = ([read["train"][0][i] for i in keep], [read["train"][1][i] for i in keep])
        for split in parts:
            texts, ids = read[split]
            parts[split].append((texts, [i + offset for i in ids]))
        all_names += [f"{name}:{label}" if len(names) > 1 else label for label in labels]
        offset += len(labels)

    merged = {}
    for split, chunks in parts.items():
        merged[split] = concatenate_datasets([_to_dataset(c, all_names) for c in chunks])
    return DatasetDict(merged)


def label_names(dataset) -> list[str]:
    """The label names recorded on a split (or DatasetDict) from get_dataset."""
    split = dataset["train"] if hasattr(dataset, "keys") else dataset
    return list(split.features["labels"].names)


def dataset_info(names: Sequence[str] | None = None, *, root: Path | None = None,
                 data_seed: int = DEFAULT_DATA_SEED, verify_checksums: bool = True) -> list[dict]:
    """Per dataset and split: size and label counts (in label order)."""
    rows = []
    for name in names or DATASET_NAMES:
        ds = get_dataset(name, "[SEP]", root=root, data_seed=data_seed, verify_checksums=verify_checksums)
        label_list = label_names(ds)
        for split in ("train", "test"):
            counts = Counter(ds[split]["labels"])
            rows.append({"dataset": name, "split": split, "size": len(ds[split]),
                         "label_counts": {label: counts.get(i, 0) for i, label in enumerate(label_list)}})
    return rows
