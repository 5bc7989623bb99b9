"""The tuned grid (params `tune:`): trials on dev with one budget per arm, final seeds at the chosen
setting, one execution per run; the report's tuning section; the statistics beside the comparisons."""

from __future__ import annotations

import itertools
import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from planted import events, plant_grid, write_fast_notebook
from tc_lib.config import RunConfig
from tc_lib.errors import ConfigError
from tc_lib.grid.local import run_grid
from tc_lib.grid.tuning import load_plan, tune_spec
from tc_lib.report import stats

# dev and test macro-F1 per method and learning rate (plus 0.01 x seed). Full: dev prefers 1e-3 while test
# would prefer 1e-4 (the choice must read dev); LoRA: dev prefers the top of the range (an edge).
SCORES = {"full": {"0.0001": {"dev": 0.50, "test": 0.70}, "0.001": {"dev": 0.60, "test": 0.50},
                   "0.01": {"dev": 0.30, "test": 0.20}},
          "lora": {"0.0001": {"dev": 0.30, "test": 0.30}, "0.001": {"dev": 0.50, "test": 0.55},
                   "0.01": {"dev": 0.60, "test": 0.58}}}
PLANTED = """
import json, os
from tc_lib.config import RunConfig
from tc_lib.record import DataInfo, Selection, Timing
from tc_lib.results import finish_run, start_run, write_history

cfg = RunConfig.from_namespace(globals())
with open(os.environ["TC_TEST_LOG"], "a") as fh:
    fh.write(f"start {cfg.run_id} {os.getpid()}\\n")
planted = json.loads(os.environ["TC_TEST_SCORES"])[cfg.method][f"{cfg.learning_rate:g}"]
bump = 0.01 * cfg.seed
dev, test = planted["dev"] + bump, planted["test"] + bump
run_dir, record = start_run(cfg)
scores = lambda f1: {"loss": 1 - f1, "accuracy": f1, "micro_f1": f1, "macro_f1": f1}
record.metrics = scores(test)
record.params = {"total": 1000, "trainable": 1000 if cfg.method == "full" else 10, "trainable_no_head": 5}
record.selection = Selection(rule="dev", chosen_epoch=1, score=dev, dev_size=10)
record.data = DataInfo(label_names=["a", "b"], train_size=100, test_size=50, train_split_size=110,
                       train_label_counts=[50, 50], majority_floor={"majority_class": 0, "accuracy": 0.5, "macro_f1": 0.33})
record.timing = Timing(wall_time_s=1.0, train_time_s=1.0, eval_time_s=0.1, train_samples_per_s=100.0)
write_history(run_dir, [{"epoch": 1, "train_loss": 0.5, "dev": scores(dev), "test": scores(test)}])
record.status = "success"
finish_run(run_dir, record)
"""
GRID = """defaults: {{output_dir: {runs}, selection: dev, epochs: 1}}
axes:
  method: [full, lora]
  seed: [1, 2]
tune:
  space: {{learning_rate: [1.0e-4, 1.0e-3, 1.0e-2]}}
  seeds: [1]
"""


@pytest.fixture
def tuned_grid(tmp_path, monkeypatch):
    runs = tmp_path / "runs"
    params = tmp_path / "tuned.yaml"
    params.write_text(GRID.format(runs=runs))
    notebook = write_fast_notebook(tmp_path / "planted.ipynb", PLANTED)
    log = tmp_path / "executions.log"
    log.touch()
    monkeypatch.setenv("TC_TEST_LOG", str(log))
    monkeypatch.setenv("TC_TEST_SCORES", json.dumps(SCORES))
    return params, notebook, log, runs


def _records(runs: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(runs.glob("*/metrics.json"))]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tc_lib", *args], capture_output=True, text=True, timeout=600)


