"""Params grids: load and expand a YAML grid into validated RunConfigs.

A grid file has these keys, all optional:
    defaults:  {field: value}             RunConfig fields shared by every run
    axes:      {field: [values]}          the cartesian product of these (in file order)
    overrides: {field: {value: {field: value}}}   e.g. method: {lora: {learning_rate: 1e-3}}
    grids:     [{defaults: ..., axes: ...}, ...]  several products in one file (instead of `axes`)
    slurm:     {time_min: 90}             --executor slurm: the time limit per run (else derived)
    tune:      {space: ..., trials: 6}    tune every arm on dev first (tc_lib.grid.tuning)
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

from ..config import DEFAULT_OUTPUT_DIR, RunConfig
from ..errors import ConfigError
from .params_yaml import MAX_DEPTH, load_yaml, strict_loader

GRID_KEYS = ("defaults", "axes", "overrides", "grids", "slurm", "tune")
SLURM_KEYS = {"time_min": "the time limit per run in minutes, an integer >= 1"}
MAX_RUNS = 100_000  # a larger grid is refused before it is expanded


def _mapping(path: Path, where: str, value: Any) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: '{where}' must be a mapping")
    return value


MAX_BYTES = 1_000_000  # a params file larger than this is refused before it is parsed
def read_spec(path: Path) -> dict:
    """The params file as a mapping; every problem is one ConfigError naming the file (and line)."""
    import yaml

    if path.is_dir():
        raise ConfigError(f"{path}: is a folder, not a params file")
    if not path.exists():
        raise ConfigError(f"{path}: params file not found")
    if not path.is_file():  # a FIFO would block the read, a device never end it
        raise ConfigError(f"{path}: not a regular file (a pipe, socket or device); expected a YAML params file")
    try:
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size:,} bytes; a params file is at most {MAX_BYTES:,}")
        raw = path.read_bytes()
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it ({err.strerror})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw[:err.start].count(b"\n") + 1
        raise ConfigError(f"{path} line {line}: not UTF-8 text") from None
    try:
        spec = load_yaml(path, text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML ({getattr(err, 'problem', err)})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested more than {MAX_DEPTH} levels deep") from None
    if spec is None:
        raise ConfigError(f"{path}: the params file is empty; expected a mapping with {', '.join(GRID_KEYS)}")
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: expected a mapping with keys {', '.join(GRID_KEYS)}")
    unknown = sorted(set(map(str, spec)) - set(GRID_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {', '.join(unknown)}; expected {', '.join(GRID_KEYS)}")
    if "grids" in spec and "axes" in spec:
        raise ConfigError(f"{path}: give either 'axes' or 'grids', not both")
    return spec


def _grids(path: Path, spec: dict) -> list[tuple[str, dict, dict]]:
    """(label, defaults, axes) per product, checked; the grid's size is checked against MAX_RUNS."""
    defaults = _mapping(path, "defaults", spec.get("defaults"))
    grids = spec.get("grids", [{"axes": spec.get("axes")}])
    if not isinstance(grids, list) or not grids:
        raise ConfigError(f"{path}: 'grids' must be a non-empty list of mappings")
    out, total = [], 0
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
        total += math.prod(len(v) for v in axes.values())
        if total > MAX_RUNS:
            raise ConfigError(f"{path}: the grid has more than {MAX_RUNS:,} runs ({label} alone: "
                              f"{math.prod(len(v) for v in axes.values()):,}); split it into smaller grids")
        out.append((label, {**defaults, **_mapping(path, f"{label}.defaults", grid.get("defaults"))}, axes))
    return out


def _check_overrides(path: Path, overrides: dict, grids: list[tuple[str, dict, dict]]) -> None:
    """Every override names a RunConfig field and a value that field takes somewhere in the grid."""
    fields = RunConfig.field_names()
    for field, table in overrides.items():
        if field not in fields:
            raise ConfigError(f"{path}: overrides.{field}: unknown field; valid fields: {', '.join(fields)}")
        taken = {_key(v) for _, base, axes in grids for v in axes.get(field, [base.get(field)])}
        for value, settings in _mapping(path, f"overrides.{field}", table).items():
            axis = sorted({name for name in _mapping(path, f"overrides.{field}.{value}", settings)
                           for _, _, axes in grids if name in axes})
            if axis:
                raise ConfigError(f"{path}: overrides.{field}.{value} sets {', '.join(axis)}, an axis of this grid: it "
                                  "would replace the axis values (3 seeds would become 1 run); move it into the axes")
            if value not in taken:
                raise ConfigError(f"{path}: overrides.{field}.{value}: {field} never takes the value {value!r} "
                                  f"in this grid (it takes: {', '.join(map(str, sorted(taken, key=str)))})")


