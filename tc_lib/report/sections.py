"""The bilingual report: every section is computed from the run records; the notebook only calls these."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pandas as pd

from ..methods import METHODS
from ..results import load_record
from ..runs import Problem, read_history, read_runs
from . import stats
from .baseline import tfidf_baseline
from .display import fmt, fmt_p, md, show, table
from .memory_section import memory_section

METRIC_NAMES = {"loss": "损失 Loss", "accuracy": "准确率 Accuracy", "micro_f1": "Micro-F1",
                "macro_f1": "Macro-F1"}


def method_label(name: str) -> str:
    return METHODS[name].label if name in METHODS else name


class Report:
    def __init__(self, runs: pd.DataFrame, history: pd.DataFrame, records: dict[str, dict],
                 problems: list[Problem] | None = None) -> None:
        self.all_runs = runs
        self.runs = runs[runs["status"] == "success"].reset_index(drop=True)
        self.history = history
        self.records = records
        self.problems = problems or []  # folders whose record or history could not be used

    @classmethod
    def load(cls, runs_dir: str | Path) -> "Report":
        problems: list[Problem] = []
        runs = read_runs(runs_dir, problems=problems)
        records = {Path(d).name: rec for d in runs["run_dir"] if (rec := load_record(Path(d))) is not None}
        return cls(runs, read_history(runs_dir, problems=problems), records, problems)

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
            lines += [f"    - `{r.run_id}` [{r.status}]: {'—' if pd.isna(r.error) else r.error}"
                      for r in failed.itertuples()]
        if self.problems:
            lines.append(f"- **无法读取的记录 Unreadable records** ({len(self.problems)}), 不计入统计 (not counted):")
            lines += [f"    - `{p.file}`: {p.reason}" for p in self.problems]
        if not len(failed) and not self.problems:
            lines.append("- 没有失败、未完成或无法读取的运行。No run failed, is unfinished or unreadable.")
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
        from ..data import get_dataset, label_names
        from ..errors import DataError
        from ..metrics import majority_floor

        md("## 数据集 · Datasets\n\n分类基线：TF-IDF（1–2 元词组）+ 逻辑回归，在完整训练集上训练（scikit-learn，数秒）。"
           "A classical reference: TF-IDF (uni+bigrams) + logistic regression trained on the full train split "
           "(scikit-learn, seconds), so readers see what the encoders add.")
        rows = []
        for dataset in sorted(self.runs["dataset"].unique()):
            sub = self.runs[self.runs["dataset"] == dataset]
            seeds = sorted(sub["data_seed"].dropna().unique())
            data_seed = int(seeds[0]) if seeds else 2022
            try:
                with warnings.catch_warnings():  # datasets' tqdm.auto bars warn in a kernel without ipywidgets
                    warnings.filterwarnings("ignore", message="IProgress not found")
                    ds = get_dataset(dataset.split("+"), "[SEP]", data_seed=data_seed)
            except DataError as err:
                rows.append({"数据集 Dataset": dataset, "备注 Note": f"data unavailable: {err}"})
                continue
            names = label_names(ds)
            train_labels, test_labels = list(ds["train"]["labels"]), list(ds["test"]["labels"])
            counts = np.bincount(train_labels, minlength=len(names))
            floor = majority_floor(labels=test_labels, num_classes=len(names))
            baseline = tfidf_baseline(list(ds["train"]["text"]), train_labels, list(ds["test"]["text"]), test_labels,
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
            sub["method"] = sub["method"].map(lambda m: method_label(m))
            wide = sub.pivot(index=["dataset", "method"], columns="model", values="cell").reset_index()
            wide.columns.name = None
            table(wide.rename(columns={"dataset": "数据集 Dataset", "method": "方法 Method"}),
                  caption=METRIC_NAMES[metric])

    def tidy_table(self) -> None:
        summary = self.summary().copy()
        for col in ("mean", "std", "ci_low", "ci_high"):
            summary[col] = summary[col].map(fmt)
        summary["95% CI"] = "[" + summary["ci_low"] + ", " + summary["ci_high"] + "]"
        md("### 完整长表 · Long tidy table (n, mean, std, 95 % CI)")
        table(summary[["dataset", "model", "method", "metric", "n", "mean", "std", "95% CI", "seeds"]])

    # ------------------------------------------------------------ methods

    def methods(self) -> None:
        md("## 全量微调 vs 参数高效方法 · Full fine-tuning vs parameter-efficient methods\n\n"
           "可训练参数分含分类头与不含分类头两列（BERT 的 pooler 计入分类头）。时间与吞吐为每次运行的训练部分；"
           "峰值内存为进程峰值 RSS（CPU）或 CUDA 峰值分配。  \n"
           "Trainable parameters with and without the head (BERT's pooler counts as head). Time and throughput "
           "cover training; peak memory is the process peak RSS (CPU) or peak CUDA allocation.")
        rows = []
        for (dataset, model, method), g in self.runs.groupby(["dataset", "model", "method"]):
            acc, f1 = stats.summarize(g["accuracy"].tolist()), stats.summarize(g["macro_f1"].tolist())
            rows.append({
                "数据集 Dataset": dataset, "模型 Model": model, "方法 Method": method_label(method),
                "n": acc["n"],
                "准确率 Accuracy [95% CI]": f"{fmt(acc['mean'])} [{fmt(acc['ci_low'])}, {fmt(acc['ci_high'])}]",
                "Macro-F1 [95% CI]": f"{fmt(f1['mean'])} [{fmt(f1['ci_low'])}, {fmt(f1['ci_high'])}]",
                "可训练参数(含头) Trainable incl. head": f"{int(g['params_trainable'].iloc[0]):,}",
                "可训练参数(不含头) Trainable excl. head": f"{int(g['params_trainable_no_head'].iloc[0]):,}",
                "占比 % of total": f"{100 * g['params_trainable'].iloc[0] / g['params_total'].iloc[0]:.2f}%",
                "训练时间 Train time (s)": fmt(g["train_time_s"].mean(), 1),
                "吞吐 Throughput (ex/s)": fmt(g["train_samples_per_s"].mean(), 1),
                "峰值内存 Peak memory (MB)": fmt((g["peak_cuda_allocated_mb"].fillna(g["peak_rss_mb"])).max(), 0),
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
        show(fig)
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
            shown[col] = shown[col].map(fmt)
        shown["p_value"] = shown["p_value"].map(fmt_p)
        shown["cohens_dz"] = shown["cohens_dz"].map(lambda x: fmt(x, 2))
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
                         f"(macro-F1 {fmt(best['mean'])}).")
        comp = [stats.paired_comparison(self.runs, factor="method", a="full", b=m) for m in sorted(set(self.runs["method"]) - {"full"})]
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
                    f"(p={fmt_p(r.p_value)}, {sig}, n={r.n}); {r.b} 仅训练 {p_peft / p_full:.2%} 的参数，"
                    f"训练吞吐为全量的 {t_peft / t_full:.2f} 倍。 Full fine-tuning minus {r.b}: "
                    f"{100 * r.diff:+.2f} macro-F1 points; {r.b} trains {p_peft / p_full:.2%} of the parameters "
                    f"at {t_peft / t_full:.2f}× the training throughput.")
        md("\n".join(lines))

    # ------------------------------------------------------------ memory

    def memory(self) -> None:
        memory_section()
