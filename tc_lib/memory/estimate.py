"""Training-memory estimator: exact parameter counts and the bytes of one training step, from the
model's config alone — no weights are allocated and nothing is computed.

How each term is obtained (bytes):
  W  weights            Σ numel · element size over all parameters (frozen ones included), counted on a
                        model built on the meta device with the method (peft / adapters) applied
  G  gradients          Σ over trainable parameters, in the parameter's dtype
  O  optimizer states   per trainable parameter: AdamW 2 tensors, SGD+momentum 1, SGD 0; 8-bit AdamW
                        1 byte per state plus block constants (bitsandbytes)
  T  step temporaries   AdamW foreach: one trainable-sized tensor (√v); fused AdamW and SGD: none
  A  activations        the tensors autograd saves for backward, found by running the forward pass on
                        fake tensors (PyTorch FakeTensorMode: shapes and dtypes only) with saved-tensor
                        hooks, deduplicated by storage — Korthikanti et al.'s accounting, done by the
                        framework, so it follows the pinned transformers / peft / adapters code
  C  autocast copies    the bf16 weight casts autocast saves for backward (amp_bf16)
  Λ  logits/loss        the saved fp32 log-probabilities of a causal LM's cross-entropy
  X  transients         what else is alive at the forward/backward peak: cross-entropy gradient
                        buffers, attention-backward temporaries, the gradients produced so far. The fake
                        forward and backward passes are replayed while live storages are counted.

Peak of a steady-state step (optimizer states exist; gradients are freed with set_to_none):
  P_fb   = W + O + inputs + max over the forward and backward passes of the live bytes (A + C + Λ + X)
  P_step = W + O + G + T + inputs
  peak   = max(P_fb, P_step)

Assumptions: unpadded batches of batch_size × seq_len tokens, no KV cache, gradient accumulation 1,
HF-style gradient checkpointing (re-entrant) when enabled. Not counted (add them when sizing a GPU): the
CUDA context and kernels (~0.5–2 GB) and the caching allocator's rounding and fragmentation (often
5–10 %). Tensors follow the kernels PyTorch picks on the CPU: for LLaMA (no dropout; norms and loss
upcast explicitly) the CUDA tensors are the same; for encoders with dropout, CUDA's 1-byte dropout
masks and flash attention make activations smaller, so the estimate is an upper bound there.
"""

from __future__ import annotations

import contextlib
import math
import weakref
from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

from ..errors import ConfigError
from .configs import is_causal, load_config
from ..precision import autocast as training_autocast
from .setup import Setup, build, make_batch

GIB = 1024 ** 3


@dataclass(frozen=True)
class Breakdown:
    model: str
    setup: Setup
    params_total: int
    params_trainable: int
    weights: int
    gradients: int
    optimizer_states: int
    optimizer_temporaries: int
    autocast_copies: int
    activations: int  # saved for backward; autocast copies and log-probs excluded
    logits_loss: int
    transients: int  # alive at the forward/backward peak besides A, C and Λ
    inputs: int
    forward_backward_phase: str  # "forward" or "backward": where the live bytes peaked
    num_layers: int
    phases: dict[str, int] = field(default_factory=dict)

    @property
    def peak(self) -> int:
        return max(self.phases.values())

    @property
    def peak_phase(self) -> str:
        return max(self.phases, key=self.phases.get)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["setup"] = asdict(self.setup)
        out.update(peak=self.peak, peak_phase=self.peak_phase)
        return out


def _state_bytes(params: Sequence[Any], optimizer: str) -> tuple[int, int]:
    """Optimizer states and step temporaries for the trainable parameters."""
    states = temporaries = 0
    for p in params:
        size = p.numel() * p.element_size()
        if optimizer in ("adamw", "adamw_fused"):
            states += 2 * size
            temporaries += size if optimizer == "adamw" else 0  # foreach: exp_avg_sq_sqrt, one per param
        elif optimizer == "adamw_8bit":
            # bitsandbytes: 1-byte m and v with a float32 absmax per 256-value block; tensors under
            # 4096 values stay 32-bit
            states += 8 * p.numel() if p.numel() < 4096 else 2 * p.numel() + 2 * 4 * math.ceil(p.numel() / 256)
        elif optimizer == "sgd_momentum":
            states += size
    return states, temporaries


