"""Hub models for machines without internet: fetch a grid's models once into a cache folder
(`TC_MODEL_DIR`, else the Hugging Face cache), verify that they load, and resolve hub ids from that
cache first. A hub id that is neither cached nor reachable fails at once with one line that says which
id, where it looked and how to fetch it — never after a minute of retries."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterable

from .errors import ConfigError, first_line
from .methods import REFERENCE_MODEL

logger = logging.getLogger(__name__)
# what a text encoder needs; optimizer states, other frameworks' weights and ONNX exports are skipped
ALLOW = ["*.json", "*.txt", "*.model", "*.safetensors", "*.bin"]
REACH_TIMEOUT_S = 3
# tc_lib.models' offline models and the references' model name: never looked up on the hub
REGISTRY_NAMES = ("minilm", "mpnet", REFERENCE_MODEL)


def model_dir() -> Path:
    from huggingface_hub import constants

    return Path(os.environ.get("TC_MODEL_DIR") or constants.HF_HUB_CACHE)


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
        path = Path(snapshot_download(name, cache_dir=str(model_dir()), local_files_only=True, allow_patterns=ALLOW))
    except (LocalEntryNotFoundError, OSError, ValueError):
        return None
    return path if (path / "config.json").is_file() else None


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
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(name, cache_dir=str(model_dir()), allow_patterns=ALLOW))
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
