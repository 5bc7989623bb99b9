"""The report's GPU-memory section: the 3B table, the answer, the formula and a live validation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from .display import md, show, table

SEGMENT_LABELS = {"weights": "权重 weights", "optimizer (+ gradients)": "优化器(+梯度) optimizer (+ grads)",
                  "autocast copies": "autocast 副本 copies", "activations": "激活 activations",
                  "logits + transients": "logits+临时量(含已产生的梯度) transients (incl. grads so far)"}


def _pick(rows, *, model="open_llama_3b", shape="1×2048", checkpointing=False, method: str, dtype: str) -> dict:
    return next(r for r in rows if r["model"] == model and r["shape"] == shape and r["checkpointing"] == checkpointing
                and r["method"] == method and r["breakdown"].setup.torch_dtype == dtype
                and r["breakdown"].setup.optimizer == "adamw_fused")


def memory_section(memory_dir: Path) -> None:
    import matplotlib.pyplot as plt

    from ..memory.answer import SEGMENTS, figure_for
    from ..memory.estimate import GIB
    from ..memory.records import practice_rows, read_records

    gib = lambda x: f"{x / GIB:.1f}"  # noqa: E731
    data, reason = read_records(memory_dir)
    md("## GPU 显存估计 · GPU memory estimate\n\n"
       "问题：不用 PEFT 直接微调 3B 的 LLaMA 需要多少显存？PEFT 能省多少？下表由 `tc_lib.memory` 计算：参数量在 meta "
       "设备上精确计数，激活由 PyTorch 伪张量 (FakeTensor) 前向/反向重放得到，无需权重与计算。  \n"
       "The question: how much GPU memory does fine-tuning a 3B LLaMA take without PEFT, and what does PEFT save? "
       "Computed by `tc_lib.memory`: exact parameter counts on the meta device, activations and transients "
       "from a forward/backward replay on fake tensors (no weights, no compute).\n\n"
       "设置为实践中的训练方式 Settings as practitioners train: 全量微调 full = fp32 主权重 + bf16 autocast (HF "
       "Trainer `--bf16`)、纯 bf16 (权重与 Adam 状态均为 bf16)、8-bit AdamW；LoRA 与适配器 = bf16 加载的基座 + fp32 "
       "可训练参数 + bf16 autocast (peft 文档的做法)，或 fp32 基座 + autocast。fused AdamW (HF Trainer 默认 default) "
       "unless stated; LoRA r=8 α=16 dropout 0.1 on q_proj/v_proj; seq_bn 适配器 adapters (reduction 16).")
    if data is None:
        md(f"**没有显存记录 No memory records:** {reason}")
        return
    md(f"_记录 Records: `{Path(memory_dir) / 'memory.json'}`, {data['created_at']}, "
       f"tc_lib {str(data['environment'].get('git_commit'))[:10]}._")
    rows = practice_rows(data)
    shown = pd.DataFrame([{
        "模型 Model": r["model"], "批×长 Batch×seq": r["shape"], "重计算 Ckpt": "on" if r["checkpointing"] else "off",
        "方法 Method": r["method"], "设置 Setting": r["setting"], "可训练 Trainable": f"{r['breakdown'].params_trainable:,}",
        **{f"{SEGMENT_LABELS[name]} (GiB)": gib(r[name]) for name in SEGMENTS},
        "峰值 Peak (GiB)": gib(r["peak"]), "阶段 Phase": r["breakdown"].peak_phase, "规划 Plan (GiB)": gib(r["plan"]),
        "最小显卡 Smallest GPU": r["gpu"]} for r in rows])
    table(shown, caption="估计峰值，按峰值时刻的组成拆分（不含 CUDA 上下文）；规划 = 峰值 × 1.10 + 2 GiB · Estimated "
                         "peak split into what holds it at that moment (CUDA context excluded); plan = peak × 1.10 + 2 GiB")
    for ckpt in (False, True):
        fig = figure_for(rows, model="open_llama_3b", shape="1×2048", checkpointing=ckpt)
        show(fig)
        plt.close(fig)

    full = _pick(rows, method="full", dtype="float32")
    lora = _pick(rows, method="lora", dtype="bfloat16")
    lora32 = _pick(rows, method="lora", dtype="float32")
    b16, b32 = lora["breakdown"], lora32["breakdown"]
    foreach_peak, accel = data["foreach_full_peak"], data["accelerate_estimate"]
    n = full["breakdown"].params_total
    md(f"**回答 Answer (open_llama_3b, 1×2048):** 全量微调 (fp32 + bf16 autocast) 峰值 {gib(full['peak'])} GiB"
       f"（{full['breakdown'].peak_phase}），规划 {gib(full['plan'])} GiB → {full['gpu']} 显卡。按 peft 文档的做法"
       f"（bf16 基座 + fp32 LoRA + autocast），LoRA 峰值 **{gib(lora['peak'])} GiB** → {lora['gpu']}；fp32 基座的 LoRA "
       f"需要 {gib(lora32['peak'])} GiB，多出的部分来自 fp32 的冻结权重 (+{gib(b32.weights - b16.weights)} GiB) 与 "
       f"autocast 为反向保存的 bf16 权重副本 (+{gib(b32.autocast_copies - b16.autocast_copies)} GiB)。  \n"
       f"Full fine-tuning (fp32 weights + bf16 autocast) peaks at {gib(full['peak'])} GiB "
       f"({full['breakdown'].peak_phase}); plan {gib(full['plan'])} GiB, a {full['gpu']} GPU. LoRA as the peft "
       f"documentation trains it (bf16 base, fp32 LoRA, autocast) peaks at **{gib(lora['peak'])} GiB** "
       f"({lora['gpu']}); on an fp32 base it needs {gib(lora32['peak'])} GiB — the frozen weights in fp32 "
       f"(+{gib(b32.weights - b16.weights)} GiB) and the bf16 casts of them that autocast saves for backward "
       f"(+{gib(b32.autocast_copies - b16.autocast_copies)} GiB). With the foreach AdamW instead of the fused one, "
       f"full fine-tuning adds a √v temporary: {gib(foreach_peak)} GiB.\n\n"
       f"- 参数 Parameters: n = {n:,}（open_llama_3b，meta 设备精确计数 exact meta-device count）。\n"
       f"- `accelerate estimate-memory` 的方法给出 would give **{gib(accel)} GiB**：它只按参数量算权重、梯度与 Adam "
       f"状态（bf16 时 8 字节/参数），不含激活、autocast 副本与优化器临时量，且 LoRA 与全量相同。 It counts "
       f"weights, gradients and Adam states from the parameter count alone (8 bytes/parameter for bf16), with no "
       f"activations, autocast copies or step temporaries, and gives LoRA the same number as full fine-tuning.")
    ledger_section(data.get("ledger") or [])
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
    validation = pd.DataFrame(data["validation"])
    shown = validation.copy()
    for col in ("estimate MiB", "measured MiB"):
        shown[col] = shown[col].map(lambda x: f"{x:.2f}")
    shown["error %"] = validation["error %"].map(lambda x: f"{x:+.2f}")
    md("### 验证 · Validation\n\n在 CPU 上实测一个训练步的峰值（跟踪所有存活的张量存储），与估计比较；"
       f"最大误差 {validation['error %'].abs().max():.2f} %。  \nMeasured on CPU (peak of live tensor storages "
       f"over steady-state steps) against the estimate; largest error {validation['error %'].abs().max():.2f} %.")
    table(shown.fillna(""))


def ledger_summary(rows: list[dict]) -> str:
    """The ledger's verdict, computed from its rows (bilingual)."""
    modelled = [r for r in rows if r["not_modelled"] is None]
    if not modelled:
        return "账本中没有可比较的条目 The ledger has no like-for-like entry."
    parts = []
    for kind in dict.fromkeys(r["kind"] for r in modelled):
        errors = [r["error %"] for r in modelled if r["kind"] == kind]
        parts.append(f"{kind}: {min(errors):+.1f} … {max(errors):+.1f} % ({len(errors)})")
    worst = [r["id"] for r in modelled if abs(r["error %"]) > 10]
    text = (f"{len(rows)} 个发表值中 {len(modelled)} 个可同口径比较 Of {len(rows)} published figures, "
            f"{len(modelled)} are like-for-like and estimated — " + "; ".join(parts) + f". "
            f"{len(rows) - len(modelled)} 个未建模（原因见表） not modelled (reasons in the table).")
    if worst:
        text += f" **误差超过 10 % Off by more than 10 %:** {', '.join(worst)}."
    return text


