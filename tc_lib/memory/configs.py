"""Model configs for the estimator: the shipped ones (model_configs/*.json), local files and hub ids."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
ALIASES = {
    "openlm-research/open_llama_3b": "open_llama_3b", "openlm-research/open_llama_3b_v2": "open_llama_3b",
    "meta-llama/Llama-3.2-3B": "llama-3.2-3b", "allenai/scibert_scivocab_uncased": "scibert_scivocab_uncased",
    "FacebookAI/roberta-base": "roberta-base", "google-bert/bert-base-uncased": "bert-base-uncased",
    "sentence-transformers/all-MiniLM-L6-v2": "minilm", "sentence-transformers/all-mpnet-base-v2": "mpnet",
}
CAUSAL_TYPES = ("llama", "mistral", "qwen2", "gemma")


def shipped_models() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def load_config(model: str):
    """A shipped name (or its hub alias), a local config.json / model folder, or a hub id."""
    from transformers import AutoConfig

    name = ALIASES.get(model, model)
    shipped = CONFIG_DIR / f"{name}.json"
    if shipped.is_file():
        values = {k: v for k, v in json.loads(shipped.read_text()).items() if not k.startswith("_")}
        config = AutoConfig.for_model(values.pop("model_type"), **values)
    else:
        try:
            path = Path(model)
            config = AutoConfig.from_pretrained(str(path.parent if path.suffix == ".json" else path)
                                                if path.exists() else model, trust_remote_code=False)
        except (OSError, ValueError) as err:
            first = (str(err).strip().splitlines() or [err.__class__.__name__])[0]
            raise ConfigError(f"model {model!r}: not a shipped config ({', '.join(shipped_models())}), a local "
                              f"config.json, or a reachable hub id ({first})") from None
    _check_config(model, config)
    return config


def _check_config(model: str, config: Any) -> None:
    for key in ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size"):
        value = getattr(config, key, None)
        if not isinstance(value, int) or value <= 0:
            raise ConfigError(f"model {model!r}: config field {key!r} must be a positive integer, got {value!r}")
    if config.hidden_size % config.num_attention_heads:
        raise ConfigError(f"model {model!r}: hidden_size {config.hidden_size} is not divisible by "
                          f"num_attention_heads {config.num_attention_heads}")
    kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    if config.num_attention_heads % kv:
        raise ConfigError(f"model {model!r}: num_attention_heads {config.num_attention_heads} is not divisible "
                          f"by num_key_value_heads {kv}")


def is_causal(config: Any) -> bool:
    return config.model_type in CAUSAL_TYPES
