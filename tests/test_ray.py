"""The grid on a real Ray cluster: `ray start --head --num-cpus=2 --num-gpus=2` (logical GPUs) bound to
127.0.0.1, started as a process group of its own and stopped by that group at the end, also on failure
(`ray stop` would stop every Ray on the machine, by name). Fast notebook runs through `--executor ray
--address`: GPU assignment, a failing run, a killed worker, a killed driver, two drivers, bad input."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from planted import events, free_port, records, wait_for, write_fast_grid
from tc_lib.grid.lease import _pid_alive as alive

pytestmark = [pytest.mark.ray, pytest.mark.notebook]
ray = pytest.importorskip("ray")
RAY = Path(sys.executable).with_name("ray")
# one machine: every Ray process binds loopback, not the machine's network address
LOOPBACK = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
# the cluster's token, given to its drivers (not ~/.ray/auth_token, which other Rays on this machine share)
AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": uuid.uuid4().hex}


@pytest.fixture(scope="module")
def cluster():
    """host:port of a running head node with 2 CPUs and 2 logical GPUs."""
    port = free_port()
    temp = tempfile.mkdtemp(prefix="tcray", dir="/tmp")  # short: Ray's socket paths live under it
    head = subprocess.Popen([str(RAY), "start", "--head", "--block", "--node-ip-address=127.0.0.1", f"--port={port}",
                             "--num-cpus=2", "--num-gpus=2", "--include-dashboard=false", "--disable-usage-stats",
                             f"--temp-dir={temp}"], env={**os.environ, **LOOPBACK, **AUTH}, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: _answers(port), timeout=60)
        time.sleep(2)  # the raylet registers just after the GCS answers
        yield f"127.0.0.1:{port}"
    finally:
        _stop(head)
        shutil.rmtree(temp, ignore_errors=True)


def _answers(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


def _stop(head: subprocess.Popen) -> None:
    for sig, grace in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
        try:
            os.killpg(head.pid, sig)
        except ProcessLookupError:
            break
        try:
            head.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            continue
    try:  # the raylet outlives SIGTERM to its parent at times
        os.killpg(head.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


@pytest.fixture
def grid(tmp_path, monkeypatch, cluster):
    params, notebook, log, runs = write_fast_grid(tmp_path)
    for key, value in {"TC_TEST_LOG": str(log), "TC_TEST_SLEEP": "1", **LOOPBACK, **AUTH}.items():
        monkeypatch.setenv(key, value)
    return params, notebook, log, runs


def command(params: Path, notebook: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "tc_lib", "run", str(params), "--notebook", str(notebook), "--executor", "ray", *args]


def run(params: Path, notebook: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(command(params, notebook, *args), capture_output=True, text=True, timeout=timeout)


def start(params: Path, notebook: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen(command(params, notebook, *args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


def parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


def test_a_grid_on_the_cluster_two_at_a_time_one_gpu_each(grid, cluster, monkeypatch):
    params, notebook, log, runs = grid
    monkeypatch.setenv("TC_TEST_FAIL_SEED", "4")
    started = time.monotonic()
    out = run(params, notebook, "--address", cluster, "--gpus-per-run", "1")
    elapsed = time.monotonic() - started
    assert out.returncode == 1, out.stderr  # one run fails, on purpose
    assert "done: 3 succeeded, 0 skipped, 1 failed" in out.stderr, out.stderr
    recs = records(runs)
    assert sorted(r["status"] for r in recs.values()) == ["failed", "success", "success", "success"]
    failed = next(r for r in recs.values() if r["status"] == "failed")
    assert "planted failure of seed 4" in failed["error"]["message"] and failed["error"]["traceback"]
    for rec in recs.values():
        assert rec["execution"]["executor"] == "ray" and rec["execution"]["attempt"] == 1
        assert rec["execution"]["cuda_visible_devices"] in ("0", "1") and rec["execution"]["host"]
    starts = {e[1]: float(e[3]) for e in events(log, "start")}
    assert len(starts) == 4 and len(events(log, "start")) == 4  # the failure was not retried
    ends = {e[1]: float(e[3]) for e in events(log, "end")}
    span = {r: (s, ends.get(r, s + 1.2)) for r, s in starts.items()}
    assert max(sum(1 for a, b in span.values() if a <= t < b) for t in starts.values()) <= 2
    devices = {e[1]: e[4] for e in events(log, "start")}
    overlapping = [(a, b) for a in span for b in span if a < b and span[a][0] < span[b][1] and span[b][0] < span[a][1]]
    assert overlapping and all(devices[a] != devices[b] for a, b in overlapping)
    print(f"4 fast runs on Ray, 2 at a time: {elapsed:.1f} s")
    monkeypatch.delenv("TC_TEST_FAIL_SEED")
    again = run(params, notebook, "--address", cluster)
    assert again.returncode == 0 and "3 already done, 1 to run" in again.stderr, again.stderr
    last = run(params, notebook, "--address", cluster)
    assert last.returncode == 0 and "4 already done, 0 to run" in last.stderr, last.stderr
    assert len(events(log, "start")) == 5  # the rerun submitted nothing


def test_a_killed_worker_is_retried_and_its_kernel_dies_with_it(grid, cluster, monkeypatch):
    params, notebook, log, runs = grid
    monkeypatch.setenv("TC_TEST_SLEEP", "5")
    driver = start(params, notebook, "--address", cluster, "--only", "seed=1")
    try:
        wait_for(lambda: events(log, "start"), timeout=60)
        kernel = int(events(log, "start")[0][2])
        os.kill(parent(kernel), signal.SIGKILL)  # the Ray worker that runs papermill
        killed = time.monotonic()
        wait_for(lambda: not alive(kernel), timeout=10)
        print(f"kernel gone {time.monotonic() - killed:.1f} s after its worker was killed")
        out, err = driver.communicate(timeout=120)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 0, err
    record = next(iter(records(runs).values()))
    assert record["status"] == "success" and record["execution"]["attempt"] == 2
    assert len(events(log, "start")) == 2 and len(events(log, "end")) == 1


def test_a_killed_driver_leaves_no_kernel_and_a_rerun_finishes_each_run_once(grid, cluster, monkeypatch):
    params, notebook, log, runs = grid
    monkeypatch.setenv("TC_TEST_SLEEP", "4")
    driver = start(params, notebook, "--address", cluster)
    try:
        wait_for(lambda: len(events(log, "start")) >= 2)
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=10)
        kernels = [int(e[2]) for e in events(log, "start")]
        killed = time.monotonic()
        wait_for(lambda: not any(alive(p) for p in kernels), timeout=30)  # Ray ends a dead driver's workers
        print(f"kernels gone {time.monotonic() - killed:.1f} s after the driver was killed")
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    monkeypatch.setenv("TC_TEST_SLEEP", "1")
    out = run(params, notebook, "--address", cluster)
    assert out.returncode == 0, out.stderr
    ends = [e[1] for e in events(log, "end")]
    assert len(ends) == 4 and len(set(ends)) == 4  # every run succeeded exactly once
    assert all(r["status"] == "success" for r in records(runs).values())


def test_two_drivers_on_one_grid_never_run_a_run_twice(grid, cluster):
    params, notebook, log, runs = grid
    drivers = [start(params, notebook, "--address", cluster) for _ in range(2)]
    results = [d.communicate(timeout=120) for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], results
    starts = [e[1] for e in events(log, "start")]
    assert len(starts) == 4 and len(set(starts)) == 4
    assert sorted(e[1] for e in events(log, "end")) == sorted(starts)


@pytest.mark.slow
def test_a_ray_and_a_local_driver_on_one_grid_run_each_run_once(grid, cluster, monkeypatch):
    params, notebook, log, runs = grid
    monkeypatch.setenv("TC_TEST_SLEEP", "3")
    ray_driver = start(params, notebook, "--address", cluster)
    local = subprocess.Popen([sys.executable, "-m", "tc_lib", "run", str(params), "--notebook", str(notebook),
                              "--jobs", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    results = [d.communicate(timeout=240) for d in (ray_driver, local)]
    assert [ray_driver.returncode, local.returncode] == [0, 0], results
    starts = [e[1] for e in events(log, "start")]
    assert len(starts) == 4 and len(set(starts)) == 4, starts
    executors = {r["execution"]["executor"] for r in records(runs).values()}
    assert all(r["status"] == "success" for r in records(runs).values()) and executors <= {"ray", "local"}


@pytest.mark.slow
def test_two_embedded_ray_drivers_on_one_grid_run_each_run_once(grid, monkeypatch):
    """Every embedded Ray numbers its job 01000000 and its tasks alike: the lease must not take the other
    driver's live lease for a retry of its own task."""
    params, notebook, log, runs = grid
    for key in AUTH:  # each embedded instance makes its own token
        monkeypatch.delenv(key)
    monkeypatch.setenv("TC_TEST_SLEEP", "3")
    drivers = [start(params, notebook, "--cpus-per-run", "1") for _ in range(2)]
    results = [d.communicate(timeout=240) for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], results
    starts = [e[1] for e in events(log, "start")]
    assert len(starts) == 4 and len(set(starts)) == 4, starts  # executions counted, not folders
    assert all(r["status"] == "success" and r["execution"]["attempt"] == 1 for r in records(runs).values())


