"""The dataset layer on the real files, the download path through a local HTTP server, and every error."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from tc_lib import data
from tc_lib.errors import DataError

SIZES = {"restaurant": (3452, 1120), "laptop": (2163, 638), "acl": (1688, 139), "agnews": (6840, 760)}


def provenance_rows(root: Path) -> dict[str, dict]:
    """file relpath -> {sha256, labels} parsed from the data folder's PROVENANCE.md tables."""
    rows, folder = {}, ""
    for line in (root / "PROVENANCE.md").read_text(encoding="utf-8").splitlines():
        heading = re.match(r"^### (\S+)/\s*$", line)
        if heading:
            folder = heading.group(1)
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 9 or not re.fullmatch(r"[0-9a-f]{64}", cells[6]):
            continue
        relpath = cells[0] if "/" in cells[0] else f"{folder}/{cells[0]}"
        labels = dict((m.group(1), int(m.group(2))) for m in re.finditer(r"([A-Za-z]+) (\d+)", cells[8]))
        rows[relpath] = {"sha256": cells[6], "labels": labels}
    return rows


def test_pinned_checksums_match_provenance(real_data):
    prov = provenance_rows(real_data)
    for relpath, raw in data.RAW_FILES.items():
        assert prov[relpath]["sha256"] == raw.sha256, relpath


@pytest.mark.parametrize("base", list(SIZES))
def test_sizes_and_label_counts_match_provenance(real_data, base):
    ds = data.get_dataset(f"{base}_sup", "[SEP]", root=real_data)
    assert (len(ds["train"]), len(ds["test"])) == SIZES[base]
    names = data.label_names(ds)
    assert names == list(data.SOURCES[base].labels)
    prov = provenance_rows(real_data)
    if base == "agnews":  # one file split 9:1: per class, train + test = the file's 1,900
        total = Counter(ds["train"]["labels"]) + Counter(ds["test"]["labels"])
        assert total == Counter({i: 1900 for i in range(4)})
        return
    for split in ("train", "test"):
        counts = Counter(names[i] for i in ds[split]["labels"])
        assert counts == prov[data.SOURCES[base].files[split]]["labels"]


def test_text_formats(real_data):
    rest = data.get_dataset("restaurant_sup", "<s>", root=real_data)
    assert rest["train"][0] == {"text": "server <s> Our server was very helpful and friendly.", "labels": 0}
    first_acl = json.loads((real_data / "acl_arc/train.jsonl").read_text().splitlines()[0])
    acl = data.get_dataset("acl_sup", "[SEP]", root=real_data)
    assert acl["train"][0]["text"] == first_acl["text"]
    assert data.label_names(acl)[acl["train"][0]["labels"]] == first_acl["label"]
    ag = data.get_dataset("agnews_sup", "[SEP]", root=real_data)
    assert "Fears for T N pension after talks Unions representing workers" in " ".join(list(ag["train"]["text"]) + list(ag["test"]["text"]))
    assert all("[SEP]" not in t for t in ag["train"]["text"][:50])


def test_agnews_split_matches_datasets_train_test_split(real_data):
    from datasets import Dataset

    texts, labels = data._read_agnews_csv(real_data / "agnews/test.csv", data.SOURCES["agnews"].labels, "")
    reference = Dataset.from_dict({"text": texts, "labels": labels}).train_test_split(test_size=0.1, seed=2022)
    ours = data.get_dataset("agnews_sup", "[SEP]", root=real_data)
    assert sorted(ours["test"]["text"]) == sorted(reference["test"]["text"])
    other = data.get_dataset("agnews_sup", "[SEP]", root=real_data, data_seed=2025)
    assert sorted(other["test"]["text"]) != sorted(ours["test"]["text"])


@pytest.mark.parametrize("base", list(SIZES))
def test_few_shot(real_data, base):
    fs = data.get_dataset(f"{base}_fs", "[SEP]", root=real_data)
    sup = data.get_dataset(f"{base}_sup", "[SEP]", root=real_data)
    k = len(data.SOURCES[base].labels)
    counts = Counter(fs["train"]["labels"])
    assert len(fs["train"]) == 32 and set(counts) == set(range(k))
    assert max(counts.values()) - min(counts.values()) <= 1  # balanced
    assert set(fs["train"]["text"]) <= set(sup["train"]["text"])
    assert fs["test"]["text"] == sup["test"]["text"]


def test_few_shot_rule_with_a_short_class():
    labels = [0] * 50 + [1] * 3 + [2] * 50
    picked = data.few_shot_indices(labels, 3, size=32, seed=5)
    counts = Counter(labels[i] for i in picked)
    assert len(picked) == 32 and counts[1] == 3 and set(counts) == {0, 1, 2}
    assert picked == data.few_shot_indices(labels, 3, size=32, seed=5)
    assert picked != data.few_shot_indices(labels, 3, size=32, seed=6)


