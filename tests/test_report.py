"""The report on planted run records with known values: exact numbers in the HTML, Chromium, PDF."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from tc_lib.report import render as export
from tc_lib.report import stats
from tc_lib.config import RunConfig
from tc_lib.record import DataInfo, ErrorInfo, Timing
from tc_lib.results import finish_run, new_record, write_history
from tc_lib.report.runs import read_runs

pytestmark = pytest.mark.notebook

# macro-F1 per (model, method) and seed: mean and std are known by hand (std with ddof=1)
PLANTED = {
    ("minilm", "full"): [0.50, 0.60, 0.70],  # mean 0.6000, std 0.1000, CI ±4.302653·0.1/√3 = ±0.2484
    ("minilm", "lora"): [0.40, 0.45, 0.47],  # mean 0.4400, std 0.0361
    ("mpnet", "full"): [0.62, 0.66, 0.70],  # mean 0.6600, std 0.0400
    ("mpnet", "lora"): [0.05, 0.05, 0.05],  # collapsed: below the majority floor of acl test (0.1127)
}


def plant(runs: Path) -> None:
    for (model, method), values in PLANTED.items():
        for seed, f1 in enumerate(values, start=1):
            cfg = RunConfig(model=model, dataset="acl_sup", method=method, seed=seed, epochs=2, output_dir=str(runs),
                            selection="dev")
            record = new_record(cfg, status="success")
            scores = {"loss": 1.0 - f1, "accuracy": f1 + 0.1, "micro_f1": f1 + 0.1, "macro_f1": f1,
                      "per_class_f1": [f1] * 6, "confusion_matrix": [[0] * 6] * 6}
            record.metrics = scores
            record.params = {"total": 1000, "trainable": 1000 if method == "full" else 10,
                             "trainable_no_head": 900 if method == "full" else 5}
            record.selection.chosen_epoch = 2
            record.data = DataInfo(label_names=["a"] * 6, train_size=1688, test_size=139,
                                   majority_floor={"majority_class": 0, "accuracy": 71 / 139, "macro_f1": 0.1127})
            record.timing = Timing(wall_time_s=60.0, train_time_s=50.0, eval_time_s=5.0,
                                   train_samples_per_s=100.0 if method == "full" else 150.0, train_tokens_per_s=1e4)
            record.memory.peak_rss_mb = 1500.0
            run_dir = runs / cfg.run_id
            run_dir.mkdir(parents=True)
            # dev macro-F1 = test + 0.01 at the chosen epoch 2: the best model is mpnet · full, seed 3 (dev 0.71)
            write_history(run_dir, [{"epoch": e, "train_loss": 1.0 / e, "test": {**scores, "macro_f1": f1 * e / 2},
                                     "dev": {**scores, "macro_f1": f1 * e / 2 + 0.01}} for e in (1, 2)])
            finish_run(run_dir, record)
    broken = RunConfig(model="minilm", dataset="acl_sup", method="adapter", seed=1, output_dir=str(runs))
    record = new_record(broken, status="failed")
    record.error = ErrorInfo(type="RuntimeError", message="planted failure")
    (runs / broken.run_id).mkdir()
    finish_run(runs / broken.run_id, record)


def test_stats_by_hand():
    s = stats.summarize([0.5, 0.6, 0.7])
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(0.1)
    assert s["ci_high"] - s["mean"] == pytest.approx(4.302653 * 0.1 / 3 ** 0.5, rel=1e-6)
    assert pd.isna(stats.summarize([0.5])["std"])
    a = pd.DataFrame({"seed": [1, 2, 3], "macro_f1": [0.5, 0.6, 0.7]})
    b = pd.DataFrame({"seed": [3, 2, 1], "macro_f1": [0.47, 0.45, 0.4]})  # paired by seed, not by row
    comp = stats.paired(a, b)
    diffs = [0.1, 0.15, 0.23]  # by hand: mean 0.16, sd 0.065574, t = 0.16 / (0.065574/√3) = 4.2262
    assert comp["diff"] == pytest.approx(0.16) and comp["cohens_dz"] == pytest.approx(0.16 / 0.0655744, rel=1e-4)
    assert comp["p_value"] == pytest.approx(0.05171, abs=2e-4)  # two-sided, t=4.226 with 2 df
    assert len(diffs) == comp["n"]


@pytest.fixture(scope="module")
def built_report(tmp_path_factory, memory_records):
    root = tmp_path_factory.mktemp("report")
    plant(root / "runs")
    if shutil.which("chromium") is None:
        pytest.skip("Chromium not installed (make sysdeps)")
    paths = export.build_report(runs_dir=root / "runs", out_dir=root / "out", pdf=True, memory_dir=memory_records)
    assert [p.name for p in paths] == ["results.csv", "results.xlsx", "report.ipynb", "report.html", "report.pdf"]
    paths = paths[2:]
    return root, paths


def test_html_has_exact_numbers(built_report):
    root, paths = built_report
    html = paths[1].read_text(encoding="utf-8")
    assert "0.6000 ± 0.1000 (n=3)" in html and "0.4400 ± 0.0361 (n=3)" in html and "0.6600 ± 0.0400 (n=3)" in html
    assert "[0.3516, 0.8484]" in html  # the 95 % t-interval of minilm · full macro-F1
    assert "planted failure" in html and "Collapsed runs" in html
    collapsed = read_runs(root / "runs").query("collapsed == True")["run_id"]
    assert len(collapsed) == 3 and all(r in html for r in collapsed)
    assert "def " not in html and "import " not in html  # code cells hidden
    assert "数据集 · Datasets" in html and "结论 · Conclusions" in html
    # conclusions are computed: mpnet's full fine-tuning is the best arm on acl_sup
    assert re.search(r"acl_sup</strong>: 最佳臂 best arm = <code>mpnet</code> · 全量微调 full", html)
    # the best model, chosen on dev: mean dev 0.67 over 3 seeds, its best seed 3; planted runs saved no weights
    assert re.search(r"acl_sup</strong>: mpnet · 全量微调 full \(of 4 arms; dev macro-F1 0\.6700 over 3 seeds\), "
                     r"seed 3 \(dev 0\.7100\)", html) and "no weights saved" in html
    runs = read_runs(root / "runs")
    assert runs.query("model == 'mpnet' and method == 'full' and seed == 3")["run_dir"].iloc[0] in html
    assert "p (Holm)" in html and "设置 · Settings" in html and 'href="results.xlsx"' in html
    assert "largest error" in html  # the memory validation, read from memory.json
    # the calibration ledger under the 3B answer: published CUDA figures, their estimate and the verdict
    assert "How far to trust it" in html and "peft-llama3b-lora-r32-peak" in html and "T5 encoder-decoder" in html
    assert re.search(r"peak reserved: \+5\.\d … \+9\.\d % \(4\)", html)


def test_html_in_headless_chromium(built_report, tmp_path):
    root, paths = built_report
    html_path = paths[1]
    base = [export.chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=10000"]
    dom = subprocess.run(base + ["--dump-dom", html_path.as_uri()], capture_output=True, text=True, timeout=120).stdout
    assert dom.count("<table") >= 8 and dom.count("<img") >= 1 and "data:image/png;base64" in dom
    assert "主要结果 · Main results" in dom and "配对比较 · Paired comparisons" in dom
    shot = tmp_path / "report.png"
    subprocess.run(base + ["--window-size=1280,2000", f"--screenshot={shot}", html_path.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 20_000
    shutil.copy(shot, root / "out" / "screenshot.png")


def test_pdf_has_chinese_headings(built_report):
    _, paths = built_report
    pdf = paths[2]
    if shutil.which("pdftotext") is None:
        pytest.skip("pdftotext not installed (poppler-utils)")
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, timeout=60).stdout
    for heading in ("文本分类微调研究报告", "主要结果", "训练曲线", "配对比较", "结论"):
        assert heading in text
    assert "\ufffd" not in text  # no replacement characters: the CJK font was embedded


def test_a_table_wider_than_the_page_is_printed_whole(tmp_path, monkeypatch):
    import nbformat

    from tc_lib.report import display

    if shutil.which("chromium") is None or shutil.which("pdftotext") is None:
        pytest.skip("Chromium or pdftotext not installed (make sysdeps)")
    columns = {"臂 Arm": ["arm_a", "arm_b"]}
    columns.update({f"设置 Setting {i} (field_{i})": [f"v{i}a", f"v{i}b"] for i in range(22)})
    columns["子样本 Subsample (max_train_samples)"] = ["LASTCOLUMN_A", "LASTCOLUMN_B"]
    shown = []
    monkeypatch.setattr(display, "show", shown.append)
    display.table(pd.DataFrame(columns), caption="planted wide table")
    assert len(shown) >= 2  # split into column groups, each led by the arm
    assert all("arm_a" in part.data for part in shown) and "(1/" in shown[0].data
    cell = nbformat.v4.new_code_cell("")
    cell.outputs = [nbformat.v4.new_output("display_data", data={"text/html": part.data}) for part in shown]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# wide"), cell])
    nbformat.write(notebook, tmp_path / "wide.ipynb")
    pdf = export.to_pdf(export.to_html(tmp_path / "wide.ipynb"))
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, timeout=60).stdout
    for value in ("LASTCOLUMN_A", "LASTCOLUMN_B", "v0a", "v21b", "max_train_samples"):
        assert value in text, value


def test_report_cli_errors(tmp_path):
    out = subprocess.run([sys.executable, "-m", "tc_lib", "report", "--runs", str(tmp_path / "nothing")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and "no runs folder" in out.stderr and len(out.stderr.strip().splitlines()) == 1
