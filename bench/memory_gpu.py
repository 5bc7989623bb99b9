"""Compare tc_lib.memory estimates with torch.cuda.max_memory_allocated on a GPU.

Runs three steady-state training steps per configuration (random weights, random tokens) on small and
~1B-parameter LLaMA-shaped models, full / LoRA / adapter, and prints estimate, measured peak and error.
Needs a CUDA GPU; prints one line and exits 2 without one. Usage: `.venv/bin/python bench/memory_gpu.py`.

On CUDA the estimate counts what the CPU kernels would allocate; LLaMA has no dropout and upcasts its
norms and loss explicitly, so the tensors should be the same. Allocator rounding (512 B blocks) and
cuBLAS workspaces are the expected residue.
"""

from __future__ import annotations

import sys
import time

import torch
from transformers import LlamaConfig

from tc_lib import memory

CONFIGS = {
    "llama-small (h512 L8)": LlamaConfig(hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                                         num_attention_heads=8, num_key_value_heads=8, vocab_size=32000,
                                         max_position_embeddings=4096, tie_word_embeddings=False),
    "llama-1B (h2048 L16, GQA)": LlamaConfig(hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
                                             num_attention_heads=32, num_key_value_heads=8, vocab_size=32000,
                                             max_position_embeddings=4096, tie_word_embeddings=False),
}
SETUPS = [dict(method="full", mixed_precision="bf16", optimizer="adamw_fused"),
          dict(method="full", torch_dtype="bfloat16", mixed_precision="no", optimizer="adamw"),
          dict(method="full", mixed_precision="bf16", optimizer="adamw_fused", gradient_checkpointing=True),
          dict(method="lora", torch_dtype="bfloat16", mixed_precision="no", optimizer="adamw"),
          dict(method="lora", mixed_precision="bf16", optimizer="adamw_fused", gradient_checkpointing=True),
          dict(method="adapter", torch_dtype="bfloat16", mixed_precision="no", optimizer="adamw"),
          dict(method="lora", torch_dtype="bfloat16", mixed_precision="bf16", optimizer="adamw_fused"),
          dict(method="ia3", torch_dtype="bfloat16", mixed_precision="bf16", optimizer="adamw_fused")]
SHAPES = [(1, 2048), (8, 512)]


def measure_cuda(config, setup: memory.Setup, steps: int = 3) -> int:
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = memory.build(config, setup)
    params = [p for p in model.parameters() if p.requires_grad]
    if setup.optimizer == "adamw_fused":
        optimizer = torch.optim.AdamW(params, lr=1e-4, fused=True)
    else:
        optimizer = torch.optim.AdamW(params, lr=1e-4, foreach=True)
    batch = memory.make_batch(config, setup, device="cuda")
    for step in range(steps):
        if step == 1:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        with memory.autocast_context(setup, device="cuda"):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated()
    del model, optimizer, batch, loss
    torch.cuda.empty_cache()
    return peak


def main() -> int:
    if not torch.cuda.is_available():
        print("error: bench/memory_gpu.py needs a CUDA GPU", file=sys.stderr)
        return 2
    print(f"GPU: {torch.cuda.get_device_name(0)}; torch {torch.__version__}")
    print(f"{'model':<28}{'setup':<58}{'b×s':>9}{'estimate GiB':>14}{'measured GiB':>14}{'error':>9}")
    worst = 0.0
    for name, config in CONFIGS.items():
        for options in SETUPS:
            for batch, seq in SHAPES:
                started = time.perf_counter()
                estimate = memory.estimate(config, batch_size=batch, seq_len=seq, **options)
                measured = measure_cuda(config, estimate.setup)
                error = (estimate.peak - measured) / measured
                worst = max(worst, abs(error))
                label = ", ".join(f"{k}={v}" for k, v in options.items())
                print(f"{name:<28}{label:<58}{f'{batch}×{seq}':>9}{estimate.peak / 2**30:>14.3f}"
                      f"{measured / 2**30:>14.3f}{100 * error:>+8.2f}%  ({time.perf_counter() - started:.0f}s)",
                      flush=True)
    print(f"largest |error|: {100 * worst:.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
