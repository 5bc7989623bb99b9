"""The one registry of fine-tuning methods: how each is applied to a model, saved and reloaded.

Training (`models.build_model`), reloading (`models.load_trained`) and the memory estimator
(`memory.estimate`) all call `apply_method`, so a method has one set of defaults. To add a method:
an entry in METHODS (its library, default learning rate, options and an apply function), its option
fields with their defaults in OPTION_DEFAULTS (RunConfig takes them from there), and a test.
Save and reload branch on the method's library (transformers | peft | adapters), not on its name.
"""

from __future__ import annotations

import logging
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from .errors import ConfigError
from .options import Option
from .precision import keep_trainables_fp32

logger = logging.getLogger(__name__)

ADAPTER_CONFIGS = ("seq_bn", "double_seq_bn")
# Every method option, typed (tc_lib.options.Option), in RunConfig's field order. A method lists the ones
# it reads; RunConfig's fields, their checks, the notebook's documentation, the memory CLI's flags and
# the report's method-settings column come from here.
OPTIONS: dict[str, Option] = {o.name: o for o in (
    Option("lora_r", "int", 8, "LoRA rank", short="r", low=1),
    Option("lora_alpha", "int", 16, "LoRA scaling alpha (the update is scaled by alpha / r)", short="α", low=1),
    Option("lora_dropout", "float", 0.1, "dropout on the LoRA input", short="dropout", low=0, below=1),
    Option("peft_target_modules", "modules", None, "LoRA / IA3 target modules; None: the library's default for "
           "the architecture", short="targets", flag="--peft-targets"),
    Option("ia3_feedforward_modules", "modules", None, "IA3 modules scaled at their input; None: peft's default",
           short="feedforward", flag="--ia3-feedforward"),
    Option("adapter_config", "str", "seq_bn", "seq_bn (Pfeiffer) | double_seq_bn (Houlsby)", short="config",
           choices=ADAPTER_CONFIGS),
    Option("adapter_reduction_factor", "int", 16, "the adapter bottleneck is the hidden size divided by this",
           short="reduction", low=1),
    Option("prefix_virtual_tokens", "int", 20, "prefix tuning: virtual tokens whose keys and values every layer "
           "attends to", short="tokens", low=1, added_later=True),
)}
OPTION_DEFAULTS: dict[str, Any] = {name: o.default for name, o in OPTIONS.items()}
# Modules that make up the classification head (BERT's pooler feeds only the classifier).
HEAD_MODULES = ("classifier", "score", "pooler")
ADAPTER_NAME = "task"
# Defaults for architectures peft has no mapping for; MPNet's attention projections are q, k, v, o;
# Phi-3 fuses q, k and v into qkv_proj.
PEFT_DEFAULT_TARGETS = {
    "lora": {"mpnet": ("q", "v"), "phi3": ("qkv_proj",)},
    "ia3": {"mpnet": ("k", "v", "output.dense"), "phi3": ("qkv_proj", "down_proj")},
}
IA3_DEFAULT_FEEDFORWARD = {"mpnet": ("output.dense",), "phi3": ("down_proj",)}


@dataclass(frozen=True)
class Method:
    name: str
    library: str  # who applies, saves and reloads it: transformers | peft | adapters
    label: str  # how the report names it (中文 English)
    learning_rate: float  # default learning rate
    options: tuple[str, ...]  # the OPTIONS that configure it
    apply: Callable[[Any, Mapping[str, Any], str], Any]  # (model, options, task) -> model
    estimable: bool = True  # whether the memory estimator models it (else it says so, naming the method)


def is_head(param_name: str) -> bool:
    return any(part in HEAD_MODULES for part in param_name.split("."))


def _pooler_names(model: Any) -> list[str]:
    return [name.rsplit(".", 1)[-1] for name, module in model.named_modules()
            if name.endswith("pooler") and module is not None and any(True for _ in module.parameters())]


def _peft_task(task: str):
    from peft import TaskType

    return TaskType.CAUSAL_LM if task == "causal_lm" else TaskType.SEQ_CLS


def _peft_targets(method: str, model: Any, options: Mapping[str, Any]) -> list[str] | None:
    targets = options["peft_target_modules"] or PEFT_DEFAULT_TARGETS[method].get(model.config.model_type)
    return list(targets) if targets else None


def _get_peft_model(model: Any, peft_config: Any) -> Any:
    from peft import get_peft_model

    try:
        return get_peft_model(model, peft_config)
    except ValueError as err:  # no module matched, or an architecture peft has no defaults for
        raise ConfigError(f"field 'peft_target_modules': {str(err).splitlines()[0]}") from None


