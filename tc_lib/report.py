"""The bilingual report: every section is computed from the run records; the notebook only calls these."""

from __future__ import annotations

import html
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from . import stats
from .errors import TcError
from .results import load_record, read_history, read_runs

# datasets imports tqdm.auto, which warns inside a kernel without ipywidgets; the report shows no bars
warnings.filterwarnings("ignore", message="IProgress not found")

METRIC_NAMES = {"loss": "损失 Loss", "accuracy": "准确率 Accuracy", "micro_f1": "Micro-F1",
                "macro_f1": "Macro-F1"}
METHOD_NAMES = {"full": "全量微调 full", "lora": "LoRA", "adapter": "适配器 adapter"}


def _display(obj: Any) -> None:
    from IPython.display import display

    display(obj)


def md(text: str) -> None:
    from IPython.display import Markdown

    _display(Markdown(text))


def table(frame: pd.DataFrame, *, caption: str | None = None, index: bool = False) -> None:
    from IPython.display import HTML

    cap = f"<p class='tc-caption'><em>{html.escape(caption)}</em></p>" if caption else ""
    _display(HTML(cap + frame.to_html(index=index, escape=True, na_rep="—", border=0, classes="tc-table")))


def _fmt(x: Any, digits: int = 4) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)) or pd.isna(x):
        return "—"
    return f"{x:.{digits}f}"


def _p(x: float) -> str:
    return "—" if pd.isna(x) else ("<0.001" if x < 0.001 else f"{x:.3f}")


