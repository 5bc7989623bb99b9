"""Shared fixtures: the real data (skip or fail per TC_REQUIRE_DATA), a tiny model, a synthetic data root."""

from __future__ import annotations

import dataclasses
import functools
import http.server
import json
import os
import random
import shutil
import threading
from pathlib import Path

import pytest
import torch

from tc_lib import data, sources

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the hub; fail fast instead of retrying
torch.set_num_threads(1)  # two OpenMP threads collapse when another process holds a core
REPO = Path(__file__).resolve().parents[1]


def _real_data_root() -> Path | None:
    root = os.environ.get("TC_DATA_DIR")
    if root and all((Path(root) / f.relpath).is_file() for f in data.RAW_FILES.values()):
        return Path(root)
    return None


@pytest.fixture(scope="session")
def real_data() -> Path:
    """The verified raw files; missing data fails under TC_REQUIRE_DATA=1 and skips otherwise."""
    root = _real_data_root()
    if root is None:
        message = ("real data not found: set TC_DATA_DIR to a folder holding the raw files "
                   "(python -m tc_lib data fetch)")
        if os.environ.get("TC_REQUIRE_DATA") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return root


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def mirror(real_data, tmp_path):
    """A local HTTP server laid out like the raw-file host: /<repo>/<commit>/<path>."""
    served = tmp_path / "served"
    for raw in data.RAW_FILES.values():
        target = served / raw.repo / raw.commit / raw.path
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(real_data / raw.relpath, target)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


# ---------------------------------------------------------------- a learnable synthetic task

WORDS = {
    "positive": ["great", "excellent", "delicious", "friendly", "superb", "lovely"],
    "neutral": ["okay", "average", "ordinary", "standard", "usual", "plain"],
    "negative": ["awful", "rude", "cold", "terrible", "bland", "dirty"],
}
TERMS = ["food", "service", "staff", "pasta", "wine", "decor", "price", "music"]


def synthetic_semeval(n: int, seed: int) -> dict:
    rng = random.Random(seed)
    records = {}
    for i in range(n):
        polarity = rng.choice(list(WORDS))
        term = rng.choice(TERMS)
        filler = rng.choice(["we thought", "honestly", "i found", "as always", "tonight"])
        records[f"{i}_0"] = {"polarity": polarity, "term": term, "id": f"{i}_0",
                             "sentence": f"{filler} the {term} was {rng.choice(WORDS[polarity])} here ."}
    return records


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """A data root with synthetic restaurant files whose polarity is a keyword (learnable in 1–3 epochs)."""
    root = tmp_path_factory.mktemp("synthetic_data")
    folder = root / "semeval14_restaurant"
    folder.mkdir()
    (folder / "train.json").write_text(json.dumps(synthetic_semeval(800, 0)))
    (folder / "test.json").write_text(json.dumps(synthetic_semeval(120, 1)))
    return root


def pin_synthetic_checksums(monkeypatch: pytest.MonkeyPatch, synthetic_root: Path) -> None:
    """Point TC_DATA_DIR at the synthetic root and pin its files' checksums (undone with monkeypatch)."""
    monkeypatch.setenv("TC_DATA_DIR", str(synthetic_root))
    for key in ("semeval14_restaurant/train.json", "semeval14_restaurant/test.json"):
        raw = data.RAW_FILES[key]
        monkeypatch.setitem(data.RAW_FILES, key,
                            dataclasses.replace(raw, sha256=sources.sha256_of(synthetic_root / key)))


@pytest.fixture
def synthetic_data(synthetic_root, monkeypatch) -> Path:
    """The synthetic root as this test's data, its checksums pinned."""
    pin_synthetic_checksums(monkeypatch, synthetic_root)
    return synthetic_root