def _apply_full(model: Any, options: Mapping[str, Any], task: str) -> Any:
    return model


def _apply_lora(model: Any, options: Mapping[str, Any], task: str) -> Any:
    from peft import LoraConfig

    # peft trains and saves the classifier itself; BERT's pooler must be named
    return _get_peft_model(model, LoraConfig(
        task_type=_peft_task(task), r=options["lora_r"], lora_alpha=options["lora_alpha"],
        lora_dropout=options["lora_dropout"], target_modules=_peft_targets("lora", model, options),
        modules_to_save=_pooler_names(model) or None))


def _apply_ia3(model: Any, options: Mapping[str, Any], task: str) -> Any:
    from peft import IA3Config

    feedforward = options["ia3_feedforward_modules"] or IA3_DEFAULT_FEEDFORWARD.get(model.config.model_type)
    return _get_peft_model(model, IA3Config(
        task_type=_peft_task(task), target_modules=_peft_targets("ia3", model, options),
        feedforward_modules=list(feedforward) if feedforward else None,
        modules_to_save=_pooler_names(model) or None))


def _adapter_interface(model_type: str):
    """An explicit adapters interface for architectures the library does not know (MPNet)."""
    if model_type != "mpnet":
        return None
    from adapters import AdapterModelInterface

    return AdapterModelInterface(
        adapter_methods=["bottleneck"], model_embeddings="embeddings", model_layers="encoder.layer",
        layer_self_attn="attention", layer_cross_attn=None, attn_k_proj="attn.k", attn_q_proj="attn.q",
        attn_v_proj="attn.v", attn_o_proj="attn.o", layer_intermediate_proj="intermediate.dense",
        layer_output_proj="output.dense")


@contextmanager
def _adapters_quiet() -> Iterator[None]:
    """adapters warns "none are activated" between add_adapter and train_adapter, which we call together."""
    adapters_logger = logging.getLogger("adapters")
    level = adapters_logger.level
    adapters_logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        adapters_logger.setLevel(level)


def _init_adapters(model: Any) -> None:
    """Give a transformers model the adapters library's methods (with our interface for MPNet)."""
    import adapters

    try:
        adapters.init(model, interface=_adapter_interface(model.config.model_type))
    except ValueError as err:
        raise ConfigError(f"method 'adapter' is not available for model type "
                          f"{model.config.model_type!r}: {err}") from None


def _apply_adapter(model: Any, options: Mapping[str, Any], task: str) -> Any:
    from adapters import DoubleSeqBnConfig, SeqBnConfig

    config_class = {"seq_bn": SeqBnConfig, "double_seq_bn": DoubleSeqBnConfig}[options["adapter_config"]]
    with _adapters_quiet():
        _init_adapters(model)
        model.add_adapter(ADAPTER_NAME, config=config_class(reduction_factor=options["adapter_reduction_factor"]))
        model.train_adapter(ADAPTER_NAME)  # freezes the base model; the static classifier stays trainable
    for name, param in model.named_parameters():
        if "pooler" in name.split("."):
            param.requires_grad_(True)  # BERT's pooler is part of the head, as under peft
    return model


def _apply_prefix(model: Any, options: Mapping[str, Any], task: str) -> Any:
    from peft import PrefixTuningConfig

    # trained key/value prefixes in every layer (no reparametrisation MLP); the head (and BERT's pooler) beside them
    if task == "seq_cls" and not _pooler_names(model):
        raise ConfigError(f"method 'prefix' is not available for model type {model.config.model_type!r}: peft's "
                          "prefix tuning for sequence classification feeds the classifier the backbone's pooled "
                          "output, and this model has no pooler (RoBERTa); use a BERT-family model or another method")
    return _get_peft_model(model, PrefixTuningConfig(task_type=_peft_task(task),
                                                     num_virtual_tokens=options["prefix_virtual_tokens"],
                                                     modules_to_save=_pooler_names(model) or None))