class Report:
    def __init__(self, runs: pd.DataFrame, history: pd.DataFrame, records: dict[str, dict]) -> None:
        self.all_runs = runs
        self.runs = runs[runs["status"] == "success"].reset_index(drop=True)
        self.history = history
        self.records = records

    @classmethod
    def load(cls, runs_dir: str | Path) -> "Report":
        runs = read_runs(runs_dir)
        records = {Path(d).name: rec for d in runs["run_dir"] if (rec := load_record(Path(d))) is not None}
        return cls(runs, read_history(runs_dir), records)

    # ------------------------------------------------------------ header and rules

    def header(self) -> None:
        n_ok, n_all = len(self.runs), len(self.all_runs)
        md("# 文本分类微调研究报告 · Text-classification fine-tuning report\n\n"
           f"本报告由 {n_all} 条运行记录自动生成（成功 {n_ok} 条）；所有数字均由记录计算得出。  \n"
           f"Generated from {n_all} run records ({n_ok} successful); every number is computed from them.")
        if n_ok == 0:
            md("**没有成功的运行记录。No successful runs were found.**")

    def rules(self) -> None:
        rules = sorted(self.runs["selection"].dropna().unique())
        rule_text = {"last": "取最后一轮 (last epoch)", "dev": "按从训练集划出的开发集 macro-F1 选轮次 "
                     "(best dev macro-F1; dev carved from train)"}
        lines = ["## 说明 · Ground rules",
                 "- **模型选择 Model selection**: " + "; ".join(rule_text.get(r, r) for r in rules)
                 + "。测试集从不参与选择。The test split never takes part in selection.",
                 "- **std** 为各种子间的样本标准差 (ddof=1)；95% 置信区间为 t 区间。 "
                 "std is the sample standard deviation over seeds (ddof=1); 95 % CIs are t-intervals."]
        ok = self.runs.dropna(subset=["accuracy", "micro_f1"])
        if len(ok):
            gap = float((ok["accuracy"] - ok["micro_f1"]).abs().max())
            lines.append(f"- 单标签多分类中准确率恒等于 micro-F1（本批记录最大差 {gap:.1e}），下文不再重复解读。 "
                         f"For single-label multi-class data accuracy equals micro-F1 (largest difference in "
                         f"these records: {gap:.1e}); it is an identity, not a finding.")
        collapsed = self.runs[self.runs["collapsed"] == True]  # noqa: E712 — nullable boolean
        if len(collapsed):
            lines.append(f"- **坍缩运行 Collapsed runs** ({len(collapsed)}): macro-F1 ≤ 多数类基线 (majority-class "
                         "floor)。它们计入均值但在此单独列出。They are included in the means and listed here: "
                         + ", ".join(f"`{r}`" for r in collapsed["run_id"]))
        else:
            lines.append("- 没有坍缩运行（macro-F1 ≤ 多数类基线）。No run collapsed to the majority-class floor.")
        failed = self.all_runs[self.all_runs["status"] != "success"]
        if len(failed):
            lines.append(f"- **失败或未完成的运行 Failed or unfinished runs** ({len(failed)}), 不计入统计 "
                         "(excluded from statistics):")
            lines += [f"    - `{r.run_id}` [{r.status}]: {r.error or '—'}" for r in failed.itertuples()]
        else:
            lines.append("- 没有失败的运行。No run failed.")
        md("\n".join(lines))

    # ------------------------------------------------------------ environment

    def environment(self) -> None:
        md("## 环境 · Environment")
        if not self.records:
            return
        envs = [r["environment"] for r in self.records.values()]
        first = envs[0]
        versions = ", ".join(f"{k} {v}" for k, v in first["packages"].items() if v)
        hardware = sorted({f"{e.get('cpu_model') or '?'} ×{e.get('cpu_count')} ({e.get('device')}"
                           + (f", {e['gpu_name']}" if e.get("gpu_name") else "") + ")" for e in envs})
        threads = sorted({e.get("torch_threads") for e in envs if e.get("torch_threads")})
        compute = float(self.all_runs["wall_time_s"].fillna(0).sum())
        md(f"- 软件 Software: Python {first['python']}; {versions}\n"
           f"- 硬件 Hardware: {'; '.join(hardware)}; torch 线程 threads: {threads}\n"
           f"- 运行总计算时间 Total compute time of the runs shown: {compute / 60:.1f} min "
           f"({len(self.all_runs)} runs)\n"
           f"- 代码版本 Code commit(s): {', '.join(sorted({str(e.get('git_commit'))[:10] for e in envs}))}")

    # ------------------------------------------------------------ datasets

    def datasets(self) -> None:
        from .data import get_dataset, label_names
        from .errors import DataError
        from .metrics import majority_floor

        md("## 数据集 · Datasets\n\n分类基线：TF-IDF（1–2 元词组）+ 逻辑回归，在完整训练集上训练（scikit-learn，数秒）。"
           "A classical reference: TF-IDF (uni+bigrams) + logistic regression trained on the full train split "
           "(scikit-learn, seconds), so readers see what the encoders add.")
        rows = []
        for dataset in sorted(self.runs["dataset"].unique()):
            sub = self.runs[self.runs["dataset"] == dataset]
            seeds = sorted(sub["data_seed"].dropna().unique())
            data_seed = int(seeds[0]) if seeds else 2022
            try:
                ds = get_dataset(dataset.split("+"), "[SEP]", data_seed=data_seed)
            except DataError as err:
                rows.append({"数据集 Dataset": dataset, "备注 Note": f"data unavailable: {err}"})
                continue
            names = label_names(ds)
            train_labels, test_labels = list(ds["train"]["labels"]), list(ds["test"]["labels"])
            counts = np.bincount(train_labels, minlength=len(names))
            floor = majority_floor(labels=test_labels, num_classes=len(names))
            baseline = _tfidf_baseline(list(ds["train"]["text"]), train_labels, list(ds["test"]["text"]), test_labels,
                                       len(names))
            used = sorted({int(x) for x in sub["train_size"].dropna()})
            rows.append({
                "数据集 Dataset": dataset, "类别数 Classes": len(names),
                "训练/测试 Train/test": f"{len(train_labels)} / {len(test_labels)}",
                "运行所用训练量 Train used by runs": ", ".join(map(str, used)),
                "训练集标签分布 Train label distribution": ", ".join(
                    f"{n} {c / counts.sum():.1%}" for n, c in zip(names, counts)),
                "多数类基线 Majority floor (acc / macro-F1)": f"{floor['accuracy']:.4f} / {floor['macro_f1']:.4f}",
                "TF-IDF+LR (acc / macro-F1)": f"{baseline['accuracy']:.4f} / {baseline['macro_f1']:.4f}",
                "数据种子 Data seed": data_seed,
            })
        if rows:
            table(pd.DataFrame(rows), caption="数据集概况 · Dataset overview (test split unchanged; AG News "
                  "split 9:1 with the data seed)")

    # ------------------------------------------------------------ main tables

    def summary(self) -> pd.DataFrame:
        return stats.aggregate(self.runs)

    def metric_tables(self) -> None:
        md("## 主要结果 · Main results\n\n每格为各种子的 均值 ± 样本标准差 (n)；行 = 数据集 · 方法，列 = 模型。  \n"
           "Cells are mean ± sample std over seeds (n); rows are dataset · method, columns are models.")
        summary = self.summary()
        for metric in stats.METRICS:
            sub = summary[summary["metric"] == metric].copy()
            if sub.empty:
                continue
            sub["cell"] = [stats.format_mean_std(m, s, n) + (f" (n={n})" if n > 1 else "")
                           for m, s, n in zip(sub["mean"], sub["std"], sub["n"])]
            sub["method"] = sub["method"].map(lambda m: METHOD_NAMES.get(m, m))
            wide = sub.pivot(index=["dataset", "method"], columns="model", values="cell").reset_index()
            wide.columns.name = None
            table(wide.rename(columns={"dataset": "数据集 Dataset", "method": "方法 Method"}),
                  caption=METRIC_NAMES[metric])

    def tidy_table(self) -> None:
        summary = self.summary().copy()
        for col in ("mean", "std", "ci_low", "ci_high"):
            summary[col] = summary[col].map(_fmt)
        summary["95% CI"] = "[" + summary["ci_low"] + ", " + summary["ci_high"] + "]"
        md("### 完整长表 · Long tidy table (n, mean, std, 95 % CI)")
        table(summary[["dataset", "model", "method", "metric", "n", "mean", "std", "95% CI", "seeds"]])

    # ------------------------------------------------------------ methods

    def methods(self) -> None:
        md("## 全量微调 vs LoRA vs 适配器 · Full fine-tuning vs LoRA vs adapters\n\n"
           "可训练参数分含分类头与不含分类头两列（BERT 的 pooler 计入分类头）。时间与吞吐为每次运行的训练部分；"
           "峰值内存为进程峰值 RSS（CPU）或 CUDA 峰值分配。  \n"
           "Trainable parameters with and without the head (BERT's pooler counts as head). Time and throughput "
           "cover training; peak memory is the process peak RSS (CPU) or peak CUDA allocation.")
        rows = []
        for (dataset, model, method), g in self.runs.groupby(["dataset", "model", "method"]):
            acc, f1 = stats.summarize(g["accuracy"].tolist()), stats.summarize(g["macro_f1"].tolist())
            rows.append({
                "数据集 Dataset": dataset, "模型 Model": model, "方法 Method": METHOD_NAMES.get(method, method),
                "n": acc["n"],
                "准确率 Accuracy [95% CI]": f"{_fmt(acc['mean'])} [{_fmt(acc['ci_low'])}, {_fmt(acc['ci_high'])}]",
                "Macro-F1 [95% CI]": f"{_fmt(f1['mean'])} [{_fmt(f1['ci_low'])}, {_fmt(f1['ci_high'])}]",
                "可训练参数(含头) Trainable incl. head": f"{int(g['params_trainable'].iloc[0]):,}",
                "可训练参数(不含头) Trainable excl. head": f"{int(g['params_trainable_no_head'].iloc[0]):,}",
                "占比 % of total": f"{100 * g['params_trainable'].iloc[0] / g['params_total'].iloc[0]:.2f}%",
                "训练时间 Train time (s)": _fmt(g["train_time_s"].mean(), 1),
                "吞吐 Throughput (ex/s)": _fmt(g["train_samples_per_s"].mean(), 1),
                "峰值内存 Peak memory (MB)": _fmt((g["peak_cuda_allocated_mb"].fillna(g["peak_rss_mb"])).max(), 0),
            })
        if rows:
            table(pd.DataFrame(rows))

    # ------------------------------------------------------------ curves

    def curves(self) -> None:
        md("## 训练曲线 · Training curves\n\n每轮结束后在测试集上的评估（仅作曲线展示，不用于选择）；线为种子均值，阴影为 ±1 std。  \n"
           "Test-split evaluation after every epoch (shown as curves, never used for selection); lines are "
           "means over seeds, bands ±1 std.")
        if self.history.empty:
            md("_没有历史记录 No history._")
            return
        import matplotlib.pyplot as plt

        from .plots import curves_figure

        frames = {m: stats.curves(self.history, metric=m) for m in ("macro_f1", "loss")}
        fig = curves_figure(frames, titles={m: METRIC_NAMES[m] for m in frames})
        _display(fig)
        plt.close(fig)

    # ------------------------------------------------------------ comparisons

    def comparisons(self) -> pd.DataFrame:
        most_seeds = int(self.runs.groupby(["dataset", "model", "method"]).size().max()) if len(self.runs) else 0
        md("## 配对比较 · Paired comparisons\n\n按种子配对：差值 = 均值(a − b)，p 值来自配对 t 检验，效应量为 Cohen's d_z。"
           f"种子数少（n ≤ {most_seeds}）"
           "时检验功效很低：不显著不代表没有差异。  \nPaired by seed: difference = mean(a − b), p from the "
           "paired t-test, effect size Cohen's d_z. With this few seeds the tests have low power: a non-"
           "significant result is not evidence of no difference.")
        frames = []
        methods = sorted(self.runs["method"].unique())
        for a, b in [(x, y) for i, x in enumerate(methods) for y in methods[i + 1:]]:
            frames.append(stats.paired_comparison(self.runs, factor="method", a=a, b=b,
                                                  within=("dataset", "model")))
        models = sorted(self.runs["model"].unique())
        for a, b in [(x, y) for i, x in enumerate(models) for y in models[i + 1:]]:
            frames.append(stats.paired_comparison(self.runs, factor="model", a=a, b=b,
                                                  within=("dataset", "method")))
        frames = [f for f in frames if not f.empty]
        if not frames:
            md("_需要至少两个方法或模型。Needs at least two methods or models._")
            return pd.DataFrame()
        comp = pd.concat(frames, ignore_index=True)
        shown = comp.copy()
        shown["group"] = shown.apply(lambda r: " · ".join(str(r[k]) for k in ("dataset", "model", "method")
                                                          if k in r and pd.notna(r[k])), axis=1)
        shown = shown[["group", "a", "b", "n", "mean_a", "mean_b", "diff", "p_value", "cohens_dz"]]
        for col in ("mean_a", "mean_b", "diff"):
            shown[col] = shown[col].map(_fmt)
        shown["p_value"] = shown["p_value"].map(_p)
        shown["cohens_dz"] = shown["cohens_dz"].map(lambda x: _fmt(x, 2))
        table(shown.rename(columns={"group": "组 Group", "diff": "差值 Diff (a−b)", "p_value": "p",
                                    "cohens_dz": "d_z"}), caption="Macro-F1, 配对 paired by seed")
        return comp

    # ------------------------------------------------------------ conclusions

    def conclusions(self) -> None:
        md("## 结论 · Conclusions (computed from the numbers above)")
        summary = self.summary()
        f1 = summary[summary["metric"] == "macro_f1"]
        if f1.empty:
            md("_没有可下结论的运行。No runs to conclude from._")
            return
        lines = []
        full = f1[f1["method"] == "full"] if (f1["method"] == "full").any() else f1
        for dataset, g in full.groupby("dataset"):
            best = g.loc[g["mean"].idxmax()]
            lines.append(f"- **{dataset}**: 最佳模型 best model = `{best['model']}` ({best['method']}), macro-F1 "
                         f"{stats.format_mean_std(best['mean'], best['std'], best['n'])}.")
        for model, g in full.groupby("model"):
            best = g.loc[g["mean"].idxmax()]
            lines.append(f"- `{model}` 表现最好的数据集 its best dataset = **{best['dataset']}** "
                         f"(macro-F1 {_fmt(best['mean'])}).")
        comp = [stats.paired_comparison(self.runs, factor="method", a="full", b=m) for m in ("lora", "adapter")]
        comp = pd.concat([c for c in comp if not c.empty], ignore_index=True) if any(len(c) for c in comp) else None
        if comp is not None:
            for r in comp.itertuples():
                sig = "显著 significant" if pd.notna(r.p_value) and r.p_value < 0.05 else "不显著 not significant"
                trained = self.runs[(self.runs["dataset"] == r.dataset) & (self.runs["model"] == r.model)]
                p_full = trained[trained["method"] == "full"]["params_trainable"].median()
                p_peft = trained[trained["method"] == r.b]["params_trainable"].median()
                t_full = trained[trained["method"] == "full"]["train_samples_per_s"].mean()
                t_peft = trained[trained["method"] == r.b]["train_samples_per_s"].mean()
                higher = "高" if r.diff >= 0 else "低"
                lines.append(
                    f"- {r.dataset} · {r.model}: 全量微调比 {r.b} {higher} {abs(100 * r.diff):.2f} 个 macro-F1 点 "
                    f"(p={_p(r.p_value)}, {sig}, n={r.n}); {r.b} 仅训练 {p_peft / p_full:.2%} 的参数，"
                    f"训练吞吐为全量的 {t_peft / t_full:.2f} 倍。 Full fine-tuning minus {r.b}: "
                    f"{100 * r.diff:+.2f} macro-F1 points; {r.b} trains {p_peft / p_full:.2%} of the parameters "
                    f"at {t_peft / t_full:.2f}× the training throughput.")
        md("\n".join(lines))

    # ------------------------------------------------------------ memory

    def memory(self) -> None:
        memory_section()