def ledger_section(rows: list[dict]) -> None:
    from ..memory.ledger import ALLOCATOR_SLACK, gb

    md("### 可信程度：与发表的 CUDA 实测对照 · How far to trust it: published CUDA measurements\n\n"
       "估计器在 CPU 上与实测一致，但 CUDA 上的数字来自他人发表的测量（`tc_lib/memory/published.yaml`，"
       "`python -m tc_lib memory ledger`）：每个条目按其来源代码的口径估计——步间平均已分配 = W+G+O（+ 训练循环"
       "保留的 outputs：logits 与 KV 缓存），峰值 = 最长序列下的峰值，保留 (reserved) = 峰值 × "
       f"{1 + ALLOCATOR_SLACK:.2f}（分配器余量，未按本表拟合）。  \n"
       "The estimator matches CPU measurements; on CUDA it is held against published figures, each estimated "
       "as the source's own code measured it — an allocated average as W + G + O (+ the outputs the loop keeps: "
       "logits and KV cache), a peak at the longest allowed sequence, a reserved peak × "
       f"{1 + ALLOCATOR_SLACK:.2f} allocator slack (stated, not fitted). " + ledger_summary(rows))
    if not rows:
        return
    shown = pd.DataFrame([{
        "条目 Entry": r["id"], "来源 Source": f"{r['project']}: {r['path']} @ {str(r['commit'])[:12]}",
        "硬件 Hardware": r["hardware"], "设置 Setting": r["setting"], "口径 Kind": r["kind"],
        "发表 Published": r["published_shown"], "估计 Estimated": "—" if r["estimated"] is None else gb(r["estimated"]),
        "误差 Error %": "" if r["error %"] is None else f"{r['error %']:+.1f}",
        "主导项 Dominant terms / 未建模原因 why not modelled": r["not_modelled"] or ", ".join(
            f"{name} {nbytes / 1e9:.1f} GB" for name, nbytes in r["dominant"])} for r in rows])
    table(shown, caption="发表的 CUDA 显存实测与同口径估计（GB = 10⁹ 字节，来源的单位）· Published CUDA memory "
                         "figures beside the estimate of the same kind (GB = 10⁹ bytes, as the sources print)")
