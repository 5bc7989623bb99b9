"""RunConfig: the validated, frozen description of one training run, and its run_id."""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .data import DATASET_NAMES, DEFAULT_DATA_SEED
from .device import DEVICES
from .errors import ConfigError
from .precision import MIXED_PRECISION_CHOICES, TORCH_DTYPES
from .methods import METHODS, OPTIONS, REFERENCE_MODEL, REFERENCES
from .options import given_options

SELECTIONS = ("last", "dev")
DEFAULT_OUTPUT_DIR = "outputs/runs"  # where run folders go; the grid, the report and the commands default to it
SAVE_WEIGHTS = ("peft", "all", "none")
CLASS_WEIGHTS = ("none", "balanced")  # balanced: n / (k * count_c) from the run's training labels (sklearn's rule)
DEFAULT_LEARNING_RATE = {name: method.learning_rate for name, method in METHODS.items()}
# Fields that say where and how fast a run executes, not what it computes: left out of run_id.
EXECUTION_FIELDS = ("output_dir", "num_threads", "report_to", "allow_pure_bf16", "tuning")
STAGES = ("tune", "final")  # a tuned grid's trials on dev, then its seeds at the chosen settings
REPORT_TO = ("none", "tensorboard", "mlflow")  # the HF Trainer's loggers; their packages are optional
# An arm is a configuration minus its seed: the runs whose scores are averaged and compared.
ARM_EXCLUDED = ("seed", *EXECUTION_FIELDS)
DATA_SEED_FOLLOWS = "seed"  # data_seed: seed -> the subsample / few-shot draw / dev carve vary with seed
# Fields added after records existed, left out of run_id and arm at this value: earlier runs keep their
# ids and arms, and a record without the field reads as this value.
LATER_FIELDS = {"class_weights": "none", "device": "auto", "test_every_epoch": False, "max_dev_samples": None,
                **{o.name: o.default for o in OPTIONS.values() if o.added_later}}
NOTEBOOK_OPTIONS = "method_options"  # the training notebook's one parameter for every method option
MODULE_LISTS = tuple(o.name for o in OPTIONS.values() if o.kind == "modules")  # stored as tuples
# Fields of earlier versions: a config that still uses one gets an error naming what replaced it.
RENAMED = {
    "precision": "'precision' was split into torch_dtype (float32 | bfloat16: the dtype the weights are "
                 "loaded in) and mixed_precision (no | bf16 | fp16: autocast); fp32 -> torch_dtype: float32, "
                 "mixed_precision: no; bf16 -> mixed_precision: bf16; fp16 -> mixed_precision: fp16",
    "lora_target_modules": "'lora_target_modules' is now peft_target_modules (LoRA and IA3 alike)",
}
_LITERALS = (type(None), bool, int, float, str, list, tuple)
_IPYTHON_NAMES = {"In", "Out", "exit", "quit", "get_ipython"}


