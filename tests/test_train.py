"""The training engine on a tiny BERT and a learnable synthetic task (no download)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest
import torch

from tc_lib import models, train
from tc_lib.config import RunConfig
from tc_lib.methods import METHODS
from tc_lib.record import SCHEMA_VERSION
from tc_lib.report.runs import read_history, read_runs

# the tiny task's rates (5e-3 diverges for full, 1e-2 for LoRA, 3e-2 for IA3, on some seeds or CPUs); any
# other method of the registry runs at its own default
LR = {"full": 2e-3, "lora": 5e-3, "adapter": 1e-2, "ia3": 1e-2}
PEFT_LR = {name: LR.get(name, method.learning_rate) for name, method in METHODS.items()}


def tiny_cfg(tiny_bert, tmp_path, **overrides) -> RunConfig:
    values = dict(model=tiny_bert, dataset="restaurant_sup", method="full", epochs=3, seed=1,
                  train_batch_size=16, max_seq_length=32, output_dir=str(tmp_path / "runs"), warmup_ratio=0.0)
    values.update(overrides)
    values.setdefault("learning_rate", PEFT_LR[values["method"]])
    return RunConfig(**values)


@pytest.mark.parametrize("method", list(METHODS))
def test_each_method_learns_and_writes_a_record(tiny_bert, synthetic_data, tmp_path, method):
    # a random 64-wide base needs a wider bottleneck than the default 64/16 = 4 to learn in 3 epochs
    result = train.train_and_evaluate(tiny_cfg(tiny_bert, tmp_path, method=method, adapter_reduction_factor=2))
    rec = json.loads((result.run_dir / "metrics.json").read_text())
    assert rec["status"] == "success" and rec["schema_version"] == SCHEMA_VERSION
    history = [json.loads(line) for line in (result.run_dir / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert rec["metrics"]["macro_f1"] > rec["data"]["majority_floor"]["macro_f1"] + 0.2
    assert rec["metrics"] == history[-1]["test"] and rec["selection"] == {
        "rule": "last", "metric": "macro_f1", "score": None, "chosen_epoch": 3, "dev_size": None}
    assert ["test" in h for h in history] == [False, False, True]  # test scored once, at the chosen epoch
    assert rec["metrics"]["accuracy"] == pytest.approx(rec["metrics"]["micro_f1"])
    assert len(rec["metrics"]["confusion_matrix"]) == 3 and sum(map(sum, rec["metrics"]["confusion_matrix"])) == 120
    assert rec["data"]["label_names"] == ["positive", "neutral", "negative"]
    for key in ("wall_time_s", "train_time_s", "train_samples_per_s", "train_tokens_per_s"):
        assert rec["timing"][key] > 0
    assert rec["memory"]["peak_rss_mb"] > 50 and rec["environment"]["packages"]["torch"].startswith("2.13")
    assert json.loads((result.run_dir / "config.json").read_text())["method"] == method
    import torch

    if not torch.cuda.is_available():  # what the run actually used, in the record
        assert rec["device"]["requested"] == "auto" and rec["device"]["type"] == "cpu"
        assert rec["environment"]["device"] == "cpu" and rec["memory"]["peak_cuda_reserved_mb"] is None


@pytest.mark.slow
def test_balanced_class_weights_weight_the_training_loss(tiny_bert, synthetic_data, tmp_path):
    from sklearn.utils.class_weight import compute_class_weight

    from tc_lib.metrics import balanced_class_weights

    cfg = tiny_cfg(tiny_bert, tmp_path, method="lora", epochs=1, class_weights="balanced")
    labels = [0, 0, 0, 0, 1, 2, 2, 0]
    ours = balanced_class_weights(labels=labels, num_classes=3)
    loss = train._loss_function(ours)
    weights = compute_class_weight("balanced", classes=np.arange(3), y=np.array(labels))
    assert ours == pytest.approx(weights.tolist(), abs=1e-6)
    logits = torch.randn(len(labels), 3)
    per_example = -torch.log_softmax(logits, dim=-1)[range(len(labels)), labels]
    w = torch.tensor(weights, dtype=torch.float32)[labels]
    by_hand = (w * per_example).sum() / w.sum()
    assert loss(type("Out", (), {"logits": logits})(), torch.tensor(labels)).item() == pytest.approx(by_hand.item())
    assert train._loss_function(None) is None
    # end to end: the weights come from the run's own training labels and change what is learned
    weighted = json.loads((train.train_and_evaluate(cfg).run_dir / "metrics.json").read_text())
    plain = json.loads((train.train_and_evaluate(tiny_cfg(tiny_bert, tmp_path, method="lora", epochs=1))
                        .run_dir / "metrics.json").read_text())
    counts = weighted["data"]["train_label_counts"]
    expected = [sum(counts) / (len(counts) * c) for c in counts]
    assert weighted["data"]["class_weights"] == pytest.approx(expected, abs=1e-6)
    assert "class_weights" not in plain["data"] and weighted["run_id"] != plain["run_id"]
    assert weighted["metrics"]["loss"] != plain["metrics"]["loss"]


def test_parameter_counts(tiny_bert, synthetic_data, tmp_path):
    h, layers, r, classes = 64, 2, 8, 3
    pooler, classifier = h * h + h, h * classes + classes
    _, full = models.build_model(tiny_cfg(tiny_bert, tmp_path, method="full"), classes)
    assert full.trainable == full.total and full.trainable_no_head == full.total - pooler - classifier
    _, lora = models.build_model(tiny_cfg(tiny_bert, tmp_path, method="lora"), classes)
    assert lora.trainable_no_head == layers * 2 * r * (h + h)  # q and v
    assert lora.trainable == lora.trainable_no_head + pooler + classifier
    assert lora.total == full.total + lora.trainable_no_head
    _, adapter = models.build_model(tiny_cfg(tiny_bert, tmp_path, method="adapter"), classes)
    bottleneck = h // 16
    assert adapter.trainable_no_head == layers * (h * bottleneck + bottleneck + bottleneck * h + h)
    assert adapter.trainable == adapter.trainable_no_head + pooler + classifier


@pytest.mark.slow
def test_deterministic_on_cpu(tiny_bert, synthetic_data, tmp_path):
    a = train.train_and_evaluate(tiny_cfg(tiny_bert, tmp_path / "a", method="lora", epochs=2))
    b = train.train_and_evaluate(tiny_cfg(tiny_bert, tmp_path / "b", method="lora", epochs=2))
    assert a.metrics == b.metrics  # bit-for-bit: floats compared exactly
    assert (a.run_dir / "history.jsonl").read_text().replace("\n", "") != ""
    hist = lambda r: [{k: v for k, v in json.loads(l).items() if k != "train_time_s"}
                      for l in (r.run_dir / "history.jsonl").read_text().splitlines()]
    assert hist(a) == hist(b)
    c = train.train_and_evaluate(tiny_cfg(tiny_bert, tmp_path / "c", method="lora", epochs=2, seed=2))
    assert c.metrics != a.metrics


@pytest.mark.parametrize("method", ["lora", "adapter", "full"])
def test_saved_weights_reproduce_the_recorded_predictions(tiny_bert, synthetic_data, tmp_path, method):
    """A run's saved weights, loaded onto a fresh pretrained base, give the run's test confusion matrix."""
    from sklearn.metrics import confusion_matrix

    cfg = tiny_cfg(tiny_bert, tmp_path, method=method, epochs=1, save_weights="all")
    result = train.train_and_evaluate(cfg)
    tokenizer, splits, _, _ = train.prepare_splits(cfg)
    reloaded = models.load_trained(cfg, result.run_dir / "weights", 3)
    untrained, _ = models.build_model(cfg, 3)
    test = splits["test"]
    batch = tokenizer.pad({"input_ids": list(test["input_ids"]), "attention_mask": list(test["attention_mask"])},
                          return_tensors="pt")
    with torch.no_grad():
        logits = reloaded(**batch).logits
        assert not torch.allclose(logits, untrained.eval()(**batch).logits)
    matrix = confusion_matrix(list(test["labels"]), logits.argmax(-1).numpy(), labels=[0, 1, 2]).tolist()
    assert matrix == result.record.metrics["confusion_matrix"]


def test_reload_logits_bitwise_equal_to_trained_model(tiny_bert, synthetic_data, tmp_path):
    """Train in-process with the library pieces, save, reload, compare logits exactly."""
    for method in ("lora", "adapter"):
        cfg = tiny_cfg(tiny_bert, tmp_path / method, method=method, epochs=1)
        model, _ = models.build_model(cfg, 3)
        with torch.no_grad():  # stand-in for training: move every trainable weight
            for p in model.parameters():
                if p.requires_grad:
                    p.add_(torch.randn_like(p) * 0.05)
        model.eval()
        models.save_weights(model, cfg, tmp_path / method / "w")
        reloaded = models.load_trained(cfg, tmp_path / method / "w", 3)
        tokenizer = models.load_tokenizer(tiny_bert)
        batch = tokenizer(["food [SEP] great food .", "wine [SEP] the wine was cold tonight ."], padding=True,
                          return_tensors="pt")
        with torch.no_grad():
            assert torch.equal(model(**batch).logits, reloaded(**batch).logits), method


@pytest.mark.slow
def test_dev_selection_never_uses_test(tiny_bert, synthetic_data, tmp_path):
    result = train.train_and_evaluate(tiny_cfg(tiny_bert, tmp_path, method="full", selection="dev",
                                               dev_fraction=0.25, epochs=3))
    rec = result.record.to_dict()  # as written
    history = [json.loads(line) for line in (result.run_dir / "history.jsonl").read_text().splitlines()]
    dev_scores = [h["dev"]["macro_f1"] for h in history]
    chosen = rec["selection"]["chosen_epoch"]
    assert chosen == 1 + dev_scores.index(max(dev_scores))
    assert rec["metrics"] == history[chosen - 1]["test"]
    assert rec["selection"]["dev_size"] == 200 and rec["data"]["train_size"] == 600
    assert rec["selection"]["score"] == max(dev_scores) and rec["stage"] == "final" and rec["trial"] is None
    assert ["test" in h for h in history] == [epoch == chosen for epoch in (1, 2, 3)]
    # test curves when asked: every epoch scored, and the chosen epoch's numbers are the ones scored once
    every = train.train_and_evaluate(tiny_cfg(tiny_bert, tmp_path, method="full", selection="dev",
                                              dev_fraction=0.25, epochs=3, test_every_epoch=True))
    curves = [json.loads(line) for line in (every.run_dir / "history.jsonl").read_text().splitlines()]
    assert all("test" in h for h in curves) and every.record.selection.chosen_epoch == chosen
    assert every.metrics == rec["metrics"] and every.run_dir != result.run_dir
    assert every.record.timing.eval_time_s > rec["timing"]["eval_time_s"] > 0


def test_failure_is_recorded_and_reraised(tiny_bert, synthetic_data, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("injected failure")

    monkeypatch.setattr(train, "build_model", broken)
    cfg = tiny_cfg(tiny_bert, tmp_path)
    with pytest.raises(RuntimeError, match="injected failure"):
        train.train_and_evaluate(cfg)
    rec = json.loads((tmp_path / "runs" / cfg.run_id / "metrics.json").read_text())
    assert rec["status"] == "failed" and rec["error"]["message"] == "injected failure"
    assert "RuntimeError" in rec["error"]["traceback"] and rec["metrics"] is None
    # it failed after the data was carved: the record still says what it trained on
    assert rec["data"]["train_size"] > 0 and rec["data"]["label_names"] == ["positive", "neutral", "negative"]


def test_read_runs_typed(tiny_bert, synthetic_data, tmp_path):
    train.train_and_evaluate(tiny_cfg(tiny_bert, tmp_path, method="adapter", epochs=1))
    (tmp_path / "runs" / "torn").mkdir()
    (tmp_path / "runs" / "torn" / "metrics.json").write_text('{"status": "succ')
    frame = read_runs(tmp_path / "runs")
    assert len(frame) == 1 and frame.loc[0, "status"] == "success" and frame.loc[0, "method"] == "adapter"
    assert str(frame.dtypes["macro_f1"]) == "Float64" and str(frame.dtypes["seed"]) == "Int64"
    assert frame.loc[0, "collapsed"] in (True, False)
    hist = read_history(tmp_path / "runs")
    assert list(hist["split"]) == ["test"] and hist.loc[0, "epoch"] == 1
    empty = read_runs(tmp_path / "nothing")
    assert len(empty) == 0 and str(empty.dtypes["accuracy"]) == "Float64"


@pytest.mark.slow
def test_cli_train(tiny_bert, real_data, tmp_path):
    out = subprocess.run([sys.executable, "-m", "tc_lib", "train", "--model", tiny_bert, "--method", "lora",
                          "--dataset", "acl_sup", "--epochs", "1", "--max-train-samples", "64",
                          "--output-dir", str(tmp_path / "runs"), "--set", "max_seq_length=32",
                          "--set", "peft_target_modules=[query, key, value]"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    run_dir = out.stdout.strip().splitlines()[-1]
    rec = json.loads(open(f"{run_dir}/metrics.json").read())
    assert rec["status"] == "success" and rec["peft_target_modules"] == ["key", "query", "value"]


@pytest.mark.parametrize("args,pattern", [
    (["--method", "nosuch"], "argument --method: invalid choice"),
    (["--method", "lora", "--set", "lora_r=-1"], "field 'lora_r': expected an integer >= 1"),
    (["--set", "epochz=3"], r"unknown field\(s\) epochz"),
    (["--set", "novalue"], "expected key=value"),
    (["--model", "/no/such/model"], "model '/no/such/model': cannot load it"),
    (["--dataset", "imdb_sup"], "field 'dataset'"),
    (["--device", "gpu"], "argument --device: invalid choice"),
])
@pytest.mark.slow
def test_cli_train_bad_input(args, pattern, tmp_path):
    out = subprocess.run([sys.executable, "-m", "tc_lib", "train", "--output-dir", str(tmp_path), *args],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and re.search(pattern, lines[0]) and "Traceback" not in out.stderr


def test_report_to_needs_its_optional_package(tiny_bert, synthetic_data, tmp_path):
    import importlib.util

    from tc_lib.errors import ConfigError

    missing = [name for name in ("tensorboard", "mlflow") if importlib.util.find_spec(name) is None]
    if not missing:
        pytest.skip("tensorboard and mlflow are both installed")
    cfg = tiny_cfg(tiny_bert, tmp_path, report_to=missing[0])
    with pytest.raises(ConfigError, match=f"field 'report_to': {missing[0]} needs the optional package"):
        train.train_and_evaluate(cfg)
    assert not cfg.run_dir.exists()  # nothing recorded
    assert tiny_cfg(tiny_bert, tmp_path, report_to=missing[0]).run_id == tiny_cfg(tiny_bert, tmp_path).run_id


def test_cli_train_with_device_cuda_without_cuda_is_one_line_and_writes_nothing(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = subprocess.run([sys.executable, "-m", "tc_lib", "train", "--device", "cuda", "--output-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=300)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and "field 'device': cuda, but torch" in lines[0], out.stderr
    assert not any(tmp_path.iterdir())  # no record at all, certainly none marked success


@pytest.mark.slow
@pytest.mark.parametrize("flags, used", [({"avx512_bf16"}, "bf16"), (set(), "no")])
def test_auto_autocast_is_resolved_in_the_run_and_recorded(tiny_bert, synthetic_data, tmp_path, monkeypatch,
                                                          flags, used):
    """mixed_precision auto trains and scores exactly as the precision it resolves to (the same numbers, bit for
    bit, as that precision asked for by name); the record keeps what was used, the runs table shows it."""
    from tc_lib import device

    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset(flags))
    cfg = dict(method="lora", epochs=1, max_train_samples=64)
    auto = train.train_and_evaluate(tiny_cfg(tiny_bert, tmp_path / "auto", mixed_precision="auto", **cfg))
    named = train.train_and_evaluate(tiny_cfg(tiny_bert, tmp_path / "named", mixed_precision=used, **cfg))
    assert auto.metrics == named.metrics
    other = train.train_and_evaluate(tiny_cfg(tiny_bert, tmp_path / "other",
                                              mixed_precision="no" if used == "bf16" else "bf16", **cfg))
    assert other.metrics["loss"] != auto.metrics["loss"]  # the precision shows in the numbers: the match above says something
    assert auto.record.environment.autocast == used and auto.record.config["mixed_precision"] == "auto"
    row = read_runs(tmp_path / "auto" / "runs").iloc[0]
    assert row["autocast"] == used and row["config"]["mixed_precision"] == used
    assert row["arm_id"] == auto.record.arm_id + ("-fp32" if used == "no" else "")