@contextlib.contextmanager
def _unpadded_batches():
    """Answer, for unpadded batches, two data-dependent checks that fake tensors cannot evaluate:
    transformers drops an all-ones mask before SDPA (`torch.all(mask == 1)`), and warns when a
    batch without a mask ends in padding."""
    import sys

    from transformers.modeling_utils import PreTrainedModel

    name = "_prepare_4d_attention_mask_for_sdpa"
    patched = [(m, name, getattr(m, name)) for key, m in list(sys.modules.items())
               if key.startswith("transformers.") and m is not None and hasattr(m, name)]
    patched.append((PreTrainedModel, "warn_if_padding_and_no_attention_mask",
                    PreTrainedModel.warn_if_padding_and_no_attention_mask))
    try:
        for owner, attr, _ in patched:
            setattr(owner, attr, lambda *args, **kwargs: None)
        yield
    finally:
        for owner, attr, original in patched:
            setattr(owner, attr, original)


def _layers(model: Any) -> list[Any]:
    import torch

    for module in model.modules():
        for name in ("layers", "layer"):
            child = getattr(module, name, None)
            if isinstance(child, torch.nn.ModuleList) and len(child) > 0:
                return list(child)
    return []


def _fakeify(model: Any):
    """Swap a meta model's parameters and buffers for fake CPU tensors (tied weights stay tied)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    mode = FakeTensorMode(allow_non_fake_inputs=True)
    swapped: dict[int, Any] = {}
    for module in model.modules():
        for registry, as_param in ((module._parameters, True), (module._buffers, False)):
            for key, tensor in list(registry.items()):
                if tensor is None:
                    continue
                if id(tensor) not in swapped:
                    fake = FakeTensor(mode, tensor.data.to("meta"), torch.device("cpu"))
                    swapped[id(tensor)] = torch.nn.Parameter(fake, requires_grad=tensor.requires_grad) \
                        if as_param else fake
                registry[key] = swapped[id(tensor)]
    return mode


def _simulate(model: Any, config: Any, setup: Setup) -> dict[str, Any]:
    """Forward and backward on fake tensors: classify what autograd saves, and follow live bytes."""
    import torch
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    fake_mode = _fakeify(model)
    params = {p.untyped_storage()._cdata for p in model.parameters()}
    casts: set[int] = set()
    live: dict[int, int] = {}
    state = {"current": 0, "peak": 0, "peak_in": "forward", "phase": "forward"}

    def free(key: int) -> None:
        state["current"] -= live.pop(key, 0)
        casts.discard(key)  # a freed cast's address may be reused by an activation: not a cast then

    class Follow(TorchDispatchMode):
        """Counts every new storage an op creates until it is freed; notes autocast's weight casts."""

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            outputs = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
            if func is torch.ops.aten._to_copy.default and isinstance(args[0], torch.Tensor) \
                    and args[0].untyped_storage()._cdata in params:
                casts.update(t.untyped_storage()._cdata for t in outputs)
            for t in outputs:
                storage = t.untyped_storage()
                key = storage._cdata
                if key in live:
                    continue
                live[key] = storage.nbytes()
                state["current"] += storage.nbytes()
                if state["current"] > state["peak"]:
                    state["peak"], state["peak_in"] = state["current"], state["phase"]
                weakref.finalize(storage, free, key)
            return out

    saved: dict[int, tuple[str, int]] = {}
    rows = setup.batch_size * setup.seq_len
    causal = is_causal(config)

    def pack(t):
        key = t.untyped_storage()._cdata
        if key not in params and key not in saved:
            if key in casts:
                kind = "cast"
            elif causal and t.dim() >= 2 and t.shape[-1] == config.vocab_size and t.numel() == rows * config.vocab_size:
                kind = "logits"
            else:
                kind = "activation"
            saved[key] = (kind, t.untyped_storage().nbytes())
        return t

    autocast = training_autocast(setup.mixed_precision, "cpu")  # the one precision map, as training
    with fake_mode:
        batch = make_batch(config, setup)
        for tensor in [*model.parameters(), *model.buffers(), *batch.values()]:
            live[tensor.untyped_storage()._cdata] = 0  # present before the step: counted in W and inputs
        with Follow(), _unpadded_batches():
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast:
                loss = model(**batch).loss
            state["phase"] = "backward"
            loss.backward()
        inputs = sum(t.numel() * t.element_size() for t in batch.values())
    totals = {"cast": 0, "logits": 0, "activation": 0}
    for kind, nbytes in saved.values():
        totals[kind] += nbytes
    return {**totals, "live_peak": state["peak"], "peak_in": state["peak_in"], "inputs": inputs,
            "num_layers": len(_layers(model))}


