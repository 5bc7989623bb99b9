"""The report's best-model section: per dataset the arm and seed chosen on dev, and how to use it."""

from __future__ import annotations

import pandas as pd

from ..methods import REFERENCES
from .display import md


def best_models_section(runs: pd.DataFrame, history: pd.DataFrame) -> None:
    from .best import best_runs

    md("## 最佳模型 · The best model per dataset\n\n按开发集选出：各种子开发集 macro-F1 均值最高的臂，再取其开发集最高的种子；"
       "测试集不参与。  \nChosen on dev only: the arm with the highest mean dev macro-F1 over its seeds, then its "
       "seed with the highest dev macro-F1; the test split takes no part.")
    best = best_runs(runs, history)
    encoders = best_runs(runs[~runs["method"].isin(list(REFERENCES))], history)
    lines = []
    for row in best.to_dict("records"):
        lines.append(f"- **{row['dataset']}**: {_best_line(row)}")
        if row["method"] in REFERENCES:  # the question is also which fine-tuned encoder wins
            for enc in encoders[encoders["dataset"] == row["dataset"]].to_dict("records"):
                lines.append(f"    - 最佳微调编码器 best fine-tuned encoder: {_best_line(enc)}")
    for dataset in sorted(set(runs["dataset"]) - set(best["dataset"])):
        lines.append(f"- **{dataset}**: 没有在开发集上评分的运行 no run was scored on dev (selection: dev), so none "
                     "is chosen")
    md("\n".join(lines) if lines else "_没有运行 No runs._")


def _best_line(row: dict) -> str:
    from .best import plural, predict_command

    use = (f"使用 use: `{predict_command(row)}`" if row["has_weights"] else
           "未保存权重 no weights saved: rerun this arm with `save_weights: all` to use it")
    return (f"{row['model']} · {row['name']} (of {plural(row['n_arms'], 'arm')}; dev macro-F1 {row['dev_mean']:.4f} "
            f"over {plural(row['n_seeds'], 'seed')}), seed {row['seed']} (dev {row['dev_score']:.4f}) — `{row['run_dir']}`  \n  {use}")
