"""Shared fixtures: the real data (skip or fail per TC_REQUIRE_DATA), a tiny model, a synthetic data root."""

from __future__ import annotations

import dataclasses
import json
import os
import random
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


@pytest.fixture
def synthetic_data(synthetic_root, monkeypatch) -> Path:
    """Point TC_DATA_DIR at the synthetic root and pin its files' checksums for this test."""
    monkeypatch.setenv("TC_DATA_DIR", str(synthetic_root))
    for key in ("semeval14_restaurant/train.json", "semeval14_restaurant/test.json"):
        raw = data.RAW_FILES[key]
        monkeypatch.setitem(data.RAW_FILES, key,
                            dataclasses.replace(raw, sha256=sources.sha256_of(synthetic_root / key)))
    return synthetic_root


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> str:
    """A random 2-layer, hidden-64 BERT with a WordPiece tokenizer trained here (no download)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import BertConfig, BertForSequenceClassification, PreTrainedTokenizerFast

    # A fixed word-level vocabulary (sorted), not a trained one: tokenizer training breaks ties in a
    # process-dependent order, which would make the tiny model differ from one test session to the next.
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = sorted({w for r in synthetic_semeval(800, 7).values() for w in f"{r['term']} {r['sentence']}".split()}
                   | {w for ws in WORDS.values() for w in ws} | set(TERMS))
    tok = Tokenizer(models.WordPiece(vocab={t: i for i, t in enumerate(specials + words)}, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    path = tmp_path_factory.mktemp("tiny_bert")
    fast.save_pretrained(path)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=fast.vocab_size, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=128, max_position_embeddings=130, num_labels=3)
    model = BertForSequenceClassification(config)
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
    model.bert.save_pretrained(path)
    return str(path)