def test_list_aggregation_offsets_by_class_count(real_data):
    ds = data.get_dataset(["acl_sup", "restaurant_fs", "agnews_sup"], "[SEP]", root=real_data)
    names = data.label_names(ds)
    assert len(names) == 6 + 3 + 4
    assert names[0] == "acl_sup:Background" and names[6] == "restaurant_fs:positive" and names[9] == "agnews_sup:World"
    assert len(ds["train"]) == 1688 + 32 + 6840 and len(ds["test"]) == 139 + 1120 + 760
    rest_labels = ds["train"]["labels"][1688:1720]
    assert set(rest_labels) == {6, 7, 8}  # offset by acl's 6 classes, not by the largest label seen
    assert set(ds["test"]["labels"][-760:]) == {9, 10, 11, 12}


def test_deterministic(real_data):
    a = data.get_dataset(["agnews_fs", "laptop_sup"], "[SEP]", root=real_data)
    b = data.get_dataset(["agnews_fs", "laptop_sup"], "[SEP]", root=real_data)
    for split in ("train", "test"):
        assert a[split].to_dict() == b[split].to_dict()


# ---------------------------------------------------------------- fetching for real over HTTP


def test_fetch_verify_and_load(mirror, tmp_path):
    _, url = mirror
    root = tmp_path / "root"
    rows = data.fetch(None, root=root, base_url=url)
    assert {r["status"] for r in rows} == {"downloaded"} and len(rows) == len(data.RAW_FILES)
    assert {r["status"] for r in data.verify(root=root)} == {"ok"}
    assert len(data.get_dataset("laptop_sup", "[SEP]", root=root)["test"]) == 638
    assert {r["status"] for r in data.fetch(["acl_sup"], root=root, base_url=url)} == {"present"}


def test_fetch_corrupt_download_leaves_nothing(mirror, tmp_path):
    served, url = mirror
    raw = data.RAW_FILES["acl_arc/test.jsonl"]
    (served / raw.repo / raw.commit / raw.path).write_text("tampered\n")
    root = tmp_path / "root"
    with pytest.raises(DataError, match="checksum mismatch after download"):
        data.fetch(["acl_sup"], root=root, base_url=url)
    assert not (root / raw.relpath).exists()


def test_fetch_404(mirror, tmp_path):
    served, url = mirror
    raw = data.RAW_FILES["agnews/test.csv"]
    (served / raw.repo / raw.commit / raw.path).unlink()
    with pytest.raises(DataError, match=r"download failed \(HTTP 404\)"):
        data.fetch(["agnews_fs"], root=tmp_path / "root", base_url=url)


def test_fetch_never_overwrites_a_corrupt_user_file(mirror, tmp_path):
    _, url = mirror
    root = tmp_path / "root"
    target = root / "acl_arc/train.jsonl"
    target.parent.mkdir(parents=True)
    target.write_text('{"text": "mine", "label": "Uses"}\n')
    with pytest.raises(DataError, match="checksum mismatch"):
        data.fetch(["acl_sup"], root=root, base_url=url)
    assert target.read_text() == '{"text": "mine", "label": "Uses"}\n'


# ---------------------------------------------------------------- every error, via API and CLI


def _write(root: Path, relpath: str, text: str) -> None:
    (root / relpath).parent.mkdir(parents=True, exist_ok=True)
    (root / relpath).write_text(text)


