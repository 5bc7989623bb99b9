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
import hashlib
import json
import os
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from .errors import DataError

RAW_HOST = "https://raw.githubusercontent.com"
DEFAULT_DATA_SEED = 2022  # the AG News split seed of the 2024 course cohort (see README)
FEW_SHOT_SIZE = 32
AGNEWS_TEST_FRACTION = 0.1

_HOWARDHSU = ("howardhsu/BERT-for-RRC-ABSA", "2d194b1b2fb106c93e64b68513eff48ad0b99a9f")
_SCIBERT = ("allenai/scibert", "06793f77d7278898159ed50da30d173cdc8fdea9")
_CHARCNN = ("mhjabreel/CharCnn_Keras", "555590db4219b1243abb1918effd6a7425a2d75f")


@dataclass(frozen=True)
class RawFile:
    """One upstream file at a pinned commit; `relpath` is where it lives under the data root."""

    relpath: str
    repo: str
    commit: str
    path: str
    sha256: str

    def url(self, base_url: str = RAW_HOST) -> str:
        return f"{base_url.rstrip('/')}/{self.repo}/{self.commit}/{self.path}"


RAW_FILES: dict[str, RawFile] = {
    f.relpath: f
    for f in (
        RawFile("semeval14_restaurant/train.json", *_HOWARDHSU, "transformers/data/ft/asc/14/rest/train.json",
                "9a51a1b32c7fa487e9bdf98b594b9e8d757ab8a7eb5023eb2d03902e7cbab6f9"),
        RawFile("semeval14_restaurant/test.json", *_HOWARDHSU, "transformers/data/ft/asc/14/rest/test.json",
                "588d3f04badf0b4515686346f663cd8f541b3e15adc801e9968255b80d595a9e"),
        RawFile("semeval14_laptop/train.json", *_HOWARDHSU, "transformers/data/ft/asc/14/laptop/train.json",
                "0119c0eed699c82472fb02d9db2a874108c2a494b94fa2b91cf4f6b2049454b3"),
        RawFile("semeval14_laptop/test.json", *_HOWARDHSU, "transformers/data/ft/asc/14/laptop/test.json",
                "e9683849f26347a1b6e9302fb89de2960ed16a9765147e817a0538d56dc79b6e"),
        RawFile("acl_arc/train.jsonl", *_SCIBERT, "data/text_classification/citation_intent/train.txt",
                "58eef60d2bbfdabefc3de25191714f769db03134523ef67e87d864112c67908c"),
        RawFile("acl_arc/test.jsonl", *_SCIBERT, "data/text_classification/citation_intent/test.txt",
                "749d083cc3141d54a2bf1475c02a5a1c020c664601d55fe2829bdf85f06db4bb"),
        RawFile("agnews/test.csv", *_CHARCNN, "data/ag_news_csv/test.csv",
                "521465c2428ed7f02f8d6db6ffdd4b5447c1c701962353eb2c40d548c3c85699"),
    )
}

Examples = tuple[list[str], list[int]]


# ---------------------------------------------------------------- strict readers


def _read_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"{path}: file is missing")
    text = path.read_text(encoding="utf-8")
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
        if not isinstance(rec, dict) or not isinstance(rec.get("text"), str) or "label" not in rec:
            raise DataError(f"{path} line {lineno}: expected an object with string 'text' and 'label'")
        texts.append(rec["text"])
        ids.append(_label_id(path, f"line {lineno}", rec["label"], labels))
    return texts, ids


def _read_agnews_csv(path: Path, labels: Sequence[str], sep_token: str) -> Examples:
    """AG News CSV without header: class index 1..4, title, description; text = title + ' ' + description."""
    texts, ids = [], []
    valid = [str(i) for i in range(1, len(labels) + 1)]
    with open(_checked_exists(path), newline="", encoding="utf-8") as fh:
        for rowno, row in enumerate(csv.reader(fh), start=1):
            if len(row) != 3:
                raise DataError(f"{path} row {rowno}: expected 3 columns (class index, title, description), "
                                f"got {len(row)}")
            index = row[0].strip()
            if index not in valid:
                raise DataError(f"{path} row {rowno}: unknown class index {row[0]!r}; expected one of "
                                f"{', '.join(valid)}")
            texts.append(f"{row[1]} {row[2]}")
            ids.append(int(index) - 1)
    if not texts:
        raise DataError(f"{path}: file is empty")
    return texts, ids


def _checked_exists(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: file is missing")
    return path


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


def data_root() -> Path:
    """`TC_DATA_DIR` if set, else `data/` at the repository root."""
    env = os.environ.get("TC_DATA_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / "data"


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


# ---------------------------------------------------------------- checksums and fetching


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_VERIFIED: dict[tuple[str, int, int], str] = {}


def verify_file(raw: RawFile, root: Path) -> Path:
    """Return the file's path if present with the pinned sha256; DataError otherwise."""
    path = root / raw.relpath
    if not path.is_file():
        raise DataError(f"{path}: file is missing; run `python -m tc_lib data fetch` "
                        f"(or set TC_DATA_DIR to a folder that has {raw.relpath})")
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_of(path)
    if _VERIFIED[key] != raw.sha256:
        raise DataError(f"{path}: checksum mismatch (sha256 {_VERIFIED[key]}, expected {raw.sha256}); "
                        "the file was left as it is — delete it and run `python -m tc_lib data fetch` "
                        "to download the pinned copy")
    return path


def verify(names: Sequence[str] | None = None, *, root: Path | None = None) -> list[dict]:
    """Check every raw file that is present; returns rows {file, status} with status ok | missing."""
    root = Path(root) if root else data_root()
    rows = []
    for raw in files_for(names):
        if not (root / raw.relpath).is_file():
            rows.append({"file": raw.relpath, "status": "missing"})
            continue
        verify_file(raw, root)
        rows.append({"file": raw.relpath, "status": "ok"})
    return rows


def fetch(names: Sequence[str] | None = None, *, root: Path | None = None,
          base_url: str | None = None) -> list[dict]:
    """Download missing raw files from their pinned URLs and verify sha256; present files are only verified."""
    import pooch
    import requests

    root = Path(root) if root else data_root()
    base_url = base_url or os.environ.get("TC_DATA_MIRROR") or RAW_HOST
    rows = []
    for raw in files_for(names):
        target = root / raw.relpath
        if target.exists():
            verify_file(raw, root)  # never overwrite the user's file, even a corrupt one
            rows.append({"file": raw.relpath, "status": "present"})
            continue
        url = raw.url(base_url)
        try:
            pooch.retrieve(url, known_hash=f"sha256:{raw.sha256}", fname=target.name,
                           path=target.parent, progressbar=False)
        except ValueError as err:  # pooch: downloaded bytes do not match the known hash (file discarded)
            raise DataError(f"{url}: checksum mismatch after download; nothing was written to {target} "
                            f"({str(err).splitlines()[0]})") from None
        except requests.RequestException as err:
            raise DataError(f"{url}: download failed ({err.__class__.__name__}: {err})") from None
        rows.append({"file": raw.relpath, "status": "downloaded"})
    return rows


# ---------------------------------------------------------------- building the DatasetDict


def _read_source(base: str, root: Path, sep_token: str, data_seed: int, verify_checksums: bool) -> dict[str, Examples]:
    source = SOURCES[base]
    read = {}
    for split, key in source.files.items():
        raw = RAW_FILES[key]
        path = verify_file(raw, root) if verify_checksums else _checked_exists(root / raw.relpath)
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