@dataclass(frozen=True)
class RunConfig:
    model: str = "minilm"  # registry name (minilm, mpnet), hub id or local path
    dataset: str | tuple[str, ...] = "restaurant_sup"  # a dataset name or a tuple of names
    method: str = "full"  # a method of tc_lib.methods.METHODS (full, lora, ...) | tfidf_lr (model: tfidf)
    seed: int = 1  # training seed: init of new weights, data order, dropout
    epochs: int = 3
    learning_rate: float | None = None  # None -> the method's default (tc_lib.methods.METHODS)
    train_batch_size: int = 16
    eval_batch_size: int = 64
    max_seq_length: int = 128  # truncation only; batches are padded to their longest example
    group_by_length: bool = True  # batches of similar length (less padding); batch order stays random
    warmup_ratio: float = 0.06
    weight_decay: float = 0.01
    class_weights: str = "none"  # none | balanced: training loss weighted against the class imbalance
    # the method options, one field each, from the registry (tc_lib.methods.OPTIONS: kind, default, help)
    for _option in OPTIONS.values():
        __annotations__[_option.name] = _option.annotation
        locals()[_option.name] = _option.default  # a class body's locals() is its namespace
    del _option
    selection: str = "last"  # last epoch, or the epoch with the best dev macro-F1 (never test)
    test_every_epoch: bool = False  # test scored after every epoch (test curves); else once, at the chosen epoch
    dev_fraction: float = 0.1  # share of train carved out as dev when selection == "dev"
    max_dev_samples: int | None = None  # a seeded stratified subsample of that dev split (cheaper scoring)
    max_train_samples: int | None = None  # seeded subsample of train, for quick profiles
    data_seed: int | str = DEFAULT_DATA_SEED  # AG News split, few-shot draw, dev carve, subsample; "seed": = seed
    torch_dtype: str = "float32"  # float32 | bfloat16: the dtype the model's weights are loaded in
    mixed_precision: str = "no"  # no | bf16 | fp16 (CUDA) | auto (bf16 where the device has it natively): autocast
    device: str = "auto"  # auto: CUDA when usable, else CPU | cpu | cuda (fails, never falls back to the CPU)
    allow_pure_bf16: bool = False  # full with torch_dtype bfloat16 (no fp32 master weights) only when True
    save_weights: str = "peft"  # peft: PEFT weights + head; all: also full models; none
    output_dir: str = DEFAULT_OUTPUT_DIR  # relative: resolved once, here, against the current folder
    num_threads: int | None = None  # torch CPU threads; None leaves torch's default
    report_to: str = "none"  # none | tensorboard (<run>/tensorboard) | mlflow (MLFLOW_TRACKING_URI)
    tuning: str | None = None  # set by a tuned grid (tc_lib.grid.tuning): JSON of the stage, trial and space

    def __post_init__(self) -> None:
        _validate(self)
        if not Path(self.output_dir).is_absolute():  # the one place a run folder is resolved (grid, notebook, train)
            object.__setattr__(self, "output_dir", str(Path(self.output_dir).resolve()))
        if isinstance(self.dataset, list):
            object.__setattr__(self, "dataset", tuple(self.dataset))
        for name in MODULE_LISTS:
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.learning_rate is None and self.method in METHODS:
            object.__setattr__(self, "learning_rate", DEFAULT_LEARNING_RATE[self.method])
        if self.learning_rate is not None:
            object.__setattr__(self, "learning_rate", float(self.learning_rate))

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], *, source: str = "config") -> "RunConfig":
        """Build from a mapping, rejecting unknown keys with the closest field and the list of valid ones."""
        names = cls.field_names()
        unknown = sorted(set(values) - set(names))
        renamed = [key for key in unknown if key in RENAMED]
        if renamed:
            raise ConfigError(f"{source}: field {RENAMED[renamed[0]]}")
        if unknown:
            hints = [f"{key} -> {close[0]}" for key in unknown if (close := difflib.get_close_matches(key, names, 1))]
            hint = f" (did you mean {', '.join(hints)}?)" if hints else ""
            raise ConfigError(f"{source}: unknown field(s) {', '.join(unknown)}{hint}; valid fields: {', '.join(names)}")
        try:
            return cls(**dict(values))
        except ConfigError as err:
            raise ConfigError(f"{source}: {err}") from None

    @classmethod
    def from_namespace(cls, namespace: Mapping[str, Any], *, base_dir: str | Path | None = None) -> "RunConfig":
        """Freeze a notebook's parameter variables into a RunConfig.

        Every public variable holding a plain literal must be a field: a misspelled parameter
        (`learning_rte`) is an error naming the closest field, never silently dropped. A relative
        output_dir is taken relative to `base_dir` (the notebook passes the project root).
        """
        candidates = {k: v for k, v in namespace.items()
                      if not k.startswith("_") and k not in _IPYTHON_NAMES and isinstance(v, _LITERALS)}
        if base_dir is not None:  # the notebook's relative output_dir names a folder of the project, not of notebooks/
            folder = candidates.get("output_dir", DEFAULT_OUTPUT_DIR)
            if isinstance(folder, str) and folder and not Path(folder).is_absolute():
                candidates["output_dir"] = str(Path(base_dir) / folder)
        candidates.update(given_options(namespace.get(NOTEBOOK_OPTIONS, {}), OPTIONS, beside=candidates,
                                        where=f"notebook parameters: {NOTEBOOK_OPTIONS}"))
        return cls.from_dict(candidates, source="notebook parameters")

    @classmethod
    def notebook_defaults(cls) -> dict[str, Any]:
        """The training notebook's parameters with their defaults: every field but the method options,
        which come as one dict, `method_options` (only those that differ from the registry's default)."""
        fields = {f.name: f.default for f in dataclasses.fields(cls) if f.name not in OPTIONS}
        return {**fields, NOTEBOOK_OPTIONS: {}}

    def notebook_parameters(self) -> dict[str, Any]:
        """This config as the training notebook's parameters (what a grid injects through papermill)."""
        values = self.to_dict()
        options = {k: values.pop(k) for k in OPTIONS}
        return {**values, NOTEBOOK_OPTIONS: {k: v for k, v in options.items() if v != OPTIONS[k].default}}

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        for key in ("dataset", *MODULE_LISTS):
            if isinstance(out[key], tuple):
                out[key] = list(out[key])
        return out

    @property
    def run_dir(self) -> Path:
        return Path(self.output_dir) / self.run_id

    def method_options(self) -> dict[str, Any]:
        """The method options (tc_lib.methods.OPTIONS) of this run."""
        return {key: getattr(self, key) for key in OPTIONS}

    @property
    def effective_data_seed(self) -> int:
        """The data seed in force: data_seed, or the training seed when data_seed is "seed"."""
        return self.seed if self.data_seed == DATA_SEED_FOLLOWS else self.data_seed

    @property
    def arm_id(self) -> str:
        return arm_id_of(self.to_dict())

    @property
    def datasets(self) -> tuple[str, ...]:
        return (self.dataset,) if isinstance(self.dataset, str) else tuple(self.dataset)

    def identity(self) -> dict[str, Any]:
        """The fields that decide the result: everything but EXECUTION_FIELDS."""
        out = self.to_dict()
        for key in EXECUTION_FIELDS:
            out.pop(key)
        return _without_neutral(out)

    @property
    def config_hash(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:10]

    @property
    def run_id(self) -> str:
        model = re.sub(r"[^A-Za-z0-9]+", "-", self.model.rstrip("/").split("/")[-1]).strip("-")[:24] or "model"
        data = "+".join(d.replace("_", "-") for d in self.datasets)[:40]
        return f"{model}_{data}_{self.method}_s{self.seed}_{self.config_hash}"


