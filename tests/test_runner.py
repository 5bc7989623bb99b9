"""Grid files and the papermill runner, through real kernels."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tc_lib import grid as runner
from tc_lib.errors import ConfigError
from tc_lib.results import load_record

pytestmark = pytest.mark.notebook
REPO = Path(__file__).resolve().parents[1]


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_shipped_grids_expand():
    counts = {name: len(runner.load_grid(REPO / "params" / f"{name}.yaml"))
              for name in ("smoke", "quick", "cpu_full", "paper", "data_efficiency")}
    assert counts == {"smoke": 4, "quick": 27 + 6, "cpu_full": 90, "paper": 45 + 30, "data_efficiency": 63}
    quick = runner.load_grid(REPO / "params" / "quick.yaml")
    weighted = {(c.dataset, c.class_weights) for c in quick}  # the imbalanced two, encoders and reference alike
    assert weighted == {("restaurant_sup", "balanced"), ("acl_sup", "balanced"), ("agnews_sup", "none")}
    assert {(c.dataset, c.epochs) for c in quick if c.method != "tfidf_lr"} == {
        ("restaurant_sup", 3), ("acl_sup", 3), ("agnews_sup", 2)}
    reference = {c.max_train_samples for c in quick if c.method == "tfidf_lr"}
    assert reference == {256, None} and {c.max_train_samples for c in quick if c.method != "tfidf_lr"} == {256}
    paper = runner.load_grid(REPO / "params" / "paper.yaml")
    assert {c.model for c in paper if c.method != "full"} == {"roberta-base"}


@pytest.mark.parametrize("name,groups,trials", [("quick", 9, 3), ("paper", 15, 6)])
def test_the_profiles_tune_every_encoder_arm_on_dev_with_one_budget(name, groups, trials, tmp_path):
    from tc_lib.grid.tuning import load_plan

    plan = load_plan(REPO / "params" / f"{name}.yaml", output_dir=str(tmp_path))
    assert len(plan.groups) == groups and all(c.method == "tfidf_lr" for c in plan.untuned)
    settings = {tuple(p["learning_rate"] for _, p, _ in g.trials) for g in plan.groups}
    assert len(settings) == 1 and len(next(iter(settings))) == trials  # the same trials for every arm
    assert {c.selection for g in plan.groups for _, _, c in g.trials} == {"dev"}
    if name == "quick":
        assert next(iter(settings)) == (2e-4, 1e-3, 5e-3)


@pytest.mark.parametrize("text,pattern", [
    ("axes:\n  seed: [1, 2\n", r"grid.yaml line \d+: invalid YAML"),
    ("axis:\n  seed: [1]\n", r"unknown key\(s\) axis; expected defaults, axes, overrides, grids"),
    ("axes:\n  seed: 1\n", r"axes.seed must be a non-empty list"),
    ("axes:\n  sed: [1]\n", r"grid.yaml \(sed=1\): unknown field\(s\) sed"),
    ("axes:\n  method: [full, nosuch]\n", r"grid.yaml \(method=nosuch\): field 'method': expected full \| lora"),
    ("defaults: [1]\n", r"'defaults' must be a mapping"),
])
def test_grid_errors_name_file_and_key(tmp_path, text, pattern):
    with pytest.raises(ConfigError, match=pattern):
        runner.load_grid(write(tmp_path / "grid.yaml", text))


def test_cli_errors_and_dry_run(tmp_path):
    grid = write(tmp_path / "grid.yaml", "axes:\n  method: [full, lora]\n  seed: [1, 2]\n")
    run = lambda *a: subprocess.run([sys.executable, "-m", "tc_lib", "run", *a], capture_output=True, text=True,
                                    timeout=120)
    out = run(str(grid), "--dry-run", "--only", "method=lora", "--output-dir", str(tmp_path / "runs"))
    assert out.returncode == 0 and out.stdout.count("todo") == 2 and "_lora_" in out.stdout
    for args, pattern in [((str(tmp_path / "none.yaml"),), "params file not found"),
                          ((str(grid), "--only", "colour=red"), "--only colour: unknown field"),
                          ((str(grid), "--only", "method=prefix"), "no runs left after --only")]:
        out = run(*args)
        assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1 and pattern in out.stderr


@pytest.fixture
def grid_file(tmp_path, tiny_bert, real_data):
    """Two good runs of a tiny model on real data and one that fails inside the notebook."""
    return write(tmp_path / "grid.yaml", f"""
defaults:
  dataset: acl_sup
  epochs: 1
  max_train_samples: 16
  max_seq_length: 32
  output_dir: {tmp_path / 'runs'}