GOOD_REST = json.dumps({"1_0": {"term": "food", "sentence": "good food", "polarity": "positive"}})
ERROR_CASES = {
    # name: (files to write, dataset, sep_token, expected message regex)
    "unknown name": ({}, "movies_sup", "[SEP]", r"unknown dataset 'movies_sup'; valid names: restaurant_sup"),
    "empty list": ({}, [], "[SEP]", r"dataset list is empty"),
    "sep not a string": ({}, "acl_sup", None, r"sep_token must be a string, got NoneType"),
    "missing file": ({"acl_arc/train.jsonl": '{"text": "a", "label": "Uses"}\n'}, "acl_sup", "[SEP]",
                     r"acl_arc/test.jsonl: file is missing"),
    "malformed json": ({"semeval14_restaurant/train.json": '{"1_0": {"term": "x",\n "sentence": }',
                        "semeval14_restaurant/test.json": GOOD_REST}, "restaurant_sup", "[SEP]",
                       r"train.json line 2 column 14: malformed JSON"),
    "malformed jsonl": ({"acl_arc/train.jsonl": '{"text": "a", "label": "Uses"}\n{"text": \n',
                         "acl_arc/test.jsonl": '{"text": "a", "label": "Uses"}\n'}, "acl_sup", "[SEP]",
                        r"train.jsonl line 2: malformed JSON"),
    "unknown label": ({"semeval14_laptop/train.json": json.dumps(
        {"7_1": {"term": "x", "sentence": "y", "polarity": "conflict"}}),
        "semeval14_laptop/test.json": GOOD_REST}, "laptop_sup", "[SEP]",
        r"train.json record '7_1': unknown label 'conflict'; expected one of positive, neutral, negative"),
    "missing field": ({"semeval14_laptop/train.json": json.dumps({"7_1": {"term": "x", "polarity": "positive"}}),
                       "semeval14_laptop/test.json": GOOD_REST}, "laptop_sup", "[SEP]",
                      r"record '7_1': field 'sentence' missing"),
    "bad csv row": ({"agnews/test.csv": '"1","t","d"\n"2","only two"\n'}, "agnews_sup", "[SEP]",
                    r"test.csv row 2: expected 3 columns"),
    "bad class index": ({"agnews/test.csv": '"1","t","d"\n"9","t","d"\n'}, "agnews_sup", "[SEP]",
                        r"test.csv row 2: unknown class index '9'"),
    "empty file": ({"acl_arc/train.jsonl": "\n", "acl_arc/test.jsonl": "x"}, "acl_sup", "[SEP]",
                   r"train.jsonl: file is empty"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_errors_api(case, tmp_path):
    files, name, sep, pattern = ERROR_CASES[case]
    for relpath, text in files.items():
        _write(tmp_path, relpath, text)
    with pytest.raises(DataError, match=pattern):
        data.get_dataset(name, sep, root=tmp_path, verify_checksums=False)


def _cli(*args: str, env_root: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tc_lib", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("case", ["unknown name", "missing file", "malformed json", "unknown label",
                                  "bad csv row", "empty file"])
def test_errors_cli(case, tmp_path):
    files, name, _, pattern = ERROR_CASES[case]
    for relpath, text in files.items():
        _write(tmp_path, relpath, text)
    out = _cli("data", "info", name, "--root", str(tmp_path), "--no-verify")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(pattern, lines[0]) and "Traceback" not in out.stderr


@pytest.mark.slow
def test_checksum_mismatch_api_and_cli(real_data, tmp_path):
    shutil.copytree(real_data / "acl_arc", tmp_path / "acl_arc")
    with open(tmp_path / "acl_arc/test.jsonl", "a") as fh:
        fh.write('{"text": "extra", "label": "Uses", "metadata": {}}\n')
    with pytest.raises(DataError, match=r"test.jsonl: checksum mismatch .* expected 749d083c"):
        data.get_dataset("acl_sup", "[SEP]", root=tmp_path)
    out = _cli("data", "verify", "acl_sup", "--root", str(tmp_path))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and "checksum mismatch" in out.stderr
    out = _cli("data", "info", "acl_sup", "--root", str(tmp_path / "nowhere"))
    assert out.returncode == 2 and "file is missing; run `python -m tc_lib data fetch`" in out.stderr


@pytest.mark.slow
def test_cli_info_json_and_table(real_data):
    out = _cli("data", "info", "acl_sup", "--root", str(real_data), "--json")
    rows = json.loads(out.stdout)
    assert rows[0] == {"dataset": "acl_sup", "split": "train", "size": 1688,
                       "label_counts": {"Background": 867, "CompareOrContrast": 305, "Extends": 63, "Future": 60,
                                        "Motivation": 76, "Uses": 317}}
    table = _cli("data", "info", "--root", str(real_data)).stdout
    assert re.search(r"agnews_sup\s+test\s+760", table) and re.search(r"laptop_fs\s+train\s+32", table)


def test_a_dev_cap_subsamples_dev_stratified_and_leaves_the_training_examples_alone(real_data):
    from tc_lib.splits import carve_splits

    ds = data.get_dataset("restaurant_sup", "[SEP]", root=real_data)
    common = dict(selection="dev", dev_fraction=0.1, max_train_samples=256, data_seed=2022)
    whole, capped = carve_splits(ds, **common), carve_splits(ds, **common, max_dev_samples=100)
    assert len(whole["dev"]) == 346 and len(capped["dev"]) == 100
    assert capped["train"]["text"] == whole["train"]["text"] and len(capped["test"]) == len(whole["test"])
    assert set(capped["dev"]["text"]) <= set(whole["dev"]["text"])
    share = lambda split: Counter(split["labels"])[0] / len(split)  # stratified: the class shares are kept
    assert abs(share(capped["dev"]) - share(whole["dev"])) < 0.02
    assert carve_splits(ds, **common, max_dev_samples=100)["dev"]["text"] == capped["dev"]["text"]  # seeded