PEFT_OPTIONS = ("peft_target_modules",)
METHODS: dict[str, Method] = {m.name: m for m in (
    Method("full", "transformers", "全量微调 full", 5e-5, (), _apply_full),
    # PEFT trains ~0.5 % of the weights and needs a larger step to learn in a few epochs
    # (shared/notes/feasibility.md §3: lr 5e-4 stays near chance after one epoch, 2e-3 learns).
    Method("lora", "peft", "LoRA", 1e-3, ("lora_r", "lora_alpha", "lora_dropout", *PEFT_OPTIONS), _apply_lora),
    Method("adapter", "adapters", "适配器 adapter", 1e-3, ("adapter_config", "adapter_reduction_factor"),
           _apply_adapter),
    # IA3 learns scaling vectors (~0.07 % of MiniLM): 1e-2 chosen on dev (README: 1e-3 stays at the floor)
    Method("ia3", "peft", "IA³", 1e-2, (*PEFT_OPTIONS, "ia3_feedforward_modules"), _apply_ia3),
    # prefix tuning learns a few thousand vectors: P-tuning v2's rates for it are 5e-3 to 1e-2
    Method("prefix", "peft", "前缀微调 prefix", 1e-2, ("prefix_virtual_tokens",), _apply_prefix),
)}


# Classical references run as runs of their own (tc_lib.reference) with the same record schema; they
# train no encoder, so the registry above (and the memory estimator) does not know them.
REFERENCES: dict[str, str] = {"tfidf_lr": "TF-IDF + 逻辑回归 LR"}
REFERENCE_MODEL = "tfidf"  # the model name of a reference run (no pretrained encoder)


def method_label(name: str) -> str:
    """How the report names a method or reference."""
    return METHODS[name].label if name in METHODS else REFERENCES.get(name, name)


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ConfigError(f"method {name!r}: expected {' | '.join(METHODS)}")
    return METHODS[name]


def method_options(method: str, given: Mapping[str, Any] | None = None, *, strict: bool = False) -> dict[str, Any]:
    """Every option with the registry's defaults, overridden by `given`. With strict, an option that the
    method does not use is an error (the estimator's CLI: a flag that would be silently ignored)."""
    given = dict(given or {})
    unknown = sorted(set(given) - set(OPTION_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown method option(s) {', '.join(unknown)}; known: {', '.join(OPTION_DEFAULTS)}")
    if strict:
        foreign = sorted(k for k in given if k not in get_method(method).options)
        if foreign:
            used = ", ".join(get_method(method).options) or "none"
            raise ConfigError(f"option(s) {', '.join(foreign)} do not apply to method {method!r} (its options: {used})")
    return {**OPTION_DEFAULTS, **given}


def apply_method(model: Any, *, method: str, options: Mapping[str, Any] | None = None, task: str = "seq_cls") -> Any:
    """Apply `method` to a transformers model (the one place that does); returns the model to train.
    `task`: seq_cls (a classifier with a head) or causal_lm (the memory estimator's decoders)."""
    import torch

    entry = get_method(method)
    model = entry.apply(model, method_options(method, options), task)
    if entry.library != "transformers" and any(p.dtype != torch.float32 for p in model.parameters()):
        keep_trainables_fp32(model)
    return model


# ---------------------------------------------------------------- save and reload, by library


def save_trained(model: Any, *, method: str, directory: Path) -> Path:
    """Save what reproduces the trained model on top of the pretrained base."""
    directory.mkdir(parents=True, exist_ok=True)
    if get_method(method).library == "adapters":
        from safetensors.torch import save_file

        model.save_adapter(str(directory), ADAPTER_NAME, with_head=False)
        head = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad and is_head(n)}
        save_file(head, str(directory / "head.safetensors"))
    else:  # peft saves its weights plus modules_to_save; transformers saves the whole model
        model.save_pretrained(str(directory))
    return directory


def load_trained_into(model: Any, *, method: str, directory: Path) -> Any:
    """Load weights saved by `save_trained` into `model`, a fresh base to which `apply_method` has
    applied the same method (so dtypes and hooks are those of training)."""
    import torch
    from safetensors.torch import load_file

    library = get_method(method).library
    if library == "peft":
        from peft import set_peft_model_state_dict

        result = set_peft_model_state_dict(model, load_file(str(directory / "adapter_model.safetensors")))
        # a prompt-learning method's virtual tokens are loaded into its prompt encoder, beside the model's
        # state dict, and still listed as unexpected by peft
        unexpected = [k for k in result.unexpected_keys if k != "prompt_embeddings"]
    elif library == "adapters":
        state = torch.load(directory / "pytorch_adapter.bin", map_location="cpu", weights_only=True)
        state.update(load_file(str(directory / "head.safetensors")))
        unexpected = sorted(set(state) - set(model.state_dict()))
        model.load_state_dict(state, strict=False)
    else:
        raise ConfigError(f"method {method!r} saves whole models; load them with from_pretrained")
    if unexpected:
        raise ConfigError(f"{directory}: saved weights the model lacks: {unexpected[:5]}")
    return model
