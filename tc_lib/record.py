"""The run record (outputs/runs/<run_id>/metrics.json) as types: `RunRecord` and its parts. The one
schema: results.py fills and writes it, every reader gets it from `RunRecord.from_dict`, which checks a
parsed file against these field types and names the first field that is off; the runs table takes its
columns from it (tc_lib.report.runs). Fields are in the order they are written."""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Union

from .methods import METHODS, REFERENCES
from .metrics import SCORE_NAMES

# 2: torch_dtype/mixed_precision and peft_target_modules replace precision and lora_*. Version 1 records
# cannot be read: their configs name options that no longer exist.
SCHEMA_VERSION = 2
STATUSES = ("running", "success", "failed", "interrupted")  # interrupted: stopped by Ctrl-C, resumable
STAGES = ("tune", "final")  # a tuned grid's trial on dev, or a run that counts
OMIT_WHEN_NONE = {"omit_when_none": True}  # field metadata: written only when set
KEY_REQUIRED = {"key_required": True}  # field metadata: the key must be there (its value may be null)


class RecordError(ValueError):
    """A metrics.json that is not a run record of this schema; the message names the field."""


@dataclass
class Selection:
    rule: str  # dev | last
    metric: str = "macro_f1"
    score: float | None = None  # the dev metric at the chosen epoch (null without a dev split)
    chosen_epoch: int | None = field(default=None, metadata=KEY_REQUIRED)
    dev_size: int | None = None


@dataclass
class DataInfo:
    """The splits a run used (splits.describe_splits); null until the data is loaded."""

    label_names: list[str] | None = None
    train_size: int | None = field(default=None, metadata=KEY_REQUIRED)
    test_size: int | None = field(default=None, metadata=KEY_REQUIRED)
    train_split_size: int | None = None  # the dataset's whole train split, before dev and subsample
    data_seed: int | None = None
    train_label_counts: list[int] | None = None
    majority_floor: dict[str, float] | None = None  # the scores of always predicting the majority class
    files: dict[str, str] | None = None  # relpath -> sha256, verified on load
    class_weights: list[float] | None = field(default=None, metadata=OMIT_WHEN_NONE)  # class_weights: balanced


@dataclass
class Timing:
    wall_time_s: float | None = None
    startup_s: float | None = None  # kernel start and imports + setup, for a grid run
    setup_s: float | None = None
    train_time_s: float | None = None
    eval_time_s: float | None = None
    train_samples_per_s: float | None = None
    train_tokens_per_s: float | None = None


@dataclass
class Memory:
    peak_rss_mb: float | None = None
    peak_cuda_allocated_mb: float | None = None
    peak_cuda_reserved_mb: float | None = None


@dataclass
class Environment:
    """What a reader needs to interpret timings (results.environment fills it)."""

    python: str | None = None
    platform: str | None = None
    hostname: str | None = None
    cpu_count: int | None = None
    packages: dict[str, str | None] | None = None
    git_commit: str | None = None
    device: str | None = None  # the device the run resolved to
    gpu_name: str | None = None
    torch_threads: int | None = None
    cpu_model: str | None = None
    # the autocast the run trained and scored under: mixed_precision as resolved on its device (auto -> bf16 | no)
    autocast: str | None = field(default=None, metadata=OMIT_WHEN_NONE)


@dataclass
class Execution:
    """Where and how this attempt ran (results.execution fills it)."""

    executor: str = "direct"
    attempt: int = 1
    host: str | None = None
    pid: int | None = None
    cuda_visible_devices: str | None = None
    log: str | None = None  # a batch task's log file (SLURM)


@dataclass
class ErrorInfo:
    type: str | None = None
    message: str | None = None
    traceback: str | None = None


@dataclass
class RunRecord:
    schema_version: int
    status: str
    run_id: str
    config_hash: str
    config: dict[str, Any]  # RunConfig.to_dict(); the fields readers use are checked (CONFIG_FIELDS)
    selection: Selection
    data: DataInfo
    timing: Timing
    memory: Memory
    environment: Environment
    arm_id: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    stage: str = "final"
    trial: int | None = None  # a tuning trial's index
    metrics: dict[str, Any] | None = None  # test, at the chosen epoch: SCORE_NAMES are numbers
    params: dict[str, int] | None = None  # total, trainable, trainable_no_head
    peft_target_modules: list[str] | None = None
    device: dict[str, Any] | None = None  # tc_lib.device.describe_device
    execution: Execution | None = None
    weights_dir: str | None = None
    error: ErrorInfo | None = None

    @property
    def used_device(self) -> str | None:
        """The device the run ran on (cpu | cuda), when it got that far."""
        return (self.device or {}).get("type") or self.environment.device

    @property
    def cuda_visible_devices(self) -> str | None:
        return self.execution.cuda_visible_devices if self.execution else None

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)

    @classmethod
    def from_dict(cls, raw: Any) -> RunRecord:
        """The record in `raw` (parsed JSON), or RecordError naming the first field that is off. A field
        this version does not know (a later version's) is left out; one it added later reads as null."""
        if not isinstance(raw, dict) or "schema_version" not in raw:
            raise RecordError("not a tc_lib run record (no schema_version)")
        if raw["schema_version"] != SCHEMA_VERSION:
            raise RecordError(f"schema version {raw['schema_version']!r}; this tc_lib reads version "
                              f"{SCHEMA_VERSION} (rerun it)")
        record = _build(cls, raw, "")
        _check_values(record)
        return record


