"""The calibration ledger: published CUDA memory measurements (published.yaml) beside the estimator's
figure of the same kind, with the error and the terms that dominate — `tc_lib memory ledger` and the
report's "how far to trust it" table.

What each kind is compared with:
  allocated average  W + G + O + inputs at the mean sequence length, plus what the source's loop keeps
                     alive between steps (its `outputs`: logits, and the KV cache transformers builds in
                     train mode) — a reading taken after optimizer.step(), before the next zero_grad()
  peak allocated     the estimator's peak at the longest sequence, plus the loop's held outputs, or the
                     evaluation phase (weights, gradients and states still alive plus the generation KV
                     cache) when that is larger
  peak reserved      that peak × (1 + ALLOCATOR_SLACK); torch's reserved figure excludes the CUDA context
Any other kind (a reserved average, a peak whose counter the source does not state) is listed with the
reason it is not modelled, never estimated.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError

LEDGER_FILE = Path(__file__).resolve().parent / "published.yaml"
UNITS = {"bytes": 1, "MB": 10 ** 6, "GB": 10 ** 9, "MiB": 2 ** 20, "GiB": 2 ** 30}
MODELLED_KINDS = ("allocated average", "peak allocated", "peak reserved")
KINDS = (*MODELLED_KINDS, "reserved average", "peak")
# Reserved = allocated × (1 + slack): the caching allocator rounds each block up (2 MiB granules above
# 1 MiB) and keeps freed blocks split. 5 % is the low end of the usual 5–10 %; it is not fitted to this
# ledger (at their peaks peft's runs reserve within a few % of the estimated allocation).
ALLOCATOR_SLACK = 0.05
ESTIMATE_KEYS = ("method", "options", "torch_dtype", "mixed_precision", "optimizer", "attention",
                 "gradient_checkpointing", "batch_size", "seq_len")
LOOP_KEYS = ("mean_seq_len", "holds_outputs", "kv_cache_in_outputs", "eval_generate")


@dataclass(frozen=True)
class Entry:
    id: str
    source: dict[str, str]
    hardware: str
    setting: dict[str, Any]
    kind: str
    value: float
    unit: str
    how: str
    not_modelled: str | None = None

    @property
    def published_bytes(self) -> float:
        return self.value * UNITS[self.unit]


def _fail(path: Path, where: str, what: str) -> None:
    raise ConfigError(f"{path}: {where}: {what}")


def _entry(path: Path, index: int, raw: Any) -> Entry:
    where = f"entry {index + 1}"
    if not isinstance(raw, dict):
        _fail(path, where, f"expected a mapping, got {type(raw).__name__}")
    where = f"entry {index + 1} ({raw.get('id', 'no id')})"
    for key in ("id", "source", "hardware", "setting", "figure"):
        if not raw.get(key):
            _fail(path, where, f"field '{key}' is missing")
    source, setting, figure = raw["source"], raw["setting"], raw["figure"]
    for name, value in (("source", source), ("setting", setting), ("figure", figure)):
        if not isinstance(value, dict):
            _fail(path, where, f"field '{name}' must be a mapping")
    for key in ("project", "path", "commit"):
        if not source.get(key):
            _fail(path, where, f"field 'source.{key}' is missing (where the figure is published, at which version)")
    for key in ("model", "method"):
        if not setting.get(key):
            _fail(path, where, f"field 'setting.{key}' is missing")
    for key in ("kind", "value", "unit", "how"):
        if figure.get(key) in (None, ""):
            _fail(path, where, f"field 'figure.{key}' is missing")
    if figure["kind"] not in KINDS:
        _fail(path, where, f"figure.kind must be one of {', '.join(KINDS)}, got {figure['kind']!r}")
    if figure["unit"] not in UNITS:
        _fail(path, where, f"figure.unit must be one of {', '.join(UNITS)}, got {figure['unit']!r}")
    if not isinstance(figure["value"], (int, float)) or isinstance(figure["value"], bool) or figure["value"] <= 0:
        _fail(path, where, f"figure.value must be a positive number, got {figure['value']!r}")
    not_modelled = raw.get("not_modelled")
    if not_modelled is None:
        if figure["kind"] not in MODELLED_KINDS:
            _fail(path, where, f"kind {figure['kind']!r} is not one the estimator models "
                               f"({', '.join(MODELLED_KINDS)}); give 'not_modelled' with the reason")
        missing = [k for k in ESTIMATE_KEYS if k not in setting]
        if figure["kind"] == "allocated average" and "mean_seq_len" not in setting:
            missing.append("mean_seq_len")
        if missing:
            _fail(path, where, f"setting lacks {', '.join(missing)} (needed to estimate it)")
        unknown = sorted(set(setting) - {"model", *ESTIMATE_KEYS, *LOOP_KEYS})
        if unknown:
            _fail(path, where, f"unknown setting field(s) {', '.join(unknown)}")
    return Entry(id=str(raw["id"]), source=source, hardware=str(raw["hardware"]), setting=setting,
                 kind=figure["kind"], value=float(figure["value"]), unit=figure["unit"], how=str(figure["how"]),
                 not_modelled=not_modelled)


def load_ledger(path: Path | str = LEDGER_FILE) -> list[Entry]:
    """The validated entries; a bad file is one ConfigError naming the line or the entry and field."""
    import yaml

    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ConfigError(f"{path}: cannot read it ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f"line {mark.line + 1}: " if mark is not None else ""
        raise ConfigError(f"{path}: {line}not valid YAML ({getattr(err, 'problem', None) or err})") from None
    if not isinstance(data, dict) or not isinstance(data.get("entries"), list) or not data["entries"]:
        raise ConfigError(f"{path}: expected a mapping with a non-empty list 'entries'")
    entries = [_entry(path, i, raw) for i, raw in enumerate(data["entries"])]
    seen: set[str] = set()
    for e in entries:
        if e.id in seen:
            raise ConfigError(f"{path}: entry id {e.id!r} appears twice")
        seen.add(e.id)
    return entries


def _element_size(setting: dict[str, Any]) -> int:
    # the activations' dtype: bf16 weights, or autocast over fp32 ones, give 2-byte logits and K/V
    return 2 if setting["torch_dtype"] == "bfloat16" or setting["mixed_precision"] != "no" else 4


def kv_cache_bytes(config: Any, *, tokens: int, element_size: int) -> int:
    """A transformers KV cache over `tokens` positions (batch × length): K and V per layer."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return tokens * config.num_hidden_layers * 2 * kv_heads * head_dim * element_size


