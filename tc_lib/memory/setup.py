"""One training step's setting (Setup) and the model, batch and optimizer built from it — shared by the
estimate (on fake tensors) and the measurement (on real ones)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

from ..errors import ConfigError
from ..methods import METHODS, apply_method, method_options
from .configs import is_causal

from ..precision import MIXED_PRECISIONS, TORCH_DTYPES, torch_dtype
OPTIMIZERS = ("adamw", "adamw_fused", "adamw_8bit", "sgd", "sgd_momentum")
ATTENTIONS = ("sdpa", "eager")


@dataclass(frozen=True)
class Setup:
    """What one training step looks like; the same for the estimate and the measurement. The precision
    settings are training's (RunConfig.torch_dtype / mixed_precision); method options are the registry's
    (tc_lib.methods.OPTION_DEFAULTS), and only those given are stored."""

    method: str = "full"
    batch_size: int = 1
    seq_len: int = 512
    torch_dtype: str = "float32"  # the dtype the weights are loaded in; trainable PEFT weights stay fp32
    mixed_precision: str = "bf16"  # autocast over the weights: no | bf16 | fp16
    optimizer: str = "adamw_fused"
    attention: str = "sdpa"
    gradient_checkpointing: bool = False
    num_labels: int = 3  # encoders only
    options: dict[str, Any] = field(default_factory=dict)  # method options given explicitly

    def __post_init__(self) -> None:
        from ..config import RunConfig

        choices = {"method": tuple(METHODS), "torch_dtype": tuple(TORCH_DTYPES),
                   "mixed_precision": tuple(MIXED_PRECISIONS),
                   "optimizer": OPTIMIZERS, "attention": ATTENTIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("batch_size", "seq_len", "num_labels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        method_options(self.method, self.options, strict=True)
        RunConfig(method=self.method, **self.options)  # the option values are validated as for training


def build(config: Any, setup: Setup):
    """Build the model as training would (dtype, attention, method through the registry, checkpointing);
    call it inside FakeTensorMode for an estimate, outside for a measurement."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from ..methods import get_method

    config = config.__class__.from_dict(config.to_dict())  # private copy
    config._attn_implementation = setup.attention
    config.use_cache = False  # training keeps no KV cache (transformers would build one by default)
    dtype = torch_dtype(setup.torch_dtype)
    if is_causal(config):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        config.num_labels = setup.num_labels
        model = AutoModelForSequenceClassification.from_config(config, dtype=dtype)
    model = apply_method(model, method=setup.method, options=setup.options,
                         task="causal_lm" if is_causal(config) else "seq_cls")
    if setup.gradient_checkpointing:
        # transformers' default is re-entrant checkpointing; the adapters library requires the other kind
        library = get_method(setup.method).library
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": library != "adapters"})
        if library != "transformers":
            model.enable_input_require_grads()  # a frozen embedding would otherwise cut the graph
    return model.train()


def make_batch(config: Any, setup: Setup, *, device: str = "cpu") -> dict:
    import torch

    ids = torch.randint(0, config.vocab_size, (setup.batch_size, setup.seq_len), device=device)
    if is_causal(config):
        return {"input_ids": ids, "labels": ids.clone()}
    # no attention_mask: an all-ones mask is dropped by transformers anyway (unpadded batches)
    return {"input_ids": ids, "labels": torch.zeros(setup.batch_size, dtype=torch.long, device=device)}


def make_optimizer(params: Sequence[Any], name: str):
    import torch

    if name == "adamw":
        return torch.optim.AdamW(params, lr=1e-4, foreach=True)
    if name == "adamw_fused":
        return torch.optim.AdamW(params, lr=1e-4, fused=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-4, foreach=True)
    if name == "sgd_momentum":
        return torch.optim.SGD(params, lr=1e-4, momentum=0.9, foreach=True)
    raise ConfigError(f"optimizer {name!r} cannot run here (adamw_8bit needs bitsandbytes on CUDA); "
                      "it is estimated only")
