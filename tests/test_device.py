"""The device a run uses, without a GPU: torch.cuda patched to look like one GPU (or two, or an old one),
and what a CPU machine really says when CUDA is asked for."""

from __future__ import annotations

import pytest
import torch

from tc_lib import device
from tc_lib.config import RunConfig
from tc_lib.errors import ConfigError
from tc_lib.report.tables import peak_memory


def fake_gpus(monkeypatch, *, count: int = 1, capability=(9, 0), name: str = "NVIDIA H200") -> None:
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: count)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=0: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=0: name)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)


def test_cuda_on_this_cpu_machine_is_refused_with_the_reason(monkeypatch):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(ConfigError, match=r"field 'device': cuda, but torch .* (CPU-only build|finds no usable GPU)"):
        device.resolve("cuda")
    assert device.resolve("auto") == "cpu" and device.resolve("cpu") == "cpu"


def test_each_reason_cuda_cannot_be_used(monkeypatch):
    fake_gpus(monkeypatch)
    assert device.cuda_problem() is None and device.resolve("auto") == "cuda"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert "hides every GPU" in device.cuda_problem()
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "finds no usable GPU" in device.cuda_problem() and "driver" in device.cuda_problem()
    monkeypatch.setattr(torch.version, "cuda", None)
    assert "CPU-only build" in device.cuda_problem()


def test_a_run_that_sees_two_gpus_is_refused(monkeypatch):
    fake_gpus(monkeypatch, count=2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(ConfigError, match=r"sees 2 GPUs \(CUDA_VISIBLE_DEVICES=0,1\).*DataParallel"):
        device.check(RunConfig(), "cuda")
    fake_gpus(monkeypatch, count=1)
    device.check(RunConfig(), "cuda")  # one GPU: fine


@pytest.mark.parametrize("fields", [dict(mixed_precision="bf16"), dict(method="lora", torch_dtype="bfloat16")])
def test_bf16_on_a_gpu_without_native_bf16_names_the_gpu_and_suggests_fp16(monkeypatch, fields):
    fake_gpus(monkeypatch, capability=(7, 5), name="Tesla T4")
    with pytest.raises(ConfigError, match=r"emulated, not native, on Tesla T4 \(compute capability 7.5.*fp16"):
        device.check(RunConfig(**fields), "cuda")
    device.check(RunConfig(mixed_precision="fp16"), "cuda")  # fp16 is what a T4 does natively
    fake_gpus(monkeypatch, capability=(8, 0), name="NVIDIA A100")
    device.check(RunConfig(**fields), "cuda")


def test_fp16_on_the_cpu_is_refused():
    with pytest.raises(ConfigError, match="fp16 autocast needs a CUDA device"):
        device.check(RunConfig(mixed_precision="fp16"), "cpu")


def test_pure_bf16_full_fine_tuning_needs_an_explicit_yes():
    with pytest.raises(ConfigError, match="no fp32 master copy.*allow_pure_bf16: true"):
        RunConfig(method="full", torch_dtype="bfloat16")
    allowed = RunConfig(method="full", torch_dtype="bfloat16", allow_pure_bf16=True)
    assert allowed.run_id == RunConfig(method="full", torch_dtype="bfloat16", allow_pure_bf16=True,
                                       output_dir="elsewhere").run_id  # a permission, not part of the result
    RunConfig(method="lora", torch_dtype="bfloat16")  # PEFT trains fp32 copies: fine


def test_device_field_keeps_old_run_ids_at_auto_and_is_checked():
    assert RunConfig(device="auto").run_id == RunConfig().run_id
    assert RunConfig(device="cpu").run_id != RunConfig().run_id != RunConfig(device="cuda").run_id
    with pytest.raises(ConfigError, match="field 'device': expected auto | cpu | cuda, got 'gpu'"):
        RunConfig(device="gpu")
    with pytest.raises(ConfigError, match="TF-IDF reference"):
        RunConfig(model="tfidf", method="tfidf_lr", device="cuda")


def test_the_record_describes_the_gpu_it_used(monkeypatch):
    fake_gpus(monkeypatch, capability=(9, 0))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    info = device.describe("cuda", "auto")
    assert info == {"requested": "auto", "type": "cuda", "name": "NVIDIA H200", "capability": "9.0",
                    "count_visible": 1, "torch": torch.__version__, "cuda": "12.8", "cuda_visible_devices": "3"}


def test_memory_peaks_are_allocated_and_reserved_and_the_report_says_which(monkeypatch):
    import pandas as pd

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda index=0: 300 * 2**20)
    monkeypatch.setattr(torch.cuda, "max_memory_reserved", lambda index=0: 512 * 2**20)
    assert device.memory_peaks() == {"peak_cuda_allocated_mb": 300.0, "peak_cuda_reserved_mb": 512.0}
    gpu = pd.DataFrame({"peak_cuda_reserved_mb": [512.0, 600.0], "peak_cuda_allocated_mb": [300.0, 310.0],
                        "peak_rss_mb": [2000.0, 2100.0]})
    cpu = pd.DataFrame({"peak_cuda_reserved_mb": [None], "peak_cuda_allocated_mb": [None], "peak_rss_mb": [900.0]})
    assert peak_memory(gpu) == (600.0, "GPU reserved") and peak_memory(cpu) == (900.0, "CPU RSS")