def test_an_embedded_ray_runs_the_grid_quietly(grid, monkeypatch):
    params, notebook, log, runs = grid
    for key in AUTH:  # the embedded instance makes its own token
        monkeypatch.delenv(key)
    out = run(params, notebook, "--only", "seed=1", "--cpus-per-run", "1")
    assert out.returncode == 0, out.stderr
    assert "1 succeeded" in out.stderr and "WARNING" not in out.stderr and "Error" not in out.stderr, out.stderr
    assert next(iter(records(runs).values()))["execution"]["executor"] == "ray"


@pytest.mark.parametrize("args, pattern", [
    (["--executor", "local", "--address", "auto"], "--address is an option of --executor ray"),
    (["--executor", "ray", "--jobs", "2"], "--jobs is an option of --executor local"),
    (["--executor", "mesos"], "invalid choice: 'mesos'"),
    (["--executor", "ray", "--address", "127.0.0.1:{closed}"], "cannot reach Ray at 127.0.0.1:"),
    (["--executor", "ray", "--address", "{cluster}", "--gpus-per-run", "3"],
     "--gpus-per-run 3: no node of the Ray cluster has that many GPUs (the most on one node: 2)"),
    (["--executor", "ray", "--address", "{cluster}", "--output-dir", "relative/runs"],
     "output_dir 'relative/runs' is relative"),
    (["--executor", "ray", "--max-retries", "-1"], "--max-retries must be an integer >= 0"),
])
def test_bad_input_is_one_line_before_anything_runs(grid, cluster, args, pattern):
    params, notebook, log, runs = grid
    args = [a.format(closed=free_port(), cluster=cluster) for a in args]
    started = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "tc_lib", "run", str(params), "--notebook", str(notebook), *args],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and pattern in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and time.monotonic() - started < 30, out.stderr
    assert not runs.exists() and not events(log, "start")  # nothing was submitted


def test_fractional_gpus_share_one_gpu_and_no_gpus_hide_them_all(grid, cluster):
    params, notebook, log, runs = grid
    out = run(params, notebook, "--address", cluster, "--gpus-per-run", "0.5")
    assert out.returncode == 0, out.stderr
    seen = [r["execution"]["cuda_visible_devices"] for r in records(runs).values()]
    assert len(seen) == 4 and set(seen) <= {"0", "1"}, seen  # Ray's ids, one GPU each, never "0,1"
    out = run(params, notebook, "--address", cluster, "--gpus-per-run", "0", "--force")
    assert out.returncode == 0, out.stderr
    seen = [r["execution"]["cuda_visible_devices"] for r in records(runs).values()]
    assert seen == ["", "", "", ""], seen  # set explicitly: a task without GPUs sees none
