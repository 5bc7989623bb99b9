"""The report's GPU-memory section: the 3B table, the answer, the formula and a live validation."""

from __future__ import annotations

import pandas as pd

from ..methods import METHODS
from .display import md, table

GPU_SIZES_GB = (16, 24, 32, 40, 48, 80, 94, 141, 192)  # common accelerator memory sizes (decimal GB)
MEMORY_MODELS = ("open_llama_3b", "llama-3.2-3b")
MEMORY_SHAPES = ((1, 2048), (64, 128))


def plan_gpu_bytes(peak: int) -> int:
    """What to plan for: +10 % allocator slack and 2 GiB for the CUDA context and kernels."""
    from ..memory import GIB

    return int(peak * 1.10 + 2 * GIB)


def smallest_gpu(nbytes: int) -> str:
    fits = [g for g in GPU_SIZES_GB if g * 1e9 >= nbytes]
    return f"{fits[0]} GB" if fits else f"> {GPU_SIZES_GB[-1]} GB (shard: ZeRO / FSDP)"


def memory_table(*, torch_dtype: str = "float32", mixed_precision: str = "bf16",
                 optimizer: str = "adamw_fused") -> pd.DataFrame:
    from .. import memory as mem

    rows = []
    for model in MEMORY_MODELS:
        config = mem.load_config(model)
        for batch, seq in MEMORY_SHAPES:
            for ckpt in (False, True):
                for method in METHODS:
                    b = mem.estimate(config, method=method, batch_size=batch, seq_len=seq, torch_dtype=torch_dtype,
                                     mixed_precision=mixed_precision,
                                     optimizer=optimizer, gradient_checkpointing=ckpt)
                    rows.append({"model": model, "batch×seq": f"{batch}×{seq}", "checkpointing": ckpt,
                                 "method": method, "trainable": b.params_trainable, "W": b.weights,
                                 "G+O+T": b.gradients + b.optimizer_states + b.optimizer_temporaries,
                                 "C": b.autocast_copies, "A+Λ+X": b.activations + b.logits_loss + b.transients,
                                 "peak": b.peak, "phase": b.peak_phase, "plan": plan_gpu_bytes(b.peak),
                                 "total": b.params_total})
    return pd.DataFrame(rows)


def memory_validation() -> pd.DataFrame:
    """Estimate vs measured peak (CPU, live storages) on small LLaMA- and BERT-shaped models."""
    from transformers import BertConfig, LlamaConfig

    from .. import memory as mem

    llama = LlamaConfig(hidden_size=256, num_hidden_layers=4, intermediate_size=688, num_attention_heads=4,
                        vocab_size=2000, max_position_embeddings=1024, tie_word_embeddings=False)
    bert = BertConfig(hidden_size=256, num_hidden_layers=4, intermediate_size=1024, num_attention_heads=4,
                      vocab_size=2000, max_position_embeddings=1024)
    cases = [("LLaMA", llama, dict(method="full", mixed_precision="bf16")),
             ("LLaMA", llama, dict(method="lora", torch_dtype="bfloat16", mixed_precision="no")),
             ("LLaMA", llama, dict(method="full", torch_dtype="bfloat16", mixed_precision="no", attention="eager",
                                       gradient_checkpointing=True)),
             ("BERT", bert, dict(method="full", mixed_precision="no", attention="eager")),
             ("BERT", bert, dict(method="adapter", mixed_precision="bf16")),
             ("BERT", bert, dict(method="lora", mixed_precision="no", gradient_checkpointing=True))]
    rows = []
    for family, config, options in cases:
        b = mem.estimate(config, batch_size=4, seq_len=128, **options)
        measured = mem.measure_peak(config, b.setup)
        setup = b.setup
        rows.append({"family": family, "method": setup.method, "weights": setup.torch_dtype,
                     "autocast": setup.mixed_precision,
                     "attention": setup.attention, "checkpointing": setup.gradient_checkpointing,
                     "phase": b.peak_phase, "estimate MiB": b.peak / 2**20,
                     "measured MiB": measured / 2**20, "error %": 100 * (b.peak - measured) / measured})
    return pd.DataFrame(rows)


