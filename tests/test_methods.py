"""The method registry: IA3 end to end, the precision settings, and one set of defaults for training,
reloading and the memory estimator."""

from __future__ import annotations

import json
import re

import pytest
import torch

from tc_lib import memory, methods, models, train
from tc_lib.config import RunConfig
from tc_lib.errors import ConfigError
from tc_lib.report.runs import read_runs

H, LAYERS, FFN, CLASSES = 64, 2, 128, 3  # the tiny BERT of conftest
POOLER, CLASSIFIER = H * H + H, H * CLASSES + CLASSES


def tiny_cfg(tiny_bert, tmp_path, **overrides) -> RunConfig:
    values = dict(model=tiny_bert, dataset="restaurant_sup", method="ia3", epochs=1, seed=1, train_batch_size=16,
                  max_seq_length=32, output_dir=str(tmp_path / "runs"), warmup_ratio=0.0, learning_rate=1e-2)
    values.update(overrides)
    return RunConfig(**values)


def test_ia3_counts_by_hand(tiny_bert, synthetic_data, tmp_path):
    # peft's BERT default: key and value scaled at their output (h each), attention.output.dense and
    # output.dense scaled at their input (h and the FFN width) — per layer h + h + h + FFN
    _, counts = models.build_model(tiny_cfg(tiny_bert, tmp_path), CLASSES)
    ia3 = LAYERS * (H + H + H + FFN)
    assert counts.trainable_no_head == ia3 and counts.trainable == ia3 + POOLER + CLASSIFIER
    _, full = models.build_model(tiny_cfg(tiny_bert, tmp_path, method="full"), CLASSES)
    assert counts.total == full.total + ia3


def test_ia3_trains_records_and_reloads_exactly(tiny_bert, synthetic_data, tmp_path):
    cfg = tiny_cfg(tiny_bert, tmp_path, epochs=3, learning_rate=3e-2)
    result = train.train_and_evaluate(cfg)
    rec = result.record.to_dict()  # as written
    assert rec["status"] == "success" and rec["config"]["method"] == "ia3"
    assert rec["peft_target_modules"] == ["key", "output.dense", "value"]
    assert rec["metrics"]["macro_f1"] > rec["data"]["majority_floor"]["macro_f1"] + 0.2  # it learns the keywords
    assert sorted(p.name for p in (result.run_dir / "weights").iterdir()) == [
        "README.md", "adapter_config.json", "adapter_model.safetensors"]  # peft's own format
    row = read_runs(tmp_path / "runs").iloc[0]
    assert row["method"] == "ia3" and row["params_trainable"] == rec["params"]["trainable"]

    tokenizer, splits, _, _ = train.prepare_splits(cfg)
    test = splits["test"]
    batch = tokenizer.pad({"input_ids": list(test["input_ids"]), "attention_mask": list(test["attention_mask"])},
                          return_tensors="pt")
    reloaded = models.load_trained(cfg, result.run_dir / "weights", CLASSES)
    with torch.no_grad():
        predictions = reloaded(**batch).logits.argmax(-1)
    from sklearn.metrics import confusion_matrix

    assert confusion_matrix(list(test["labels"]), predictions.numpy(), labels=[0, 1, 2]).tolist() == \
        rec["metrics"]["confusion_matrix"]


@pytest.mark.slow
def test_ia3_in_the_report(tiny_bert, synthetic_data, tmp_path, monkeypatch):
    from tc_lib.report import display
    from tc_lib.report.sections import Report

    train.train_and_evaluate(tiny_cfg(tiny_bert, tmp_path))
    train.train_and_evaluate(tiny_cfg(tiny_bert, tmp_path, method="full", learning_rate=5e-3))
    shown = []
    monkeypatch.setattr(display, "show", shown.append)  # the Markdown / HTML objects the notebook would show
    report = Report.load(tmp_path / "runs")
    report.methods()
    report.conclusions()
    text = "\n".join(obj.data for obj in shown)
    assert "IA³" in text and re.search(r"全量微调 full − \S+ · IA³: [+-]\d+\.\d+ 个 macro-F1 点", text)


def test_ia3_memory_estimate_counts():
    # open_llama_3b: k_proj and v_proj outputs (3200 each, no GQA) and down_proj's input (8640), 26 layers
    b = memory.estimate("open_llama_3b", method="ia3", seq_len=8, mixed_precision="no")
    assert b.params_trainable == 26 * (3200 + 3200 + 8640) and b.params_total == 3_426_473_600 + b.params_trainable
    # bert-base: 12 · (768 + 768 + 768 + 3072) plus the head trained beside it (pooler + classifier)
    assert memory.estimate("bert-base-uncased", method="ia3", seq_len=8).params_trainable == \
        12 * (3 * 768 + 3072) + 590_592 + 2_307


