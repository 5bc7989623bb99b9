"""bench/memory_gpu.py end to end without a GPU: torch.cuda patched to name a GPU, the measurement
replaced by planted numbers (an exact one, an OOM, one 10 % off) — the table, the JSON and the exit code."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
import torch

BENCH = Path(__file__).resolve().parents[1] / "bench" / "memory_gpu.py"


@pytest.fixture
def bench(monkeypatch):
    spec = importlib.util.spec_from_file_location("memory_gpu", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: "NVIDIA H200")
    return module


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
    spec = importlib.util.spec_from_file_location("eval_share", BENCH.parent / "eval_share.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    code = module.main(["--model", tiny_bert, "--max-train-samples", "64", "--epochs", "2", "--max-seq-length", "32"])
    out = capsys.readouterr().out
    assert "same test numbers: True" in out
    shares = [float(line.split(": ")[1].split("%")[0]) for line in out.splitlines() if " of wall " in line]
    assert len(shares) == 2 and 0 < shares[0] < shares[1] < 100  # scoring test every epoch costs more
    assert code == (0 if shares[0] <= 100 / 3 else 1)