def held_outputs_bytes(config: Any, *, batch_size: int, seq_len: int, element_size: int, kv_cache: bool) -> int:
    """What a loop that keeps `outputs = model(**batch)` alive holds: the logits (the weights' or
    autocast's dtype; the loss upcasts its own copy) and, with use_cache on, the KV cache."""
    logits = batch_size * seq_len * config.vocab_size * element_size
    return logits + (kv_cache_bytes(config, tokens=batch_size * seq_len, element_size=element_size) if kv_cache else 0)


@functools.lru_cache(maxsize=None)
def _estimate(model: str, seq_len: int, frozen: str):
    from .estimate import estimate

    setting = json.loads(frozen)
    return estimate(model, seq_len=seq_len, method=setting["method"], batch_size=setting["batch_size"],
                    torch_dtype=setting["torch_dtype"], mixed_precision=setting["mixed_precision"],
                    optimizer=setting["optimizer"], attention=setting["attention"],
                    gradient_checkpointing=setting["gradient_checkpointing"], **setting["options"])


def estimate_entry(entry: Entry) -> dict[str, Any]:
    """The estimator's figure of the entry's kind: {"estimated": bytes, "phase": str, "terms": {name: bytes}}."""
    from .configs import load_config

    s = entry.setting
    frozen = json.dumps({k: s[k] for k in ESTIMATE_KEYS}, sort_keys=True)
    config = load_config(s["model"])
    size = _element_size(s)
    length = s["mean_seq_len"] if entry.kind == "allocated average" else s["seq_len"]
    b = _estimate(s["model"], length, frozen)
    held = held_outputs_bytes(config, batch_size=s["batch_size"], seq_len=length, element_size=size,
                              kv_cache=bool(s.get("kv_cache_in_outputs"))) if s.get("holds_outputs") else 0
    steady = {"W weights": b.weights, "G gradients": b.gradients, "O optimizer states": b.optimizer_states,
              "inputs": b.inputs, "held outputs": held}
    if entry.kind == "allocated average":
        return {"estimated": sum(steady.values()), "phase": f"after optimizer.step (mean length {length})",
                "terms": steady}
    if b.peak_phase == "optimizer step":
        training = {**steady, "T step temporaries": b.optimizer_temporaries}
    else:  # forward/backward: the gradients produced so far are among the transients
        training = {"W weights": b.weights, "O optimizer states": b.optimizer_states, "inputs": b.inputs,
                    "A activations": b.activations + b.autocast_copies, "Λ logits/loss": b.logits_loss,
                    "X transients": b.transients, "held outputs": held}
    phases = {f"training {b.peak_phase} (length {length})": training}
    generate = s.get("eval_generate")
    if generate:
        kv = kv_cache_bytes(config, tokens=generate["batch_size"] * generate["max_length"], element_size=size)
        phases[f"evaluation generate ({generate['batch_size']}×{generate['max_length']})"] = \
            {**steady, "KV cache (generate)": kv}
    phase = max(phases, key=lambda name: sum(phases[name].values()))
    allocated = sum(phases[phase].values())
    terms = dict(phases[phase])
    if entry.kind == "peak reserved":
        terms["allocator slack"] = round(allocated * ALLOCATOR_SLACK)
    return {"estimated": sum(terms.values()), "phase": phase, "terms": terms}


