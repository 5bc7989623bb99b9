"""The paper's model families (RoBERTa, BERT, SciBERT), offline: tiny local models of each shape through
every method, save → reload, the training notebook and a grid that mirrors params/paper.yaml."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch
import yaml
from sklearn.metrics import confusion_matrix

from tc_lib import models, train
from tc_lib.config import RunConfig
from tc_lib.errors import ConfigError
from tc_lib.grid import load_grid, run_grid
from tc_lib.methods import METHODS

REPO = Path(__file__).resolve().parents[1]
# the tiny task's rates where a method's default is too slow in one epoch; other methods run at their default
LR = {name: {"full": 5e-3, "lora": 1e-2, "adapter": 1e-2, "ia3": 3e-2}.get(name, method.learning_rate)
      for name, method in METHODS.items()}


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("family", ["roberta-base", "bert-base-uncased", "allenai/scibert_scivocab_uncased"])
def test_every_method_trains_and_reloads_on_every_family(tiny_family, synthetic_data, tmp_path, family, method):
    cfg = RunConfig(model=tiny_family[family], dataset="restaurant_sup", method=method, epochs=1, seed=1,
                    max_seq_length=32, output_dir=str(tmp_path / "runs"), warmup_ratio=0.0,
                    learning_rate=LR[method], adapter_reduction_factor=2, save_weights="all")
    try:
        models.build_model(cfg, 3)
    except ConfigError as err:  # a method may refuse a family it cannot serve: one error naming the model type
        assert re.search(r"method '\w+' is not available for model type '\w+'", str(err)), err
        pytest.skip(str(err))
    result = train.train_and_evaluate(cfg)
    assert result.record.status == "success"
    tokenizer, splits, _, _ = train.prepare_splits(cfg)
    test = splits["test"]
    if family == "roberta-base":  # RoBERTa: </s> as separator, no token type ids
        assert tokenizer.sep_token == "</s>" and "token_type_ids" not in test.column_names
    batch = tokenizer.pad({k: list(test[k]) for k in ("input_ids", "attention_mask")}, return_tensors="pt")
    reloaded = models.load_trained(cfg, result.run_dir / "weights", 3)
    with torch.no_grad():
        predictions = reloaded(**batch).logits.argmax(-1).numpy()
    assert confusion_matrix(list(test["labels"]), predictions, labels=[0, 1, 2]).tolist() == \
        result.record.metrics["confusion_matrix"]


def test_roberta_head_is_trained_under_peft(tiny_family, synthetic_data, tmp_path):
    h, classes = 64, 3
    head = (h * h + h) + (h * classes + classes)  # classifier.dense + classifier.out_proj; RoBERTa has no pooler
    for method in ("lora", "ia3", "adapter"):
        cfg = RunConfig(model=tiny_family["roberta-base"], method=method, adapter_reduction_factor=2,
                        output_dir=str(tmp_path))
        _, counts = models.build_model(cfg, classes)
        assert counts.trainable - counts.trainable_no_head == head, method


@pytest.mark.notebook
def test_train_notebook_on_a_roberta_shaped_model(tiny_family, real_data, tmp_path):
    import papermill as pm

    out = tmp_path / "train.ipynb"
    pm.execute_notebook(str(REPO / "notebooks" / "train.ipynb"), str(out), kernel_name="python3",
                        parameters={"model": tiny_family["roberta-base"], "method": "lora", "dataset": "acl_sup",
                                    "epochs": 1, "max_train_samples": 32, "max_seq_length": 32,
                                    "output_dir": str(tmp_path / "runs")},
                        cwd=str(REPO / "notebooks"), progress_bar=False)
    (record,) = [json.loads(p.read_text()) for p in (tmp_path / "runs").glob("*/metrics.json")]
    assert record["status"] == "success" and record["peft_target_modules"] == ["query", "value"]


@pytest.mark.notebook
def test_a_grid_mirroring_paper_yaml(tiny_family, real_data, tmp_path):
    """params/paper.yaml with the hub ids replaced by local tiny models of the same families, cut to one
    seed, one dataset and one epoch — every run of it succeeds through papermill."""
    spec = yaml.safe_load((REPO / "params" / "paper.yaml").read_text())
    assert spec["defaults"]["device"] == "cuda"  # the paper's GPU study; here the CPU stands in for it
    spec["defaults"].update(epochs=1, max_train_samples=24, max_seq_length=32, output_dir=str(tmp_path / "runs"),
                            device="auto")
    for grid in spec["grids"]:
        grid["axes"]["model"] = [tiny_family[m] for m in grid["axes"]["model"]]
        grid["axes"].update(seed=[1], dataset=["acl_sup"])
    path = tmp_path / "paper_tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    configs = load_grid(path)
    assert len(configs) == 5 and {c.selection for c in configs} == {"dev"}
    assert {c.mixed_precision for c in configs} == {"bf16"}
    outcome = run_grid(configs, jobs=2)
    assert sorted(outcome.succeeded) == sorted(c.run_id for c in configs), outcome.failed


# ---------------------------------------------------------------- a model cache for nodes without internet

SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub(tiny_family, tmp_path):
    """A stand-in for the Hugging Face hub on 127.0.0.1 (the client honours HF_ENDPOINT), serving the tiny
    RoBERTa as tiny-org/roberta; `files` can be edited to corrupt or remove one."""
    import hashlib
    import http.server
    import threading

    files = {p.name: p.read_bytes() for p in Path(tiny_family["roberta-base"]).iterdir() if p.is_file()}
    listed = set(files)
    # the other formats a real repo holds (bert-base-uncased: all of these); served, never to be fetched
    files.update({name: b"not for tc_lib" for name in ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack",
                                                        "model.onnx", "coreml_model.mlmodel")})
    listed |= set(files) | {"onnx/model.onnx", "coreml/float32_model.mlpackage/Manifest.json"}
    requested: list[str] = []

    class Hub(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _send(self, body: bytes, status: int = 200, headers: dict | None = None, head: bool = False):
            self.send_response(status)
            for key, value in {"Content-Length": str(len(body)), **(headers or {})}.items():
                self.send_header(key, value)
            self.end_headers()
            if not head:
                self.wfile.write(body)

        def _route(self, head: bool):
            parts = self.path.split("?")[0].strip("/").split("/")
            if parts[:3] == ["api", "models", "tiny-org"] and parts[3:4] == ["roberta"]:
                info = {"id": "tiny-org/roberta", "sha": SHA, "siblings": [{"rfilename": f} for f in sorted(listed)]}
                return self._send(json.dumps(info).encode(), headers={"Content-Type": "application/json"}, head=head)
            if parts[:3] == ["tiny-org", "roberta", "resolve"]:
                requested.append("/".join(parts[4:]))
            if parts[:3] == ["tiny-org", "roberta", "resolve"] and len(parts) == 5 and parts[4] in files:
                body = files[parts[4]]
                return self._send(body, head=head, headers={"X-Repo-Commit": SHA,
                                                            "ETag": f'"{hashlib.sha256(body).hexdigest()}"'})
            return self._send(b'{"error": "not found"}', status=404, head=head)

        def do_GET(self):
            self._route(head=False)

        def do_HEAD(self):
            self._route(head=True)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    env = {"HF_ENDPOINT": f"http://127.0.0.1:{server.server_address[1]}", "HF_HUB_OFFLINE": "0",
           "TC_MODEL_DIR": str(tmp_path / "models"), "HF_HUB_DISABLE_TELEMETRY": "1"}
    yield env, files, requested
    server.shutdown()
    server.server_close()


def _tc(*args, env, timeout=300):
    import os
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "tc_lib", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **env})


@pytest.mark.slow
def test_models_fetch_verifies_and_the_nodes_then_run_offline(hub, tmp_path):
    env, _, requested = hub
    out = _tc("models", "fetch", "tiny-org/roberta", env=env)
    assert out.returncode == 0, out.stderr
    # one weight format (safetensors), the top-level config and tokenizer files, nothing else
    fetched = {name for name in requested if name}
    assert "model.safetensors" in fetched and "config.json" in fetched
    assert not fetched & {"pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "model.onnx",
                          "coreml_model.mlmodel", "onnx/model.onnx"}, fetched
    snapshot = next((tmp_path / "models").glob("models--tiny-org--roberta/snapshots/*"))
    assert (snapshot / ".tc_complete").is_file()
    # a half-downloaded snapshot (config there, weights not, no marker) is not cached: the next fetch resumes
    (snapshot / ".tc_complete").unlink()
    (snapshot / "model.safetensors").unlink()
    requested.clear()
    again = _tc("models", "fetch", "tiny-org/roberta", env=env)
    assert again.returncode == 0 and (snapshot / "model.safetensors").exists(), again.stderr
    assert "model.safetensors" in requested and (snapshot / ".tc_complete").is_file()
    assert "ok  tiny-org/roberta" in out.stdout and f"export TC_MODEL_DIR={tmp_path / 'models'} HF_HUB_OFFLINE=1" \
        in out.stdout
    listed = _tc("models", "list", env=env)
    assert listed.returncode == 0 and "tiny-org/roberta" in listed.stdout and "1 models in" in listed.stdout
    offline = {**env, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HUB_OFFLINE": "1"}  # a compute node
    run = _tc("train", "--model", "tiny-org/roberta", "--method", "lora", "--epochs", "1", "--max-train-samples",
              "16", "--dataset", "acl_sup", "--output-dir", str(tmp_path / "runs"), "--set", "max_seq_length=32",
              env={**offline, "TC_DATA_DIR": str(Path(__import__("os").environ["TC_DATA_DIR"]))})
    assert run.returncode == 0, run.stderr
    record = json.loads((Path(run.stdout.strip().splitlines()[-1]) / "metrics.json").read_text())
    assert record["status"] == "success" and record["config"]["model"] == "tiny-org/roberta"


@pytest.mark.slow
def test_models_fetch_refuses_a_corrupt_or_missing_file(hub, tmp_path):
    env, files, _ = hub
    files["model.safetensors"] = b"\0" * len(files["model.safetensors"])  # same size, not a safetensors file
    out = _tc("models", "fetch", "tiny-org/roberta", env=env)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "its weights cannot be loaded" in lines[0], out.stderr
    del files["tokenizer.json"]  # listed by the hub, but 404 when downloaded
    out = _tc("models", "fetch", "tiny-org/roberta", env={**env, "TC_MODEL_DIR": str(tmp_path / "other")})
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "download into" in lines[0] and "failed" in lines[0], out.stderr


@pytest.mark.slow
def test_offline_fails_fast_and_names_the_id(tmp_path, real_data):
    import time

    env = {"HF_HUB_OFFLINE": "1", "TC_MODEL_DIR": str(tmp_path / "empty")}
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"defaults: {{output_dir: {tmp_path / 'runs'}, epochs: 1}}\n"
                    "axes:\n  model: [minilm, roberta-base]\n  seed: [1, 2]\n")
    for args in (("train", "--model", "roberta-base"), ("run", str(grid)), ("run", str(grid), "--dry-run")):
        started = time.monotonic()
        out = _tc(*args, env=env)
        took = time.monotonic() - started
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and took < 5, (args, took, out.stderr)
        assert len(lines) == 1 and "model 'roberta-base': not in the model cache" in lines[0]
        assert "models fetch roberta-base" in lines[0]
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # nothing started
