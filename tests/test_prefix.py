"""Prefix tuning (peft PrefixTuningConfig, task SEQ_CLS), added through the method registry alone: the
parameter count by hand, a training run with its record, predict on the reloaded run, a tuned grid's dry
run, the report's method settings, and the memory estimator. (The registry-driven tests of test_train,
test_methods and test_inference run it too: learning, every precision setting, export.)"""

from __future__ import annotations

import pytest

from tc_lib import cli, inference, memory, models, train
from tc_lib.report.arms import method_settings
from tc_lib.config import RunConfig
from tc_lib.errors import ConfigError
from tc_lib.metrics import classification_metrics
from tc_lib.reference import reference_splits

H, LAYERS, CLASSES, TOKENS = 64, 2, 3, 5  # the tiny BERT of conftest
POOLER, CLASSIFIER = H * H + H, H * CLASSES + CLASSES


def _cfg(tiny_bert, tmp_path, **overrides) -> RunConfig:
    values = dict(model=tiny_bert, dataset="restaurant_sup", method="prefix", prefix_virtual_tokens=TOKENS,
                  epochs=3, max_seq_length=32, warmup_ratio=0.0, learning_rate=3e-2, selection="dev",
                  output_dir=str(tmp_path / "runs"))
    values.update(overrides)
    return RunConfig(**values)


def test_prefix_counts_by_hand_and_refuses_a_model_without_a_pooler(tiny_bert, tiny_family, synthetic_data, tmp_path):
    # a key and a value vector per virtual token and layer; the head (and BERT's pooler) trains beside it
    _, counts = models.build_model(_cfg(tiny_bert, tmp_path), CLASSES)
    assert counts.trainable_no_head == TOKENS * LAYERS * 2 * H
    assert counts.trainable == counts.trainable_no_head + POOLER + CLASSIFIER
    assert RunConfig().run_id == RunConfig(prefix_virtual_tokens=20).run_id  # old run ids unchanged
    with pytest.raises(ConfigError, match="method 'prefix' is not available for model type 'roberta': .*no pooler"):
        models.build_model(_cfg(tiny_family["roberta-base"], tmp_path), CLASSES)


def test_prefix_trains_records_and_predicts_what_it_scored(tiny_bert, synthetic_data, tmp_path):
    result = train.train_and_evaluate(_cfg(tiny_bert, tmp_path))
    rec = result.record.to_dict()  # as written
    assert rec["status"] == "success" and rec["peft_target_modules"] is None  # it wraps no module
    assert rec["metrics"]["macro_f1"] > rec["data"]["majority_floor"]["macro_f1"] + 0.2
    cfg = RunConfig.from_dict(rec["config"])
    test = reference_splits(cfg)[0]["test"]
    rows = inference.predict(result.run_dir, list(test["text"]))
    names = rec["data"]["label_names"]
    scores = classification_metrics(labels=list(test["labels"]), predictions=[names.index(r["label"]) for r in rows],
                                    num_classes=len(names))
    assert scores["macro_f1"] == pytest.approx(rec["metrics"]["macro_f1"], abs=1e-9)
    assert method_settings(rec["config"]) == f"tokens={TOKENS}"


def test_prefix_in_a_tuned_grid_and_the_estimator(tmp_path, capsys):
    params = tmp_path / "grid.yaml"
    params.write_text(f"defaults: {{output_dir: {tmp_path / 'runs'}, selection: dev}}\n"
                      "axes: {method: [prefix, lora], prefix_virtual_tokens: [10]}\n")
    assert cli.main(["run", str(params), "--dry-run"]) == 2  # an option of prefix set for LoRA too
    assert "does not apply to method lora" in capsys.readouterr().err
    params.write_text(f"defaults: {{output_dir: {tmp_path / 'runs'}, selection: dev, method: prefix}}\n"
                      "axes: {seed: [1, 2]}\ntune: {space: {prefix_virtual_tokens: [5, 10]}, seeds: [1]}\n")
    assert cli.main(["run", str(params), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "stage 1" in out and out.count("_prefix_") >= 2 and "after tuning" in out
    b = memory.estimate("minilm", method="prefix", seq_len=16, prefix_virtual_tokens=TOKENS)
    assert b.params_trainable == TOKENS * 6 * 2 * 384 + 384 * 384 + 384 + 384 * 3 + 3  # MiniLM: 6 layers, 384 wide