def test_one_set_of_defaults():
    """Training and the estimator take a method's options from the registry alone."""
    cfg = RunConfig(method="lora")
    assert cfg.method_options() == methods.OPTION_DEFAULTS
    assert methods.method_options("lora", memory.Setup(method="lora").options) == methods.OPTION_DEFAULTS
    assert {name: m.learning_rate for name, m in methods.METHODS.items()} == \
        {name: RunConfig(method=name).learning_rate for name in methods.METHODS}
    with pytest.raises(ConfigError, match=r"option\(s\) adapter_config do not apply to method 'lora'"):
        memory.estimate("minilm", method="lora", seq_len=8, adapter_config="double_seq_bn")


@pytest.mark.parametrize("method", list(methods.METHODS))
@pytest.mark.parametrize("torch_dtype,mixed_precision", [("bfloat16", "no"), ("float32", "bf16"),
                                                         ("bfloat16", "bf16")])
def test_every_precision_combination_trains_on_cpu(tiny_bert, synthetic_data, tmp_path, method, torch_dtype,
                                                   mixed_precision):
    cfg = tiny_cfg(tiny_bert, tmp_path, method=method, torch_dtype=torch_dtype, mixed_precision=mixed_precision,
                   max_train_samples=64, adapter_reduction_factor=2,
                   allow_pure_bf16=method == "full" and torch_dtype == "bfloat16")
    model, _ = models.build_model(cfg, CLASSES)
    trainable = {p.dtype for p in model.parameters() if p.requires_grad}
    frozen = {p.dtype for p in model.parameters() if not p.requires_grad}
    if method == "full":
        assert trainable == {getattr(torch, torch_dtype)}
    else:  # trainable PEFT weights stay fp32 on a bf16 base, as peft does by default
        assert trainable == {torch.float32} and frozen == {getattr(torch, torch_dtype)}
    result = train.train_and_evaluate(cfg)
    assert result.record.status == "success" and result.record.metrics["loss"] > 0
    assert json.loads((result.run_dir / "config.json").read_text())["torch_dtype"] == torch_dtype


def test_fp16_autocast_needs_cuda(tiny_bert, synthetic_data, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    cfg = tiny_cfg(tiny_bert, tmp_path, mixed_precision="fp16")
    with pytest.raises(ConfigError, match="fp16 autocast needs a CUDA device"):
        train.train_and_evaluate(cfg)
    assert not cfg.run_dir.exists()  # refused before anything is written, like any config error


@pytest.mark.slow
def test_practitioners_lora_is_expressible_in_the_estimator():
    """bf16 base + fp32 LoRA + autocast: the frozen weights take 2 bytes, LoRA 4, and nothing is cast."""
    n, lora = 3_426_473_600, 26 * 8 * (6400 + 6400)
    b = memory.estimate("open_llama_3b", method="lora", seq_len=64, torch_dtype="bfloat16", mixed_precision="bf16")
    assert b.weights == 2 * n + 4 * lora and b.gradients == 4 * lora
    fp32_base = memory.estimate("open_llama_3b", method="lora", seq_len=64, mixed_precision="bf16")
    # the bf16 casts autocast saves of every linear weight (all but the 102M-parameter input embedding)
    assert fp32_base.weights == 4 * (n + lora) and fp32_base.autocast_copies > 1.9 * n
    assert b.autocast_copies < fp32_base.autocast_copies / 100


def test_a_bf16_run_does_not_leak_its_autocast_into_the_next(tiny_bert, synthetic_data, tmp_path):
    """TrainingArguments(bf16=True) exports ACCELERATE_MIXED_PRECISION; the next run must not inherit it."""
    cfg = dict(method="lora", epochs=2, max_train_samples=128)
    before = train.train_and_evaluate(tiny_cfg(tiny_bert, tmp_path / "a", **cfg)).metrics
    train.train_and_evaluate(tiny_cfg(tiny_bert, tmp_path / "b", method="full", mixed_precision="bf16",
                                      max_train_samples=64))
    after = train.train_and_evaluate(tiny_cfg(tiny_bert, tmp_path / "c", **cfg)).metrics
    assert after == before  # bit for bit, as two runs of one config on the CPU are


def test_the_methods_command_lists_every_method_and_option_of_the_registry(capsys):
    from tc_lib import cli

    assert cli.main(["methods"]) == 0
    out = capsys.readouterr().out
    for name, method in methods.METHODS.items():
        assert re.search(rf"^{name}\s+{re.escape(method.label)} \({method.library}; default learning rate "
                         rf"{method.learning_rate:g}\)$", out, re.M), name
        for option in method.options:
            spec = methods.OPTIONS[option]
            assert f"    {option} = {spec.default!r}  # {spec.kind}, {spec.expected()}: {spec.help}" in out
    assert "method_options = {NAME: VALUE}" in out
