"""tc_lib.memory's estimates against what a CUDA GPU measures, in one command:

    PYTHONPATH=. python bench/memory_gpu.py            # writes bench/results/memory_gpu_<gpu>.json

For every setting — LLaMA-3B (open_llama_3b) full fine-tuning in fp32 and with bf16 autocast, LoRA on a
bf16 base, bottleneck adapters; roberta-base-shaped full and LoRA at the paper's batch 16 × length 256 —
it builds the model from its config with random weights (no download), runs three training steps on
random tokens and takes the peak of the steady-state steps (2 and 3): allocated (tensors, what the
estimate models) and reserved (the caching allocator's hold, what nvidia-smi and an OOM see). A setting
that runs out of memory is recorded as such and the next one runs. It prints a table, writes the JSON,
and exits 1 when an estimate is off by more than --tolerance (5 %) of the measured allocation, 2 without
a CUDA GPU. Needs torch, transformers and peft only (adapters for the adapter row, else it is skipped):
it runs on a GPU machine whose packages are newer than the project's pins. About 3–5 minutes on an H200.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Callable

RESULTS = Path(__file__).resolve().parent / "results"
PAPER_SHAPE = (16, 256)  # params/paper.yaml: train_batch_size 16, max_seq_length 256
SETTINGS: list[dict[str, Any]] = [
    dict(model="open_llama_3b", method="full", torch_dtype="float32", mixed_precision="no", batch=1, seq=512),
    dict(model="open_llama_3b", method="full", torch_dtype="float32", mixed_precision="bf16", batch=1, seq=512),
    dict(model="open_llama_3b", method="lora", torch_dtype="bfloat16", mixed_precision="bf16", batch=4, seq=512),
    dict(model="open_llama_3b", method="adapter", torch_dtype="bfloat16", mixed_precision="bf16", batch=4, seq=512),
    dict(model="roberta-base", method="full", torch_dtype="float32", mixed_precision="bf16",
         batch=PAPER_SHAPE[0], seq=PAPER_SHAPE[1]),
    dict(model="roberta-base", method="lora", torch_dtype="float32", mixed_precision="bf16",
         batch=PAPER_SHAPE[0], seq=PAPER_SHAPE[1]),
]
OPTIMIZER = "adamw_fused"  # what the HF Trainer uses on CUDA (adamw_torch_fused)


def measure_cuda(config: Any, setup: Any, *, steps: int = 3) -> dict[str, int]:
    """Peak allocated and reserved bytes on GPU 0 over the steady-state steps of a real training loop."""
    import torch

    from tc_lib import memory
    from tc_lib.memory.setup import make_optimizer
    from tc_lib.precision import autocast

    torch.manual_seed(0)
    torch.cuda.empty_cache()
    with torch.device("cuda"):
        model = memory.build(config, setup)
    optimizer = make_optimizer([p for p in model.parameters() if p.requires_grad], setup.optimizer)
    batch = memory.make_batch(config, setup, device="cuda")
    try:
        for step in range(steps):
            if step == 1:  # step 1 creates the optimizer states: from step 2 on the steps look alike
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            with autocast(setup.mixed_precision, "cuda"):
                loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        torch.cuda.synchronize()
        return {"allocated": torch.cuda.max_memory_allocated(), "reserved": torch.cuda.max_memory_reserved()}
    finally:
        del model, optimizer, batch
        torch.cuda.empty_cache()


def run_setting(setting: dict[str, Any], measure: Callable[..., dict[str, int]]) -> dict[str, Any]:
    """One row: the estimate, the measurement (or why there is none) and the relative error."""
    import importlib.util

    import torch

    from tc_lib import memory

    row: dict[str, Any] = {**setting, "optimizer": OPTIMIZER}
    if setting["method"] == "adapter" and importlib.util.find_spec("adapters") is None:
        return {**row, "status": "skipped", "why": "the adapters package is not installed here"}
    started = time.perf_counter()
    config = memory.load_config(setting["model"])
    estimate = memory.estimate(config, method=setting["method"], batch_size=setting["batch"],
                               seq_len=setting["seq"], torch_dtype=setting["torch_dtype"],
                               mixed_precision=setting["mixed_precision"], optimizer=OPTIMIZER)
    row["estimate_bytes"] = estimate.peak
    oom = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    try:
        measured = measure(config, estimate.setup)
    except oom as err:
        return {**row, "status": "oom", "why": str(err).splitlines()[0], "seconds": time.perf_counter() - started}
    error = (estimate.peak - measured["allocated"]) / measured["allocated"]
    return {**row, "status": "measured", "allocated_bytes": measured["allocated"],
            "reserved_bytes": measured["reserved"], "error": error, "seconds": round(time.perf_counter() - started, 1)}


def table(rows: list[dict[str, Any]]) -> str:
    gib = 2**30
    lines = [f"{'model':<15}{'method':<9}{'weights/autocast':<19}{'b×s':>8}{'estimate':>10}{'allocated':>11}"
             f"{'reserved':>10}{'error':>9}"]
    for r in rows:
        head = (f"{r['model']:<15}{r['method']:<9}{r['torch_dtype'] + '/' + r['mixed_precision']:<19}"
                f"{str(r['batch']) + '×' + str(r['seq']):>8}")
        if r["status"] != "measured":
            estimate = f"{r['estimate_bytes'] / gib:>9.2f}G" if "estimate_bytes" in r else f"{'—':>10}"
            lines.append(f"{head}{estimate}  {r['status']}: {r['why']}")
            continue
        lines.append(f"{head}{r['estimate_bytes'] / gib:>9.2f}G{r['allocated_bytes'] / gib:>10.2f}G"
                     f"{r['reserved_bytes'] / gib:>9.2f}G{100 * r['error']:>+8.2f}%")
    return "\n".join(lines)


def main(argv: list[str] | None = None, *, measure: Callable[..., dict[str, int]] = measure_cuda) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0], allow_abbrev=False)
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder of the JSON result (default bench/results)")
    parser.add_argument("--tolerance", type=float, default=0.05, help="largest |error| that passes (default 0.05)")
    parser.add_argument("--only", help="run the settings whose model or method matches this regular expression")
    args = parser.parse_args(argv)
    import torch

    if not torch.cuda.is_available():
        print("error: bench/memory_gpu.py measures CUDA memory and this machine has no usable CUDA GPU",
              file=sys.stderr)
        return 2
    gpu = torch.cuda.get_device_name(0)
    settings = [s for s in SETTINGS if not args.only or re.search(args.only, f"{s['model']} {s['method']}")]
    print(f"GPU: {gpu}; torch {torch.__version__}, CUDA {torch.version.cuda}", flush=True)
    rows = []
    for setting in settings:
        rows.append(run_setting(setting, measure))
        print(table(rows[-1:]).splitlines()[1], flush=True)
    print(table(rows))
    bad = [r for r in rows if r["status"] == "measured" and abs(r["error"]) > args.tolerance]
    import transformers

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"memory_gpu_{re.sub(r'[^A-Za-z0-9]+', '-', gpu).strip('-').lower()}.json"
    path.write_text(json.dumps({"gpu": gpu, "torch": torch.__version__, "cuda": torch.version.cuda,
                                "transformers": transformers.__version__, "tolerance": args.tolerance,
                                "rows": rows}, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {path}; {len(bad)} of {sum(r['status'] == 'measured' for r in rows)} measured settings off by more "
          f"than {100 * args.tolerance:g} %")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
