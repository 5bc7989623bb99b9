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
    "Qwen/Qwen2.5-3B": "qwen2.5-3b", "Qwen/Qwen3-4B": "qwen3-4b", "mistralai/Mistral-7B-v0.1": "mistral-7b",
    "google/gemma-2b": "gemma-2b", "microsoft/Phi-3-mini-4k-instruct": "phi-3-mini",
}
# The architectures the estimator models: causal LMs (an LM head and token-level loss) and encoders
# (a sequence-classification head). Anything else is refused by name rather than estimated wrongly.
CAUSAL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "gemma", "phi3")
ENCODER_TYPES = ("bert", "roberta", "mpnet")
REQUIRED = ("hidden_size", "num_attention_heads", "num_hidden_layers", "intermediate_size", "vocab_size")
OPTIONAL_INTS = ("num_key_value_heads", "head_dim", "max_position_embeddings")
HUB_HINT = "hub ids are looked up only with --online (offline by default)"
# Beyond these the replay's time and the numbers stop meaning anything (the largest open models have
# 126 layers, hidden 16,384, FFN 53,248, a 256k vocabulary); a config past them is refused.
LIMITS = {"num_hidden_layers": 512, "hidden_size": 65_536, "intermediate_size": 262_144, "vocab_size": 2_000_000,
          "num_attention_heads": 1_024, "max_position_embeddings": 1_048_576}


def shipped_models() -> list[str]:
    return sorted(p.stem for p in CONFIG_DIR.glob("*.json"))


def _read_json(path: Path, model: str) -> dict:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: cannot read it ({err.__class__.__name__})") from None
    except ValueError as err:
        raise ConfigError(f"{path}: not JSON ({str(err).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a JSON object (a model config), got {type(values).__name__}")
    return values


def _raw_values(model: str, online: bool) -> tuple[str, dict]:
    """(where it came from, the config's raw values): the file itself, never a neighbour."""
    name = ALIASES.get(model, model)
    shipped = CONFIG_DIR / f"{name}.json"
    if shipped.is_file():
        return str(shipped), _read_json(shipped, model)
    path = Path(model)
    if path.is_file():
        return str(path), _read_json(path, model)
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"{path}: the folder has no config.json")
        return str(path / "config.json"), _read_json(path / "config.json", model)
    if not online:
        raise ConfigError(f"model {model!r}: not a shipped config ({', '.join(shipped_models())}), a local "
                          f"config.json or a model folder; {HUB_HINT}")
    from transformers import AutoConfig

    try:
        return model, AutoConfig.from_pretrained(model, trust_remote_code=False).to_dict()
    except (OSError, ValueError) as err:
        first = (str(err).strip().splitlines() or [err.__class__.__name__])[0]
        raise ConfigError(f"model {model!r}: not found on the hub or not reachable ({first})") from None


def load_config(model: str, *, online: bool = False):
    """A shipped name (or its hub alias), a local config.json or model folder, or (online) a hub id.
    The raw values are checked before transformers fills in its defaults (and before it is imported:
    ~3 s, which a config that is refused does not pay)."""
    where, values = _raw_values(model, online)
    values = {k: v for k, v in values.items() if not k.startswith("_")}
    model_type = values.pop("model_type", None)
    if model_type not in CAUSAL_TYPES + ENCODER_TYPES:
        raise ConfigError(f"{where}: model_type {model_type!r} is not one the estimator models; supported: "
                          f"{', '.join(CAUSAL_TYPES)} (causal LMs), {', '.join(ENCODER_TYPES)} (encoders)")
    for key in REQUIRED:
        if key not in values:
            raise ConfigError(f"{where}: config field {key!r} is missing (it is not filled with a default)")
    for key in (*REQUIRED, *OPTIONAL_INTS):
        value = values.get(key)
        if key in values and value is not None and (not isinstance(value, int) or isinstance(value, bool)
                                                    or value <= 0):
            raise ConfigError(f"{where}: config field {key!r} must be a positive integer, got {value!r}")
        if key in LIMITS and isinstance(value, int) and value > LIMITS[key]:
            raise ConfigError(f"{where}: config field {key!r} is {value:,}; the estimator models configs up to "
                              f"{LIMITS[key]:,} (a real model's is far below)")
    _check_names(where, values)
    from transformers import AutoConfig

    try:
        config = AutoConfig.for_model(model_type, **values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: transformers rejects the config ({str(err).splitlines()[0]})") from None
    _check_config(where, config, explicit_head_dim=values.get("head_dim") is not None)
    return config


def _check_names(where: str, values: dict) -> None:
    """The activation and the RoPE type are names transformers looks up deep inside the model: an unknown
    one would be a KeyError there."""
    from transformers.activations import ACT2FN
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    for key in ("hidden_act", "hidden_activation"):
        if key in values and values[key] not in ACT2FN:
            raise ConfigError(f"{where}: config field {key!r} is {values[key]!r}; transformers knows "
                              f"{', '.join(sorted(ACT2FN))}")
    rope = values.get("rope_scaling")
    if rope is not None:
        kind = rope.get("rope_type", rope.get("type")) if isinstance(rope, dict) else rope
        if kind not in ROPE_INIT_FUNCTIONS:
            raise ConfigError(f"{where}: config field 'rope_scaling' has rope_type {kind!r}; transformers knows "
                              f"{', '.join(ROPE_INIT_FUNCTIONS)}")


def _check_config(where: str, config: Any, *, explicit_head_dim: bool) -> None:
    if not explicit_head_dim and config.hidden_size % config.num_attention_heads:
        raise ConfigError(f"{where}: hidden_size {config.hidden_size} is not divisible by "
                          f"num_attention_heads {config.num_attention_heads}")
    kv = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    if config.num_attention_heads % kv:
        raise ConfigError(f"{where}: num_attention_heads {config.num_attention_heads} is not divisible "
                          f"by num_key_value_heads {kv}")


def is_causal(config: Any) -> bool:
    return config.model_type in CAUSAL_TYPES
