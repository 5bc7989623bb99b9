"""A finished run as a classifier: predict gives the run's own test predictions, export-model gives a
folder that plain transformers loads (no tc_lib) with the same logits, --best chooses on dev only."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import pin_synthetic_checksums
from tc_lib import cli, inference, train
from tc_lib.report.best import best_run
from tc_lib.config import RunConfig
from tc_lib.errors import TcError
from tc_lib.methods import METHODS
from tc_lib.metrics import classification_metrics
from tc_lib.reference import reference_splits

# every method of the registry (the tiny task's rates where the default is too slow or unstable) and the reference
LR = {**{name: {"full": 2e-3, "lora": 5e-3, "ia3": 3e-2, "adapter": 1e-2}.get(name, method.learning_rate)
         for name, method in METHODS.items()}, "tfidf_lr": None}
SENTENCES = ["food [SEP] honestly the food was delicious here .", "service [SEP] tonight the service was rude here .",
             "wine [SEP] we thought the wine was ordinary here ."]
FRESH = """import json, os, sys
sys.modules["tc_lib"] = None  # the exported folder must load without tc_lib
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer
out = {}
for method, folder in json.loads(sys.argv[1]).items():
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    if os.path.isfile(folder + "/adapter/adapter_model.safetensors"):  # peft weights that cannot be merged
        from peft import PeftModel
        model = PeftModel.from_pretrained(model, folder + "/adapter").eval()
    elif os.path.isdir(folder + "/adapter"):  # the adapters library's bottlenecks
        import adapters
        adapters.init(model)
        model.set_active_adapters(model.load_adapter(folder + "/adapter"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    texts = [t.replace("[SEP]", tokenizer.sep_token) for t in json.loads(sys.argv[2])]
    with torch.no_grad():
        logits = model(**tokenizer(texts, padding=True, truncation=True, return_tensors="pt")).logits
    out[method] = {"logits": logits.tolist(), "labels": model.config.id2label}
print(json.dumps(out))
"""


def _cfg(model: str, tmp_path: Path, method: str, **overrides) -> RunConfig:
    values = dict(model=model if method != "tfidf_lr" else "tfidf", dataset="restaurant_sup", method=method,
                  epochs=3, seed=1, train_batch_size=16, max_seq_length=32, output_dir=str(tmp_path / "runs"),
                  warmup_ratio=0.0, learning_rate=LR[method], adapter_reduction_factor=2, save_weights="all",
                  selection="dev")
    values.update(overrides)
    return RunConfig(**values)


@pytest.fixture(scope="module")
def trained(tiny_bert, synthetic_root, tmp_path_factory):
    """One tiny run per method (full, LoRA, IA3, adapter, TF-IDF), selected on dev, weights saved."""
    tmp = tmp_path_factory.mktemp("inference")
    with pytest.MonkeyPatch.context() as mp:
        pin_synthetic_checksums(mp, synthetic_root)
        return {method: (train.train_and_evaluate(_cfg(tiny_bert, tmp, method)), tmp) for method in LR}


@pytest.mark.parametrize("method", list(LR))
def test_predict_gives_the_runs_own_test_predictions(trained, synthetic_root, monkeypatch, method):
    pin_synthetic_checksums(monkeypatch, synthetic_root)
    result, _ = trained[method]
    cfg = RunConfig.from_dict(result.record.config)
    test = reference_splits(cfg)[0]["test"]  # the run's test texts, aspect and sentence joined by " [SEP] "
    rows = inference.predict(result.run_dir, list(test["text"]), batch_size=7)
    names = result.record.data.label_names
    assert [row["text"] for row in rows] == list(test["text"])
    for row in rows:
        assert list(row["probabilities"]) == names and abs(sum(row["probabilities"].values()) - 1) < 1e-5
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)
    predicted = [names.index(row["label"]) for row in rows]
    scores = classification_metrics(labels=list(test["labels"]), predictions=predicted, num_classes=len(names))
    assert scores["accuracy"] == pytest.approx(result.metrics["accuracy"], abs=1e-9)
    assert scores["macro_f1"] == pytest.approx(result.metrics["macro_f1"], abs=1e-9)
    assert result.metrics["accuracy"] > 0.5  # a learned model, not a constant one


def test_predict_cli_json_csv_and_file(trained, tmp_path, capsys):
    texts = sum((["--text", t] for t in SENTENCES), [])
    assert cli.main(["predict", str(trained["tfidf_lr"][0].run_dir), "--json", *texts]) == 0
    assert [r["label"] for r in json.loads(capsys.readouterr().out)] == ["positive", "negative", "neutral"]
    result, _ = trained["lora"]
    assert cli.main(["predict", str(result.run_dir), "--json", *texts]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert rows == inference.predict(result.run_dir, SENTENCES)
    inputs = tmp_path / "in.jsonl"
    inputs.write_text("\n".join(json.dumps({"sentence": t}) for t in SENTENCES) + "\n")
    assert cli.main(["predict", str(result.run_dir), "--file", str(inputs), "--column", "sentence", "--csv"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "text,label,p_positive,p_neutral,p_negative" and len(lines) == 4
    assert [line.split(",")[1] for line in lines[1:]] == [r["label"] for r in rows]
    assert cli.main(["predict", str(result.run_dir), "--file", str(inputs)]) == 2
    assert "line 1: expected an object with a string field 'text'" in capsys.readouterr().err


def test_a_run_without_weights_says_how_to_rerun(tiny_bert, synthetic_data, tmp_path, capsys):
    result = train.train_and_evaluate(_cfg(tiny_bert, tmp_path, "full", epochs=1, save_weights="peft"))
    assert cli.main(["predict", str(result.run_dir), "--text", "x"]) == 2
    err = capsys.readouterr().err
    assert "saved no weights (save_weights: peft)" in err and "--set save_weights=all" in err
    with pytest.raises(TcError, match="no such run folder"):
        inference.predict(tmp_path / "nowhere", ["x"])


def test_export_model_loads_in_plain_transformers_with_the_same_logits(trained, tmp_path):
    import torch

    folders, expected = {}, {}
    for method in METHODS:
        result, _ = trained[method]
        folders[method] = str(inference.export_model(result.run_dir, to=tmp_path / method))
        pipe = inference.load_run(result.run_dir)
        texts = [t.replace("[SEP]", pipe.tokenizer.sep_token) for t in SENTENCES]
        with torch.no_grad():
            expected[method] = pipe.model(**pipe.tokenizer(texts, padding=True, return_tensors="pt")).logits.numpy()
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-I", "-c", FRESH, json.dumps(folders), json.dumps(SENTENCES)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    got = json.loads(done.stdout.splitlines()[-1])
    for method, logits in expected.items():
        np.testing.assert_allclose(np.array(got[method]["logits"]), logits, atol=1e-5, rtol=0)
        assert got[method]["labels"] == {"0": "positive", "1": "neutral", "2": "negative"}
    assert "adapters.init(model)" in (tmp_path / "adapter" / "README.md").read_text()
    with pytest.raises(TcError, match="not empty"):
        inference.export_model(trained["full"][0].run_dir, to=tmp_path / "full")
    with pytest.raises(TcError, match="not a transformers model"):
        inference.export_model(trained["tfidf_lr"][0].run_dir, to=tmp_path / "tfidf")


def test_best_run_is_chosen_on_dev_and_never_on_test(trained, capsys):
    _, tmp = trained["full"]
    runs_dir = tmp / "runs"
    row = best_run(runs_dir, dataset="restaurant_sup")
    devs = {}
    for method, (result, _) in trained.items():
        history = [json.loads(line) for line in (result.run_dir / "history.jsonl").read_text().splitlines()]
        devs[method] = history[result.record.selection.chosen_epoch - 1]["dev"]["macro_f1"]
    assert row["method"] == max(devs, key=devs.get) and row["dev_score"] == pytest.approx(max(devs.values()))
    assert row["n_arms"] == len(LR) and row["has_weights"]
    assert cli.main(["predict", "--best", str(runs_dir), "--dataset", "restaurant_sup", "--json",
                     "--text", SENTENCES[0]]) == 0
    captured = capsys.readouterr()
    assert f"best of {len(LR)} arms on restaurant_sup by mean dev macro-F1" in captured.err
    assert row["run_dir"] in captured.err and json.loads(captured.out)[0]["text"] == SENTENCES[0]
    assert best_run(runs_dir, dataset="restaurant_sup", method="lora")["run_dir"] == str(trained["lora"][0].run_dir)
    assert cli.main(["predict", "--best", str(runs_dir), "--dataset", "restaurant_sup", "--method", "nosuch",
                     "--text", "x"]) == 2
    assert f"methods there: {', '.join(sorted(LR))}" in capsys.readouterr().err
    assert cli.main(["predict", "--best", str(runs_dir), "--dataset", "laptop_sup", "--text", "x"]) == 2
    assert "datasets there: restaurant_sup" in capsys.readouterr().err
