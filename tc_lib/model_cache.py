"""Hub models for machines without internet: fetch a grid's models once into a cache folder
(`TC_MODEL_DIR`, else the Hugging Face cache), verify that they load, and resolve hub ids from that
cache first. A hub id that is neither cached nor reachable fails at once with one line that says which
id, where it looked and how to fetch it — never after a minute of retries."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterable

from .errors import ConfigError, first_line
from .methods import REFERENCE_MODEL

logger = logging.getLogger(__name__)
# what a text encoder needs, from the repo's top level: config and tokenizer files, and one weight format
TEXT_FILES = (".json", ".txt", ".model")  # config, tokenizer, vocab, sentencepiece model
WEIGHT_PREFERENCE = (("model", ".safetensors"), ("pytorch_model", ".bin"))  # never TF, Flax, ONNX, CoreML
COMPLETE = ".tc_complete"  # written into a snapshot last, once every file is there and the model loads
REACH_TIMEOUT_S = 3
# tc_lib.models' offline models and the references' model name: never looked up on the hub
REGISTRY_NAMES = ("minilm", "mpnet", REFERENCE_MODEL)


def model_dir() -> Path:
    """The model cache, absolute (a relative TC_MODEL_DIR is taken against the current folder, here,
    not wherever a kernel later runs)."""
    from huggingface_hub import constants

    return Path(os.environ.get("TC_MODEL_DIR") or constants.HF_HUB_CACHE).expanduser().resolve()


def files_to_fetch(listing: Iterable[str]) -> list[str]:
    """From a repo's file list: the top-level config and tokenizer files and one weight format —
    safetensors when the repo has it, else pytorch_model*.bin — with its shard index, nothing else."""
    top = [name for name in listing if "/" not in name]
    weights: list[str] = []
    for stem, suffix in WEIGHT_PREFERENCE:
        weights = [n for n in top if n.startswith(stem) and (n.endswith(suffix) or n.endswith(suffix + ".index.json"))]
        if any(n.endswith(suffix) for n in weights):
            break
    else:
        weights = []
    text = [n for n in top if n.endswith(TEXT_FILES) and not n.endswith(".index.json")]
    return sorted(set(text) | set(weights))


def _complete(path: Path) -> bool:
    """A snapshot that is whole: fetched by tc_lib to the end (its marker), or one that another tool left
    with its config and every weight file its index names; not a half-downloaded one."""
    if (path / COMPLETE).is_file():
        return True
    if not (path / "config.json").is_file():
        return False
    for stem, suffix in WEIGHT_PREFERENCE:
        index = path / f"{stem}{suffix}.index.json"
        if index.is_file():
            try:
                shards = set(json.loads(index.read_text())["weight_map"].values())
            except (OSError, ValueError, KeyError, AttributeError):
                return False
            return all((path / shard).is_file() for shard in shards)
        if (path / f"{stem}{suffix}").is_file():
            return True
    return False


def is_hub_id(name: str) -> bool:
    """org/name or name — not a registry name, not a path (absolute, relative with ./ or ~, existing, or
    deeper than org/name)."""
    return (name not in REGISTRY_NAMES and not name.startswith((".", "/", "~")) and name.count("/") <= 1
            and not Path(name).exists())


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")


def cached(name: str) -> Path | None:
    """The cached snapshot folder of a hub id, or None."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = Path(snapshot_download(name, cache_dir=str(model_dir()), local_files_only=True))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return path if _complete(path) else None


def _not_available(name: str, why: str) -> ConfigError:
    return ConfigError(f"model {name!r}: not in the model cache {model_dir()} and {why}; on a machine with "
                       f"internet run `python -m tc_lib models fetch {name}` (with TC_MODEL_DIR set to a folder "
                       f"these nodes share)")


def check_reachable(name: str) -> None:
    """One quick request to the hub (HF_ENDPOINT), no retries; ConfigError when it cannot serve `name`."""
    import requests
    from huggingface_hub import constants

    if _offline():
        raise _not_available(name, "the hub is offline here (HF_HUB_OFFLINE=1)")
    url = f"{constants.ENDPOINT.rstrip('/')}/api/models/{name}"
    try:
        response = requests.get(url, timeout=REACH_TIMEOUT_S)
    except requests.RequestException as err:
        raise _not_available(name, f"the hub cannot be reached ({err.__class__.__name__})") from None
    if response.status_code in (401, 404):
        raise _not_available(name, f"the hub has no such model (HTTP {response.status_code})")
    if response.status_code >= 400:
        raise _not_available(name, f"the hub answered HTTP {response.status_code}")


def check_available(names: Iterable[str]) -> None:
    """Before a grid starts: every hub id among `names` is cached or reachable."""
    for name in dict.fromkeys(names):
        if is_hub_id(name) and cached(name) is None:
            check_reachable(name)


def local_path(name: str) -> Path:
    """A hub id as a local folder: from the cache, else downloaded into it (after a quick reachability check)."""
    path = cached(name)
    if path is not None:
        return path
    check_reachable(name)
    return download(name)


def download(name: str) -> Path:
    """The repo's files_to_fetch into the cache (files already there are kept: a broken fetch resumes)."""
    from huggingface_hub import HfApi, snapshot_download

    try:
        wanted = files_to_fetch(s.rfilename for s in HfApi().model_info(name).siblings or [])
        if not any(n.endswith(tuple(suffix for _, suffix in WEIGHT_PREFERENCE)) for n in wanted):
            raise ConfigError(f"model {name!r}: the repo has no model.safetensors or pytorch_model.bin at its top "
                              "level (tc_lib loads PyTorch weights only)")
        return Path(snapshot_download(name, cache_dir=str(model_dir()), allow_patterns=wanted))
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 — the hub client raises many kinds; each becomes one line
        raise ConfigError(f"model {name!r}: download into {model_dir()} failed ({err.__class__.__name__}: "
                          f"{first_line(err)})") from None


def verify(name: str, path: Path) -> None:
    """Config, tokenizer and weights load from the folder (a sequence classifier with a fresh head)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    for what, load in (("config", AutoConfig.from_pretrained), ("tokenizer", AutoTokenizer.from_pretrained),
                       ("weights", lambda p: AutoModelForSequenceClassification.from_pretrained(p, num_labels=2))):
        try:
            load(str(path))
        except Exception as err:  # noqa: BLE001
            raise ConfigError(f"model {name!r}: fetched into {path}, but its {what} cannot be loaded "
                              f"({err.__class__.__name__}: {first_line(err)}); fetch it again") from None


def fetch(names: Iterable[str]) -> list[tuple[str, Path]]:
    """Download (or find) and verify each hub id; returns (name, folder)."""
    out = []
    for name in dict.fromkeys(n for n in names if is_hub_id(n)):
        path = local_path(name)
        verify(name, path)
        (path / COMPLETE).write_text("fetched and loaded by tc_lib\n", encoding="utf-8")  # last: whole from now on
        out.append((name, path))
    return out


def list_cached() -> list[dict]:
    """The models in the cache: repo id, size and revisions."""
    from huggingface_hub import scan_cache_dir

    if not model_dir().is_dir():
        return []
    info = scan_cache_dir(str(model_dir()))
    return [{"model": repo.repo_id, "size_mb": round(repo.size_on_disk / 2**20, 1),
             "revisions": sorted(r.commit_hash[:10] for r in repo.revisions)}
            for repo in sorted(info.repos, key=lambda r: r.repo_id) if repo.repo_type == "model"]
