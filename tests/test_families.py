"""The paper's model families (RoBERTa, BERT, SciBERT), offline: tiny local models of each shape through
every method, save → reload, the training notebook and a grid that mirrors params/paper.yaml."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml
from sklearn.metrics import confusion_matrix

from tc_lib import models, train
from tc_lib.config import RunConfig
from tc_lib.grid import load_grid, run_grid
from tc_lib.methods import METHODS

REPO = Path(__file__).resolve().parents[1]
LR = {"full": 5e-3, "lora": 1e-2, "adapter": 1e-2, "ia3": 3e-2}


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("family", ["roberta-base", "bert-base-uncased", "allenai/scibert_scivocab_uncased"])
def test_every_method_trains_and_reloads_on_every_family(tiny_family, synthetic_data, tmp_path, family, method):
    cfg = RunConfig(model=tiny_family[family], dataset="restaurant_sup", method=method, epochs=1, seed=1,
                    max_seq_length=32, output_dir=str(tmp_path / "runs"), warmup_ratio=0.0,
                    learning_rate=LR[method], adapter_reduction_factor=2, save_weights="all")
    result = train.train_and_evaluate(cfg)
    assert result.record["status"] == "success"
    tokenizer, splits, _ = train.prepare_splits(cfg)
    test = splits["test"]
    if family == "roberta-base":  # RoBERTa: </s> as separator, no token type ids
        assert tokenizer.sep_token == "</s>" and "token_type_ids" not in test.column_names
    batch = tokenizer.pad({k: list(test[k]) for k in ("input_ids", "attention_mask")}, return_tensors="pt")
    reloaded = models.load_trained(cfg, result.run_dir / "weights", 3)
    with torch.no_grad():
        predictions = reloaded(**batch).logits.argmax(-1).numpy()
    assert confusion_matrix(list(test["labels"]), predictions, labels=[0, 1, 2]).tolist() == \
        result.record["metrics"]["confusion_matrix"]


def test_roberta_head_is_trained_under_peft(tiny_family, synthetic_data, tmp_path):
    h, classes = 64, 3
    head = (h * h + h) + (h * classes + classes)  # classifier.dense + classifier.out_proj; RoBERTa has no pooler
    for method in ("lora", "ia3", "adapter"):
        cfg = RunConfig(model=tiny_family["roberta-base"], method=method, adapter_reduction_factor=2,
                        output_dir=str(tmp_path))
        _, counts = models.build_model(cfg, classes)
        assert counts.trainable - counts.trainable_no_head == head, method


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


def test_a_grid_mirroring_paper_yaml(tiny_family, real_data, tmp_path):
    """params/paper.yaml with the hub ids replaced by local tiny models of the same families, cut to one
    seed, one dataset and one epoch — every run of it succeeds through papermill."""
    spec = yaml.safe_load((REPO / "params" / "paper.yaml").read_text())
    spec["defaults"].update(epochs=1, max_train_samples=24, max_seq_length=32, output_dir=str(tmp_path / "runs"))
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
