"""A finished run as a classifier: `load_run` (a transformers text-classification pipeline), `predict`
(labels and class probabilities for texts) and `export_model` (a plain Hugging Face model folder).

A run is rebuilt from its record alone: the config (base model, method and options, max length), the
label names of its data and the weights it saved under weights/. Pair inputs (aspect datasets) are
written `aspect [SEP] sentence`, as the training data joins them; `predict` turns the marker into the
model's own separator token (RoBERTa's is `</s>`)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from .config import LATER_FIELDS, RunConfig
from .errors import ConfigError, TcError
from .methods import REFERENCES, get_method
from .reference import REFERENCE_FILE, SEP
from .record import RunRecord
from .results import read_record

PAIR_MARKER = SEP.strip()  # how a user writes aspect and sentence in one text (the TF-IDF reference's own SEP)
EXPORT_README = """# {run_id}

Exported by tc_lib from `{run_dir}`: {model} · {method}, label names in `config.id2label`.
{how}
"""


@dataclass(frozen=True)
class SavedRun:
    """What a run folder holds for inference."""

    run_dir: Path
    record: RunRecord
    cfg: RunConfig
    label_names: list[str]
    weights: Path

    @property
    def is_reference(self) -> bool:
        return self.cfg.method in REFERENCES


def _rerun_hint(cfg: RunConfig) -> str:
    need = "all" if cfg.method in REFERENCES or get_method(cfg.method).library == "transformers" else "peft"
    return (f"rerun it with save_weights: {need} (python -m tc_lib train --model {cfg.model} --dataset "
            f"{' '.join(cfg.datasets)} --method {cfg.method} --seed {cfg.seed} --set save_weights={need} ..., "
            f"or save_weights: {need} in the params file)")


def open_run(run_dir: str | Path) -> SavedRun:
    """The run's record, config, label names and weights folder; one TcError naming the folder otherwise."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise TcError(f"{run_dir}: no such run folder")
    record, reason = read_record(run_dir)
    if reason:
        raise TcError(f"{run_dir}/metrics.json: {reason}")
    if record.status != "success":
        raise TcError(f"{run_dir}: the run's status is {record.status!r}, not success; nothing to predict with")
    cfg = RunConfig.from_dict({**LATER_FIELDS, **record.config}, source=f"{run_dir}/metrics.json config")
    names = record.data.label_names
    if not names:
        raise TcError(f"{run_dir}/metrics.json: data.label_names missing; the run cannot name its labels")
    weights = run_dir / "weights"
    if not weights.is_dir():
        raise TcError(f"{run_dir}: this run saved no weights (save_weights: {cfg.save_weights}); {_rerun_hint(cfg)}")
    return SavedRun(run_dir, record, cfg, [str(n) for n in names], weights)


def _tokenizer(saved: SavedRun):
    from .models import load_tokenizer

    tokenizer = load_tokenizer(saved.cfg.model)
    tokenizer.model_max_length = saved.cfg.max_seq_length  # truncate as training did
    return tokenizer


def load_model(saved: SavedRun):
    """The trained classifier in eval mode, labels named; LoRA / IA3 merged into the base (a prompt-learning
    method such as prefix tuning cannot be merged: its peft model is returned)."""
    from .models import load_trained

    if saved.is_reference:
        raise TcError(f"{saved.run_dir}: a {saved.cfg.method} reference is a scikit-learn model, not a transformers "
                      "one; use tc_lib.predict")
    model = load_trained(saved.cfg, saved.weights, len(saved.label_names))
    if get_method(saved.cfg.method).library == "peft" and not _prompt_learning(model):
        model = _merged(model)
    id2label = dict(enumerate(saved.label_names))
    model.config.id2label, model.config.label2id = id2label, {v: k for k, v in id2label.items()}
    return model.eval()


def _prompt_learning(model) -> bool:
    """A peft method that adds virtual tokens (prefix / prompt tuning) rather than changing weights."""
    config = getattr(model, "peft_config", {}).get("default")  # merged models have none
    return bool(getattr(config, "is_prompt_learning", False))


def _head_in_place(model):
    """The base model with the trained copies of the modules peft trains whole (head, BERT's pooler) put
    in place of peft's wrappers."""
    from peft.utils import ModulesToSaveWrapper

    inner = model.base_model.model if not _prompt_learning(model) else model.base_model
    for name, module in list(inner.named_modules()):
        if isinstance(module, ModulesToSaveWrapper):
            parent, _, child = name.rpartition(".")
            trained = next(iter(module.modules_to_save.values()))
            setattr(inner.get_submodule(parent) if parent else inner, child, trained)
    return inner


def _merged(model):
    """The PEFT weights merged into the base, as a plain transformers model. The trained copies of the
    modules peft trains whole (head, BERT's pooler) are put in place first: peft's IA3 unload assumes
    every wrapped module is a Linear, and BERT's pooler is not."""
    _head_in_place(model)
    return model.merge_and_unload()


def load_run(run_dir: str | Path, *, device: str = "cpu"):
    """A ready `transformers` text-classification pipeline of a run: its weights (PEFT merged, adapters
    attached), its tokenizer truncating at the run's max length, its label names; scores for every class."""
    return _classifier_pipeline(open_run(run_dir), device)