# the config fields readers use: name -> type; the optional ones may be absent (older records)
CONFIG_FIELDS = {"model": str, "dataset": Union[str, list[str]], "method": str, "seed": int, "epochs": int,
                 "learning_rate": Union[float, None], "max_train_samples": Union[int, None]}
CONFIG_OPTIONAL = {"learning_rate", "max_train_samples"}


def _check_values(record: RunRecord) -> None:
    if record.status not in STATUSES:
        raise RecordError(f"unknown status {record.status!r}")
    if record.stage not in STAGES:
        raise RecordError(f"field 'stage': expected tune or final, got {record.stage!r:.40}")
    for name, hint in CONFIG_FIELDS.items():
        if name not in record.config and name not in CONFIG_OPTIONAL:
            raise RecordError(f"field 'config.{name}' missing")
        _expect(record.config.get(name), hint, f"config.{name}")
    if record.config["method"] not in (*METHODS, *REFERENCES):
        raise RecordError(f"field 'config.method': {record.config['method']!r:.40} is no method this tc_lib knows")
    for name in SCORE_NAMES:
        if record.metrics and name in record.metrics:
            _expect(record.metrics[name], float, f"metrics.{name}")


@functools.cache  # resolving the string annotations is the slow part of reading a record
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _build(cls: type, raw: dict[str, Any], prefix: str) -> Any:
    hints = _hints(cls)
    values = {}
    for f in dataclasses.fields(cls):
        path = f"{prefix}{f.name}"
        required = f.metadata.get("key_required") or (f.default is dataclasses.MISSING
                                                       and f.default_factory is dataclasses.MISSING)
        if f.name not in raw:
            if required:
                raise RecordError(f"field {path!r} missing")
            continue
        values[f.name] = _convert(raw[f.name], hints[f.name], path)
    return cls(**values)


def _convert(value: Any, hint: Any, path: str) -> Any:
    part = next((a for a in _options(hint) if dataclasses.is_dataclass(a)), None)
    if part is not None and isinstance(value, dict):
        return _build(part, value, f"{path}.")
    _expect(value, hint, path)
    return value


def _options(hint: Any) -> tuple:
    return typing.get_args(hint) if typing.get_origin(hint) in (Union, types.UnionType) else (hint,)


def _expect(value: Any, hint: Any, path: str) -> None:
    if not _conforms(value, hint):
        raise RecordError(f"field {path!r}: expected {' or '.join(map(_words, _options(hint)))}, got {value!r:.60}")


def _conforms(value: Any, hint: Any) -> bool:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        return any(_conforms(value, a) for a in args)
    if hint is Any:
        return True
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is list:
        return isinstance(value, list) and all(_conforms(v, args[0]) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(_conforms(v, args[1]) for v in value.values())
    if dataclasses.is_dataclass(hint):
        return False  # a section that is not a mapping (a mapping was built by _convert)
    return isinstance(value, hint)


def _words(hint: Any) -> str:
    """How an error names a type: 'an integer', 'a list of strings', 'a mapping', 'null'."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is list:
        return f"a list of {_words(args[0]).split(' ', 1)[1]}s"
    if origin is dict or dataclasses.is_dataclass(hint) or hint is Any:
        return "a mapping"
    return {str: "a string", int: "an integer", float: "a number", bool: "a boolean", type(None): "null"}[hint]


def _plain(part: Any) -> Any:
    """A record part as JSON-ready dicts, fields in their order; OMIT_WHEN_NONE fields only when set."""
    if not dataclasses.is_dataclass(part):
        return part
    return {f.name: _plain(getattr(part, f.name)) for f in dataclasses.fields(part)
            if not (f.metadata.get("omit_when_none") and getattr(part, f.name) is None)}


def column_dtype(hint: Any) -> str:
    """The pandas dtype of a runs-table column that holds a record field of this type."""
    kinds = [a for a in _options(hint) if a is not type(None)]
    if len(kinds) == 1 and kinds[0] in (str, int, float, bool):
        return {str: "string", int: "Int64", float: "Float64", bool: "boolean"}[kinds[0]]
    return "object"


def field_type(path: str) -> Any:
    """The type of a record field named by its dotted path ('timing.setup_s')."""
    cls, hint = RunRecord, None
    for name in path.split("."):
        hint = _hints(cls)[name]
        cls = next((a for a in _options(hint) if dataclasses.is_dataclass(a)), None)
    return hint