def arm_fields(config: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a config (RunConfig.to_dict(), or a record's "config") that define its arm."""
    return _without_neutral({key: value for key, value in config.items() if key not in ARM_EXCLUDED})


def _without_neutral(config: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if LATER_FIELDS.get(key, object()) != value}


def arm_id_of(config: Mapping[str, Any]) -> str:
    """Stable id of the arm a config belongs to (the same for a RunConfig and its stored record)."""
    blob = json.dumps(arm_fields(config), sort_keys=True, separators=(",", ":"))
    return "arm-" + hashlib.sha256(blob.encode()).hexdigest()[:10]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check(ok: bool, name: str, expected: str, value: Any) -> None:
    if not ok:
        raise ConfigError(f"field {name!r}: expected {expected}, got {value!r}")


def tuning_info(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The tuning section of a config (RunConfig.to_dict() or a record's config): {} for an untuned run."""
    text = cfg.get("tuning")
    try:
        info = json.loads(text) if isinstance(text, str) else {}
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _tuning_ok(cfg: RunConfig) -> bool:
    info = tuning_info({"tuning": cfg.tuning})
    return info.get("stage") in STAGES and (info["stage"] == "final" or cfg.selection == "dev")


def _validate(cfg: RunConfig) -> None:
    _check(isinstance(cfg.model, str) and cfg.model.strip() != "", "model", "a non-empty string", cfg.model)
    datasets = [cfg.dataset] if isinstance(cfg.dataset, str) else cfg.dataset
    _check(isinstance(datasets, (list, tuple)) and len(datasets) > 0
           and all(d in DATASET_NAMES for d in datasets) and len(set(datasets)) == len(datasets),
           "dataset", f"a name or a list of distinct names from {', '.join(DATASET_NAMES)}", cfg.dataset)
    _check(cfg.method in METHODS or cfg.method in REFERENCES, "method", " | ".join([*METHODS, *REFERENCES]),
           cfg.method)
    reference = cfg.method in REFERENCES
    _check(reference == (cfg.model == REFERENCE_MODEL), "model" if reference else "method",
           f"model {REFERENCE_MODEL!r} with method {' | '.join(REFERENCES)} (a classical reference) and only then",
           cfg.model if reference else cfg.method)
    _check(cfg.selection in SELECTIONS, "selection", " | ".join(SELECTIONS), cfg.selection)
    _check(cfg.torch_dtype in TORCH_DTYPES, "torch_dtype", " | ".join(TORCH_DTYPES), cfg.torch_dtype)
    _check(cfg.mixed_precision in MIXED_PRECISION_CHOICES, "mixed_precision", " | ".join(MIXED_PRECISION_CHOICES),
           cfg.mixed_precision)
    _check(cfg.report_to in REPORT_TO, "report_to", " | ".join(REPORT_TO), cfg.report_to)
    _check(cfg.class_weights in CLASS_WEIGHTS, "class_weights", " | ".join(CLASS_WEIGHTS), cfg.class_weights)
    _check(cfg.device in DEVICES, "device", " | ".join(DEVICES), cfg.device)
    _check(not reference or cfg.device != "cuda", "device", "auto or cpu for the TF-IDF reference (scikit-learn, CPU)",
           cfg.device)
    _check(isinstance(cfg.allow_pure_bf16, bool), "allow_pure_bf16", "true or false", cfg.allow_pure_bf16)
    if cfg.method == "full" and cfg.torch_dtype == "bfloat16" and not cfg.allow_pure_bf16:
        raise ConfigError("field 'torch_dtype': bfloat16 with method full trains the bf16 weights themselves, with no "
                          "fp32 master copy: updates smaller than bf16's rounding (~0.4% of a weight) are lost. Use "
                          "torch_dtype: float32 with mixed_precision: bf16, or set allow_pure_bf16: true to accept it")
    _check(cfg.save_weights in SAVE_WEIGHTS, "save_weights", " | ".join(SAVE_WEIGHTS), cfg.save_weights)
    _check(isinstance(cfg.group_by_length, bool), "group_by_length", "true or false", cfg.group_by_length)
    _check(isinstance(cfg.test_every_epoch, bool), "test_every_epoch", "true or false", cfg.test_every_epoch)
    _check(cfg.tuning is None or _tuning_ok(cfg), "tuning", "null or the JSON a tuned grid writes "
           f"({{\"stage\": {' | '.join(STAGES)}, ...}}; a trial needs selection: dev)", cfg.tuning)
    # numpy and torch take seeds in [0, 2**32): a larger one would fail inside the run
    _check(_is_int(cfg.seed) and 0 <= cfg.seed < 2**32, "seed", "an integer in [0, 2**32)", cfg.seed)
    _check((_is_int(cfg.data_seed) and 0 <= cfg.data_seed < 2**32) or cfg.data_seed == DATA_SEED_FOLLOWS, "data_seed",
           f"an integer in [0, 2**32) or {DATA_SEED_FOLLOWS!r} (the data seed follows the training seed)",
           cfg.data_seed)
    for name in ("epochs", "train_batch_size", "eval_batch_size"):
        value = getattr(cfg, name)
        _check(_is_int(value) and value >= 1, name, "an integer >= 1", value)
    _check(_is_int(cfg.max_seq_length) and 8 <= cfg.max_seq_length <= 8192, "max_seq_length",
           "an integer in [8, 8192]", cfg.max_seq_length)
    for name in ("max_train_samples", "max_dev_samples", "num_threads"):
        value = getattr(cfg, name)
        _check(value is None or (_is_int(value) and value >= 1), name, "null or an integer >= 1", value)
    lr = cfg.learning_rate
    _check(lr is None or (_is_number(lr) and 0 < lr < 1), "learning_rate", "a number in (0, 1) or null", lr)
    for name, low, high in (("warmup_ratio", 0, 1), ("weight_decay", 0, 1)):
        value = getattr(cfg, name)
        _check(_is_number(value) and low <= value < high, name, f"a number in [{low}, {high})", value)
    _check(_is_number(cfg.dev_fraction) and 0 < cfg.dev_fraction < 1, "dev_fraction", "a number in (0, 1)",
           cfg.dev_fraction)
    for option in OPTIONS.values():
        _check(option.valid(getattr(cfg, option.name)), option.name, option.expected(), getattr(cfg, option.name))
    _check(isinstance(cfg.output_dir, str) and cfg.output_dir != "", "output_dir", "a non-empty path", cfg.output_dir)