@pytest.mark.notebook
def test_tuned_grid_chooses_on_dev_runs_each_run_once_and_resumes_into_the_final_stage(tuned_grid, real_data):
    params, notebook, log, runs = tuned_grid
    before = _cli("run", str(params), "--dry-run")
    assert before.returncode == 0, before.stderr
    assert "stage 1: 6 runs" in before.stdout and before.stdout.count("tune trial ") == 6
    assert "after tuning  dataset=restaurant_sup, model=minilm, method=full: 2 final run(s) (seeds 1, 2)" in before.stdout

    # stage 1 alone, as a command killed between the stages would have left it
    plan = load_plan(params)
    outcome = run_grid(plan.first_stage(), notebook=notebook, jobs=2)
    assert len(outcome.succeeded) == 6 and not outcome.failed
    trials = [r for r in _records(runs) if r["stage"] == "tune"]
    assert len(trials) == 6 and sorted((r["config"]["method"], r["trial"]) for r in trials) == [
        (m, t) for m in ("full", "lora") for t in (1, 2, 3)]

    again = _cli("run", str(params), "--notebook", str(notebook), "--jobs", "2")
    assert again.returncode == 0, again.stderr
    stage1, stage2 = again.stderr.split("stage 2: the final runs")
    assert "done: 0 succeeded, 6 skipped, 0 failed" in stage1 and "done: 2 succeeded, 2 skipped, 0 failed" in stage2

    records = _records(runs)
    started = Counter(line[1] for line in events(log, "start"))
    assert len(started) == len(records) == 8 and set(started.values()) == {1}  # the shared runs ran once
    for method in ("full", "lora"):
        mine = [r for r in records if r["config"]["method"] == method]
        dev = {r["config"]["learning_rate"]: r["selection"]["score"] for r in mine if r["stage"] == "tune"}
        test = {r["config"]["learning_rate"]: r["metrics"]["macro_f1"] for r in mine if r["stage"] == "tune"}
        chosen = max(dev, key=dev.get)  # recomputed from the trial records
        finals = [r for r in mine if r["stage"] == "final"]
        assert [r["config"]["seed"] for r in finals] == [2] and finals[0]["config"]["learning_rate"] == chosen
        shared = [r for r in mine if r["config"]["seed"] == 1 and r["config"]["learning_rate"] == chosen]
        assert len(shared) == 1 and shared[0]["stage"] == "tune"  # the seed-1 final run is that trial
        if method == "full":
            assert max(test, key=test.get) != chosen == 1e-3  # test would have chosen otherwise
        else:
            assert chosen == 1e-2
    assert json.loads(finals[0]["config"]["tuning"])["chosen"] == {"learning_rate": 1e-2}

    listed = _cli("run", str(params), "--dry-run")
    assert listed.returncode == 0 and "stage 2 (final, after tuning): 4 runs listed, 0 arm(s) waiting" in listed.stdout
    assert listed.stdout.count("done ") == 10 and "todo" not in listed.stdout
    status = _cli("status", str(params))
    assert "8 runs: 8 done" in status.stdout and "(tune trial 2/3 learning_rate=0.001;" in status.stdout

    from tc_lib.report.sections import Report
    from tc_lib.report.tuning_section import budget_curves, tuning_table
    from tc_lib.tuned import trial_table

    report = Report.load(runs, params=[str(params)])
    assert len(report.all_runs) == 8 and len(report.runs) == 4 and len(report.arms) == 2  # trials not chosen: not counted
    assert sorted(report.runs["learning_rate"].tolist()) == [1e-3, 1e-3, 1e-2, 1e-2]
    shown = tuning_table(trial_table(report.all_runs)).set_index("method")
    assert shown.loc["lora", "chosen"] == "learning_rate=0.01" and "high edge" in shown.loc["lora", "flags"]
    assert shown.loc["full", "chosen"] == "learning_rate=0.001" and "edge" not in shown.loc["full", "flags"]
    assert shown.loc["full", "dev"] == "0.6100" and shown.loc["full", "trials"] == "3 / 3"
    curve = budget_curves(trial_table(report.all_runs))
    full = curve[curve["line"] == "minilm · full"]["expected_max"].tolist()
    assert full == pytest.approx([np.mean([0.51, 0.61, 0.31]), (0.61 + 0.51 + 0.61) / 3, 0.61])
    compared = report.compared
    assert len(compared) == 1 and compared.loc[0, "n"] == 2