grids:
  - axes:
      model: [{tiny_bert}]
      method: [full, lora]
  - axes:
      model: [{tmp_path / 'no-such-model'}]
""")


def test_runner_records_skips_and_isolates_failures(grid_file, tmp_path):
    configs = runner.load_grid(grid_file)
    outcome = runner.run_grid(configs, jobs=2)  # parallel workers; the rerun below is sequential
    assert len(outcome.succeeded) == 2 and len(outcome.failed) == 1 and not outcome.skipped
    failed_id = outcome.failed[0][0]
    rec = load_record(tmp_path / "runs" / failed_id)
    assert rec.status == "failed" and "cannot load it" in rec.error.message
    assert (tmp_path / "runs" / failed_id / "train.ipynb").is_file()  # kept for inspection
    for run_id in outcome.succeeded:
        folder = tmp_path / "runs" / run_id
        assert load_record(folder).status == "success"
        executed = json.loads((folder / "train.ipynb").read_text())
        tags = [c["metadata"].get("tags", []) for c in executed["cells"]]
        assert ["injected-parameters"] in tags  # papermill injected the resolved config
    again = runner.run_grid(configs)
    assert sorted(again.skipped) == sorted(outcome.succeeded) and len(again.failed) == 1  # failures retried
    record_before = load_record(tmp_path / "runs" / failed_id)
    cli = subprocess.run([sys.executable, "-m", "tc_lib", "run", str(grid_file), "--only", f"model={tmp_path}/no-such-model"],
                         capture_output=True, text=True, timeout=300)
    # through the command line the preflight finds the missing model: nothing runs, the record stays as it was
    assert cli.returncode == 2 and "no run was started" in cli.stderr and "no-such-model" in cli.stderr
    assert load_record(tmp_path / "runs" / failed_id) == record_before


def test_killed_run_is_redone(tiny_bert, real_data, tmp_path):
    grid = write(tmp_path / "grid.yaml", f"""
defaults: {{model: {tiny_bert}, dataset: acl_sup, epochs: 3, max_train_samples: 64, max_seq_length: 32,
           output_dir: {tmp_path / 'runs'}}}
axes: {{seed: [1]}}
""")
    (cfg,) = runner.load_grid(grid)
    proc = subprocess.Popen([sys.executable, "-m", "tc_lib", "run", str(grid)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    record = tmp_path / "runs" / cfg.run_id / "metrics.json"
    deadline = time.time() + 240
    while time.time() < deadline and not (record.exists() and json.loads(record.read_text())["status"] == "running"):
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the runner and its kernel, mid-run
    proc.wait(timeout=30)
    assert load_record(record.parent).status == "running"  # never a torn file, never "success"
    assert not runner.is_done(cfg)
    outcome = runner.run_grid([cfg])
    assert outcome.succeeded == [cfg.run_id] and load_record(record.parent).status == "success"


def test_smoke_grid_through_the_cli(real_data, tmp_path):
    """params/smoke.yaml as a user runs it: real MiniLM, four runs, then a rerun that skips them all."""
    out_dir = tmp_path / "runs"
    cmd = [sys.executable, "-m", "tc_lib", "run", str(REPO / "params" / "smoke.yaml"), "--output-dir", str(out_dir)]
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert first.returncode == 0, first.stderr[-2000:]
    assert "done: 4 succeeded, 0 skipped, 0 failed" in first.stderr
    records = [load_record(d) for d in out_dir.iterdir()]
    assert len(records) == 4 and {r.status for r in records} == {"success"}
    assert {r.config["method"] for r in records} == {"full", "lora"} and {r.config["seed"] for r in records} == {1, 2}
    second = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0 and "4 runs: 4 already done, 0 to run" in second.stderr


def test_train_notebook_runs_top_to_bottom_and_shows_curves(real_data, tmp_path):
    import papermill as pm

    out = tmp_path / "train.ipynb"
    pm.execute_notebook(str(REPO / "notebooks" / "train.ipynb"), str(out), kernel_name="python3",
                        parameters={"max_train_samples": 32, "epochs": 1, "dataset": "acl_sup",
                                    "output_dir": str(tmp_path / "runs")},
                        cwd=str(REPO / "notebooks"), progress_bar=False)
    nb = json.loads(out.read_text())
    outputs = [o for c in nb["cells"] if c["cell_type"] == "code" for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the run's curves
    assert any("Macro-F1" in "".join(o.get("data", {}).get("text/html", "")) for o in outputs)
    source = "".join("".join(c["source"]) for c in nb["cells"])
    assert "def " not in source and "class " not in source
