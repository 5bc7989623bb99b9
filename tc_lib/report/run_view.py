"""The single-run view at the end of train.ipynb: the run's final metrics and its per-epoch curves."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ..errors import TcError
from ..results import load_record, read_history_file
from .display import fmt, show, table

def show_run(run_dir: str | Path) -> None:
    """In train.ipynb: the run's final metrics and its per-epoch curves."""
    import matplotlib.pyplot as plt

    from ..fonts import setup_fonts

    rec = load_record(Path(run_dir))
    if rec is None:
        raise TcError(f"{run_dir}/metrics.json: missing or not a tc_lib run record")
    if rec.status != "success":
        raise TcError(f"{run_dir}: the run's status is {rec.status!r}; nothing to show")
    m = rec.metrics
    table(pd.DataFrame([{"状态 Status": rec.status, "选择 Selection": f"{rec.selection.rule} "
                         f"(epoch {rec.selection.chosen_epoch})", "Accuracy": fmt(m["accuracy"]),
                         "Macro-F1": fmt(m["macro_f1"]), "Loss": fmt(m["loss"]),
                         "多数类 Majority macro-F1": fmt(rec.data.majority_floor["macro_f1"]),
                         "可训练参数 Trainable": f"{rec.params['trainable']:,}",
                         "训练时间 Train s": fmt(rec.timing.train_time_s, 1)}]),
          caption=rec.run_id)
    try:
        history = read_history_file(Path(run_dir))
    except (OSError, ValueError) as err:
        raise TcError(f"{run_dir}/history.jsonl: {err}") from None
    setup_fonts()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    epochs = [h["epoch"] for h in history]
    for split in ("dev", "test"):  # test: every epoch with test_every_epoch, else the chosen epoch alone
        rows = [h for h in history if split in h]
        if rows:
            axes[0].plot([h["epoch"] for h in rows], [h[split]["macro_f1"] for h in rows], marker="o", label=split)
            axes[1].plot([h["epoch"] for h in rows], [h[split]["loss"] for h in rows], marker="o", label=split)
    axes[1].plot(epochs, [h["train_loss"] for h in history], marker="o", label="train")
    for ax, title in zip(axes, ("Macro-F1", "损失 Loss")):
        ax.set_title(title)
        ax.set_xlabel("轮次 epoch")
        ax.set_xticks(epochs)
        ax.legend()
    fig.tight_layout()
    show(fig)
    plt.close(fig)