def make_tiny_encoder(path: Path, family: str = "bert") -> str:
    """A random 2-layer, hidden-64 encoder of a paper model's family, with a tokenizer saved beside it:
    bert (BERT's [CLS]/[SEP], token type ids, a pooler), scibert (the same with a larger, "scientific"
    vocabulary) or roberta (<s>/</s>, no token type ids, no pooler, positions offset by the padding id)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import (BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast, RobertaConfig,
                              RobertaForSequenceClassification)

    roberta = family == "roberta"
    # A fixed word-level vocabulary (sorted), not a trained one: tokenizer training breaks ties in a
    # process-dependent order, which would make the tiny model differ from one test session to the next.
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"] if roberta else ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    cls, pad, sep, unk, mask = [specials[i] for i in ((0, 1, 2, 3, 4) if roberta else (2, 0, 3, 1, 4))]
    words = sorted({w for r in synthetic_semeval(800, 7).values() for w in f"{r['term']} {r['sentence']}".split()}
                   | {w for ws in WORDS.values() for w in ws} | set(TERMS))
    if family == "scibert":
        words += [f"sci{i:03d}" for i in range(40)]  # scivocab: another vocabulary size, same architecture
    tok = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(specials + words)}, unk_token=unk))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    if roberta:
        tok.post_processor = processors.RobertaProcessing(sep=(sep, tok.token_to_id(sep)), cls=(cls, tok.token_to_id(cls)))
    else:
        tok.post_processor = processors.TemplateProcessing(
            single=f"{cls} $A {sep}", pair=f"{cls} $A {sep} $B {sep}",
            special_tokens=[(cls, tok.token_to_id(cls)), (sep, tok.token_to_id(sep))])
    extra = dict(bos_token=cls, eos_token=sep, model_input_names=["input_ids", "attention_mask"]) if roberta else {}
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=unk, pad_token=pad, cls_token=cls, sep_token=sep,
                                   mask_token=mask, **extra)
    fast.save_pretrained(path)
    torch.manual_seed(0)
    shape = dict(vocab_size=fast.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                 intermediate_size=128, num_labels=3)
    if roberta:
        model = RobertaForSequenceClassification(RobertaConfig(**shape, max_position_embeddings=132, pad_token_id=1,
                                                               bos_token_id=0, eos_token_id=2, type_vocab_size=1))
    else:
        model = BertForSequenceClassification(BertConfig(**shape, max_position_embeddings=130))
    # "Pretrain" two epochs on the synthetic task so that frozen-base methods (LoRA, adapters) start,
    # as with a real encoder, from features that carry the words; only the encoder is saved, so every
    # run gets a fresh classification head.
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-3)
    label_of = {name: i for i, name in enumerate(WORDS)}
    records = list(synthetic_semeval(800, 11).values()) * 2  # two epochs
    for start in range(0, len(records), 16):
        chunk = records[start:start + 16]
        batch = fast([r["term"] for r in chunk], [r["sentence"] for r in chunk], padding=True, return_tensors="pt")
        model(**batch, labels=torch.tensor([label_of[r["polarity"]] for r in chunk])).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.base_model.save_pretrained(path)
    return str(path)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A random 2-layer, hidden-64 BERT with a fixed-vocabulary tokenizer (no download)."""
    return make_tiny_encoder(tmp_path_factory.mktemp("tiny_bert"), "bert")


@pytest.fixture(scope="session")
def tiny_family(tmp_path_factory, tiny_bert) -> dict[str, str]:
    """Tiny local stand-ins for the paper's models: roberta-base, bert-base-uncased, SciBERT."""
    return {"roberta-base": make_tiny_encoder(tmp_path_factory.mktemp("tiny_roberta"), "roberta"),
            "bert-base-uncased": tiny_bert,
            "allenai/scibert_scivocab_uncased": make_tiny_encoder(tmp_path_factory.mktemp("tiny_scibert"), "scibert")}


@pytest.fixture(scope="session")
def memory_records(tmp_path_factory) -> Path:
    """memory.json as `memory validate` writes it (one process per model), for both 3B models at the
    one shape the report's answer needs."""
    import fcntl

    from tc_lib.memory.records import FILE_NAME, write_records

    # built once for the whole session: under pytest-xdist the workers share their base folder's parent, the
    # first one builds the records there and the others wait for it (the lock) and read them
    shared = tmp_path_factory.getbasetemp()
    shared = shared.parent if os.environ.get("PYTEST_XDIST_WORKER") else shared
    out = shared / "memory_records"
    with open(shared / "memory_records.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (out / FILE_NAME).is_file():
            write_records(out, models=("open_llama_3b", "llama-3.2-3b"), shapes=((1, 2048),), jobs=2)
    return out


# ---------------------------------------------------------------- the tiers mean what they say

# fixtures whose tests execute notebooks through papermill, whatever the test itself is marked
NOTEBOOK_FIXTURES = {"fast_grid"}
HEAVY = ("ray", "slurm", "notebook", "slow", "smoke")  # markers of tests that take seconds or more


def pytest_collection_modifyitems(config, items):
    for item in items:
        if NOTEBOOK_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.notebook)
    # `make test` runs two pytest-xdist workers that take whole files (--dist loadfile: a file's module-scoped
    # cluster or trained runs are built once) in this order (--no-loadscope-reorder): the files that start
    # Ray or SLURM clusters first, then by their number of heavy tests, so that no long file starts last
    weights: dict[str, list[int]] = {}
    for item in items:
        weight = weights.setdefault(item.nodeid.split("::")[0], [0, 0])
        weight[0] -= bool(item.get_closest_marker("ray") or item.get_closest_marker("slurm"))
        weight[1] -= any(item.get_closest_marker(name) for name in HEAVY)
    items.sort(key=lambda item: weights[item.nodeid.split("::")[0]])  # stable: a file's own order is kept


@pytest.fixture(autouse=True)
def _unmarked_tests_execute_no_notebook(request):
    """A test not marked `notebook` (the fast tier) must not run papermill: one that leaves an executed
    notebook (papermill's metadata) in its tmp_path fails, naming the marker to add."""
    watched = not request.node.get_closest_marker("notebook") and "tmp_path" in request.fixturenames
    root = request.getfixturevalue("tmp_path") if watched else None  # set up inside this fixture: still there after
    yield
    if root is None:
        return
    for path in root.rglob("*.ipynb"):
        try:
            executed = "papermill" in json.loads(path.read_text()).get("metadata", {})
        except (OSError, ValueError):
            continue
        if executed:
            pytest.fail(f"{path.relative_to(root)} was executed by papermill: mark the test `notebook`")
