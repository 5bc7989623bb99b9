"""Arms: a configuration minus its seed (config.arm_fields). A number in the report belongs to one arm;
two arms are never pooled, and two arms are compared only when they differ in the compared factor alone."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import pandas as pd

from ..config import DATA_SEED_FOLLOWS, arm_fields
from ..methods import METHODS, OPTION_DEFAULTS, OPTIONS, REFERENCES, method_label

# A method is compared at its own learning rate and options: they belong to the factor "method".
COMPANIONS = {"method": ("learning_rate", *OPTION_DEFAULTS), "model": ()}
# Numeric fields along which arms of one (dataset, model, method) form a curve instead of a list.
SWEEP_FIELDS = ("max_train_samples", "learning_rate", "lora_r")
SHORT = {"learning_rate": "lr", "max_train_samples": "n_train", "train_batch_size": "batch",
         "max_seq_length": "max_len", "adapter_reduction_factor": "reduction", "peft_target_modules": "targets"}
GROUP = ("dataset", "model", "method")


NONE_TEXT = {"max_train_samples": "all", "learning_rate": "—"}  # what a null means for these fields


def fmt_value(value: Any, field: str | None = None) -> str:
    if value is None:
        return NONE_TEXT.get(field, "default")
    if isinstance(value, float):
        return f"{value:.0e}".replace("e-0", "e-") if 0 < abs(value) < 0.01 else f"{value:g}"
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    return str(value)


def differing(configs: Iterable[Mapping[str, Any]]) -> list[str]:
    """The arm fields whose values are not the same in all of `configs`, in field order."""
    configs = [arm_fields(c) for c in configs]
    keys = list(dict.fromkeys(k for c in configs for k in c))
    return [k for k in keys if len({repr(c.get(k)) for c in configs}) > 1]


def arms(runs: pd.DataFrame) -> pd.DataFrame:
    """One row per arm of the (current, successful) runs: its group, config, seeds and train size."""
    rows = []
    for arm_id, g in runs.groupby("arm_id", sort=False):
        first = g.iloc[0]
        rows.append({"arm_id": arm_id, "dataset": first["dataset"], "model": first["model"],
                     "method": first["method"], "config": first["config"], "n": len(g),
                     "seeds": ",".join(str(int(s)) for s in sorted(g["seed"].dropna())),
                     "train_size": int(g["train_size"].median()) if g["train_size"].notna().any() else None,
                     "data_seed_follows_seed": bool(first["data_seed_follows_seed"])})
    frame = pd.DataFrame(rows, columns=["arm_id", *GROUP, "config", "n", "seeds", "train_size",
                                        "data_seed_follows_seed"])
    frame["label"] = labels(frame)
    frame["name"] = [method_label(m) + (f" [{lab}]" if lab else "") for m, lab in zip(frame["method"], frame["label"])]
    return frame.sort_values([*GROUP, "label"], kind="stable").reset_index(drop=True)


def labels(arm_frame: pd.DataFrame) -> list[str]:
    """Per arm: the fields in which it differs from the other arms of its (dataset, model, method),
    as `lr=1e-4, epochs=2`; empty when it is the only arm of its group."""
    out = pd.Series("", index=arm_frame.index, dtype=object)
    for _, g in arm_frame.groupby(list(GROUP), sort=False):
        if len(g) < 2:
            continue
        fields = differing(g["config"])
        for idx, cfg in g["config"].items():
            out[idx] = ", ".join(f"{SHORT.get(f, f)}={fmt_value(cfg.get(f), f)}" for f in fields)
    return out.tolist()


def comparable(a: Mapping[str, Any], b: Mapping[str, Any], *, factor: str) -> tuple[bool, str]:
    """Whether arms a and b (configs) differ in `factor` (with its companions) alone, and why not."""
    fields = differing([a, b])
    if factor not in fields:
        return False, f"same {factor}"
    others = [f for f in fields if f != factor and f not in COMPANIONS[factor]]
    if others:
        return False, "also differ in " + ", ".join(
            f"{f} ({fmt_value(a.get(f), f)} vs {fmt_value(b.get(f), f)})" for f in others)
    return True, ""


def sweeps(arm_frame: pd.DataFrame) -> list[dict[str, Any]]:
    """Groups of >= 2 arms of one (dataset, model, method) that differ in exactly one SWEEP_FIELD:
    {dataset, model, method, field, arm_ids} (arm_ids in order of the field's value, null = all data last)."""
    out = []
    for keys, g in arm_frame.groupby(list(GROUP), sort=True):
        fields = differing(g["config"])
        if len(g) >= 2 and len(fields) == 1 and fields[0] in SWEEP_FIELDS:
            field = fields[0]
            order = sorted(g.itertuples(), key=lambda r: (r.config.get(field) is None, r.config.get(field) or 0))
            out.append({**dict(zip(GROUP, keys)), "field": field, "arm_ids": [r.arm_id for r in order]})
    return out


def method_settings(config: Mapping[str, Any], targets: list[str] | None = None) -> str:
    """The method's own settings in words: LoRA r/α/dropout/targets, adapter config, IA3 targets."""
    method = config["method"]
    if method in REFERENCES:
        from ..reference import C, NGRAMS

        return f"TF-IDF {NGRAMS[0]}–{NGRAMS[1]}-gram, sublinear tf; LR C={C:g}"
    if method not in METHODS:
        return "?"
    shown = []
    for name in METHODS[method].options:  # in the registry's words: short label = value
        value = config.get(name, OPTIONS[name].default)
        if name == "peft_target_modules" and not value:
            value = targets  # the library's default, as the run recorded it
        shown.append(f"{OPTIONS[name].label}={fmt_value(value)}")
    return ", ".join(shown) or "—"


def data_seed_rule(config: Mapping[str, Any]) -> str:
    return "= seed" if config.get("data_seed") == DATA_SEED_FOLLOWS else str(config.get("data_seed"))