def setting_text(setting: dict[str, Any]) -> str:
    """The setting behind a figure, in one line (what the report shows beside each number)."""
    parts = [str(setting["model"]), str(setting["method"])]
    parts += [f"{k}={','.join(v) if isinstance(v, list) else v}" for k, v in (setting.get("options") or {}).items()]
    if "torch_dtype" in setting:
        parts.append(f"weights {setting['torch_dtype']}, autocast {setting['mixed_precision']}, {setting['optimizer']}")
    if "batch_size" in setting:
        mean = f" (mean {setting['mean_seq_len']})" if "mean_seq_len" in setting else ""
        parts.append(f"batch {setting['batch_size']} × ≤{setting['seq_len']}{mean}")
    if setting.get("gradient_checkpointing"):
        parts.append("checkpointing")
    if setting.get("tricks"):
        parts.append(str(setting["tricks"]))
    return " · ".join(parts)


def ledger_rows(path: Path | str = LEDGER_FILE) -> list[dict[str, Any]]:
    """One row per entry: published and estimated bytes, error %, dominant terms, or why not modelled."""
    rows = []
    for e in load_ledger(path):
        row = {"id": e.id, "project": e.source["project"], "path": e.source["path"], "commit": e.source["commit"],
               "hardware": e.hardware, "model": e.setting["model"], "method": e.setting["method"],
               "setting": setting_text(e.setting), "kind": e.kind,
               "published": e.published_bytes, "published_as": f"{e.value:g} {e.unit}",
               # how tables show it: the source's own unit, raw bytes as decimal GB (as the sources print)
               "published_shown": f"{e.value:g} {e.unit}" if e.unit != "bytes" else gb(e.published_bytes),
               "how": e.how,
               "estimated": None, "error %": None, "phase": None, "dominant": [], "not_modelled": e.not_modelled}
        if e.not_modelled is None:
            try:
                result = estimate_entry(e)
            except ConfigError as err:  # an unknown model or a bad method option: name the entry too
                raise ConfigError(f"{path}: entry {e.id}: {err}") from None
            terms = sorted(result["terms"].items(), key=lambda kv: -kv[1])
            row.update(estimated=result["estimated"], phase=result["phase"],
                       **{"error %": 100 * (result["estimated"] - e.published_bytes) / e.published_bytes},
                       dominant=[[name, nbytes] for name, nbytes in terms[:3] if nbytes > 0])
        rows.append(row)
    return rows


def gb(nbytes: float) -> str:
    return f"{nbytes / 1e9:.2f} GB"


def format_ledger(rows: list[dict[str, Any]]) -> str:
    lines = [f"{'entry':<36}{'kind':<19}{'published':>12}{'estimated':>12}{'error':>9}  dominant terms (GB)"]
    for r in rows:
        if r["not_modelled"] is None:
            dominant = ", ".join(f"{name} {nbytes / 1e9:.1f}" for name, nbytes in r["dominant"])
            lines.append(f"{r['id']:<36}{r['kind']:<19}{r['published_shown']:>12}{gb(r['estimated']):>12}"
                         f"{r['error %']:>+8.1f}%  {dominant}")
        else:
            lines.append(f"{r['id']:<36}{r['kind']:<19}{r['published_shown']:>12}{'—':>12}{'':>9}  not modelled")
    lines.append("")
    lines += [f"not modelled: {r['id']}: {r['not_modelled']}" for r in rows if r["not_modelled"] is not None]
    lines.append(f"(peak reserved = estimated peak × {1 + ALLOCATOR_SLACK:.2f} allocator slack; torch's reserved "
                 "figures exclude the CUDA context, so none is added. Sources: tc_lib/memory/published.yaml)")
    return "\n".join(lines)
