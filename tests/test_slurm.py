"""The grid on a real one-node SLURM (munged + slurmctld + slurmd on 127.0.0.1, two fake GPUs) through
submitit: a job array of fast notebook runs, the throttle, GPU assignment, a failing run with its log,
scancel and resubmission, and the one-line errors. Skips where SLURM cannot be started, fails instead
under TC_REQUIRE_SLURM=1 (.ci/run sets it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import slurm_cluster
from planted import events, records, wait_for, write_fast_grid

pytestmark = [pytest.mark.slurm, pytest.mark.notebook]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    why = slurm_cluster.missing()
    if why:
        if os.environ.get("TC_REQUIRE_SLURM") == "1":
            pytest.fail(why)
        pytest.skip(why)
    c = slurm_cluster.Cluster(tmp_path_factory.mktemp("slurm"))
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def grid(tmp_path, cluster, monkeypatch):
    params, notebook, log, runs = write_fast_grid(tmp_path)
    for key, value in {"TC_TEST_LOG": str(log), "SLURM_CONF": str(cluster.conf), "TC_TEST_SLEEP": "1"}.items():
        monkeypatch.setenv(key, value)
    return params, notebook, log, runs


def run(params: Path, notebook: Path, *args: str, timeout: float = 150) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tc_lib", "run", str(params), "--notebook", str(notebook),
                           "--executor", "slurm", "--partition", slurm_cluster.PARTITION, *args],
                          capture_output=True, text=True, timeout=timeout)


def test_a_job_array_runs_every_run_throttled_with_one_gpu_each(grid, monkeypatch):
    params, notebook, log, runs = grid
    monkeypatch.setenv("TC_TEST_FAIL_SEED", "4")
    started = time.monotonic()
    out = run(params, notebook, "--max-parallel", "2", "--gpus-per-run", "1", "--wait")
    elapsed = time.monotonic() - started
    assert out.returncode == 1, out.stderr  # one run fails, on purpose
    assert "submitted job array" in out.stdout and "done: 3 succeeded, 1 not" in out.stdout, out.stdout
    recs = records(runs)
    assert sorted(r["status"] for r in recs.values()) == ["failed", "success", "success", "success"]
    failed = next(r for r in recs.values() if r["status"] == "failed")
    assert "planted failure of seed 4" in failed["error"]["message"]
    assert Path(failed["execution"]["log"]).is_file() and failed["execution"]["executor"] == "slurm"
    for rec in recs.values():
        assert rec["execution"]["cuda_visible_devices"] in ("0", "1")  # one device each, never both
    starts = {e[1]: float(e[3]) for e in events(log, "start")}
    ends = {e[1]: float(e[3]) for e in events(log, "end")}
    for t in starts.values():  # the array throttle: never more than two runs at once
        assert sum(1 for r, s in starts.items() if s <= t < ends.get(r, s + 1.5)) <= 2
    overlapping = [(a, b) for a in starts for b in starts if a < b and starts[a] < ends.get(b, starts[b] + 1.5)
                   and starts[b] < ends.get(a, starts[a] + 1.5)]
    devices = {e[1]: e[4] for e in events(log, "start")}
    assert all(devices[a] != devices[b] for a, b in overlapping)
    print(f"4 fast runs on SLURM, 2 at a time: {elapsed:.1f} s")
    again = run(params, notebook, "--max-parallel", "2")  # the failed run is resubmitted, the rest are done
    assert again.returncode == 0 and "1 runs" in again.stdout, again.stdout


def overlap(log: Path) -> int:
    """The most runs that were executing at one moment."""
    starts = {e[1]: float(e[3]) for e in events(log, "start")}
    ends = {e[1]: float(e[3]) for e in events(log, "end")}
    return max(sum(1 for r, s in starts.items() if s <= t < ends[r]) for t in starts.values())


def test_the_array_throttle_holds_below_the_free_slots(grid):
    params, notebook, log, runs = grid
    out = run(params, notebook, "--max-parallel", "1", "--wait")  # 4 CPU slots free, at most 1 at a time
    assert out.returncode == 0 and "done: 4 succeeded, 0 not" in out.stdout, out.stdout + out.stderr
    assert overlap(log) == 1
    unthrottled = log.parent / "again.log"
    unthrottled.touch()
    out = subprocess.run([sys.executable, "-m", "tc_lib", "run", str(params), "--notebook", str(notebook),
                          "--executor", "slurm", "--partition", "debug", "--force", "--wait"], capture_output=True,
                         text=True, timeout=150, env={**os.environ, "TC_TEST_LOG": str(unthrottled), "TC_TEST_SLEEP": "4"})
    assert out.returncode == 0, out.stdout + out.stderr
    assert overlap(unthrottled) >= 2  # without the throttle the same array runs side by side


def test_scancel_of_a_running_task_is_finished_by_the_next_run_exactly_once(grid, cluster, monkeypatch):
    params, notebook, log, runs = grid
    monkeypatch.setenv("TC_TEST_SLEEP", "6")
    out = run(params, notebook, "--max-parallel", "2")
    assert out.returncode == 0, out.stderr
    job = out.stdout.split("submitted job array ")[1].split(":")[0]
    wait_for(lambda: events(log, "start"), timeout=90, every=0.2)
    victim = events(log, "start")[0]
    task = (runs / victim[1] / "slurm_task").read_text().strip()
    assert cluster.run("scancel", task).returncode == 0
    wait_for(cluster.idle, timeout=120, every=0.5)
    killed = records(runs)[victim[1]]
    # SIGTERM reaches the kernel first: the task records `failed` (kernel died), or it is killed before it
    # can and the record stays `running` with a stale lease; either way it is not done
    assert killed["status"] in ("failed", "running"), killed["status"]
    print("after scancel:", killed["status"], (killed.get("error") or {}).get("message"))
    pid = int(victim[2])
    assert not Path(f"/proc/{pid}").exists()  # the cancelled task's kernel is gone
    monkeypatch.setenv("TC_TEST_SLEEP", "1")
    resumed = run(params, notebook, "--max-parallel", "2", "--wait")
    assert resumed.returncode == 0 and "submitted job array" in resumed.stdout and " 1 runs" in resumed.stdout, \
        resumed.stdout
    ends = [e[1] for e in events(log, "end")]
    assert sorted(ends) == sorted(set(ends)) and len(ends) == 4  # each run succeeded exactly once
    assert all(r["status"] == "success" for r in records(runs).values())
    assert records(runs)[victim[1]]["execution"]["attempt"] == 2
    nothing = run(params, notebook)
    assert nothing.returncode == 0 and "nothing to submit" in nothing.stdout
    assert resumed.stdout.split("submitted job array ")[1].split(":")[0] != job  # a new array, not the old one


@pytest.mark.parametrize("args,pattern", [
    (["--partition", "nope"], "--partition nope: unknown partition; this cluster has: debug"),
    (["--slurm-arg", "constraint"], "--slurm-arg 'constraint': expected KEY=VALUE"),
    (["--slurm-arg", "partition=x"], "partition is set by tc_lib's own flags"),
    (["--max-parallel", "0"], "--max-parallel must be an integer >= 1"),
])
def test_bad_input_is_one_line(grid, args, pattern):
    params, notebook, _, runs = grid
    out = run(params, notebook, *args)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1 and pattern in lines[0], out.stderr
    assert not runs.exists()  # nothing submitted


def test_missing_partition_and_missing_sbatch(grid, tmp_path):
    params, notebook, _, _ = grid
    base = [sys.executable, "-m", "tc_lib", "run", str(params), "--notebook", str(notebook), "--executor", "slurm"]
    out = subprocess.run(base, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--executor slurm needs --partition" in out.stderr
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # the venv, without SLURM's commands
    out = subprocess.run(base + ["--partition", "debug"], capture_output=True, text=True, timeout=60, env=env)
    assert out.returncode == 2 and "no sbatch on PATH" in out.stderr and len(out.stderr.strip().splitlines()) == 1
    out = subprocess.run([sys.executable, "-m", "tc_lib", "run", str(params), "--partition", "debug"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and "--partition is an option of --executor slurm" in out.stderr


def test_the_time_limit_is_never_submitits_five_minutes(grid):
    import re

    params, notebook, log, runs = grid
    dry = run(params, notebook, "--dry-run", "--gpus-per-run", "1", "--cpus-per-run", "2", "--mem", "2G")
    assert dry.returncode == 0, dry.stderr
    assert ("slurm per task: time 120 min (default: no finished run of these arms yet (set --time-min or slurm: "
            "{time_min: M})), gres=gpu:1, cpus-per-task=2, mem=2G") in dry.stdout, dry.stdout
    out = run(params, notebook, "--wait")
    assert out.returncode == 0, out.stderr
    job = re.search(r"submitted job array (\d+)", out.stdout).group(1)
    shown = subprocess.run(["scontrol", "show", "job", f"{job}_0"], capture_output=True, text=True, timeout=30)
    assert "TimeLimit=02:00:00" in shown.stdout, shown.stdout  # what sbatch was given: the stated default
    # with finished runs of the same arm: 3x the slowest, at least 10 minutes
    again = run(params, notebook, "--dry-run", "--force")
    assert "time 10 min (3x the slowest finished run of the same arm" in again.stdout, again.stdout
    params.write_text(params.read_text() + "slurm: {time_min: 45}\n")
    given = run(params, notebook, "--dry-run")
    assert f"time 45 min (slurm.time_min in {params})" in given.stdout, given.stdout
    bad = run(params, notebook, "--dry-run", "--gpus-per-run", "0.5")
    assert bad.returncode == 2 and "SLURM hands out whole GPUs" in bad.stderr, bad.stderr


@pytest.mark.slow
def test_a_slurm_array_and_an_embedded_ray_driver_on_one_grid_run_each_run_once(grid, monkeypatch):
    params, notebook, log, runs = grid
    monkeypatch.setenv("TC_TEST_SLEEP", "3")
    for key in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_MODE"):  # an embedded Ray of its own on loopback
        monkeypatch.delenv(key, raising=False)
    ray_driver = subprocess.Popen([sys.executable, "-m", "tc_lib", "run", str(params), "--notebook", str(notebook),
                                   "--executor", "ray", "--cpus-per-run", "1"], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        slurm = run(params, notebook, "--wait", timeout=240)
        ray_out = ray_driver.communicate(timeout=240)
    finally:
        if ray_driver.poll() is None:
            os.killpg(ray_driver.pid, 9)
    assert ray_driver.returncode == 0, ray_out
    assert "submitted job array" in slurm.stdout or "nothing to submit" in slurm.stdout, slurm.stdout + slurm.stderr
    wait_for(lambda: len(events(log, "end")) >= 4, timeout=120)
    starts = [e[1] for e in events(log, "start")]
    assert len(starts) == 4 and len(set(starts)) == 4, starts  # executions counted: each run once
    assert all(r["status"] == "success" for r in records(runs).values())