def memory_section() -> None:
    from .. import memory as mem

    gib = lambda x: f"{x / mem.GIB:.1f}"  # noqa: E731
    md("## GPU 显存估计 · GPU memory estimate\n\n"
       "问题：不用 PEFT 直接微调 3B 的 LLaMA 需要多少显存？PEFT 能省多少？下表由 `tc_lib.memory` 计算：参数量在 meta "
       "设备上精确计数，激活由 PyTorch 伪张量 (FakeTensor) 前向/反向重放得到，无需权重与计算。  \n"
       "The question: how much GPU memory does fine-tuning a 3B LLaMA take without PEFT, and what does PEFT save? "
       "Computed by `tc_lib.memory`: exact parameter counts on the meta device, activations and transients "
       "from a forward/backward replay on fake tensors (no weights, no compute).\n\n"
       "设置 Setting: fp32 主权重 + bf16 autocast (torch_dtype float32, mixed_precision bf16 = HF Trainer "
       "`--bf16`), fused AdamW (HF Trainer 默认 "
       "default), LoRA r=8 α=16 dropout 0.1 on q_proj/v_proj, seq_bn 适配器 adapter (reduction 16), "
       "IA³ on k_proj/v_proj/down_proj (peft 默认 default)。")
    table_ = memory_table()
    shown = table_.copy()
    for col in ("W", "G+O+T", "C", "A+Λ+X", "peak", "plan"):
        shown[col] = shown[col].map(gib)
    shown["GPU"] = table_["plan"].map(smallest_gpu)
    shown["trainable"] = table_["trainable"].map(lambda x: f"{x:,}")
    shown["checkpointing"] = shown["checkpointing"].map({True: "开 on", False: "关 off"})
    table(shown.drop(columns=["total"]).rename(columns={
        "model": "模型 Model", "batch×seq": "批×长 Batch×seq", "checkpointing": "重计算 Checkpointing",
        "method": "方法 Method", "trainable": "可训练参数 Trainable", "W": "权重 W (GiB)",
        "G+O+T": "梯度+优化器 G+O+T (GiB)", "C": "autocast 副本 C (GiB)", "A+Λ+X": "激活 A+Λ+X (GiB)",
        "peak": "峰值 Peak (GiB)", "phase": "峰值阶段 Phase", "plan": "规划 Plan (GiB)", "GPU": "显卡 GPU"}),
        caption="估计峰值（不含 CUDA 上下文）；规划 = 峰值 × 1.10 + 2 GiB · Estimated peak (CUDA context "
                "excluded); plan = peak × 1.10 + 2 GiB")

    full = table_[(table_["model"] == "open_llama_3b") & (table_["method"] == "full") & (table_["batch×seq"] == "1×2048")
                  & (~table_["checkpointing"])].iloc[0]
    lora = table_[(table_["model"] == "open_llama_3b") & (table_["method"] == "lora") & (table_["batch×seq"] == "1×2048")
                  & (~table_["checkpointing"])].iloc[0]
    foreach = mem.estimate("open_llama_3b", method="full", batch_size=1, seq_len=2048, optimizer="adamw")
    accel = mem.accelerate_estimate("open_llama_3b", half_precision=True)
    n = int(full["total"])
    md(f"**回答 Answer (open_llama_3b, 1×2048):** 全量微调峰值 {gib(full['peak'])} GiB（{full['phase']}），"
       f"规划 {gib(full['plan'])} GiB → {smallest_gpu(int(full['plan']))} 显卡；LoRA 峰值 {gib(lora['peak'])} GiB，"
       f"节省 {gib(full['peak'] - lora['peak'])} GiB ({100 * (1 - lora['peak'] / full['peak']):.0f}%)。 "
       f"Full fine-tuning peaks at {gib(full['peak'])} GiB ({full['phase']}); plan {gib(full['plan'])} GiB, i.e. a "
       f"{smallest_gpu(int(full['plan']))} GPU. LoRA peaks at {gib(lora['peak'])} GiB, saving "
       f"{gib(full['peak'] - lora['peak'])} GiB ({100 * (1 - lora['peak'] / full['peak']):.0f} %). With the foreach "
       f"AdamW (PyTorch's default on CUDA) the step adds a √v temporary: {gib(foreach.peak)} GiB.\n\n"
       f"- 参数 Parameters: n = {n:,}（open_llama_3b，meta 设备精确计数 exact meta-device count）。\n"
       f"- `accelerate estimate-memory` 的方法给出 would give **{gib(accel)} GiB**：它只按参数量算权重、梯度与 Adam "
       f"状态（bf16 时 8 字节/参数），不含激活、autocast 副本与优化器临时量，且 LoRA 与全量相同。 It counts "
       f"weights, gradients and Adam states from the parameter count alone (8 bytes/parameter for bf16), with no "
       f"activations, autocast copies or step temporaries, and gives LoRA the same number as full fine-tuning.")
    md("### 公式与假设 · Formula and assumptions\n\n"
       "记号 Symbols: W 权重 weights, G 梯度 gradients, O 优化器状态 optimizer states, T 优化器步临时量 step "
       "temporaries, C autocast 权重副本 weight copies, A 为反向保存的激活 activations saved for backward, "
       "Λ 交叉熵保存的 fp32 log-probs, X 前向/反向峰值时刻的其他临时量 (交叉熵梯度缓冲、注意力反向临时量、已产生的梯度)。\n\n"
       "- P_fb = W + O + inputs + max(A + C + Λ + X)（前向/反向 forward/backward）\n"
       "- P_step = W + O + G + T + inputs（优化器步 optimizer step）\n"
       "- peak = max(P_fb, P_step)\n\n"
       "每参数字节 Bytes per parameter: W = 4 (fp32 主权重 master) 或 2 (bf16); G = 参数 dtype; "
       "O(AdamW) = 2 × dtype; T(foreach AdamW) = 1 × dtype, fused = 0. "
       "假设 Assumptions: 无填充批次 unpadded batches, 无 KV 缓存 no KV cache, 梯度累积 1, zero_grad(set_to_none)。\n\n"
       "**未计入 Not counted:** CUDA 上下文与内核 (~0.5–2 GB)、缓存分配器的取整与碎片 (常见 5–10 %)；"
       "因此规划 = 峰值 × 1.10 + 2 GiB。 The CUDA context and kernels and the caching allocator's rounding and "
       "fragmentation — hence plan = peak × 1.10 + 2 GiB. 激活按 CPU 内核计数：LLaMA 无 dropout 且显式 fp32 归一化，"
       "CUDA 上张量相同；带 dropout 的编码器在 CUDA 上更小（1 字节掩码、flash attention）。 Activations follow the "
       "CPU kernels; for LLaMA the CUDA tensors are the same, for encoders with dropout CUDA needs less.")
    validation = memory_validation()
    shown = validation.copy()
    for col in ("estimate MiB", "measured MiB"):
        shown[col] = shown[col].map(lambda x: f"{x:.2f}")
    shown["error %"] = validation["error %"].map(lambda x: f"{x:+.2f}")
    md("### 验证 · Validation\n\n在 CPU 上实测一个训练步的峰值（跟踪所有存活的张量存储），与估计比较；"
       f"最大误差 {validation['error %'].abs().max():.2f} %。  \nMeasured on CPU (peak of live tensor storages "
       f"over steady-state steps) against the estimate; largest error {validation['error %'].abs().max():.2f} %.")
    table(shown.fillna(""))
