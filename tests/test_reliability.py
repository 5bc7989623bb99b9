"""Reliability: strict params, data and train CLI errors, a report that reads any folder, and grids
that survive kills, Ctrl-C and a second driver — with real processes, counting notebook executions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from planted import wait_for, write_fast_notebook
from tc_lib import errors
from tc_lib.config import RunConfig
from tc_lib.grid import execute, lease, load_grid
from tc_lib.record import ErrorInfo
from tc_lib.results import finish_run, new_record, write_history

REPO = Path(__file__).resolve().parents[1]


def cli(*args, timeout=120, env=None):
    return subprocess.run([sys.executable, "-m", "tc_lib", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def one_line_error(out, pattern: str) -> None:
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2, out.stderr
    assert len(lines) == 1 and pattern in lines[0] and "Traceback" not in out.stderr, out.stderr


# ---------------------------------------------------------------- params


@pytest.mark.parametrize("text,pattern", [
    ("", "the params file is empty"),
    ("axes:\n  seed: [1]\n  seed: [2]\n", "line 3: invalid YAML (duplicate key 'seed' (first on line 2))"),
    ("axes:\n  seed: [1]\naxes:\n  seed: [2]\n", "duplicate key 'axes'"),
    ("axes:\n  method: [full]\noverrides:\n  method: {lora: {learning_rate: 1.0e-3}}\n",
     "overrides.method.lora: method never takes the value 'lora' in this grid (it takes: full)"),
    ("axes:\n  seed: [1]\noverrides:\n  colour: {red: {seed: 2}}\n", "overrides.colour: unknown field"),
    ("defaults:\n  output_dir: ''\naxes:\n  seed: [1]\n", "field 'output_dir': expected a non-empty path, got ''"),
    ("axes:\n  seed: " + str(list(range(1000))) + "\n  lora_r: " + str(list(range(1, 1001))) + "\n",
     "the grid has more than 100,000 runs"),
    ("defaults:\n  1: x\naxes:\n  seed: [1]\n", "line 2: key '1' in defaults is not a name (a string)"),
    ("axes:\n  null: [1]\n", "line 2: key 'null' in axes is not a name"),
    ("axes:\n  seed: [1]\n  [a]: [2]\n", "line 3: key 'a sequence' in axes is not a name"),
    ("true: 1\n", "line 1: key 'true' in the top level is not a name"),
    ("axes:\n  seed: [1, 2, 3]\noverrides:\n  method: {full: {seed: 1}}\n",
     "overrides.method.full sets seed, an axis of this grid"),
    ("axes:\n  seed: " + "[" * 100 + "1" + "]" * 100 + "\n", "nested more than 20 levels deep"),
    ("axes:\n  seed: " + "[" * 100000 + "\n", "nested more than 20 levels deep"),
    ("axes:\n  dataset: [{a: 1}]\noverrides:\n  dataset: {x: {seed: 1}}\n", "dataset never takes the value 'x'"),
    ("axes:\n  dataset: [[1, 2]]\n", "field 'dataset': expected a name or a list of distinct names"),
    ("axes:\n  method: [full]\n  lora_r: [4, 8]\n", "(method=full, lora_r=4): lora_r does not apply to method "
     "full (its options: none)"),
    ("defaults: {adapter_config: seq_bn}\naxes:\n  method: [lora]\n", "adapter_config does not apply to method lora"),
])
@pytest.mark.slow
def test_params_are_strict(tmp_path, text, pattern):
    grid = tmp_path / "grid.yaml"
    grid.write_text(text)
    started = time.monotonic()
    one_line_error(cli("run", str(grid), "--dry-run"), pattern)
    assert time.monotonic() - started < 60  # a 10^6-run grid is refused before it is expanded


@pytest.mark.slow
def test_params_read_merge_keys_and_yaml_1_2_floats(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"defaults: &common\n  learning_rate: 1e-4\n  epochs: 2\n  output_dir: {tmp_path / 'runs'}\n"
                    "grids:\n  - defaults: {<<: *common, epochs: 1}\n    axes: {seed: [1, 2]}\n")
    configs = load_grid(grid)
    assert [(c.learning_rate, c.epochs, c.seed) for c in configs] == [(1e-4, 1, 1), (1e-4, 1, 2)]
    out = cli("run", str(grid), "--dry-run", "--only", "learning_rate=1e-4", "--only", "seed=2")
    assert out.returncode == 0 and "1 runs (0 done)" in out.stdout, out.stderr  # compared as numbers
    out = cli("run", str(grid), "--dry-run", "--only", "learning_rate=0.0001")
    assert "2 runs (0 done)" in out.stdout, out.stderr


def test_params_and_set_read_no_yes_on_off_as_words_as_yaml_1_2_does(tmp_path):
    """PyYAML's YAML 1.1 reads no/yes/on/off as booleans: `mixed_precision: no` would be refused as False."""
    from tc_lib.grid.params import parse_assignments

    grid = tmp_path / "grid.yaml"
    grid.write_text(f"defaults: {{output_dir: {tmp_path / 'runs'}, mixed_precision: no, group_by_length: false}}\n"
                    "axes: {seed: [1]}\n")
    [cfg] = load_grid(grid)
    assert cfg.mixed_precision == "no" and cfg.group_by_length is False
    assert parse_assignments(["mixed_precision=no", "test_every_epoch=True", "x=off", "y=[yes, 1e-4]"]) == {
        "mixed_precision": "no", "test_every_epoch": True, "x": "off", "y": ["yes", 1e-4]}
    with pytest.raises(errors.ConfigError, match=r"field 'group_by_length': expected true or false, got 'yes'"):
        RunConfig(**parse_assignments(["group_by_length=yes"]))