def test_gpu_lists(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2, 3")
    assert device.visible_gpus() == ["2", "3"]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert device.visible_gpus() == []
    fake_gpus(monkeypatch, count=4)
    assert device.visible_gpus() == ["0", "1", "2", "3"]
    assert device.parse_gpus("0,1") == ["0", "1"]
    for bad in ("0,,1", "0,0", ""):
        with pytest.raises(ConfigError, match="--gpus"):
            device.parse_gpus(bad)


def test_auto_runs_on_a_gpu_and_on_a_cpu_are_two_arms_and_the_settings_say_which(tmp_path):
    import json

    from planted import plant_run
    from tc_lib.report.arms import arms
    from tc_lib.report.tables import settings_table
    from tc_lib.report.runs import current_runs, read_runs

    for seed in (1, 2):
        for used, gpu_name, f1 in (("cpu", None, 0.5), ("cuda", "NVIDIA H200", 0.6)):
            run_dir = plant_run(tmp_path, RunConfig(seed=seed, output_dir=str(tmp_path)), f1, folder=f"{used}{seed}")
            record = json.loads((run_dir / "metrics.json").read_text())
            record["device"] = {"type": used, "name": gpu_name}
            record["environment"].update(device=used, gpu_name=gpu_name)
            (run_dir / "metrics.json").write_text(json.dumps(record))
    runs, _ = current_runs(read_runs(tmp_path))
    frame = arms(runs)
    assert len(frame) == 2 and sorted(frame["n"]) == [2, 2]  # never pooled into one arm of 4
    assert sorted(frame["label"]) == ["device=cpu", "device=cuda"]
    shown = settings_table(frame, runs).set_index("方法 Method")["设备 Device"]
    assert sorted(shown) == ["cpu", "cuda (NVIDIA H200)"]


@pytest.mark.slow
def test_the_estimator_says_what_training_refuses_for_pure_bf16_full_fine_tuning():
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "tc_lib", "memory", "--model", "minilm", "--method", "full",
                          "--torch-dtype", "bfloat16", "--mixed-precision", "no", "--seq-len", "32"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "no fp32 master copy" in out.stderr and "allow_pure_bf16: true" in out.stderr
    assert "PEAK" in out.stdout  # the estimate itself still answers the memory question


def test_auto_autocast_is_bf16_only_where_the_device_computes_it_natively(monkeypatch):
    from tc_lib import precision

    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2", "avx512f", "avx512_bf16"}))
    assert device.resolve_autocast("auto", "cpu") == "bf16"
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2", "amx_tile", "amx_bf16"}))
    assert device.resolve_autocast("auto", "cpu") == "bf16"
    monkeypatch.setattr(device, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))  # AVX-512 without BF16: emulated
    assert device.resolve_autocast("auto", "cpu") == "no"
    fake_gpus(monkeypatch, capability=(7, 5), name="Tesla T4")
    assert device.resolve_autocast("auto", "cuda") == "no"
    device.check(RunConfig(mixed_precision="auto"), "cuda")  # auto never asks an old GPU for emulated bf16
    fake_gpus(monkeypatch, capability=(8, 0), name="NVIDIA A100")
    assert device.resolve_autocast("auto", "cuda") == "bf16"
    for asked in ("no", "bf16", "fp16"):
        assert device.resolve_autocast(asked, "cpu") == asked  # only auto is resolved
    with pytest.raises(ValueError, match="resolve it on the run's device first"):
        precision.trainer_flags("auto")  # never a silent fp32
    assert RunConfig(mixed_precision="auto").run_id != RunConfig().run_id
    with pytest.raises(ConfigError, match=r"field 'mixed_precision': expected no \| bf16 \| fp16 \| auto"):
        RunConfig(mixed_precision="bogus")


def test_cpu_flags_are_read_from_this_machine():
    import platform
    from pathlib import Path

    if not Path("/proc/cpuinfo").is_file() or platform.machine() != "x86_64":
        pytest.skip("the flags line of /proc/cpuinfo is x86 Linux's")
    flags = device.cpu_flags()
    assert {"fpu", "sse2"} <= flags, sorted(flags)[:10]
