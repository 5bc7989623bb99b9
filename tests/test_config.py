"""RunConfig validation and run_id."""

from __future__ import annotations

import re

import pytest

from tc_lib.config import DEFAULT_LEARNING_RATE, RunConfig, arm_id_of
from tc_lib.errors import ConfigError
from tc_lib.methods import OPTIONS
from tc_lib.options import Option

def _invalid(option: Option):
    """A value the registry's typed option refuses: below its floor, at its ceiling, off its list, empty."""
    if option.kind == "modules":
        return []
    if option.choices:
        return "nosuch"
    if option.kind == "str":
        return ""
    return option.below if option.below is not None else option.low - 1


INVALID = {
    "model": "", "dataset": "movies_sup", "method": "nosuch", "seed": -1, "epochs": 0, "learning_rate": 2.0,
    "train_batch_size": 0, "eval_batch_size": 1.5, "max_seq_length": 4, "warmup_ratio": 1.0,
    "weight_decay": -0.1, **{name: _invalid(option) for name, option in OPTIONS.items()},
    "selection": "test", "dev_fraction": 0.0,
    "max_train_samples": 0, "data_seed": "x", "torch_dtype": "float16", "mixed_precision": "fp8", "save_weights": "some", "output_dir": "",
    "num_threads": 0, "group_by_length": "yes", "report_to": "wandb", "class_weights": "inverse", "device": "gpu", "allow_pure_bf16": "yes", "test_every_epoch": "yes", "max_dev_samples": 0, "tuning": "{\"stage\": \"later\"}",
}


@pytest.mark.parametrize("field", list(INVALID))
def test_every_invalid_field_is_named(field):
    with pytest.raises(ConfigError, match=rf"field '{field}': expected"):
        RunConfig(**{field: INVALID[field]})


def test_every_field_has_an_invalid_case():
    assert set(INVALID) == set(RunConfig.__dataclass_fields__)
    # and the hand-picked ones the registry's checks must refuse as well
    for field, value in (("lora_alpha", "16"), ("ia3_feedforward_modules", [""]), ("lora_dropout", -0.1)):
        with pytest.raises(ConfigError, match=rf"field '{field}': expected"):
            RunConfig(**{field: value})


def test_booleans_are_not_integers_and_duplicates_rejected():
    with pytest.raises(ConfigError, match="'epochs'"):
        RunConfig(epochs=True)
    with pytest.raises(ConfigError, match="'dataset'"):
        RunConfig(dataset=["acl_sup", "acl_sup"])


def test_unknown_keys():
    with pytest.raises(ConfigError, match=r"params.yaml: unknown field\(s\) lr, optimiser; valid fields: model"):
        RunConfig.from_dict({"lr": 1e-3, "optimiser": "sgd"}, source="params.yaml")


def test_method_default_learning_rate_and_resolution():
    assert RunConfig(method="lora").learning_rate == DEFAULT_LEARNING_RATE["lora"]
    assert RunConfig(method="full").learning_rate == DEFAULT_LEARNING_RATE["full"]
    assert RunConfig(method="lora", learning_rate=3e-4).learning_rate == 3e-4
    # the resolved value is what is hashed: implicit and explicit defaults are the same run
    assert RunConfig(method="lora").run_id == RunConfig(method="lora", learning_rate=DEFAULT_LEARNING_RATE["lora"]).run_id


def test_run_id_readable_stable_and_path_safe():
    cfg = RunConfig(model="allenai/scibert_scivocab_uncased", dataset=["acl_sup", "agnews_fs"], method="adapter", seed=3)
    assert re.fullmatch(r"[A-Za-z0-9_+.-]+", cfg.run_id)
    assert cfg.run_id.startswith("scibert-scivocab-uncased_acl-sup+agnews-fs_adapter_s3_")
    assert cfg.run_id == RunConfig.from_dict(cfg.to_dict()).run_id
    assert cfg.run_id != RunConfig(**{**cfg.to_dict(), "seed": 4}).run_id
    assert cfg.run_id != RunConfig(**{**cfg.to_dict(), "epochs": 4}).run_id
    # where a run is written and how many threads it uses do not change what it computes
    assert cfg.run_id == RunConfig(**{**cfg.to_dict(), "output_dir": "/elsewhere", "num_threads": 2}).run_id


def test_a_later_field_at_its_neutral_value_keeps_earlier_ids():
    cfg = RunConfig(dataset="acl_sup", method="lora", seed=2)
    earlier = {k: v for k, v in cfg.to_dict().items() if k != "class_weights"}  # a record from before the field
    assert "class_weights" not in cfg.identity() and arm_id_of(earlier) == cfg.arm_id
    weighted = RunConfig(**{**cfg.to_dict(), "class_weights": "balanced"})
    assert weighted.run_id != cfg.run_id and weighted.arm_id != cfg.arm_id
    assert weighted.identity()["class_weights"] == "balanced"


def test_lists_become_tuples():
    cfg = RunConfig(dataset=["acl_sup", "restaurant_sup"], peft_target_modules=["query"])
    assert cfg.dataset == ("acl_sup", "restaurant_sup") and cfg.to_dict()["dataset"] == ["acl_sup", "restaurant_sup"]
    hash(cfg)
