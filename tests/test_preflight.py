"""A fresh machine: `tc_lib run` fetches the data a grid needs (from a mirror on 127.0.0.1) and runs it,
or — with the host unreachable, a model missing, the folder unwritable — stops before any run with one
error, exit 2, and no run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from planted import free_port
from tc_lib import cli, data
from tc_lib.config import RunConfig
from tc_lib.grid import preflight as preflight_module
from tc_lib.grid.preflight import preflight, require
from tc_lib.errors import TcError

RESTAURANT = ["semeval14_restaurant/train.json", "semeval14_restaurant/test.json"]


def _grid(tmp_path: Path, **defaults) -> Path:
    values = {"model": "tfidf", "method": "tfidf_lr", "dataset": "restaurant_sup",
              "output_dir": str(tmp_path / "runs"), **defaults}
    path = tmp_path / "grid.yaml"
    path.write_text(json.dumps({"defaults": values}))  # JSON is YAML
    return path


@pytest.mark.notebook
def test_fresh_machine_fetches_the_data_then_runs(mirror, tmp_path, monkeypatch, capsys):
    _, url = mirror
    empty = tmp_path / "data"
    monkeypatch.setenv("TC_DATA_DIR", str(empty))
    monkeypatch.setenv("TC_DATA_MIRROR", url)
    assert cli.main(["run", str(_grid(tmp_path))]) == 0
    err = capsys.readouterr().err
    assert "preflight ok  data    2 files downloaded and verified (sha256)" in err
    assert {row["status"] for row in data.verify(["restaurant_sup"], root=empty)} == {"ok"}
    assert "done: 1 succeeded, 0 skipped, 0 failed" in err
    records = list((tmp_path / "runs").glob("*/metrics.json"))
    assert len(records) == 1 and json.loads(records[0].read_text())["status"] == "success"


def test_unreachable_data_host_stops_before_any_run(tmp_path, monkeypatch, capsys):
    dead = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("TC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TC_DATA_MIRROR", dead)
    assert cli.main(["run", str(_grid(tmp_path))]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: preflight: 1 problem(s), no run was started — data: 2 of 2 data files missing in")
    assert f"TC_DATA_DIR={tmp_path / 'data'}" in err and all(name in err for name in RESTAURANT)
    assert f"{dead}/howardhsu/BERT-for-RRC-ABSA/" in err and "download failed (ConnectionError" in err
    assert not (tmp_path / "runs").exists() and not any((tmp_path / "data").rglob("*.json"))


def test_dry_run_lists_the_findings_and_downloads_nothing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TC_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TC_DATA_MIRROR", f"http://127.0.0.1:{free_port()}")
    assert cli.main(["run", str(_grid(tmp_path)), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "2 of 2 files missing in" in out and "fetched before the first run from http://127.0.0.1:" in out
    assert "ok  kernel  python3" in out and "ok  output" in out and "ok  device  cpu (TF-IDF reference runs only)" in out
    assert not (tmp_path / "data").exists() and not (tmp_path / "runs").exists()


def test_a_missing_model_stops_the_grid_before_any_run(tmp_path, synthetic_data, capsys):
    grid = _grid(tmp_path, model=str(tmp_path / "no_model"), method="lora")
    assert cli.main(["run", str(grid)]) == 2
    err = capsys.readouterr().err
    assert f"model: model '{tmp_path / 'no_model'}': no model folder there (no config.json)" in err
    assert not (tmp_path / "runs").exists()


def test_each_other_check_names_its_problem(tmp_path, synthetic_data, tiny_bert, monkeypatch):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    cfg = RunConfig(model=tiny_bert, method="full", mixed_precision="fp16", output_dir=str(blocker / "runs"))
    monkeypatch.setattr(preflight_module, "KERNEL", "no_such_kernel")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # the same finding on a GPU machine
    found = {f.check: f for f in preflight([cfg])}
    assert found["model"].ok and found["data"].ok
    assert not found["kernel"].ok and "no Jupyter kernel 'no_such_kernel'" in found["kernel"].detail
    assert not found["output"].ok and "is a file, not a folder" in found["output"].detail
    assert not found["device"].ok and "fp16 needs a CUDA device" in found["device"].detail
    with pytest.raises(TcError, match=r"preflight: 3 problem\(s\), no run was started — kernel: "):
        require(list(found.values()))