def test_tune_spec_is_checked_with_one_line_naming_the_key(tmp_path):
    def spec(text: str):
        path = tmp_path / "grid.yaml"
        path.write_text(text)
        return lambda: load_plan(path)

    base = "defaults: {selection: dev}\naxes: {method: [full, lora], seed: [1]}\n"
    cases = {
        "tune:\n  space: {learning_rate: {log_uniform: [0.01, 0.001]}}\n": "low < high",
        "tune:\n  space: {seed: [1, 2]}\n": "tune.space.seed: not a field a tuned grid searches",
        "tune:\n  space: {learning_rate: [1.0e-4, 1.0e-3]}\n  trials: 5\n": "the list space has 2 combinations",
        "tune:\n  space: {learning_rate: {uniform: [0.001, 0.01]}}\n  trials: 0\n": "tune.trials: expected an integer >= 1",
        "tune:\n  space: {learning_rate: [1.0e-4]}\n  colour: red\n": "unknown key(s) tune.colour",
        "tune:\n  space: {learning_rate: [1.0e-4]}\n  per: [seed]\n": "tune.per",
        "overrides: {method: {lora: {learning_rate: 1.0e-3}}}\ntune:\n  space: {learning_rate: [1.0e-4]}\n":
            "overrides.method.lora sets learning_rate, which tune.space searches",
    }
    for extra, message in cases.items():
        with pytest.raises(ConfigError, match=str(tmp_path / "grid.yaml") + ".*" + _escape(message)):
            spec(base + extra)()
    with pytest.raises(ConfigError, match="a tuned run is chosen on dev: set selection: dev"):
        spec("axes: {method: [full]}\ntune:\n  space: {learning_rate: [1.0e-4]}\n")()
    with pytest.raises(ConfigError, match="differ in max_train_samples; add max_train_samples to tune.per"):
        spec(base.replace("seed: [1]", "seed: [1], max_train_samples: [8, 16]")
             + "tune:\n  space: {learning_rate: [1.0e-4]}\n")()


def _escape(text: str) -> str:
    import re

    return re.escape(text)


def test_random_search_gives_every_arm_the_same_seeded_trials_and_the_references_run_untuned(tmp_path):
    path = tmp_path / "grid.yaml"
    path.write_text("defaults: {selection: dev, output_dir: " + str(tmp_path / "runs") + "}\n"
                    "grids:\n  - axes: {method: [full, lora, adapter], seed: [1, 2, 3]}\n"
                    "  - defaults: {model: tfidf}\n    axes: {method: [tfidf_lr], seed: [1]}\n"
                    "tune:\n  space: {learning_rate: {log_uniform: [1.0e-5, 1.0e-2]}}\n  trials: 6\n  seeds: [1, 2]\n")
    plan = load_plan(path)
    assert [c.method for c in plan.untuned] == ["tfidf_lr"] and len(plan.groups) == 3
    points = tune_spec(path).points()
    assert points == tune_spec(path).points() and len({p["learning_rate"] for p in points}) == 6
    assert all(1e-5 <= p["learning_rate"] <= 1e-2 and p["learning_rate"] == float(f"{p['learning_rate']:.3g}")
               for p in points)
    for group in plan.groups:
        assert [(i, c.seed, c.learning_rate) for i, _, c in group.trials] == [
            (i, s, p["learning_rate"]) for i, p in enumerate(points, start=1) for s in (1, 2)]
        assert all(c.selection == "dev" and json.loads(c.tuning)["stage"] == "tune" for _, _, c in group.trials)
    assert len(plan.first_stage()) == 1 + 3 * 6 * 2
    finals, waiting = plan.final_stage()
    assert finals == [] and len(waiting) == 3 and "waits for 12 trial run(s)" in waiting[0]
    assert "random search, sampler seed 0" in tune_spec(path).describe()
    # another sampler seed, other settings; every arm still shares them
    path.write_text(path.read_text() + "  sampler_seed: 7\n")
    assert tune_spec(path).points() != points