@pytest.mark.slow
def test_params_that_are_not_a_regular_file_or_too_big_are_refused_unread(tmp_path):
    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    started = time.monotonic()
    one_line_error(cli("run", str(fifo), "--dry-run"), "not a regular file (a pipe, socket or device)")
    assert time.monotonic() - started < 30  # never blocked reading it
    zero = tmp_path / "zero.yaml"
    zero.symlink_to("/dev/zero")
    one_line_error(cli("run", str(zero), "--dry-run"), "not a regular file")
    big = tmp_path / "big.yaml"
    big.write_text("# padding\n" * 200_000)
    one_line_error(cli("run", str(big), "--dry-run"), "a params file is at most 1,000,000")


def test_params_path_that_is_a_folder_or_not_utf8(tmp_path):
    one_line_error(cli("run", str(tmp_path), "--dry-run"), "is a folder, not a params file")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("axes:\n  model: [caf\xe9]\n".encode("latin-1"))
    one_line_error(cli("run", str(bad), "--dry-run"), "latin1.yaml line 2: not UTF-8 text")


@pytest.mark.slow
def test_dry_run_streams(tmp_path):
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"defaults: {{output_dir: {tmp_path / 'runs'}}}\naxes:\n  seed: {list(range(30000))}\n")
    proc = subprocess.Popen([sys.executable, "-m", "tc_lib", "run", str(grid), "--dry-run"], stdout=subprocess.PIPE,
                            text=True)
    first = proc.stdout.readline()
    first_at = time.monotonic()
    rest = proc.stdout.read()
    proc.wait(timeout=300)
    done_at = time.monotonic()
    summary, findings = rest.split("preflight:\n")
    assert first.startswith("todo ") and summary.strip().endswith(f"30000 runs (0 done) -> {tmp_path / 'runs'}")
    assert "ok  data" in findings and proc.returncode == 0
    assert done_at - first_at > 0.5  # the first run printed well before the last was expanded


# ---------------------------------------------------------------- data and train CLI


def test_data_verify_exits_2_when_a_file_is_missing_or_a_folder_stands_in(tmp_path, real_data):
    root = tmp_path / "data"
    (root / "acl_arc" / "train.jsonl").mkdir(parents=True)  # a folder where a file belongs
    out = cli("data", "verify", "acl_sup", "--root", str(root))
    assert out.returncode == 2 and "missing or wrong" in out.stderr and "not a regular file" in out.stderr
    assert "wrong  acl_arc/train.jsonl" in out.stdout and "missing  acl_arc/test.jsonl" in out.stdout
    assert cli("data", "verify", "acl_sup", "--root", str(real_data)).returncode == 0


