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
import json
import math
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

from .errors import ConfigError

CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
ALIASES = {
    "openlm-research/open_llama_3b": "open_llama_3b", "openlm-research/open_llama_3b_v2": "open_llama_3b",
    "meta-llama/Llama-3.2-3B": "llama-3.2-3b", "allenai/scibert_scivocab_uncased": "scibert_scivocab_uncased",
    "FacebookAI/roberta-base": "roberta-base", "google-bert/bert-base-uncased": "bert-base-uncased",
    "sentence-transformers/all-MiniLM-L6-v2": "minilm", "sentence-transformers/all-mpnet-base-v2": "mpnet",
}
CAUSAL_TYPES = ("llama", "mistral", "qwen2", "gemma")
METHODS = ("full", "lora", "adapter")
PRECISIONS = ("fp32", "amp_bf16", "bf16")
OPTIMIZERS = ("adamw", "adamw_fused", "adamw_8bit", "sgd", "sgd_momentum")
ATTENTIONS = ("sdpa", "eager")
GIB = 1024 ** 3


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


# ---------------------------------------------------------------- building the model (real or fake)


@dataclass(frozen=True)
class Setup:
    """What one training step looks like; the same for the estimate and the measurement."""

    method: str = "full"
    batch_size: int = 1
    seq_len: int = 512
    precision: str = "amp_bf16"
    optimizer: str = "adamw"
    attention: str = "sdpa"
    gradient_checkpointing: bool = False
    lora_r: int = 8
    lora_targets: tuple[str, ...] | None = None  # None: q,v projections
    lora_dropout: float = 0.0
    adapter_config: str = "seq_bn"
    num_labels: int = 3  # encoders only

    def __post_init__(self) -> None:
        choices = {"method": METHODS, "precision": PRECISIONS, "optimizer": OPTIMIZERS, "attention": ATTENTIONS,
                   "adapter_config": ("seq_bn", "double_seq_bn")}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        for name in ("batch_size", "seq_len", "lora_r", "num_labels"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.lora_dropout < 1:
            raise ConfigError(f"lora_dropout must be in [0, 1), got {self.lora_dropout!r}")
        if self.lora_targets is not None:
            object.__setattr__(self, "lora_targets", tuple(self.lora_targets))


def _default_lora_targets(config: Any) -> list[str]:
    from .models import LORA_DEFAULT_TARGETS

    if is_causal(config):
        return ["q_proj", "v_proj"]
    return list(LORA_DEFAULT_TARGETS.get(config.model_type, ("query", "value")))


def build(config: Any, setup: Setup):
    """Build the model as training would (dtype, attention, method, checkpointing); call it inside
    FakeTensorMode for an estimate, outside for a measurement."""
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    config = config.__class__.from_dict(config.to_dict())  # private copy
    config._attn_implementation = setup.attention
    config.use_cache = False  # training keeps no KV cache (transformers would build one by default)
    dtype = torch.bfloat16 if setup.precision == "bf16" else torch.float32
    if is_causal(config):
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        config.num_labels = setup.num_labels
        model = AutoModelForSequenceClassification.from_config(config, dtype=dtype)
    if setup.method == "lora":
        from peft import LoraConfig, TaskType, get_peft_model

        task = TaskType.CAUSAL_LM if is_causal(config) else TaskType.SEQ_CLS
        targets = list(setup.lora_targets or _default_lora_targets(config))
        model = get_peft_model(model, LoraConfig(task_type=task, r=setup.lora_r, lora_alpha=2 * setup.lora_r,
                                                 lora_dropout=setup.lora_dropout, target_modules=targets))
    elif setup.method == "adapter":
        from .models import ADAPTER_NAME, bottleneck_config, init_adapters

        init_adapters(model)
        model.add_adapter(ADAPTER_NAME, config=bottleneck_config(setup.adapter_config))
        model.train_adapter(ADAPTER_NAME)
        for param in model.parameters():  # the adapters library creates them in fp32; match the base dtype
            if param.dtype != dtype:
                param.data = param.data.to(dtype)
    if setup.gradient_checkpointing:
        # transformers' default is re-entrant checkpointing; the adapters library requires the other kind
        reentrant = setup.method != "adapter"
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": reentrant})
        if setup.method != "full":
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


# ---------------------------------------------------------------- the estimate


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

    @property
    def activations_per_layer(self) -> float:
        return self.activations / self.num_layers if self.num_layers else 0.0

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

    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if setup.precision == "amp_bf16" \
        else contextlib.nullcontext()
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
             precision: str = "amp_bf16", optimizer: str = "adamw", attention: str = "sdpa",
             gradient_checkpointing: bool = False, lora_r: int = 8, lora_targets: Sequence[str] | None = None,
             lora_dropout: float = 0.0, adapter_config: str = "seq_bn", num_labels: int = 3) -> Breakdown:
    """Bytes of one steady-state training step; see the module docstring for the terms."""
    import torch

    name = config if isinstance(config, str) else getattr(config, "name_or_path", "") or config.model_type
    config = load_config(config) if isinstance(config, str) else config
    setup = Setup(method=method, batch_size=batch_size, seq_len=seq_len, precision=precision, optimizer=optimizer,
                  attention=attention, gradient_checkpointing=gradient_checkpointing, lora_r=lora_r,
                  lora_targets=tuple(lora_targets) if lora_targets else None, lora_dropout=lora_dropout,
                  adapter_config=adapter_config, num_labels=num_labels)
    if getattr(config, "max_position_embeddings", seq_len) < seq_len:
        raise ConfigError(f"seq_len {seq_len} exceeds the model's max_position_embeddings "
                          f"{config.max_position_embeddings}")
    with torch.device("meta"):  # no weights are ever allocated
        try:
            model = build(config, setup)
        except ValueError as err:  # peft: target modules not found; adapters: unsupported architecture
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