def test_expected_maximum_equals_the_mean_best_over_every_subset():
    scores = [0.42, 0.55, 0.31, 0.55, 0.60]
    by_hand = [np.mean([max(c) for c in itertools.combinations(scores, k)]) for k in range(1, 6)]
    assert stats.expected_max(scores) == pytest.approx(by_hand)
    assert stats.expected_max([0.7]) == [0.7]


def test_seed_planner_matches_statsmodels_and_the_bootstrap_brackets_the_mean():
    from statsmodels.stats.power import TTestPower

    sd, n = 0.02, 5
    plan = stats.seed_plan(sd_diff=sd, n=n, diff=0.012)
    assert plan["detectable"] == pytest.approx(TTestPower().solve_power(nobs=n, alpha=0.05, power=0.8) * sd, rel=1e-4)
    assert plan["n_needed"] == math.ceil(TTestPower().solve_power(effect_size=0.012 / sd, alpha=0.05, power=0.8))
    assert stats.seed_plan(sd_diff=sd, n=n, diff=0.0)["n_needed"] == math.inf
    assert math.isnan(stats.seed_plan(sd_diff=0.0, n=n)["detectable"])
    diff = np.array([0.01, 0.03, -0.005, 0.02, 0.015])
    ci = stats.bootstrap_diff(diff)
    assert ci["boot_low"] < diff.mean() < ci["boot_high"] and ci["boot_low"] > diff.min()
    assert stats.bootstrap_diff(diff) == ci  # a fixed generator: the same interval every render
    a = __import__("pandas").DataFrame({"seed": [1, 2, 3], "macro_f1": [0.6, 0.5, 0.7]})
    b = a.assign(macro_f1=[0.5, 0.55, 0.6])
    assert stats.paired(a, b)["p_a_better"] == pytest.approx(2 / 3)


@pytest.mark.slow
def test_plan_seeds_answers_from_pilot_records(tmp_path):
    plant_grid(tmp_path, {("minilm", "full"): [0.60, 0.64, 0.62], ("minilm", "lora"): [0.58, 0.63, 0.57]})
    out = _cli("plan-seeds", str(tmp_path), "--delta", "0.01")
    assert out.returncode == 0, out.stderr
    sd = float(np.std([0.60, 0.64, 0.62], ddof=1))
    expected = stats.seed_plan(sd_diff=math.sqrt(2) * sd, n=3, diff=0.01)
    assert f"sd {100 * sd:.2f} pts  detects >= {100 * expected['detectable']:.2f} pts" in out.stdout
    assert f"1.00 pts needs {int(expected['n_needed'])} seeds" in out.stdout
    assert "minilm · 全量微调 full vs minilm · LoRA  n=3  diff 2.67 pts" in out.stdout and "the observed gap needs" in out.stdout
    bad = _cli("plan-seeds", str(tmp_path), "--delta", "5")
    assert bad.returncode != 0 and bad.stderr.strip().count("\n") == 0 and "--delta 5" in bad.stderr
    lonely = tmp_path / "one"
    plant_grid(lonely, {("minilm", "full"): [0.6]})
    none = _cli("plan-seeds", str(lonely), "--delta", "0.01")
    assert none.returncode != 0 and "no arm with at least 2 successful seeds" in none.stderr


def test_a_record_names_its_stage():
    from tc_lib.results import new_record

    trial = RunConfig(selection="dev", tuning=json.dumps({"stage": "tune", "trial": 3, "trials": 6}))
    assert (new_record(trial, status="running").stage, new_record(trial, status="running").trial) == ("tune", 3)
    assert new_record(RunConfig(), status="running").stage == "final"
    assert trial.run_id == RunConfig(selection="dev").run_id  # the stage is not part of what a run computes
    with pytest.raises(ConfigError, match="tuning"):
        RunConfig(tuning=json.dumps({"stage": "tune", "trial": 1}))  # a trial without dev selection
