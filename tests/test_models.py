"""Model registry: MPNet reassembly (synthetic split zip; the real one when its packages are installed)."""

from __future__ import annotations

import hashlib
import io
import os
import threading
import zipfile
from pathlib import Path

import pytest

from tc_lib import models
from tc_lib.errors import ConfigError


@pytest.fixture
def split_zip(tmp_path, monkeypatch):
    """Five pieces of a zip laid out like the all-mpnet-base-v2 parts, and a cache dir to fill."""
    weights = os.urandom(200_000)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("all-mpnet-base-v2/model.safetensors", weights)
        archive.writestr("all-mpnet-base-v2/config.json", "{}")
        archive.writestr("all-mpnet-base-v2/desktop.ini", "[.ShellClassInfo]")
    blob, pieces = buffer.getvalue(), []
    size = len(blob) // 5 + 1
    for i in range(5):
        piece = tmp_path / f"all-mpnet-base-v2.zip.{i + 1:03d}"
        piece.write_bytes(blob[i * size:(i + 1) * size])
        pieces.append(piece)
    monkeypatch.setattr(models, "_mpnet_part", lambda name: pieces[int(name[-3:]) - 1])
    monkeypatch.setattr(models, "MPNET_WEIGHTS_SHA256", hashlib.sha256(weights).hexdigest())
    monkeypatch.setenv("TC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "all-mpnet-base-v2"


def test_reassembly_is_safe_when_two_callers_race(split_zip, monkeypatch):
    extractions = []
    original = zipfile.ZipFile.extractall
    monkeypatch.setattr(zipfile.ZipFile, "extractall",
                        lambda self, *a, **k: (extractions.append(1), original(self, *a, **k))[1])
    results = []
    threads = [threading.Thread(target=lambda: results.append(models.mpnet_dir())) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [split_zip, split_zip] and len(extractions) == 1  # the second waited, then reused
    assert (split_zip / ".complete").exists() and (split_zip / "config.json").exists()
    assert not (split_zip / "desktop.ini").exists()


def test_reassembly_rejects_wrong_bytes(split_zip, monkeypatch):
    monkeypatch.setattr(models, "MPNET_WEIGHTS_SHA256", "0" * 64)
    with pytest.raises(ConfigError, match="reassembled MPNet weights have sha256"):
        models.mpnet_dir()
    assert not (split_zip / ".complete").exists()


def test_missing_parts_name_the_install_command(monkeypatch, tmp_path):
    monkeypatch.setenv("TC_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(models, "MPNET_PARTS", ["no-such-package-xyz-001"])
    with pytest.raises(ConfigError, match="make models-mpnet"):
        models.mpnet_dir()


def test_real_mpnet_when_installed(tmp_path, monkeypatch):
    from importlib import metadata

    try:
        metadata.distribution(models.MPNET_PARTS[0])
    except metadata.PackageNotFoundError:
        pytest.skip("MPNet packages not installed (optional: make models-mpnet)")
    monkeypatch.setenv("TC_CACHE_DIR", str(tmp_path))
    folder = models.mpnet_dir()
    assert Path(folder, "model.safetensors").stat().st_size == 437_971_872


def test_files_to_fetch_takes_one_weight_format():
    from tc_lib.model_cache import files_to_fetch

    bert = ["config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "model.safetensors",
            "pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "model.onnx", "rust_model.ot",
            "coreml/fill-mask/float32_model.mlpackage/Manifest.json", "onnx/config.json", "onnx/model.onnx",
            "README.md", ".gitattributes"]
    assert files_to_fetch(bert) == ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                                    "vocab.txt"]
    sharded_bin = ["config.json", "spiece.model", "pytorch_model-00001-of-00002.bin", "pytorch_model-00002-of-00002.bin",
                   "pytorch_model.bin.index.json", "tf_model.h5"]
    assert files_to_fetch(sharded_bin) == ["config.json", "pytorch_model-00001-of-00002.bin",
                                           "pytorch_model-00002-of-00002.bin", "pytorch_model.bin.index.json",
                                           "spiece.model"]
    assert files_to_fetch(["config.json", "tf_model.h5"]) == ["config.json"]  # download() refuses it


def test_a_half_downloaded_snapshot_is_not_cached(tmp_path, monkeypatch):
    from tc_lib import model_cache

    monkeypatch.setenv("TC_MODEL_DIR", "relative-models")
    monkeypatch.chdir(tmp_path)
    assert model_cache.model_dir() == tmp_path / "relative-models"  # absolute, against where it was read
    snapshot = tmp_path / "relative-models" / "models--org--enc" / "snapshots" / ("a" * 40)
    snapshot.mkdir(parents=True)
    (snapshot.parents[1] / "refs").mkdir()
    (snapshot.parents[1] / "refs" / "main").write_text("a" * 40)
    (snapshot / "config.json").write_text("{}")
    assert model_cache.cached("org/enc") is None  # config only: the weights never arrived
    (snapshot / "model.safetensors.index.json").write_text('{"weight_map": {"a": "model-1.safetensors", '
                                                           '"b": "model-2.safetensors"}}')
    (snapshot / "model-1.safetensors").write_bytes(b"x")
    assert model_cache.cached("org/enc") is None  # one shard of two
    (snapshot / "model-2.safetensors").write_bytes(b"x")
    assert model_cache.cached("org/enc") == snapshot
