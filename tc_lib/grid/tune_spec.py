"""The `tune:` section of a params file, checked: the space (lists, or log_uniform / uniform ranges),
trials per arm, tuning seeds, the fields that make a tuning group, and the seeded sampler of the
trials' settings (the same settings for every arm)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import RunConfig
from ..errors import ConfigError
from ..methods import OPTIONS
from ..tuned import TIE_RULE
from .params import _grids, _mapping

TUNE_KEYS = ("space", "trials", "seeds", "per", "sampler_seed")
DISTRIBUTIONS = ("log_uniform", "uniform")
DEFAULT_PER = ("dataset", "model", "method")
SIGNIFICANT = 3  # sampled values are rounded to 3 significant digits: readable, and a run id per value
# fields a tuned grid may search: what the training of an encoder reads (never the seed, data or method)
# the numeric method options of the registry are tunable too (lora_r, lora_alpha, lora_dropout, ...)
TUNABLE = ("learning_rate", "epochs", "train_batch_size", "warmup_ratio", "weight_decay", "class_weights",
           *(o.name for o in OPTIONS.values() if o.kind in ("int", "float")))


@dataclass(frozen=True)
class TuneSpec:
    space: dict[str, Any]  # field -> a list of values, or {distribution: [low, high]}
    trials: int
    seeds: tuple[int, ...]
    per: tuple[str, ...]
    sampler_seed: int

    @property
    def is_grid(self) -> bool:
        """All of the space is lists: every combination is tried once (not i.i.d. random search)."""
        return all(isinstance(v, list) for v in self.space.values())

    def points(self) -> list[dict[str, Any]]:
        """The trials' settings, trial 1 first: the same for every arm."""
        if self.is_grid:
            import itertools

            return [dict(zip(self.space, combo)) for combo in itertools.product(*self.space.values())]
        import numpy as np

        rng = np.random.default_rng(self.sampler_seed)
        out = []
        for _ in range(self.trials):
            point = {}
            for field, dist in self.space.items():
                if isinstance(dist, list):
                    point[field] = dist[int(rng.integers(len(dist)))]
                    continue
                (kind, (low, high)), = dist.items()
                value = (math.exp(rng.uniform(math.log(low), math.log(high))) if kind == "log_uniform"
                         else rng.uniform(low, high))
                point[field] = round(value) if all(isinstance(b, int) for b in (low, high)) else _round(value)
            out.append(point)
        return out

    def describe(self) -> str:
        fields = "; ".join(f"{f} {_range_text(v)}" for f, v in self.space.items())
        search = "every value of the list" if self.is_grid else f"random search, sampler seed {self.sampler_seed}"
        return (f"tune {fields}: {self.trials} trials per arm ({search}), tuning seeds "
                f"{', '.join(map(str, self.seeds))}, per {', '.join(self.per)}; chosen by mean dev macro-F1, {TIE_RULE}")

    def to_json(self) -> dict[str, Any]:
        return {"space": self.space, "trials": self.trials, "seeds": list(self.seeds), "per": list(self.per),
                "grid": self.is_grid}


def _round(value: float) -> float:
    return float(f"{value:.{SIGNIFICANT}g}")


def _range_text(dist: Any) -> str:
    if isinstance(dist, list):
        return "[" + ", ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in dist) + "]"
    (kind, (low, high)), = dist.items()
    return f"{kind} [{low:g}, {high:g}]"


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read_tune(path: Path, spec: dict) -> TuneSpec | None:
    """The `tune:` section, checked; None when the file has none."""
    if spec.get("tune") is None:
        return None
    tune = _mapping(path, "tune", spec["tune"])
    unknown = sorted(set(map(str, tune)) - set(TUNE_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) tune.{', tune.'.join(unknown)}; expected {', '.join(TUNE_KEYS)}")
    space = _mapping(path, "tune.space", tune.get("space"))
    if not space:
        raise ConfigError(f"{path}: tune.space: give the fields to search, e.g. {{learning_rate: {{log_uniform: "
                          "[1.0e-5, 1.0e-2]}}")
    for field, dist in space.items():
        where = f"{path}: tune.space.{field}"
        if field not in TUNABLE:
            raise ConfigError(f"{where}: not a field a tuned grid searches (one of {', '.join(TUNABLE)})")
        if isinstance(dist, list):
            if not dist or len({json.dumps(v) for v in dist}) != len(dist):
                raise ConfigError(f"{where}: expected a non-empty list of distinct values")
            continue
        ok = (isinstance(dist, dict) and len(dist) == 1 and next(iter(dist)) in DISTRIBUTIONS
              and isinstance(bounds := next(iter(dist.values())), list) and len(bounds) == 2
              and all(map(_number, bounds)) and bounds[0] < bounds[1])
        if not ok or ("log_uniform" in dist and bounds[0] <= 0):
            raise ConfigError(f"{where}: expected a list of values or {{log_uniform | uniform: [low, high]}} with "
                              f"low < high (low > 0 for log_uniform), got {dist!r}")
    grid = all(isinstance(v, list) for v in space.values())
    size = math.prod(len(v) for v in space.values()) if grid else None
    trials = tune.get("trials", size)
    if not isinstance(trials, int) or isinstance(trials, bool) or trials < 1:
        raise ConfigError(f"{path}: tune.trials: expected an integer >= 1 (trials per arm), got {trials!r}")
    if grid and trials != size:
        raise ConfigError(f"{path}: tune.trials is {trials} but the list space has {size} combinations, and each "
                          "is tried once; drop tune.trials, or give a distribution to sample from")
    seeds = tune.get("seeds", [1])
    if (not isinstance(seeds, list) or not seeds or len(set(map(str, seeds))) != len(seeds)
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32 for s in seeds)):
        raise ConfigError(f"{path}: tune.seeds: expected a non-empty list of distinct seeds, got {seeds!r}")
    per = tune.get("per", list(DEFAULT_PER))
    fields = RunConfig.field_names()
    if not isinstance(per, list) or not per or not all(isinstance(f, str) and f in fields for f in per) \
            or set(per) & {"seed", *space}:
        raise ConfigError(f"{path}: tune.per: expected a list of RunConfig fields other than seed and the searched "
                          f"ones, got {per!r}")
    sampler_seed = tune.get("sampler_seed", 0)
    if not isinstance(sampler_seed, int) or isinstance(sampler_seed, bool) or sampler_seed < 0:
        raise ConfigError(f"{path}: tune.sampler_seed: expected an integer >= 0, got {sampler_seed!r}")
    _check_not_set(path, spec, space)
    return TuneSpec(space=dict(space), trials=trials, seeds=tuple(seeds), per=tuple(per), sampler_seed=sampler_seed)


def _check_not_set(path: Path, spec: dict, space: dict) -> None:
    """A searched field set anywhere else in the file would be silently replaced (or replace the search)."""
    places = [("defaults", spec.get("defaults"))]
    for label, base, axes in _grids(path, spec):
        places += [(f"{label}.axes", axes), (f"{label}.defaults", base)]
    for field, table in _mapping(path, "overrides", spec.get("overrides")).items():
        places += [(f"overrides.{field}.{value}", settings) for value, settings in (table or {}).items()]
    for where, mapping in places:
        clash = sorted(set(mapping or {}) & set(space))
        if clash:
            raise ConfigError(f"{path}: {where} sets {', '.join(clash)}, which tune.space searches: remove it there "
                              "(the tuning chooses it per arm on dev)")