def _classifier_pipeline(saved: SavedRun, device: str):
    from transformers import pipeline

    return pipeline("text-classification", model=load_model(saved), tokenizer=_tokenizer(saved), device=device,
                    top_k=None, truncation=True)


def _pipeline_rows(pipe, texts: list[str], batch_size: int, names: list[str]) -> list[dict[str, float]]:
    sep = pipe.tokenizer.sep_token or PAIR_MARKER
    inputs = [text.replace(PAIR_MARKER, sep) for text in texts]
    scores = pipe(inputs, batch_size=batch_size)
    return [{name: float(next(s["score"] for s in row if s["label"] == name)) for name in names} for row in scores]


def _reference_rows(saved: SavedRun, texts: list[str]) -> list[dict[str, float]]:
    import joblib

    path = saved.weights / REFERENCE_FILE
    if not path.is_file():
        raise TcError(f"{saved.run_dir}: this reference run saved no model ({path} is missing); "
                      f"{_rerun_hint(saved.cfg)}")
    model = joblib.load(path)
    proba = model.predict_proba(texts)
    rows = []
    for row in proba:  # classes absent from a small train subsample get probability 0
        full = dict.fromkeys(saved.label_names, 0.0)
        for cls, p in zip(model.classes_, row):
            full[saved.label_names[int(cls)]] = float(p)
        rows.append(full)
    return rows


def predict(run_dir: str | Path, texts: Sequence[str], *, batch_size: int = 32,
            device: str = "cpu") -> list[dict[str, Any]]:
    """Per text: {"text", "label", "probabilities": {label name: p}} from the run's saved model."""
    texts = [str(t) for t in texts]
    if not texts:
        raise ConfigError("predict: no input texts")
    saved = open_run(run_dir)
    if saved.is_reference:
        rows = _reference_rows(saved, texts)
    else:
        rows = _pipeline_rows(_classifier_pipeline(saved, device), texts, batch_size, saved.label_names)
    return [{"text": text, "label": max(probs, key=probs.get), "probabilities": probs}
            for text, probs in zip(texts, rows)]


def export_model(run_dir: str | Path, *, to: str | Path) -> Path:
    """Write a plain Hugging Face model folder: weights (LoRA / IA3 merged), tokenizer, label names in
    config.id2label. An adapter run writes the base with its trained head plus the adapter, in the
    adapters library's format, under adapter/."""
    saved = open_run(run_dir)
    if saved.is_reference:
        raise TcError(f"{saved.run_dir}: a {saved.cfg.method} reference is not a transformers model; its fitted "
                      f"scikit-learn pipeline is {saved.weights / REFERENCE_FILE} (joblib.load)")
    target = Path(to)
    if target.exists() and any(target.iterdir()):
        raise TcError(f"--to {target}: folder exists and is not empty; name a new folder")
    library = get_method(saved.cfg.method).library
    model = load_model(saved) if library != "adapters" else None
    prompt = model is not None and library == "peft" and _prompt_learning(model)
    if prompt:  # virtual tokens cannot be merged: the base with the trained head, plus the peft weights
        how = ("Prefix / prompt tuning cannot be merged into the base: `from_pretrained` gives the base with the "
               "trained head; attach the virtual tokens with peft:\n\n"
               "```python\nfrom peft import PeftModel\nfrom transformers import AutoModelForSequenceClassification\n"
               f"base = AutoModelForSequenceClassification.from_pretrained(\"{target}\")\n"
               f"model = PeftModel.from_pretrained(base, \"{target}/adapter\")\n```")
    elif library == "adapters":
        model = _head_only(saved)
        how = ("Bottleneck adapters cannot be merged into the base: `from_pretrained` gives the base with the "
               "trained head; attach the adapter with the `adapters` library:\n\n"
               "```python\nimport adapters\nfrom transformers import AutoModelForSequenceClassification\n"
               f"model = AutoModelForSequenceClassification.from_pretrained(\"{target}\")\nadapters.init(model)\n"
               f"model.set_active_adapters(model.load_adapter(\"{target}/adapter\"))\n```")
    else:
        how = ("```python\nfrom transformers import pipeline\n"
               f"classify = pipeline(\"text-classification\", model=\"{target}\", top_k=None, truncation=True)\n```")
    target.mkdir(parents=True, exist_ok=True)
    if prompt:
        model.save_pretrained(str(target / "adapter"))
        model = _head_in_place(model)
    model.save_pretrained(str(target))
    _tokenizer(saved).save_pretrained(str(target))
    if library == "adapters":
        shutil.copytree(saved.weights, target / "adapter", ignore=shutil.ignore_patterns("head.safetensors"))
    (target / "README.md").write_text(EXPORT_README.format(run_id=saved.record.run_id, run_dir=saved.run_dir,
                                                           model=saved.cfg.model, method=saved.cfg.method, how=how),
                                      encoding="utf-8")
    return target


def _head_only(saved: SavedRun):
    """A plain classifier (no adapter modules) with the run's trained head."""
    from safetensors.torch import load_file

    from .models import load_classifier

    model = load_classifier(saved.cfg, len(saved.label_names), dict(enumerate(saved.label_names)))
    head = load_file(str(saved.weights / "head.safetensors"))
    missing = sorted(set(head) - set(model.state_dict()))
    if missing:
        raise TcError(f"{saved.weights}/head.safetensors: head weights the base lacks: {missing[:5]}")
    model.load_state_dict(head, strict=False)
    return model.eval()
