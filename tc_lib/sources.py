"""The pinned raw files of the datasets: where each comes from (repo @ commit), its sha256, the data
root, verification and a checksummed download (pooch)."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from .errors import DataError, first_line

RAW_HOST = "https://raw.githubusercontent.com"

_HOWARDHSU = ("howardhsu/BERT-for-RRC-ABSA", "2d194b1b2fb106c93e64b68513eff48ad0b99a9f")
_SCIBERT = ("allenai/scibert", "06793f77d7278898159ed50da30d173cdc8fdea9")
_CHARCNN = ("mhjabreel/CharCnn_Keras", "555590db4219b1243abb1918effd6a7425a2d75f")


@dataclass(frozen=True)
class RawFile:
    """One upstream file at a pinned commit; `relpath` is where it lives under the data root."""

    relpath: str
    repo: str
    commit: str
    path: str
    sha256: str

    def url(self, base_url: str = RAW_HOST) -> str:
        return f"{base_url.rstrip('/')}/{self.repo}/{self.commit}/{self.path}"


RAW_FILES: dict[str, RawFile] = {
    f.relpath: f
    for f in (
        RawFile("semeval14_restaurant/train.json", *_HOWARDHSU, "transformers/data/ft/asc/14/rest/train.json",
                "9a51a1b32c7fa487e9bdf98b594b9e8d757ab8a7eb5023eb2d03902e7cbab6f9"),
        RawFile("semeval14_restaurant/test.json", *_HOWARDHSU, "transformers/data/ft/asc/14/rest/test.json",
                "588d3f04badf0b4515686346f663cd8f541b3e15adc801e9968255b80d595a9e"),
        RawFile("semeval14_laptop/train.json", *_HOWARDHSU, "transformers/data/ft/asc/14/laptop/train.json",
                "0119c0eed699c82472fb02d9db2a874108c2a494b94fa2b91cf4f6b2049454b3"),
        RawFile("semeval14_laptop/test.json", *_HOWARDHSU, "transformers/data/ft/asc/14/laptop/test.json",
                "e9683849f26347a1b6e9302fb89de2960ed16a9765147e817a0538d56dc79b6e"),
        RawFile("acl_arc/train.jsonl", *_SCIBERT, "data/text_classification/citation_intent/train.txt",
                "58eef60d2bbfdabefc3de25191714f769db03134523ef67e87d864112c67908c"),
        RawFile("acl_arc/test.jsonl", *_SCIBERT, "data/text_classification/citation_intent/test.txt",
                "749d083cc3141d54a2bf1475c02a5a1c020c664601d55fe2829bdf85f06db4bb"),
        RawFile("agnews/test.csv", *_CHARCNN, "data/ag_news_csv/test.csv",
                "521465c2428ed7f02f8d6db6ffdd4b5447c1c701962353eb2c40d548c3c85699"),
    )
}


def mirror_url(base_url: str | None = None) -> str:
    """The host the raw files are downloaded from: `base_url`, else TC_DATA_MIRROR, else GitHub's raw host."""
    return base_url or os.environ.get("TC_DATA_MIRROR") or RAW_HOST


def data_root() -> Path:
    """`TC_DATA_DIR` if set (absolute: a relative one is taken against the current folder, where it is
    read; grid kernels get it made absolute against the driver's), else `data/` at the repository root."""
    env = os.environ.get("TC_DATA_DIR")
    return Path(env).expanduser().resolve() if env else Path(__file__).resolve().parents[1] / "data"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_VERIFIED: dict[tuple[str, int, int], str] = {}


def verify_file(raw: RawFile, root: Path) -> Path:
    """Return the file's path if present with the pinned sha256; DataError otherwise."""
    path = root / raw.relpath
    if path.exists() and not path.is_file():
        raise DataError(f"{path}: not a regular file (a {'folder' if path.is_dir() else 'special file'} stands "
                        f"in its place); remove it and run `python -m tc_lib data fetch`")
    if not path.is_file():
        raise DataError(f"{path}: file is missing; run `python -m tc_lib data fetch` "
                        f"(or set TC_DATA_DIR to a folder that has {raw.relpath})")
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    if key not in _VERIFIED:
        _VERIFIED[key] = sha256_of(path)
    if _VERIFIED[key] != raw.sha256:
        raise DataError(f"{path}: checksum mismatch (sha256 {_VERIFIED[key]}, expected {raw.sha256}); "
                        "the file was left as it is — delete it and run `python -m tc_lib data fetch` "
                        "to download the pinned copy")
    return path


def verify_files(files: Sequence[RawFile], *, root: Path | None = None) -> list[dict]:
    """Check every raw file; rows {file, status, detail} with status ok | missing | wrong."""
    root = Path(root) if root else data_root()
    rows = []
    for raw in files:
        path = root / raw.relpath
        if not path.exists():
            rows.append({"file": raw.relpath, "status": "missing", "detail": f"{path}: no such file"})
            continue
        try:
            verify_file(raw, root)
        except DataError as err:
            rows.append({"file": raw.relpath, "status": "wrong", "detail": str(err)})
            continue
        rows.append({"file": raw.relpath, "status": "ok", "detail": ""})
    return rows


def fetch_files(files: Sequence[RawFile], *, root: Path | None = None, base_url: str | None = None,
                progressbar: bool = False) -> list[dict]:
    """Download missing raw files from their pinned URLs and verify sha256; present files are only verified."""
    import pooch
    import requests

    root = Path(root) if root else data_root()
    base_url = mirror_url(base_url)
    rows = []
    for raw in files:
        target = root / raw.relpath
        if target.exists():
            verify_file(raw, root)  # never overwrite the user's file, even a corrupt one
            rows.append({"file": raw.relpath, "status": "present"})
            continue
        url = raw.url(base_url)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:  # checked before the download: the data root cannot take the file
            raise DataError(f"{target.parent}: cannot create the data folder ({err.strerror}); set TC_DATA_DIR "
                            "or --root to a folder you can write") from None
        try:
            pooch.retrieve(url, known_hash=f"sha256:{raw.sha256}", fname=target.name,
                           path=target.parent, progressbar=progressbar)
        except ValueError as err:  # pooch: downloaded bytes do not match the known hash (file discarded)
            raise DataError(f"{url}: checksum mismatch after download; nothing was written to {target} "
                            f"({str(err).splitlines()[0]})") from None
        except requests.HTTPError as err:
            raise DataError(f"{url}: download failed (HTTP {err.response.status_code})") from None
        except requests.ConnectionError as err:  # its message repeats the URL and the retry pool
            raise DataError(f"{url}: download failed ({err.__class__.__name__}: no answer from the host)") from None
        except requests.RequestException as err:
            raise DataError(f"{url}: download failed ({err.__class__.__name__}: {first_line(err)})") from None
        rows.append({"file": raw.relpath, "status": "downloaded"})
    return rows
