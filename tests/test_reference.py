"""The TF-IDF + logistic-regression reference as runs: the encoders' examples, the same record."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from tc_lib import train
from tc_lib.config import RunConfig
from tc_lib.reference import _pipeline, reference_splits
from tc_lib.results import load_record


@pytest.mark.parametrize("selection", ["last", "dev"])
def test_reference_sees_the_encoders_examples(real_data, tmp_path, selection):
    encoder = RunConfig(model="minilm", dataset="restaurant_sup", max_train_samples=64, selection=selection,
                        data_seed="seed", seed=3, output_dir=str(tmp_path))
    tokenizer, splits, _, split_size = train.prepare_splits(encoder)
    ref, _, ref_split_size = reference_splits(replace(encoder, model="tfidf", method="tfidf_lr", learning_rate=None))
    assert split_size == ref_split_size and len(ref["train"]) == len(splits["train"]) == 64
    assert list(ref["train"]["labels"]) == list(splits["train"]["labels"])
    ids = tokenizer(list(ref["train"]["text"]), truncation=True, max_length=encoder.max_seq_length)["input_ids"]
    assert ids == list(splits["train"]["input_ids"])  # the same texts, in the same order
    if selection == "dev":
        assert sorted(ref["dev"]["labels"]) == sorted(splits["dev"]["labels"])
    other, _, _ = reference_splits(RunConfig(model="tfidf", method="tfidf_lr", dataset="restaurant_sup",
                                             max_train_samples=64, selection=selection, data_seed="seed", seed=4))
    assert list(other["train"]["text"]) != list(ref["train"]["text"])  # the draw follows the seed


def test_reference_run_writes_the_common_record(real_data, tmp_path):
    cfg = RunConfig(model="tfidf", method="tfidf_lr", dataset="acl_sup", max_train_samples=256, seed=1,
                    output_dir=str(tmp_path))
    result = train.train_and_evaluate(cfg)
    record = load_record(result.run_dir).to_dict()  # as written
    assert record["status"] == "success" and record["arm_id"] == cfg.arm_id
    assert record["data"]["train_size"] == 256 and sum(record["data"]["train_label_counts"]) == 256
    assert record["data"]["train_split_size"] == 1688 and record["data"]["test_size"] == 139
    assert record["metrics"]["macro_f1"] > record["data"]["majority_floor"]["macro_f1"]
    assert record["params"]["trainable"] == record["params"]["total"] > 1000
    history = [json.loads(line) for line in (result.run_dir / "history.jsonl").read_text().splitlines()]
    assert len(history) == 1 and history[0]["test"]["macro_f1"] == record["metrics"]["macro_f1"]
    again = train.train_and_evaluate(replace(cfg, output_dir=str(tmp_path / "again")))
    assert again.record.metrics["confusion_matrix"] == record["metrics"]["confusion_matrix"]
    # class_weights: balanced is logistic regression's own class_weight="balanced", like the encoders' loss
    weighted = train.train_and_evaluate(replace(cfg, class_weights="balanced", output_dir=str(tmp_path / "w")))
    assert _pipeline(1, "balanced")[-1].class_weight == "balanced" and _pipeline(1, "none")[-1].class_weight is None
    assert weighted.record.metrics["confusion_matrix"] != record["metrics"]["confusion_matrix"]
    counts = weighted.record.data.train_label_counts  # the weights LR gave each class, in its record
    assert weighted.record.data.class_weights == pytest.approx([256 / (6 * c) for c in counts])
    assert "class_weights" not in record["data"]
