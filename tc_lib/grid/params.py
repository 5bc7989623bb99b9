"""Params grids: load and expand a YAML grid into validated RunConfigs.

A grid file has these keys, all optional:
    defaults:  {field: value}             RunConfig fields shared by every run
    axes:      {field: [values]}          the cartesian product of these (in file order)
    overrides: {field: {value: {field: value}}}   e.g. method: {lora: {learning_rate: 1e-3}}
    grids:     [{defaults: ..., axes: ...}, ...]  several products in one file (instead of `axes`)
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any, Sequence

from ..config import RunConfig
from ..errors import ConfigError

GRID_KEYS = ("defaults", "axes", "overrides", "grids")


def _mapping(path: Path, where: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: '{where}' must be a mapping")
    return value


def load_grid(path: str | Path, *, output_dir: str | None = None) -> list[RunConfig]:
    """Expand a grid file into validated RunConfigs; errors name the file and the key.

    A relative output_dir is resolved against the current directory, so the notebook (run in
    notebooks/) writes where the caller expects.
    """
    import yaml

    path = Path(path)
    try:
        spec = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: params file not found") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(GRID_KEYS)}")
    unknown = sorted(set(map(str, spec)) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; expected {', '.join(GRID_KEYS)}")
    if "grids" in spec and "axes" in spec:
        raise ConfigError(f"{path}: give either 'axes' or 'grids', not both")
    defaults, overrides = _mapping(path, "defaults", spec.get("defaults")), _mapping(path, "overrides",
                                                                                     spec.get("overrides"))
    grids = spec.get("grids", [{"axes": spec.get("axes")}])
    if not isinstance(grids, list) or not grids:
        raise ConfigError(f"{path}: 'grids' must be a non-empty list of mappings")
    configs, seen = [], set()
    for number, grid in enumerate(grids, start=1):
        label = f"grids[{number}]" if "grids" in spec else "axes"
        grid = _mapping(path, label, grid)
        extra = sorted(set(grid) - {"defaults", "axes"})
        if extra:
            raise ConfigError(f"{path}: {label} has unknown key(s) {', '.join(map(str, extra))}")
        axes = _mapping(path, f"{label}.axes", grid.get("axes"))
        for name, values in axes.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{path}: {label}.{name} must be a non-empty list")
        base = {**defaults, **_mapping(path, f"{label}.defaults", grid.get("defaults"))}
        for combo in itertools.product(*axes.values()):
            point = dict(zip(axes, combo))
            values: dict[str, Any] = {**base, **point}
            for field, table in overrides.items():
                table = _mapping(path, f"overrides.{field}", table)
                values.update(_mapping(path, f"overrides.{field}.{_key(values.get(field))}",
                                       table.get(_key(values.get(field)))))
            values["output_dir"] = str(Path(output_dir or values.get("output_dir", "outputs/runs")).resolve())
            where = ", ".join(f"{k}={v}" for k, v in point.items())
            cfg = RunConfig.from_dict(values, source=f"{path} ({where})")
            if cfg.run_id not in seen:
                seen.add(cfg.run_id)
                configs.append(cfg)
    return configs


def _key(value: Any) -> Any:
    return "+".join(value) if isinstance(value, (list, tuple)) else value


def select(configs: Sequence[RunConfig], only: dict[str, Any]) -> list[RunConfig]:
    """Keep configs whose fields equal every `only` value (a list dataset compares as 'a+b')."""
    fields = set(RunConfig.__dataclass_fields__)
    for key in only:
        if key not in fields:
            raise ConfigError(f"--only {key}: unknown field; valid fields: {', '.join(sorted(fields))}")
    return [c for c in configs if all(str(_key(getattr(c, k))) == str(_key(v)) for k, v in only.items())]


def parse_assignments(items: Sequence[str], *, option: str = "--set") -> dict[str, Any]:
    """key=value pairs; values are YAML scalars or lists (1e-4, null, [query, value])."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} {item!r}: expected key=value")
        try:
            out[key.strip()] = yaml.safe_load(value) if value.strip() else None
        except yaml.YAMLError as err:
            raise ConfigError(f"{option} {item!r}: cannot parse the value ({err.__class__.__name__})") from None
    return out
