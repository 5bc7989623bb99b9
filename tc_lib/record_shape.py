"""The shape every reader of a run record relies on, checked once where records are read
(`results.check_record`): a record that a tampered or foreign writer left in another shape is listed with
the field and what was expected, never a KeyError deep in the report, export or status."""

from __future__ import annotations

from typing import Any

from .methods import METHODS, REFERENCES
from .metrics import SCORE_NAMES

NUMBER, INTEGER, TEXT, NONE = "a number", "an integer", "a string", "null"
# field -> (what it must be, ...); a mapping for a section whose fields are checked in turn. Only what
# the readers use is listed: other fields may be added by later versions.
SHAPE: dict[str, Any] = {
    "run_id": (TEXT,), "config_hash": (TEXT,), "finished_at": (TEXT, NONE), "stage": (TEXT,),
    "trial": (INTEGER, NONE),
    "config": {"model": (TEXT,), "dataset": (TEXT, "a list of strings"), "method": (TEXT,), "seed": (INTEGER,),
               "epochs": (INTEGER,), "learning_rate": (NUMBER, NONE), "max_train_samples": (INTEGER, NONE)},
    "selection": {"rule": (TEXT,), "chosen_epoch": (INTEGER, NONE), "score": (NUMBER, NONE)},
    "data": {"train_size": (INTEGER, NONE), "test_size": (INTEGER, NONE), "train_split_size": (INTEGER, NONE),
             "label_names": ("a list of strings", NONE), "train_label_counts": ("a list of integers", NONE),
             "majority_floor": ("a mapping", NONE)},
    "metrics": ("a mapping of numbers", NONE),
    "params": ("a mapping of integers", NONE),
    "error": ("a mapping with a string message", NONE),
    "device": ("a mapping", NONE),
    "execution": ("a mapping", NONE),
}
# read with .get (absent = null): checked only when present; every other field listed must be there
OPTIONAL = {"finished_at", "stage", "trial", "selection.score", "metrics", "params", "error", "device", "execution", "config.learning_rate",
            "config.max_train_samples", "data.train_split_size", "data.label_names", "data.train_label_counts",
            "data.majority_floor"}
SCORES = SCORE_NAMES
SECTION_NUMBERS = ("timing", "memory")  # every value a number or null


def _is(value: Any, kind: str) -> bool:
    if kind == NONE:
        return value is None
    if kind == TEXT:
        return isinstance(value, str)
    if kind == INTEGER:
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == NUMBER:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "a list of strings":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    if kind == "a list of integers":
        return isinstance(value, list) and all(_is(v, INTEGER) for v in value)
    if kind == "a mapping":
        return isinstance(value, dict)
    if kind == "a mapping of numbers":
        return isinstance(value, dict) and all(_is(value.get(k), NUMBER) for k in SCORES if k in value)
    if kind == "a mapping of integers":
        return isinstance(value, dict) and all(_is(v, INTEGER) for v in value.values())
    if kind == "a mapping with a string message":
        return isinstance(value, dict) and isinstance(value.get("message", ""), (str, type(None)))
    raise AssertionError(kind)


def shape_problem(record: dict[str, Any]) -> str | None:
    """Why `record` is not in the shape the readers use (the first field that is not), or None."""
    for key, want in SHAPE.items():
        if isinstance(want, dict):
            section = record.get(key)
            if not isinstance(section, dict):
                return f"field {key!r}: expected a mapping, got {type(section).__name__}"
            for name, kinds in want.items():
                if name not in section and f"{key}.{name}" not in OPTIONAL:
                    return f"field '{key}.{name}' missing"
                if not any(_is(section.get(name), k) for k in kinds):
                    return f"field '{key}.{name}': expected {' or '.join(kinds)}, got {section.get(name)!r:.60}"
        elif key not in record and key not in OPTIONAL:
            return f"field {key!r} missing"
        elif not any(_is(record.get(key), k) for k in want):
            return f"field {key!r}: expected {' or '.join(want)}, got {record.get(key)!r:.60}"
    for key in SECTION_NUMBERS:
        wrong = [k for k, v in record[key].items() if not (_is(v, NUMBER) or v is None)]
        if wrong:
            return f"field '{key}.{wrong[0]}': expected a number or null, got {record[key][wrong[0]]!r:.60}"
    if record.get("stage", "final") not in ("tune", "final"):
        return f"field 'stage': expected tune or final, got {record['stage']!r:.40}"
    if record["config"]["method"] not in (*METHODS, *REFERENCES):
        return f"field 'config.method': {record['config']['method']!r:.40} is no method this tc_lib knows"
    return None