def check_options(values: dict[str, Any], *, source: str) -> None:
    """A method option given for a method it does not configure (lora_r for full) would make run ids that
    differ and computations that do not: refused, as the memory estimator does."""
    from ..methods import METHODS, OPTION_DEFAULTS

    method = values.get("method", RunConfig.method)
    own = METHODS[method].options if method in METHODS else ()
    foreign = [key for key in values if key in OPTION_DEFAULTS and key not in own]
    if foreign:
        raise ConfigError(f"{source}: {', '.join(foreign)} does not apply to method {method} (its options: "
                          f"{', '.join(own) or 'none'}); set it for the methods it configures, e.g. overrides: "
                          f"{{method: {{lora: {{{foreign[0]}: ...}}}}}}")


def iter_grid(path: str | Path, *, output_dir: str | None = None) -> Iterator[RunConfig]:
    """Expand a grid file into validated RunConfigs, one at a time (a dry run streams); errors name the
    file and the key. A relative output_dir is resolved against the current directory (by RunConfig), so
    the notebook (run in notebooks/) writes where the caller expects."""
    path = Path(path)
    spec = read_spec(path)
    overrides = _mapping(path, "overrides", spec.get("overrides"))
    grids = _grids(path, spec)
    _check_overrides(path, overrides, grids)
    seen = set()
    for label, base, axes in grids:
        for combo in itertools.product(*axes.values()):
            point = dict(zip(axes, combo))
            values: dict[str, Any] = {**base, **point}
            for field, table in overrides.items():
                values.update(_mapping(path, f"overrides.{field}.{_key(values.get(field))}",
                                       table.get(_key(values.get(field)))))
            where = ", ".join(f"{k}={v}" for k, v in point.items())
            folder = output_dir if output_dir is not None else values.get("output_dir", DEFAULT_OUTPUT_DIR)
            if not isinstance(folder, str) or not folder.strip():
                raise ConfigError(f"{path} ({where}): field 'output_dir': expected a non-empty path, got {folder!r}")
            values["output_dir"] = folder
            check_options(values, source=f"{path} ({where})")
            cfg = RunConfig.from_dict(values, source=f"{path} ({where})")
            if cfg.run_id not in seen:
                seen.add(cfg.run_id)
                yield cfg


def given_output_dirs(path: str | Path) -> set[str]:
    """The output folders a grid file names, as written (before resolving against the current directory)."""
    path = Path(path)
    return {str(folder) for _, base, axes in _grids(path, read_spec(path))
            for folder in axes.get("output_dir", [base.get("output_dir", DEFAULT_OUTPUT_DIR)])}


def slurm_settings(path: str | Path) -> dict[str, Any]:
    """The params file's `slurm:` section, checked (keys of SLURM_KEYS)."""
    path = Path(path)
    section = _mapping(path, "slurm", read_spec(path).get("slurm"))
    unknown = sorted(set(map(str, section)) - set(SLURM_KEYS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) slurm.{', slurm.'.join(unknown)}; expected {', '.join(SLURM_KEYS)}")
    minutes = section.get("time_min")
    if minutes is not None and (not isinstance(minutes, int) or isinstance(minutes, bool) or minutes < 1):
        raise ConfigError(f"{path}: slurm.time_min: expected {SLURM_KEYS['time_min']}, got {minutes!r}")
    return section


def load_grid(path: str | Path, *, output_dir: str | None = None) -> list[RunConfig]:
    return list(iter_grid(path, output_dir=output_dir))


def _key(value: Any) -> Any:
    """A field value as a hashable key: a list (of datasets, of modules) as 'a+b'; a mapping as its text."""
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    return repr(value) if isinstance(value, dict) else value


def _same(a: Any, b: Any) -> bool:
    """Two field values are equal: numbers by value (1e-4 == 0.0001), the rest as keys."""
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in (a, b))
    return a == b if numbers else str(_key(a)) == str(_key(b))


def select(configs: Iterable[RunConfig], only: dict[str, Any]) -> Iterator[RunConfig]:
    """The configs whose fields equal every `only` value (a list dataset compares as 'a+b'), lazily."""
    fields = set(RunConfig.__dataclass_fields__)
    for key in only:
        if key not in fields:
            raise ConfigError(f"--only {key}: unknown field; valid fields: {', '.join(sorted(fields))}")
    return (c for c in configs if all(_same(getattr(c, k), v) for k, v in only.items()))


def parse_assignments(items: Sequence[str], *, option: str = "--set") -> dict[str, Any]:
    """key=value pairs; values are read like the params file's (1e-4 a number, null, [query, value])."""
    import yaml

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"{option} {item!r}: expected key=value")
        try:
            out[key.strip()] = yaml.load(value, Loader=strict_loader()) if value.strip() else None  # noqa: S506
        except yaml.YAMLError as err:
            raise ConfigError(f"{option} {item!r}: cannot parse the value ({err.__class__.__name__})") from None
    return out