def accelerate_estimate(config: Any | str, *, precision: str = "amp_bf16") -> int:
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
    usage = estimate_training_usage(fp32_bytes, "float32" if precision == "fp32" else "bfloat16")
    return int(max(usage.values()))


# ---------------------------------------------------------------- measuring (validation)


class PeakTracker:
    """Live bytes of tensor storages created while active (and of those passed to `track`), and their peak.

    A TorchDispatchMode sees every op's outputs; a weakref finalizer subtracts a storage when it is freed.
    On CPU this is what the CUDA caching allocator's max_memory_allocated would report, less its rounding.
    """

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        tracker = self
        self.live: dict[int, int] = {}
        self.current = self.peak = 0

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                for t in tree_flatten(out)[0]:
                    tracker.track(t)
                return out

        self.mode = Mode()

    def track(self, tensor: Any) -> None:
        import torch

        if not isinstance(tensor, torch.Tensor):
            return
        storage = tensor.untyped_storage()
        ptr = storage.data_ptr()
        if ptr == 0 or ptr in self.live:
            return
        self.live[ptr] = storage.nbytes()
        self.current += storage.nbytes()
        self.peak = max(self.peak, self.current)
        weakref.finalize(storage, self._free, ptr)

    def _free(self, ptr: int) -> None:
        self.current -= self.live.pop(ptr, 0)

    def reset_peak(self) -> None:
        self.peak = self.current

    def __enter__(self) -> "PeakTracker":
        self.mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.mode.__exit__(*exc)


def measure_peak(config: Any, setup: Setup, *, steps: int = 3, seed: int = 0) -> int:
    """Peak bytes over steady-state training steps (2..steps) of a real model on CPU."""
    import torch

    torch.manual_seed(seed)
    model = build(config, setup)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], setup.optimizer)
    batch = make_batch(config, setup)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if setup.precision == "amp_bf16" \
        else contextlib.nullcontext
    tracker = PeakTracker()
    for tensor in [*model.parameters(), *model.buffers(), *batch.values()]:
        tracker.track(tensor)
    with tracker:
        for step in range(steps):
            if step == 1:  # optimizer states now exist: from here on every step is alike
                tracker.reset_peak()
            with autocast():
                loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
    return tracker.peak
