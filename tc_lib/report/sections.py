"""The bilingual report: every section renders data computed from the run records (tables.py,
conclusions.py); the notebook only calls these. Nothing here trains or measures."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from . import arms as arm_lib
from ..methods import REFERENCES
from .runs import Problem, current_runs, read_study
from . import stats, tables
from .conclusions import conclusions
from .display import fmt, md, show, table
from .export import select_runs
from .best_section import best_models_section
from .memory_section import memory_section
from .tuning_section import tuning_section

MAX_REFUSED_SHOWN = 20


class Report:
    def __init__(self, runs: pd.DataFrame, history: pd.DataFrame, problems: list[Problem] | None = None, *,
                 memory_dir: str | Path | None = None, exports: Sequence[str] = (),
                 params: Sequence[str] = (), runs_dir: str | Path | None = None) -> None:
        self.all_runs = runs
        self.runs, self.superseded = current_runs(runs)  # newest success per (arm, seed); the rest listed
        self.history = history[history["run_id"].isin(set(self.runs["run_id"]))]
        self.problems = problems or []  # folders whose record or history could not be used
        self.memory_dir, self.exports, self.params = memory_dir, list(exports), list(params)
        self.runs_dir = runs_dir
        self.arms = arm_lib.arms(self.runs)
        self.summary = stats.aggregate(self.runs)
        self.compared, self.refused = tables.comparisons(self.runs, self.arms)

    @classmethod
    def load(cls, runs_dir: str | Path, *, params: Sequence[str] = (), **kwargs) -> "Report":
        """Read every record under runs_dir; with `params`, only the runs of those grid files."""
        problems: list[Problem] = []
        runs, history = read_study(runs_dir, problems=problems)
        runs = select_runs(runs, params)
        history = history[history["run_id"].isin(set(runs["run_id"]))]
        return cls(runs, history, problems, params=params, runs_dir=runs_dir, **kwargs)

    # ------------------------------------------------------------ header and rules

    def header(self) -> None:
        n_ok, n_all = len(self.runs), len(self.all_runs)
        lines = ["# 文本分类微调研究报告 · Text-classification fine-tuning report\n",
                 f"本报告由 {n_all} 条运行记录自动生成（计入统计 {n_ok} 条，{len(self.arms)} 个臂）；所有数字均由记录计算得出。  ",
                 f"Generated from {n_all} run records ({n_ok} counted, in {len(self.arms)} arms — an arm is a "
                 "configuration minus its seed); every number is computed from them."]
        if self.runs_dir is not None:
            lines.append(f"- 运行记录 Run records: `{Path(self.runs_dir).resolve()}`")
        if self.params:
            lines.append("- 仅包含这些网格的运行 Only the runs of: " + ", ".join(f"`{p}`" for p in self.params))
        if self.exports:
            lines.append("- 数据文件 Data files: " + ", ".join(f"[{Path(e).name}]({e})" for e in self.exports))
        md("\n".join(lines))
        if n_ok == 0:  # an empty folder, or a grid where everything failed: say what there is instead
            counts = self.all_runs["status"].value_counts()
            seen = ", ".join(f"{n} {status}" for status, n in counts.items()) or "no run records at all"
            md(f"**没有成功的运行记录（{seen}）。No successful runs were found ({seen}).** 下方“说明”列出每个运行的状态与"
               "首行错误。The ground rules below list every run with its status and first error line; `python -m "
               "tc_lib status PARAMS` shows the same for a grid. Nothing else can be computed from these records.")

    def rules(self) -> None:
        rule_text = {"last": "取最后一轮 (last epoch)", "dev": "按从训练集划出的开发集 macro-F1 选轮次 "
                     "(best dev macro-F1; dev carved from train)"}
        follows = self.runs["data_seed_follows_seed"].fillna(False)
        seed_rule = ("数据种子随训练种子变化 the data seed follows the training seed" if follows.all() else
                     "数据种子固定 the data seed is fixed" if not follows.any() else
                     "部分臂数据种子随训练种子变化 in some arms the data seed follows the training seed (see Settings)")
        lines = ["## 说明 · Ground rules",
                 "- **模型选择 Model selection**: " + "; ".join(rule_text.get(r, r) for r in
                                                             sorted(self.runs["selection"].dropna().unique()))
                 + "。测试集从不参与选择。The test split never takes part in selection.",
                 "- **臂 Arms**: 每个数字属于一个臂（配置去掉种子），不同臂从不合并。Every number belongs to one arm; arms "
                 "are never pooled. Arms that share dataset, model and method are labelled by the fields in which "
                 "they differ.",
                 f"- **种子方差 Seed variance**: {seed_rule} — " + (
                     "so the std includes the subsample / few-shot draw and the dev carve." if follows.all() else
                     "so the std covers initialisation, data order and dropout only, not the data draw."),
                 "- **std** 为各种子间的样本标准差 (ddof=1)；95% 置信区间为 t 区间。 std is the sample standard deviation "
                 "over seeds (ddof=1); 95 % CIs are t-intervals.",
                 "- **配对比较 Paired tests** 仅在只差所比较因素的两个臂之间进行（方法连同其学习率与选项）；p 值经 Holm 校正，"
                 f"共 {int(self.compared['p_value'].notna().sum())} 个检验。Only between arms that differ in the compared "
                 "factor alone (a method together with its own learning rate and options); p-values are Holm-adjusted "
                 "over all tests in this report."]
        ok = self.runs.dropna(subset=["accuracy", "micro_f1"])
        if len(ok):
            gap = float((ok["accuracy"] - ok["micro_f1"]).abs().max())
            lines.append(f"- 单标签多分类中准确率恒等于 micro-F1（本批记录最大差 {gap:.1e}）。 For single-label multi-class "
                         f"data accuracy equals micro-F1 (largest difference here: {gap:.1e}); an identity, not a finding.")
        collapsed = self.runs[self.runs["collapsed"] == True]  # noqa: E712 — nullable boolean
        if len(collapsed):
            lines.append(f"- **坍缩运行 Collapsed runs** ({len(collapsed)}): macro-F1 ≤ 多数类基线 (majority-class "
                         "floor)。它们计入均值但在此单独列出。They are included in the means and listed here: "
                         + ", ".join(f"`{r}`" for r in collapsed["run_id"]))
        else:
            lines.append("- 没有坍缩运行（macro-F1 ≤ 多数类基线）。No run collapsed to the majority-class floor.")
        if len(self.superseded):
            lines.append(f"- **被取代的运行 Superseded runs** ({len(self.superseded)}): 同一臂同一种子有更新的成功运行，"
                         "只计最新的。A newer successful run of the same arm and seed counts instead:")
            lines += [f"    - `{r.run_id}` ({r.finished_at}, `{r.run_dir}`)" for r in self.superseded.itertuples()]
        failed = self.all_runs[self.all_runs["status"] != "success"]
        if len(failed):
            lines.append(f"- **失败或未完成的运行 Failed or unfinished runs** ({len(failed)}), 不计入统计 "
                         "(excluded from statistics):")
            lines += [f"    - `{r.run_id}` [{r.status}]: {'—' if pd.isna(r.error) else r.error.splitlines()[0]}"
                      for r in failed.itertuples()]
        if self.problems:
            lines.append(f"- **无法读取的记录 Unreadable records** ({len(self.problems)}), 不计入统计 (not counted):")
            lines += [f"    - `{p.file}`: {p.reason}" for p in self.problems]
        if not len(failed) and not self.problems:
            lines.append("- 没有失败、未完成或无法读取的运行。No run failed, is unfinished or unreadable.")
        md("\n".join(lines))

    # ------------------------------------------------------------ environment, data, settings

    def environment(self) -> None:
        md("## 环境 · Environment")
        envs = list(self.runs["environment"])  # record.Environment of each counted run
        if not envs:
            return
        first = envs[0]
        versions = ", ".join(f"{k} {v}" for k, v in (first.packages or {}).items() if v)
        hardware = sorted({f"{e.cpu_model or '?'} ×{e.cpu_count} ({e.device}"
                           + (f", {e.gpu_name}" if e.gpu_name else "") + ")" for e in envs})
        threads = sorted({e.torch_threads for e in envs if e.torch_threads})
        compute = float(self.all_runs["wall_time_s"].fillna(0).sum())
        md(f"- 软件 Software: Python {first.python}; {versions}\n"
           f"- 硬件 Hardware: {'; '.join(hardware)}; torch 线程 threads: {threads}\n"
           f"- 运行总计算时间 Total compute time of the runs shown: {compute / 60:.1f} min "
           f"({len(self.all_runs)} runs)\n"
           f"- 代码版本 Code commit(s): {', '.join(sorted({str(e.git_commit)[:10] for e in envs}))}")

    def datasets(self) -> None:
        md("## 数据集 · Datasets\n\n由运行记录得出（测试集始终完整）。From the run records (test splits are always "
           "complete). TF-IDF + 逻辑回归参考作为运行出现在结果表中。The TF-IDF + logistic-regression reference appears "
           "as runs in the result tables.")
        if len(self.runs):
            table(tables.datasets_table(self.runs), caption="数据集概况 · Dataset overview")

    def settings(self) -> None:
        md("## 设置 · Settings\n\n每个臂的训练设置；最后几列是各臂之间不同的其他字段。Every arm's settings; the last "
           "columns are the other config fields in which arms differ.")
        if len(self.arms):
            table(tables.settings_table(self.arms, self.runs))

    # ------------------------------------------------------------ main tables

    def metric_tables(self) -> None:
        md("## 主要结果 · Main results\n\n每格为各种子的 均值 ± 样本标准差 (n)；行 = 数据集 · 臂，列 = 模型。  \n"
           "Cells are mean ± sample std over seeds (n); rows are dataset · arm, columns are models.")
        for metric in stats.METRICS:
            wide = tables.main_table(self.summary, self.arms, metric)
            if not wide.empty:
                table(wide, caption=tables.METRIC_NAMES[metric], keys=2)

    def tidy_table(self) -> None:
        summary = self.summary.merge(self.arms[["arm_id", "name"]], on="arm_id")
        for col in ("mean", "std", "ci_low", "ci_high"):
            summary[col] = summary[col].map(fmt)
        summary["95% CI"] = "[" + summary["ci_low"] + ", " + summary["ci_high"] + "]"
        md("### 完整长表 · Long tidy table (n, mean, std, 95 % CI)")
        table(summary[["dataset", "model", "name", "arm_id", "metric", "n", "mean", "std", "95% CI", "seeds"]])

    def methods(self) -> None:
        md("## 全量微调 vs 参数高效方法 · Full fine-tuning vs parameter-efficient methods\n\n"
           "可训练参数分含分类头与不含分类头两列（BERT 的 pooler 计入分类头）。时间与吞吐为每次运行的训练部分；"
           "峰值内存注明所测之物：GPU 峰值保留（nvidia-smi 与显存溢出所见）、GPU 峰值分配或进程峰值 RSS（CPU）。  \n"
           "Trainable parameters with and without the head (BERT's pooler counts as head). Time and throughput "
           "cover training; each peak memory says what it measures: GPU peak reserved (what nvidia-smi and an "
           "out-of-memory error see), GPU peak allocated, or the process peak RSS (CPU runs).")
        if len(self.arms):
            table(tables.methods_table(self.runs, self.arms))

    def cost_quality(self) -> None:
        md("### 成本与质量 · Cost and quality\n\n每个点是一个臂：macro-F1 均值（误差线为 95% 置信区间）对可训练参数、训练时间"
           "和峰值内存。  \nEach point is an arm: mean macro-F1 (bars: 95 % CIs) against trainable parameters, "
           "training time and peak memory — what PEFT buys, at a glance.")
        if not len(self.arms):
            return
        import matplotlib.pyplot as plt

        from .plots import cost_quality_figure

        fig = cost_quality_figure(tables.cost_quality(self.runs, self.arms, self.summary))
        show(fig)
        plt.close(fig)

    # ------------------------------------------------------------ curves and sweeps

    def curves(self) -> None:
        history = self.history[~self.history["method"].isin(list(REFERENCES))]
        split = "dev" if (history["split"] == "dev").any() else "test"
        md("## 训练曲线 · Training curves\n\n" + (
            "每轮结束后在开发集上的评估（用于选择轮次）；测试集只在选中的轮次评估一次。线为各臂的种子均值，阴影为 ±1 std。  \nDev-split "
            "evaluation after every epoch (what the epoch is chosen on); test is scored once, at the chosen epoch. "
            if split == "dev" else
            "每轮结束后在测试集上的评估（test_every_epoch: true，仅作曲线展示，不用于选择）；线为各臂的种子均值，阴影为 ±1 std。  \n"
            "Test-split evaluation after every epoch (test_every_epoch: true, the seed report's recipe; shown as "
            "curves, never used for selection). ") + "Lines are arm means over seeds, bands ±1 std.")
        history = history[history["split"] == split]
        if history.empty:
            md("_没有历史记录 No history._")
            return
        import matplotlib.pyplot as plt

        from .plots import curves_figure

        names = dict(zip(self.arms["arm_id"], self.arms["model"] + " · " + self.arms["name"]))
        frames = {m: stats.curves(history, split=split, metric=m).assign(line=lambda f: f["arm_id"].map(names))
                  for m in ("macro_f1", "loss")}
        fig = curves_figure(frames, titles={m: tables.METRIC_NAMES[m] for m in frames})
        show(fig)
        plt.close(fig)

    def sweeps(self) -> None:
        found = arm_lib.sweeps(self.arms)
        if not found:
            return
        import matplotlib.pyplot as plt

        from .plots import sweep_figure

        md("## 扫描 · Sweeps\n\n同一数据集、模型与方法的臂只在一个数值字段上不同时，画出 macro-F1 随该字段的变化（误差线为 95% "
           "置信区间）。  \nWhere arms of one dataset, model and method differ in one numeric field only, macro-F1 "
           "against that field (bars: 95 % CIs; training-set size on a log axis).")
        f1 = self.summary[self.summary["metric"] == "macro_f1"].set_index("arm_id")
        sizes = self.arms.set_index("arm_id")
        fig = sweep_figure(found, f1, sizes)
        show(fig)
        plt.close(fig)

    # ------------------------------------------------------------ comparisons and conclusions

    def tuning(self) -> None:
        tuning_section(self.all_runs)

    def comparisons(self) -> None:
        tunings = self.runs["tuning"].dropna() if "tuning" in self.runs else []
        trials = sorted({int(t["trials"]) for t in tunings if t.get("trials")})
        tuned = (f"  \n各臂在开发集上以各 {' / '.join(map(str, trials))} 次试验调优。Arms tuned with "
                 f"{' / '.join(map(str, trials))} trials each on dev." if trials else "")
        md("## 配对比较 · Paired comparisons\n\n按种子配对：差值 = 均值(a − b)，附 95% bootstrap 置信区间与 P(a>b)（a 胜出的种子比例），p "
           "值来自配对 t 检验（原始与 Holm 校正），效应量为 Cohen's d_z；种子规划给出当前种子数在 80% 功效下可检出的最小差值，以及观测差值所需的种子数。"
           "  \nPaired by seed: difference = mean(a − b) with its 95 % percentile-bootstrap CI over seeds and "
           "P(a>b) (the share of seeds a wins), p from the paired t-test (raw and Holm-adjusted over all tests "
           "here), effect size Cohen's d_z. Seed plan (statsmodels TTestPower, 80 % power, α = 0.05 / number of "
           "tests): the smallest gap the present seeds detect and the seeds the observed gap would need. With few "
           "seeds the tests have low power: a non-significant result is not evidence of no difference." + tuned)
        if len(self.compared):
            table(tables.comparisons_shown(self.compared), caption="Macro-F1, 配对 paired by seed")
        else:
            md("_没有可配对比较的臂。No pair of arms differs in one factor alone._")
        if len(self.refused):
            shown = self.refused.head(MAX_REFUSED_SHOWN)[["dataset", "a", "b", "reason"]]
            more = len(self.refused) - len(shown)
            md(f"未比较的臂对 Pairs not compared ({len(self.refused)}): 它们不只在一个因素上不同。They differ in more "
               "than the compared factor." + (f" (first {len(shown)} shown, {more} more)" if more else ""))
            table(shown.rename(columns={"reason": "原因 Reason"}))

    def conclusions(self) -> None:
        md("## 结论 · Conclusions (computed from the numbers above)")
        lines = conclusions(self.runs, self.summary, self.arms, self.compared)
        md("\n".join(lines) if lines else "_没有可下结论的运行。No runs to conclude from._")

    def best_models(self) -> None:
        best_models_section(self.runs, self.history)

    def memory(self) -> None:
        memory_section(Path(self.memory_dir) if self.memory_dir else Path("outputs/memory"))

