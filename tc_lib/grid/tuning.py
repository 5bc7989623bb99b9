"""A tuned grid: the params file's `tune:` section. Every arm gets the same trials from a seeded random
search (or all values of a list space), scored on dev only; then the seed axis runs at each arm's
chosen setting. Both stages are ordinary runs (records, leases, resume, status, every executor).

    tune:
      space: {learning_rate: {log_uniform: [1.0e-5, 1.0e-2]}}   # or a list: [1.0e-4, 3.0e-4, 1.0e-3]
      trials: 6              # per arm; a list space means all of its values
      seeds: [1]             # tuning seeds: a trial's score is its mean dev macro-F1 over them
      per: [dataset, model, method]   # the fields that make a tuning group (default)
      sampler_seed: 0        # the random search's seed: the same N settings for every arm

A trial whose settings and seed equal a final run is that run (one run id), executed once.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from ..config import ARM_EXCLUDED, RunConfig, arm_fields
from ..errors import ConfigError
from ..methods import METHODS, REFERENCES
from ..results import load_record
from ..tuned import best_trial
from .params import iter_grid, read_spec, select
from .tune_spec import TuneSpec, read_tune


def applies(cfg: RunConfig, spec: TuneSpec) -> bool:
    """Whether the space configures this run: no learning rate for the TF-IDF reference, LoRA options only
    for LoRA; a run it does not apply to runs once, untuned, in the first stage."""
    if cfg.method in REFERENCES:
        return False
    options = {o for m in METHODS.values() for o in m.options}
    return all(f not in options or f in METHODS[cfg.method].options for f in spec.space)


@dataclass
class Group:
    """The final runs that share one tuning (the `per` fields), their trials, and the choice."""
    label: str
    finals: list[RunConfig]  # untuned: the seed axis at the grid's settings
    trials: list[tuple[int, dict[str, Any], RunConfig]]  # (trial index, settings, config) per tuning seed

    def choose(self) -> tuple[dict[str, Any] | None, str, list[dict[str, Any]]]:
        """(chosen settings or None, why, per-trial scores): the trial with the best mean dev score over
        the tuning seeds; None while a trial has no successful record."""
        scores, missing = [], []
        for index, point in {i: p for i, p, _ in self.trials}.items():
            values = []
            for i, _, cfg in self.trials:
                if i != index:
                    continue
                record = load_record(cfg.run_dir)
                score = record.selection.score if record else None
                ok = record and record.status == "success" and record.config_hash == cfg.config_hash
                if ok and score is not None:
                    values.append(score)
                else:
                    missing.append(f"trial {index} seed {cfg.seed} {('(' + record.status + ')') if record else '(not run)'}")
            scores.append({"trial": index, **point, "dev_score": sum(values) / len(values) if values else None})
        if missing:
            return None, f"waits for {len(missing)} trial run(s): {', '.join(missing[:3])}", scores
        chosen = best_trial({s["trial"]: s["dev_score"] for s in scores})
        best = next(s for s in scores if s["trial"] == chosen)
        return ({k: best[k] for k in self.trials[0][1]}, f"trial {best['trial']}, mean dev macro-F1 "
                f"{best['dev_score']:.4f}", scores)


@dataclass
class Plan:
    spec: TuneSpec | None
    groups: list[Group]
    untuned: list[RunConfig]  # the runs of a grid without `tune:`, or those the space does not apply to

    def first_stage(self) -> list[RunConfig]:
        """The trials (deduplicated) and the untuned runs: what can run before any choice is made."""
        out, seen = [], set()
        for cfg in [*self.untuned, *(c for g in self.groups for _, _, c in g.trials)]:
            if cfg.run_id not in seen:
                seen.add(cfg.run_id)
                out.append(cfg)
        return out

    def final_stage(self) -> tuple[list[RunConfig], list[str]]:
        """(final runs at each ready group's chosen settings, a line per group still waiting)."""
        finals, waiting = [], []
        for group in self.groups:
            chosen, why, _ = group.choose()
            if chosen is None:
                seeds = ", ".join(str(c.seed) for c in group.finals)
                waiting.append(f"{group.label}: {len(group.finals)} final run(s) (seeds {seeds}); {why}")
                continue
            tuning = json.dumps({"stage": "final", **self.spec.to_json(), "chosen": chosen, "why": why})
            finals += [dataclasses.replace(cfg, **chosen, tuning=tuning) for cfg in group.finals]
        return finals, waiting


def stage_note(cfg: RunConfig) -> str:
    """What a run is in a tuned grid, for listings: `tune trial 2/6 learning_rate=0.000312` or `final ...`."""
    from ..config import tuning_info

    info = tuning_info(cfg.to_dict())
    settings = " ".join(f"{f}={getattr(cfg, f):g}" if isinstance(getattr(cfg, f), float) else f"{f}={getattr(cfg, f)}"
                        for f in info.get("space", {}))
    if info.get("stage") == "tune":
        return f"tune trial {info['trial']}/{info['trials']} {settings}"
    return f"final {settings} (chosen: {info['why']})" if info else "untuned"


def tune_spec(path: str | Path) -> TuneSpec | None:
    path = Path(path)
    return read_tune(path, read_spec(path))


def _group_key(cfg: RunConfig, per: Iterable[str]) -> str:
    return ", ".join(f"{f}={'+'.join(v) if isinstance(v := getattr(cfg, f), tuple) else v}" for f in per)


def load_plan(path: str | Path, *, output_dir: str | None = None, only: dict[str, Any] | None = None) -> Plan:
    """The grid of `path` as stages. Without `tune:` every run is in the first stage. `only` filters the
    final runs (and the untuned ones); a group keeps all of its trials, which its choice needs."""
    path = Path(path)
    spec = read_tune(path, read_spec(path))
    configs = list(iter_grid(path, output_dir=output_dir))
    if spec is None:
        return Plan(None, [], list(select(configs, only or {})))
    kept = {c.run_id for c in select(configs, only or {})}
    grouped: dict[str, list[RunConfig]] = {}
    untuned = []
    for cfg in configs:
        if not applies(cfg, spec):
            untuned += [cfg] if cfg.run_id in kept else []
            continue
        if cfg.selection != "dev":
            raise ConfigError(f"{path} ({cfg.run_id}): a tuned run is chosen on dev: set selection: dev (trials are "
                              "scored on a dev split carved from train, never on test)")
        grouped.setdefault(_group_key(cfg, spec.per), []).append(cfg)
    groups = []
    for label, finals in grouped.items():
        arms = {json.dumps(_arm_without(c, spec), sort_keys=True) for c in finals}
        if len(arms) > 1:
            a, b = (json.loads(x) for x in sorted(arms)[:2])
            differ = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
            raise ConfigError(f"{path}: the tuning group {label} holds arms that differ in {', '.join(differ)}; "
                              f"add {differ[0]} to tune.per so that each gets its own tuning")
        if not any(c.run_id in kept for c in finals):
            continue
        base = finals[0]
        trials = []
        for index, point in enumerate(spec.points(), start=1):
            tuning = json.dumps({"stage": "tune", "trial": index, **spec.to_json(), "group": label})
            trials += [(index, point, dataclasses.replace(base, seed=seed, tuning=tuning, **point))
                       for seed in spec.seeds]
        groups.append(Group(label, [c for c in finals if c.run_id in kept], trials))
    return Plan(spec, groups, untuned)


def _arm_without(cfg: RunConfig, spec: TuneSpec) -> dict[str, Any]:
    return {k: v for k, v in arm_fields(cfg.to_dict()).items() if k not in spec.space and k not in ARM_EXCLUDED}


def grid_run_ids(path: str | Path, *, output_dir: str | None = None) -> set[str]:
    """The run ids a grid file stands for: its runs, or for a tuned grid its trials, untuned runs and the
    final runs at the settings chosen so far (read from the records under output_dir)."""
    plan = load_plan(path, output_dir=output_dir)
    finals, _ = plan.final_stage() if plan.spec is not None else ([], [])
    return {c.run_id for c in [*plan.first_stage(), *finals]}
