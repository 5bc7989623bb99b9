"""Every bench script end to end at tiny sizes, so that none can rot unnoticed: memory_gpu.py without a GPU
(torch.cuda patched to name one, the measurement replaced by planted numbers: an exact one, an OOM, one
10 % off — the table, the JSON and the exit code); throughput, eval_speed and eval_share on the tiny
encoder and synthetic data; executor_overhead with two runs per executor (Ray, `slow`)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def bench(monkeypatch):
    module = _bench("memory_gpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H200")
    return module


@pytest.mark.slow
def test_the_gpu_memory_bench_records_each_setting_and_fails_past_the_tolerance(bench, tmp_path, capsys):
    from tc_lib import memory

    def planted(off: float):
        def measure(config, setup):
            if setup.method == "lora":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            peak = memory.estimate(config, method=setup.method, batch_size=setup.batch_size, seq_len=setup.seq_len,
                                   torch_dtype=setup.torch_dtype, mixed_precision=setup.mixed_precision,
                                   optimizer=setup.optimizer).peak
            return {"allocated": int(peak / (1 + off)), "reserved": int(peak * 1.2)}
        return measure

    assert bench.main(["--out", str(tmp_path), "--only", "roberta"], measure=planted(0.0)) == 0
    data = json.loads((tmp_path / "memory_gpu_nvidia-h200.json").read_text())
    rows = {r["method"]: r for r in data["rows"]}
    assert set(rows) == {"full", "lora"} and rows["lora"]["status"] == "oom" and "out of memory" in rows["lora"]["why"]
    full = rows["full"]
    assert (full["batch"], full["seq"], full["status"]) == (16, 256, "measured") and abs(full["error"]) < 1e-6
    assert full["reserved_bytes"] > full["allocated_bytes"]
    out = capsys.readouterr().out
    assert "roberta-base   full" in out and "oom: CUDA out of memory" in out and "0 of 1 measured" in out
    assert bench.main(["--out", str(tmp_path), "--only", "roberta"], measure=planted(0.10)) == 1  # 10 % > 5 %
    assert "1 of 1 measured settings off by more than 5 %" in capsys.readouterr().out


def test_the_gpu_memory_bench_says_so_without_a_gpu(bench, monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert bench.main([]) == 2 and "no usable CUDA GPU" in capsys.readouterr().err


def test_the_eval_share_bench_runs_both_recipes_and_reports_the_same_numbers(tiny_bert, synthetic_data, capsys):
    code = _bench("eval_share").main(["--model", tiny_bert, "--max-train-samples", "64", "--epochs", "2", "--max-seq-length", "32"])
    out = capsys.readouterr().out
    assert "same test numbers: True" in out
    shares = [float(line.split(": ")[1].split("%")[0]) for line in out.splitlines() if " of wall " in line]
    assert len(shares) == 2 and 0 < shares[0] < shares[1] < 100  # scoring test every epoch costs more
    assert code == (0 if shares[0] <= 100 / 3 else 1)


def _bench(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _number(out: str, label: str) -> float:
    return float(out.split(label, 1)[1].split()[0])


def test_the_throughput_bench_runs_all_three_recipes(tiny_bert, synthetic_data, capsys):
    from tc_lib.config import RunConfig
    from tc_lib.train import train_and_evaluate

    args = ["--model", tiny_bert, "--train-samples", "96", "--max-seq-length", "96", "--epochs", "1"]
    code = _bench("throughput").main(args)
    out = capsys.readouterr().out
    a_b, a_c, gap = _number(out, "a/b = "), _number(out, "a/c = "), _number(out, "|F1(a) - F1(b)| = ")
    assert code == (0 if a_b >= 3 and a_c >= 0.9 and gap <= 1 else 1)
    # (a) is the run core itself: its macro-F1 is that of the same run made here
    cfg = RunConfig(model=tiny_bert, dataset="restaurant_sup", epochs=1, max_train_samples=96, max_seq_length=96,
                    save_weights="none", output_dir=str(synthetic_data.parent / "bench_check"))
    assert _number(out, "test macro-F1 ") == round(train_and_evaluate(cfg).metrics["macro_f1"], 4)
    # synthetic sentences are ~12 tokens: padding every one to 96 computes ~8x the tokens
    assert a_b > 1.5, out
    assert "96 train examples" in out and "padded to 96" in out


def test_the_eval_speed_bench_gives_identical_predictions_and_a_ratio(tiny_bert, synthetic_data, capsys):
    import numpy as np

    from tc_lib.config import RunConfig
    from tc_lib.train import prepare_splits

    bench = _bench("eval_speed")
    code = bench.main(["--model", tiny_bert, "--repeats", "1", "--batch-sizes", "64"])
    out = capsys.readouterr().out
    assert "identical predictions" in out and "120 test examples" in out
    ratio = _number(out, "best a/b = ")
    assert code == (0 if ratio >= 3 else 1) and ratio > 0, out
    # the padding figure of the Trainer's file-order batches of 8, recomputed from the tokenized test split
    lengths = np.array([len(ids) for ids in prepare_splits(RunConfig(model=tiny_bert)).splits["test"]["input_ids"]])
    assert f"{bench.padded_per_real(lengths, 8):.2f} tokens computed per real token" in out


@pytest.mark.ray
@pytest.mark.notebook
@pytest.mark.slow
def test_the_executor_overhead_bench_runs_both_executors(tmp_path):
    # as a user runs it: a process of its own (an embedded Ray keeps process-wide state: its auth token,
    # the environment it sets); the grids in tmp_path, Ray's short temp folder its own
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    done = subprocess.run([sys.executable, str(BENCH / "executor_overhead.py"), "--runs", "2",
                           "--workdir", str(tmp_path / "bench")], capture_output=True, text=True, env=env,
                          timeout=600, cwd=BENCH.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "(a) local pool --jobs 2" in out and "(b) embedded Ray (2 CPUs)" in out
    assert _number(out, "ratio b/a (s/run): ") > 0


def test_every_bench_script_has_a_smoke_test_here():
    source = Path(__file__).read_text()
    missing = [p.name for p in BENCH.glob("*.py") if f'"{p.stem}"' not in source and f'"{p.name}"' not in source]
    assert missing == []