def test_data_info_names_file_and_line_on_bad_encoding(tmp_path, real_data):
    root = tmp_path / "data"
    (root / "acl_arc").mkdir(parents=True)
    (root / "acl_arc" / "train.jsonl").write_text('{"text": "x", "label": "Uses"}\n', encoding="utf-16")
    (root / "acl_arc" / "test.jsonl").write_bytes((real_data / "acl_arc" / "test.jsonl").read_bytes())
    one_line_error(cli("data", "info", "acl_sup", "--no-verify", "--root", str(root)),
                   "train.jsonl line 1: not UTF-8 text")


def test_train_into_an_unwritable_folder_names_it(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    out = cli("train", "--output-dir", str(blocker), "--epochs", "1")
    one_line_error(out, f"{blocker}/")
    assert "cannot write the run folder" in out.stderr and "record:" not in out.stderr


def test_first_line_skips_blank_lines_and_papermill_headers():
    assert errors.first_line(ImportError("\nNo module named 'x'")) == "No module named 'x'"
    from papermill.exceptions import PapermillExecutionError

    err = PapermillExecutionError(3, 3, "train_and_evaluate(cfg)", "ConfigError", "model 'x': cannot load it\nmore",
                                  ["tb"])
    assert execute.cause(err) == "ConfigError: model 'x': cannot load it"


# ---------------------------------------------------------------- the report reads any folder


def test_report_lists_every_unusable_record_and_never_counts_it(tmp_path, monkeypatch):
    from tc_lib.report import display
    from tc_lib.report.sections import Report

    runs = tmp_path / "runs"
    folders = {}
    for seed, status in enumerate(("success", "running", "interrupted", "failed", "success"), start=1):
        cfg = RunConfig(model="minilm", dataset="acl_sup", seed=seed, output_dir=str(runs))
        record = new_record(cfg, status=status)
        if status == "success":
            record.metrics = {"loss": 1.0, "accuracy": 0.6, "micro_f1": 0.6, "macro_f1": 0.3}
            record.data.majority_floor = {"majority_class": 0, "accuracy": 0.5, "macro_f1": 0.1}
        cfg.run_dir.mkdir(parents=True)
        finish_run(cfg.run_dir, record)
        folders[seed] = cfg.run_dir
    write_history(folders[1], [{"epoch": 1, "test": {"macro_f1": 0.3}}])
    (folders[5] / "history.jsonl").write_text('{"epoch": 1, "test": {"macro_f1": 0.3}}\ngarbage\n')
    for name, text in {"torn": '{"status": "succ', "foreign": '{"hello": 1}', "old": '{"schema_version": 1}'}.items():
        (runs / name).mkdir()
        (runs / name / "metrics.json").write_text(text)
    no_timing = new_record(RunConfig(seed=9, output_dir=str(runs)), status="success").to_dict()
    del no_timing["timing"]
    (runs / "no-timing").mkdir()
    (runs / "no-timing" / "metrics.json").write_text(json.dumps(no_timing))
    (runs / "empty").mkdir()

    shown = []
    monkeypatch.setattr(display, "show", shown.append)
    report = Report.load(runs)
    report.header()
    report.rules()
    text = "\n".join(getattr(obj, "data", "") for obj in shown)
    assert "计入统计 2 条" in text and len(report.runs) == 2  # successes only; nothing else counted
    for status in ("running", "interrupted", "failed"):
        assert f"[{status}]" in text
    for name, reason in {"torn": "torn or not JSON", "foreign": "not a tc_lib run record",
                         "old": "schema version 1", "no-timing": "field 'timing' missing",
                         "empty": "no metrics.json"}.items():
        assert f"{runs / name / 'metrics.json'}`: {reason}" in text
    assert f"{folders[5] / 'history.jsonl'}`: history left out: line 2: not JSON" in text
    assert "No run failed" not in text


# ---------------------------------------------------------------- fault tests with real processes

@pytest.fixture
def fast_grid(tmp_path, monkeypatch):
    """A grid of 4 runs of a notebook that logs its executions and sleeps instead of training."""
    notebook = write_fast_notebook(tmp_path / "fast.ipynb")
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"defaults: {{output_dir: {tmp_path / 'runs'}}}\naxes:\n  seed: [1, 2, 3, 4]\n")
    log = tmp_path / "executions.log"
    log.touch()
    monkeypatch.setenv("TC_TEST_LOG", str(log))
    monkeypatch.setenv("TC_TEST_NOTEBOOK", str(notebook))
    return grid, log, tmp_path / "runs"