def estimate(config: Any | str, *, method: str = "full", batch_size: int = 1, seq_len: int = 512,
             torch_dtype: str = "float32", mixed_precision: str = "bf16", optimizer: str = "adamw_fused",
             attention: str = "sdpa", gradient_checkpointing: bool = False, num_labels: int = 3,
             **method_options: Any) -> Breakdown:
    """Bytes of one steady-state training step; see the module docstring for the terms.

    The precision settings are training's: `torch_dtype` (float32 | bfloat16) is the dtype the weights
    are loaded in, `mixed_precision` (no | bf16 | fp16) the autocast over them; trainable PEFT weights
    stay fp32. `method_options` are the registry's (lora_r, peft_target_modules, adapter_config, ...).
    """
    import torch

    name = config if isinstance(config, str) else getattr(config, "name_or_path", "") or config.model_type
    config = load_config(config) if isinstance(config, str) else config
    setup = Setup(method=method, batch_size=batch_size, seq_len=seq_len, torch_dtype=torch_dtype,
                  mixed_precision=mixed_precision, optimizer=optimizer, attention=attention,
                  gradient_checkpointing=gradient_checkpointing, num_labels=num_labels, options=method_options)
    if getattr(config, "max_position_embeddings", seq_len) < seq_len:
        raise ConfigError(f"seq_len {seq_len} exceeds the model's max_position_embeddings "
                          f"{config.max_position_embeddings}")
    with torch.device("meta"):  # no weights are ever allocated
        try:
            model = build(config, setup)
        except (ValueError, ConfigError) as err:  # peft: no target module found; adapters: architecture
            raise ConfigError(f"{method} on {name}: {str(err).splitlines()[0]}") from None
    trainable = [p for p in model.parameters() if p.requires_grad]
    total = sum(p.numel() for n, p in model.named_parameters() if ".original_module." not in n)
    weights = sum(p.numel() * p.element_size() for p in model.parameters())
    gradients = sum(p.numel() * p.element_size() for p in trainable)
    states, temporaries = _state_bytes(trainable, optimizer)
    sim = _simulate(model, config, setup)
    base = weights + states + sim["inputs"]
    phases = {sim["peak_in"]: base + sim["live_peak"], "optimizer step": base + gradients + temporaries}
    saved = sim["activation"] + sim["cast"] + sim["logits"]
    return Breakdown(model=name, setup=setup, params_total=total, params_trainable=sum(p.numel() for p in trainable),
                     weights=weights, gradients=gradients, optimizer_states=states, optimizer_temporaries=temporaries,
                     autocast_copies=sim["cast"], activations=sim["activation"], logits_loss=sim["logits"],
                     transients=max(sim["live_peak"] - saved, 0), inputs=sim["inputs"],
                     forward_backward_phase=sim["peak_in"], num_layers=sim["num_layers"], phases=phases)


def accelerate_estimate(config: Any | str, *, half_precision: bool = True) -> int:
    """What `accelerate estimate-memory` reports for training (its own function, on our exact count):
    weights, gradients and Adam states from the parameter count alone — no activations, and the same
    number for LoRA as for full fine-tuning."""
    from accelerate.commands.estimate import estimate_training_usage

    config = load_config(config) if isinstance(config, str) else config
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    with torch.device("meta"):
        auto = AutoModelForCausalLM if is_causal(config) else AutoModelForSequenceClassification
        fp32_bytes = 4 * sum(p.numel() for p in auto.from_config(config).parameters())
    usage = estimate_training_usage(fp32_bytes, "bfloat16" if half_precision else "float32")
    return int(max(usage.values()))