GPU_SIZES_GB = (16, 24, 32, 40, 48, 80, 94, 141, 192)  # common accelerator memory sizes (decimal GB)
MEMORY_MODELS = ("open_llama_3b", "llama-3.2-3b")
MEMORY_SHAPES = ((1, 2048), (64, 128))


def plan_gpu_bytes(peak: int) -> int:
    """What to plan for: +10 % allocator slack and 2 GiB for the CUDA context and kernels."""
    from .memory import GIB

    return int(peak * 1.10 + 2 * GIB)


def smallest_gpu(nbytes: int) -> str:
    fits = [g for g in GPU_SIZES_GB if g * 1e9 >= nbytes]
    return f"{fits[0]} GB" if fits else f"> {GPU_SIZES_GB[-1]} GB (shard: ZeRO / FSDP)"


def memory_table(*, precision: str = "amp_bf16", optimizer: str = "adamw_fused") -> pd.DataFrame:
    from . import memory as mem

    rows = []
    for model in MEMORY_MODELS:
        config = mem.load_config(model)
        for batch, seq in MEMORY_SHAPES:
            for ckpt in (False, True):
                for method in mem.METHODS:
                    b = mem.estimate(config, method=method, batch_size=batch, seq_len=seq, precision=precision,
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

    from . import memory as mem

    llama = LlamaConfig(hidden_size=256, num_hidden_layers=4, intermediate_size=688, num_attention_heads=4,
                        vocab_size=2000, max_position_embeddings=1024, tie_word_embeddings=False)
    bert = BertConfig(hidden_size=256, num_hidden_layers=4, intermediate_size=1024, num_attention_heads=4,
                      vocab_size=2000, max_position_embeddings=1024)
    cases = [("LLaMA", llama, dict(method="full", precision="amp_bf16")),
             ("LLaMA", llama, dict(method="lora", precision="bf16")),
             ("LLaMA", llama, dict(method="full", precision="bf16", attention="eager", gradient_checkpointing=True)),
             ("BERT", bert, dict(method="full", precision="fp32", attention="eager")),
             ("BERT", bert, dict(method="adapter", precision="amp_bf16")),
             ("BERT", bert, dict(method="lora", precision="fp32", gradient_checkpointing=True))]
    rows = []
    for family, config, options in cases:
        b = mem.estimate(config, batch_size=4, seq_len=128, **options)
        measured = mem.measure_peak(config, b.setup)
        setup = b.setup
        rows.append({"family": family, "method": setup.method, "precision": setup.precision,
                     "attention": setup.attention, "checkpointing": setup.gradient_checkpointing,
                     "phase": b.peak_phase, "estimate MiB": b.peak / 2**20,
                     "measured MiB": measured / 2**20, "error %": 100 * (b.peak - measured) / measured})
    return pd.DataFrame(rows)


def memory_section() -> None:
    from . import memory as mem

    gib = lambda x: f"{x / mem.GIB:.1f}"  # noqa: E731
    md("## GPU 显存估计 · GPU memory estimate\n\n"
       "问题：不用 PEFT 直接微调 3B 的 LLaMA 需要多少显存？PEFT 能省多少？下表由 `tc_lib.memory` 计算：参数量在 meta "
       "设备上精确计数，激活由 PyTorch 伪张量 (FakeTensor) 前向/反向重放得到，无需权重与计算。  \n"
       "The question: how much GPU memory does fine-tuning a 3B LLaMA take without PEFT, and what does PEFT save? "
       "Computed by `tc_lib.memory`: exact parameter counts on the meta device, activations and transients "
       "from a forward/backward replay on fake tensors (no weights, no compute).\n\n"
       "设置 Setting: fp32 主权重 + bf16 autocast (amp_bf16, HF Trainer `--bf16`), fused AdamW (HF Trainer 默认 "
       "default), LoRA r=8 on q_proj/v_proj, seq_bn 适配器 adapter (reduction 16)。")
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
    foreach = mem.estimate("open_llama_3b", method="full", batch_size=1, seq_len=2048, precision="amp_bf16",
                           optimizer="adamw")
    accel = mem.accelerate_estimate("open_llama_3b", precision="amp_bf16")
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


def _tfidf_baseline(train_texts, train_labels, test_texts, test_labels, num_classes: int) -> dict:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from .metrics import classification_metrics

    model = make_pipeline(TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
                          LogisticRegression(max_iter=2000, C=10.0))
    model.fit(train_texts, train_labels)
    return classification_metrics(labels=test_labels, predictions=model.predict(test_texts), num_classes=num_classes)


def show_run(run_dir: str | Path) -> None:
    """In train.ipynb: the run's final metrics and its per-epoch curves."""
    import matplotlib.pyplot as plt

    from .plots import setup_fonts

    rec = load_record(Path(run_dir))
    if rec is None:
        raise TcError(f"{run_dir}/metrics.json: missing or not a tc_lib run record")
    m = rec["metrics"]
    table(pd.DataFrame([{"状态 Status": rec["status"], "选择 Selection": f"{rec['selection']['rule']} "
                         f"(epoch {rec['selection']['chosen_epoch']})", "Accuracy": _fmt(m["accuracy"]),
                         "Macro-F1": _fmt(m["macro_f1"]), "Loss": _fmt(m["loss"]),
                         "多数类 Majority macro-F1": _fmt(rec["data"]["majority_floor"]["macro_f1"]),
                         "可训练参数 Trainable": f"{rec['params']['trainable']:,}",
                         "训练时间 Train s": _fmt(rec["timing"]["train_time_s"], 1)}]),
          caption=rec["run_id"])
    history = [json.loads(line) for line in (Path(run_dir) / "history.jsonl").read_text().splitlines()]
    setup_fonts()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    epochs = [h["epoch"] for h in history]
    axes[0].plot(epochs, [h["test"]["macro_f1"] for h in history], marker="o", label="test")
    axes[1].plot(epochs, [h["test"]["loss"] for h in history], marker="o", label="test")
    axes[1].plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    if "dev" in history[0]:
        axes[0].plot(epochs, [h["dev"]["macro_f1"] for h in history], marker="o", label="dev")
    for ax, title in zip(axes, ("Macro-F1", "损失 Loss")):
        ax.set_title(title)
        ax.set_xlabel("轮次 epoch")
        ax.set_xticks(epochs)
        ax.legend()
    fig.tight_layout()
    _display(fig)
    plt.close(fig)