def start_driver(grid: Path, *args: str) -> subprocess.Popen:
    """The `run` command on the fast notebook, in its own process group (so the test can clean up)."""
    # SIGINT as in a terminal, even where the test runner was started with it ignored (a background job)
    return subprocess.Popen([sys.executable, "-m", "tc_lib", "run", str(grid), "--notebook",
                             os.environ["TC_TEST_NOTEBOOK"], *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def lines(log: Path, kind: str) -> list[str]:
    return [line.split()[1] for line in log.read_text().splitlines() if line.startswith(kind + " ")]


def alive(pid: int) -> bool:
    return lease._pid_alive(pid)


def kernel_pids(log: Path) -> list[int]:
    return [int(line.split()[2]) for line in log.read_text().splitlines() if line.startswith("start ")]


@pytest.mark.parametrize("after_starts", [1, 3])
def test_sigkill_of_the_driver_leaves_no_process_and_a_rerun_finishes_each_run_once(fast_grid, after_starts):
    grid, log, runs = fast_grid
    driver = start_driver(grid, "--jobs", "2")
    try:
        wait_for(lambda: len(lines(log, "start")) >= after_starts)
        os.kill(driver.pid, signal.SIGKILL)  # the driver alone: its workers and kernels must follow it
        driver.wait(timeout=30)
        holders = [info["pid"] for d in runs.iterdir() if (info := lease.read_lease(d))]
        wait_for(lambda: not any(alive(p) for p in kernel_pids(log) + holders), timeout=10)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    rerun = start_driver(grid, "--jobs", "2")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    ends = lines(log, "end")
    assert sorted(ends) == sorted(set(ends)) and len(ends) == 4  # every run succeeded exactly once
    assert all(json.loads((d / "metrics.json").read_text())["status"] == "success" for d in runs.iterdir())


def test_two_drivers_on_one_grid_never_run_a_run_twice(fast_grid):
    grid, log, runs = fast_grid
    drivers = [start_driver(grid, "--jobs", "2") for _ in range(2)]
    results = [d.communicate(timeout=300) for d in drivers]
    assert [d.returncode for d in drivers] == [0, 0], results
    starts = lines(log, "start")
    assert len(starts) == 4 and len(set(starts)) == 4  # each run executed once, by one of them
    assert sorted(lines(log, "end")) == sorted(starts)


def test_sigint_stops_the_grid_within_seconds_and_the_rerun_completes(fast_grid, monkeypatch):
    grid, log, runs = fast_grid
    monkeypatch.setenv("TC_TEST_SLEEP", "6")
    driver = start_driver(grid, "--jobs", "1")
    wait_for(lambda: len(lines(log, "start")) == 1)
    record_path = runs / lines(log, "start")[0] / "metrics.json"
    wait_for(lambda: record_path.is_file())  # the run has started its record
    sent = time.monotonic()
    os.kill(driver.pid, signal.SIGINT)
    out, err = driver.communicate(timeout=60)
    took = time.monotonic() - sent
    print(f"SIGINT to exit: {took:.2f} s")
    assert driver.returncode == 130 and took < 10, (took, err)
    assert "interrupted: nothing new was started, 1 run(s) in flight left 'interrupted'" in err
    assert "Traceback" not in err and len(lines(log, "start")) == 1 and not lines(log, "end")
    record = json.loads(record_path.read_text())
    assert record["status"] == "interrupted" and not alive(kernel_pids(log)[0])
    monkeypatch.setenv("TC_TEST_SLEEP", "0.2")
    rerun = start_driver(grid, "--jobs", "2")
    _, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert sorted(lines(log, "end")) == sorted({f"{r}" for r in lines(log, "start")})
    assert json.loads(record_path.read_text())["execution"]["attempt"] == 2


def test_a_full_disk_gives_clear_failures_and_no_torn_record(fast_grid, tmp_path):
    grid, log, runs = fast_grid
    runs.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(runs)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        (runs / "filler").write_bytes(b"\0" * (256 * 1024 - 8 * 1024))  # leave ~8 KiB: not enough for a run
        driver = start_driver(grid, "--jobs", "2")
        _, err = driver.communicate(timeout=300)
        assert driver.returncode == 1, err
        assert "No space left on device" in err and "Exception encountered" not in err
        for record in runs.glob("*/metrics.json"):
            assert json.loads(record.read_text())["status"] != "success"  # parses: never torn
    finally:
        subprocess.run(["umount", str(runs)], capture_output=True)


def test_status_shows_every_state_from_records_and_leases(fast_grid, monkeypatch):
    grid, log, runs = fast_grid
    out = cli("status", str(grid))
    assert out.returncode == 0 and "4 runs: 4 pending" in out.stdout
    assert sum(line.startswith("pending ") for line in out.stdout.splitlines()) == 4
    done, failed, running, stale = load_grid(grid)
    for cfg, status in ((done, "success"), (failed, "failed"), (running, "running"), (stale, "running")):
        record = new_record(cfg, status=status)
        record.timing.wall_time_s = 1800.0
        if status == "failed":
            record.error = ErrorInfo(type="RuntimeError", message="planted failure\nsecond line")
        cfg.run_dir.mkdir(parents=True)
        finish_run(cfg.run_dir, record)
    held = lease.acquire(running.run_dir, executor="local", attempt=2)  # this process: alive
    (stale.run_dir / lease.LEASE_FILE).write_text(json.dumps({"owner": "x", "host": "elsewhere", "pid": 1,
                                                              "since": 0, "executor": "ray", "attempt": 1}))
    os.utime(stale.run_dir / lease.LEASE_FILE, (0, 0))  # its heartbeat stopped long ago
    try:
        out = cli("status", str(grid))
    finally:
        held.release()
    assert out.returncode == 0, out.stderr
    rows = {line.split()[1]: line for line in out.stdout.splitlines()[:-1]}
    assert rows[done.run_id].startswith("done") and rows[failed.run_id].startswith("failed")
    assert "planted failure)" in rows[failed.run_id] and "second line" not in out.stdout
    assert rows[running.run_id].startswith("running") and "local attempt 2" in rows[running.run_id]
    assert rows[stale.run_id].startswith("stale") and "elsewhere pid 1, ray attempt 1" in rows[stale.run_id]
    assert "4 runs: 1 done, 1 running, 1 stale, 1 failed; compute spent 2.00 h" in out.stdout


def test_a_grid_prints_progress_and_a_summary_and_nothing_that_looks_like_an_error(fast_grid, monkeypatch):
    """No "[IPKernelApp] WARNING | Kernel is running over TCP without encryption" (the kernels use IPC
    sockets) and no "KeyboardInterrupt caught in kernel" (jupyter_client's SIGINT before shutdown)."""
    import shutil
    import tempfile

    grid, log, runs = fast_grid
    monkeypatch.setenv("TC_TEST_SLEEP", "0.2")
    # the driver's own temporary folder (short: the kernels' sockets live in it), where its workers create the
    # kernels' IPC folders (tempfile follows TMPDIR); /tmp itself is shared with other tests' kernels
    private = Path(tempfile.mkdtemp(prefix="tct", dir="/tmp"))
    monkeypatch.setenv("TMPDIR", str(private))
    try:
        driver = start_driver(grid, "--jobs", "2")
        out, err = driver.communicate(timeout=300)
        assert driver.returncode == 0, err
        text = err.replace("\r", "\n")
        for noise in ("WARNING", "ERROR", "KeyboardInterrupt", "TCP", "Traceback"):
            assert noise not in text, err
        assert "done: 4 succeeded, 0 skipped, 0 failed" in text
        assert not list(private.glob("tc_kernel_*"))  # the IPC socket folders are removed
    finally:
        shutil.rmtree(private, ignore_errors=True)


def test_records_get_the_mode_a_plain_open_gives(tmp_path):
    """Atomic writes go through mkstemp (0600); a record must be as readable as any file the user writes
    (a group-shared output folder on a cluster)."""
    from tc_lib.results import write_json_atomic

    write_json_atomic(tmp_path / "metrics.json", {"status": "success"})
    (tmp_path / "plain.txt").write_text("")
    mode = lambda name: (tmp_path / name).stat().st_mode & 0o777
    assert mode("metrics.json") == mode("plain.txt") == 0o666 & ~_umask()


def _umask() -> int:
    with open("/proc/self/status") as status:
        return int(next(line for line in status if line.startswith("Umask:")).split()[1], 8)


# ---------------------------------------------------------------- devices: one GPU per run, no silent CPU

@pytest.mark.notebook
@pytest.mark.slow
def test_a_local_gpu_pool_gives_every_run_one_gpu_two_runs_per_gpu(fast_grid, monkeypatch):
    grid, log, runs = fast_grid
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    driver = start_driver(grid, "--gpus", "0,1", "--runs-per-gpu", "2")  # --jobs follows: 4
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    first = err.splitlines()[0]
    assert "4 to run (4 at a time)" in first and "GPUs 0,1 x 2 run(s) each" in first, err
    assert "device auto -> cpu (torch" in first  # what `auto` means on this machine, said up front
    seen = [json.loads((d / "metrics.json").read_text())["execution"]["cuda_visible_devices"] for d in runs.iterdir()]
    assert sorted(seen) == ["0", "0", "1", "1"], seen  # each GPU exactly two runs, no run both
    too_many = start_driver(grid, "--gpus", "0,1", "--jobs", "3", "--force")
    out, err = too_many.communicate(timeout=120)
    assert too_many.returncode == 2 and "--jobs 3: more runs at a time than GPU slots (2 GPUs x 1" in err, err


@pytest.mark.notebook
def test_device_cuda_on_a_machine_without_it_stops_before_any_run(fast_grid, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    grid, log, runs = fast_grid
    cuda = tmp_path / "cuda.yaml"
    cuda.write_text(grid.read_text().replace("defaults: {", "defaults: {device: cuda, "))
    for args in ((), ("--dry-run",)):
        driver = start_driver(cuda, *args)
        out, err = driver.communicate(timeout=120)
        assert driver.returncode == 2, (args, out, err)
        assert "device: cuda, but torch" in err and "4 runs ask for it" in err and len(err.strip().splitlines()) == 1
    assert not log.read_text() and not any(runs.glob("*/metrics.json"))  # nothing ran, nothing marked success


# ---------------------------------------------------------------- leases that cannot be trusted, final records

@pytest.mark.parametrize("content", ["null", "[]", '"x"', '{"owner": "x"}', '{"owner": "x", "host": "h", "pid": 0, '
                                     '"since": 0}', '{"owner": "x", "host": "h", "pid": 7, "since": 1e300}'])
def test_a_lease_that_holds_no_lease_is_stale_and_status_says_so(fast_grid, content):
    grid, log, runs = fast_grid
    cfg = load_grid(grid)[0]
    cfg.run_dir.mkdir(parents=True)
    (cfg.run_dir / lease.LEASE_FILE).write_text(content)
    out = cli("status", str(grid))
    assert out.returncode == 0 and "Traceback" not in out.stderr, out.stderr
    row = next(line for line in out.stdout.splitlines() if cfg.run_id in line)
    assert row.startswith("stale"), row
    os.utime(cfg.run_dir / lease.LEASE_FILE, (time.time() - 5, time.time() - 5))  # not being written right now
    held = lease.acquire(cfg.run_dir, executor="local", attempt=1)
    assert held is not None  # taken over, never "busy forever"
    held.release()


def test_a_pipe_in_place_of_the_lease_is_never_read(fast_grid):
    grid, log, runs = fast_grid
    cfg = load_grid(grid)[0]
    cfg.run_dir.mkdir(parents=True)
    os.mkfifo(cfg.run_dir / lease.LEASE_FILE)
    out = cli("status", str(grid), timeout=60)
    assert out.returncode == 0 and "lease file unusable: not a regular file" in out.stdout, out.stderr
    held = lease.acquire(cfg.run_dir, executor="local", attempt=1)  # would block on reading it
    assert held is not None and (cfg.run_dir / lease.LEASE_FILE).is_file()
    held.release()


def test_a_heartbeat_from_the_future_is_stale_and_a_live_holder_here_never_is(tmp_path, monkeypatch):
    import socket

    future = {"owner": "x", "host": "elsewhere", "pid": 7, "since": 0, "heartbeat": time.time() + 86400}
    assert lease.is_stale(future)  # a clock a day ahead: never goes stale by the heartbeat otherwise
    mine = {"owner": "x", "host": socket.gethostname(), "pid": os.getpid(), "since": 0, "heartbeat": 0,
            "pid_start": lease.process_start(os.getpid())}
    assert not lease.is_stale(mine)  # alive here: a day-old heartbeat does not matter
    assert lease.is_stale({**mine, "pid_start": mine["pid_start"] + 1})  # the pid now names another process
    monkeypatch.setenv("TC_LEASE_TIMEOUT_S", "abc")
    with pytest.raises(errors.ConfigError, match="TC_LEASE_TIMEOUT_S='abc': expected a number of seconds > 0"):
        lease.is_stale(future)


@pytest.mark.slow
def test_a_kernel_that_dies_after_its_success_record_keeps_the_success(fast_grid, monkeypatch):
    grid, log, runs = fast_grid
    monkeypatch.setenv("TC_TEST_DIE_AFTER_SUCCESS", "2")
    driver = start_driver(grid, "--jobs", "2")
    out, err = driver.communicate(timeout=300)
    assert driver.returncode == 0, err
    assert "done: 4 succeeded, 0 skipped, 0 failed" in err and "finished, then the kernel died" in err, err
    seed2 = next(cfg for cfg in load_grid(grid) if cfg.seed == 2)
    record = json.loads((seed2.run_dir / "metrics.json").read_text())
    assert record["status"] == "success" and record["error"] is None


@pytest.mark.slow
def test_train_interrupted_by_ctrl_c_is_left_interrupted(tiny_bert, real_data, tmp_path):
    driver = subprocess.Popen([sys.executable, "-m", "tc_lib", "train", "--model", tiny_bert, "--epochs", "50",
                               "--dataset", "acl_sup", "--max-train-samples", "64", "--output-dir", str(tmp_path),
                               "--set", "max_seq_length=32"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                              preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        wait_for(lambda: any(tmp_path.glob("*/history.jsonl")), timeout=120)  # training is under way
        os.kill(driver.pid, signal.SIGINT)
        out, err = driver.communicate(timeout=60)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
    assert driver.returncode == 130 and "left 'interrupted'" in err and "Traceback" not in err, err
    record = json.loads(next(tmp_path.glob("*/metrics.json")).read_text())
    assert record["status"] == "interrupted" and record["error"]["type"] == "KeyboardInterrupt"


# ---------------------------------------------------------------- hostile input: one line each, exit 2

def _hostile_files(tmp_path: Path) -> dict[str, Path]:
    base = json.loads((Path(__file__).resolve().parents[1] / "tc_lib/memory/model_configs/open_llama_3b.json")
                      .read_text())
    out = {}
    for name, change in (("act", {"hidden_act": "bogus"}), ("rope", {"rope_scaling": {"rope_type": "bogus"}}),
                         ("deep", {"num_hidden_layers": 100_000})):
        out[name] = tmp_path / f"{name}.json"
        out[name].write_text(json.dumps({**base, **change}))
    nested = tmp_path / "nested" / "semeval14_restaurant"
    nested.mkdir(parents=True)
    (nested / "train.json").write_text("[" * 100_000 + "]" * 100_000)
    (nested / "test.json").write_text("{}")
    wide = tmp_path / "wide" / "agnews"
    wide.mkdir(parents=True)
    (wide / "test.csv").write_text('1,"' + "x" * 200_000 + '",y\n')
    return out


@pytest.mark.parametrize("args,env,pattern", [
    (["memory", "--model", "{act}"], {}, "config field 'hidden_act' is 'bogus'; transformers knows"),
    (["memory", "--model", "{rope}"], {}, "has rope_type 'bogus'"),
    (["memory", "--model", "{deep}"], {}, "'num_hidden_layers' is 100,000; the estimator models configs up to 512"),
    (["data", "info", "restaurant_sup", "--root", "{tmp}/nested", "--no-verify"], {}, "JSON nested too deeply"),
    (["data", "info", "agnews_sup", "--root", "{tmp}/wide", "--no-verify"], {},
     "test.csv row 1: not readable as CSV (field larger than field limit"),
    (["data", "fetch", "restaurant_sup", "--root", "/proc/tc-no-such"], {"TC_DATA_MIRROR": "http://127.0.0.1:9"},
     "/proc/tc-no-such/semeval14_restaurant: cannot create the data folder"),
    (["train", "--seed", "4294967296", "--output-dir", "{tmp}/o"], {}, "field 'seed': expected an integer in [0, 2**32)"),
    (["models", "fetch", "a/b/c"], {}, "models fetch a/b/c: not a hub id"),
    (["train", "--method", "full", "--set", "lora_r=4", "--output-dir", "{tmp}/o"], {},
     "--set: lora_r does not apply to method full"),
    (["data", "info", "agnews_sup", "--data-seed", "-1"], {}, "--data-seed must be an integer in [0, 2**32), got -1"),
    (["status", "{grid}"], {"TC_LEASE_TIMEOUT_S": "abc"}, "TC_LEASE_TIMEOUT_S='abc': expected a number of seconds"),
    (["run", "{grid}", "--dry-run"], {"TC_LEASE_HEARTBEAT_S": "-1"}, "TC_LEASE_HEARTBEAT_S='-1': expected a number"),
])
@pytest.mark.slow
def test_hostile_input_is_one_line(tmp_path, args, env, pattern):
    files = _hostile_files(tmp_path)
    grid = tmp_path / "grid.yaml"
    grid.write_text(f"defaults: {{output_dir: {tmp_path / 'runs'}}}\naxes:\n  seed: [1]\n")
    args = [a.format(tmp=tmp_path, grid=grid, **files) for a in args]
    started = time.monotonic()
    out = cli(*args, env=env)
    one_line_error(out, pattern)
    assert time.monotonic() - started < 60  # refused, not estimated for minutes
    assert not (tmp_path / "o").exists()


def test_a_pipe_or_a_deep_nest_in_place_of_a_record_is_listed_not_read(fast_grid):
    grid, log, runs = fast_grid
    first, second = load_grid(grid)[:2]
    for cfg in (first, second):
        cfg.run_dir.mkdir(parents=True)
    os.mkfifo(first.run_dir / "metrics.json")
    (second.run_dir / "metrics.json").write_text("[" * 100_000 + "]" * 100_000)
    out = cli("status", str(grid), timeout=60)
    assert out.returncode == 0 and "4 runs: 4 pending" in out.stdout, out.stderr
    from tc_lib.report.runs import Problem, read_runs

    problems: list[Problem] = []
    read_runs(runs, problems=problems)
    reasons = {Path(p.file).parent.name: p.reason for p in problems}
    assert reasons == {first.run_id: "not a regular file (a pipe, socket, device or folder)",
                       second.run_id: "nested too deeply to be a run record"}


@pytest.mark.parametrize("key,value,reason", [
    ("config", {}, "field 'config.model' missing"),
    ("metrics", [1, 2], "field 'metrics': expected a mapping or null, got [1, 2]"),
    ("timing", "x", "field 'timing': expected a mapping, got 'x'"),
    ("selection", {}, "field 'selection.rule' missing"),
    ("data", {}, "field 'data.train_size' missing"),
    ("config.dataset", 3, "field 'config.dataset': expected a string or a list of strings, got 3"),
    ("config.seed", "x", "field 'config.seed': expected an integer, got 'x'"),
    ("metrics.accuracy", "x", "field 'metrics.accuracy': expected a number, got 'x'"),
    ("config.method", "bogus", "'bogus' is no method this tc_lib knows"),
    ("execution", "x", "field 'execution': expected a mapping or null"),
    ("memory.peak_rss_mb", "x", "field 'memory.peak_rss_mb': expected a number or null, got 'x'"),
])
def test_a_tampered_record_is_listed_with_its_field_never_a_crash(tmp_path, key, value, reason):
    from planted import plant_run
    from tc_lib.report.export import export_tables
    from tc_lib.report.runs import Problem, read_runs

    configs = [RunConfig(seed=seed, dataset="acl_sup", output_dir=str(tmp_path)) for seed in (1, 2)]
    for cfg in configs:
        plant_run(tmp_path, cfg, 0.5)
    path = configs[0].run_dir / "metrics.json"
    record = json.loads(path.read_text())
    *parents, last = key.split(".")
    target = record
    for part in parents:
        target = target[part]
    target[last] = value
    path.write_text(json.dumps(record))
    problems: list[Problem] = []
    runs = read_runs(tmp_path, problems=problems)
    assert list(runs["run_id"]) == [configs[1].run_id]  # the other run still counts
    assert len(problems) == 1 and problems[0].file == str(path) and reason in problems[0].reason, problems
    assert len(export_tables(tmp_path)["runs"]) == 1
