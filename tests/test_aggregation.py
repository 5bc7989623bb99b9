"""Honest aggregation on planted records: arms are never pooled, reruns are listed, paired tests only
between arms that differ in one factor, Holm by hand, the export read back, a report that only reads."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from planted import plant_grid, plant_run
from tc_lib.report import arms as arm_lib
from tc_lib.config import RunConfig
from tc_lib.errors import ConfigError
from tc_lib.report import stats, tables
from tc_lib.report.export import export_tables, write_export
from tc_lib.report.sections import Report
from tc_lib.report.runs import current_runs, read_runs

ACL = dict(dataset="acl_sup")


def _report(root: Path, **kwargs) -> Report:
    return Report.load(root, memory_dir=root / "no-memory", **kwargs)


def test_two_arms_of_one_method_are_two_rows_never_pooled(tmp_path):
    plant_grid(tmp_path, {("minilm", "full"): [0.5, 0.6, 0.7]}, learning_rate=1e-4, epochs=2, **ACL)
    plant_grid(tmp_path, {("minilm", "full"): [0.2, 0.3, 0.4]}, learning_rate=5e-5, epochs=3, **ACL)
    report = _report(tmp_path)
    assert len(report.arms) == 2 and sorted(report.arms["label"]) == ["epochs=2, lr=1e-4", "epochs=3, lr=5e-5"]
    f1 = report.summary[report.summary["metric"] == "macro_f1"].merge(report.arms[["arm_id", "label"]])
    means = dict(zip(f1["label"], f1["mean"]))
    assert means == {"epochs=2, lr=1e-4": pytest.approx(0.6), "epochs=3, lr=5e-5": pytest.approx(0.3)}
    assert set(f1["n"]) == {3}  # never n=6
    wide = tables.main_table(report.summary, report.arms, "macro_f1")
    assert len(wide) == 2 and set(wide["minilm"]) == {"0.6000 ± 0.1000 (n=3)", "0.3000 ± 0.1000 (n=3)"}
    settings = tables.settings_table(report.arms, report.runs)
    assert sorted(settings["学习率 LR"]) == ["1e-4", "5e-5"] and sorted(settings["轮数 Epochs"]) == ["2", "3"]


def test_arms_that_differ_in_class_weights_are_labelled_and_shown(tmp_path):
    plant_grid(tmp_path, {("minilm", "full"): [0.5, 0.6, 0.7]}, class_weights="balanced", **ACL)
    plant_grid(tmp_path, {("minilm", "full"): [0.2, 0.3, 0.4]}, **ACL)
    report = _report(tmp_path)
    assert sorted(report.arms["label"]) == ["class_weights=balanced", "class_weights=none"]
    settings = tables.settings_table(report.arms, report.runs)
    assert sorted(settings["类别权重 Class weights (class_weights)"]) == ["balanced", "none"]
    # the reference is compared with the encoder arm weighted as it is, not with the better one
    plant_grid(tmp_path, {("tfidf", "tfidf_lr"): [0.45]}, **ACL)
    lines = "\n".join(tables_lines(_report(tmp_path)))
    assert "the best encoder arm (`minilm` · 全量微调 full [class_weights=none], 0.3000) 不及 does not beat" in lines


def test_a_rerun_of_one_arm_and_seed_counts_once_newest_first(tmp_path):
    cfg = RunConfig(model="minilm", method="lora", seed=1, output_dir=str(tmp_path), **ACL)
    plant_run(tmp_path, cfg, 0.40, folder="old-copy", finished_at="2026-01-01T00:00:00+00:00")
    plant_run(tmp_path, cfg, 0.45, finished_at="2026-06-01T00:00:00+00:00")
    current, superseded = current_runs(read_runs(tmp_path))
    assert list(current["macro_f1"]) == [pytest.approx(0.45)] and list(superseded["macro_f1"]) == [pytest.approx(0.40)]
    report = _report(tmp_path)
    shown = []
    import tc_lib.report.sections as sections

    original, sections.md = sections.md, shown.append
    try:
        report.rules()
    finally:
        sections.md = original
    assert "Superseded runs** (1)" in shown[0] and "old-copy" in shown[0]


def test_pairs_that_differ_in_more_than_the_factor_are_refused_with_the_reason(tmp_path):
    plant_grid(tmp_path, {("minilm", "full"): [0.5, 0.6, 0.7]}, epochs=2, **ACL)
    plant_grid(tmp_path, {("minilm", "lora"): [0.4, 0.45, 0.47]}, epochs=3, **ACL)
    report = _report(tmp_path)
    assert report.compared.empty
    assert list(report.refused["reason"]) == ["also differ in epochs (2 vs 3)"]
    # a method's own learning rate and options go with it: full vs LoRA at their own rates is compared
    ok, why = arm_lib.comparable(RunConfig(method="full").to_dict(), RunConfig(method="lora", lora_r=4).to_dict(),
                                 factor="method")
    assert ok and why == ""


def test_holm_adjusted_p_values_equal_hand_computed_ones(tmp_path):
    # raw 0.01, 0.04, 0.03 -> sorted × (3, 2, 1) = 0.03, 0.06, 0.04 -> monotone: 0.03, 0.06, 0.06
    assert stats.holm([0.01, 0.04, float("nan"), 0.03]) == pytest.approx([0.03, 0.06, float("nan"), 0.06],
                                                                          nan_ok=True)
    plant_grid(tmp_path, {("minilm", "full"): [0.5, 0.6, 0.7], ("minilm", "lora"): [0.4, 0.45, 0.47],
                          ("minilm", "adapter"): [0.45, 0.5, 0.62]}, **ACL)
    compared = _report(tmp_path).compared
    assert len(compared) == 3  # full-lora, full-adapter, lora-adapter
    raw = compared["p_value"].to_numpy()
    order = raw.argsort()
    by_hand = [min(1.0, max((3 - j) * raw[order[j]] for j in range(i + 1))) for i in range(3)]
    assert compared["p_holm"].to_numpy()[order] == pytest.approx(by_hand)
    full_lora = compared[(compared["method_a"] == "full") & (compared["method_b"] == "lora")].iloc[0]
    assert full_lora["diff"] == pytest.approx(0.16) and full_lora["p_value"] == pytest.approx(0.05169, abs=2e-4)


def test_export_sheets_read_back_equal_the_records(tmp_path):
    runs = tmp_path / "runs"
    plant_grid(runs, {("minilm", "full"): [0.5, 0.6, 0.7], ("mpnet", "full"): [0.62, 0.66, 0.70],
                      ("minilm", "lora"): [0.4, 0.45, 0.47]}, **ACL)
    csv, xlsx = tmp_path / "out" / "r.csv", tmp_path / "out" / "r.xlsx"
    assert write_export(runs, csv=csv, xlsx=xlsx) == [csv, xlsx]
    records = {p.parent.name: json.loads(p.read_text()) for p in runs.glob("*/metrics.json")}
    tidy = pd.read_csv(csv)
    assert len(tidy) == 9 and set(tidy["run_id"]) == set(records)
    for row in tidy.itertuples():
        rec = records[row.run_id]
        assert row.macro_f1 == pytest.approx(rec["metrics"]["macro_f1"]) and row.arm_id == rec["arm_id"]
        assert row.seed == rec["config"]["seed"] and row.train_time_s == rec["timing"]["train_time_s"]
    sheets = pd.read_excel(xlsx, sheet_name=None, header=0)
    assert list(sheets) == ["runs", "arms", "hand-in"]
    pd.testing.assert_frame_equal(sheets["runs"].drop(columns=["collapsed"]), tidy.drop(columns=["collapsed"]),
                                  check_dtype=False)
    arms = sheets["arms"].set_index("arm")
    assert arms.loc["LoRA", "macro_f1_mean"] == pytest.approx(0.44) and arms.loc["LoRA", "n"] == 3
    handin = pd.read_excel(xlsx, sheet_name="hand-in", header=[0, 1], index_col=[0, 1, 2])
    assert handin.loc[("seed 2", "acl_sup", "全量微调 full"), ("mpnet", "macro_f1")] == pytest.approx(0.66)
    assert handin.loc[("mean", "acl_sup", "LoRA"), ("minilm", "macro_f1")] == pytest.approx(0.44)
    assert handin.loc[("std", "acl_sup", "全量微调 full"), ("minilm", "accuracy")] == pytest.approx(0.1)
    assert sorted(set(handin.index.get_level_values(0))) == ["mean", "seed 1", "seed 2", "seed 3", "std"]


def test_report_and_export_restricted_to_a_grid_file(tmp_path):
    grid = tmp_path / "g.yaml"
    grid.write_text(f"defaults: {{output_dir: {tmp_path / 'runs'}, dataset: acl_sup}}\n"
                    "axes: {method: [full, lora], seed: [1, 2]}\n")
    plant_grid(tmp_path / "runs", {("minilm", "full"): [0.5, 0.6], ("minilm", "lora"): [0.4, 0.45]}, **ACL)
    plant_grid(tmp_path / "runs", {("minilm", "full"): [0.1, 0.2]}, epochs=1, **ACL)  # another grid's runs
    assert len(_report(tmp_path / "runs").runs) == 6
    assert len(_report(tmp_path / "runs", params=[str(grid)]).runs) == 4
    assert len(export_tables(tmp_path / "runs", params=[grid])["runs"]) == 4


def test_sweeps_and_data_seed_following_the_seed(tmp_path):
    for n, scores in ((32, [0.2, 0.3]), (128, [0.4, 0.5]), (None, [0.7, 0.8])):
        plant_grid(tmp_path, {("minilm", "lora"): scores}, max_train_samples=n, data_seed="seed", **ACL)
    report = _report(tmp_path)
    found = arm_lib.sweeps(report.arms)
    assert len(found) == 1 and found[0]["field"] == "max_train_samples"
    sizes = report.arms.set_index("arm_id").loc[found[0]["arm_ids"], "train_size"].tolist()
    assert sizes == [32, 128, 1688]  # null (the full set) last, at its real size
    assert set(tables.settings_table(report.arms, report.runs)["数据种子 Data seed"]) == {"= seed"}
    a, b = RunConfig(seed=1, data_seed="seed"), RunConfig(seed=2, data_seed="seed")
    assert a.arm_id == b.arm_id and (a.effective_data_seed, b.effective_data_seed) == (1, 2)
    with pytest.raises(ConfigError, match="field 'data_seed': expected an integer in \\[0, 2\\*\\*32\\) or 'seed'"):
        RunConfig(data_seed="seeds")


def test_conclusions_name_the_best_arm_and_say_when_none_clears_the_floor(tmp_path):
    plant_grid(tmp_path, {("minilm", "full"): [0.10, 0.11, 0.11], ("minilm", "lora"): [0.12, 0.13, 0.13],
                          ("minilm", "adapter"): [0.11, 0.12, 0.12]}, **ACL)
    report = _report(tmp_path)
    lines = "\n".join(tables_lines(report))
    assert "no arm clears the majority floor (macro-F1 0.1127)" not in lines
    assert "best arm = `minilm` · LoRA" in lines and "at or below the floor: `minilm` · 全量微调 full" in lines
    low = tmp_path / "low"
    plant_grid(low, {("minilm", "full"): [0.05, 0.06], ("minilm", "lora"): [0.08, 0.09]}, **ACL)
    assert "no arm clears the majority floor (macro-F1 0.1127); the highest is `minilm` · LoRA" in \
        "\n".join(tables_lines(_report(low)))


def tables_lines(report: Report) -> list[str]:
    from tc_lib.report.conclusions import conclusions

    return conclusions(report.runs, report.summary, report.arms, report.compared)


def test_reference_runs_need_the_reference_model():
    with pytest.raises(ConfigError, match="field 'model': expected model 'tfidf' with method tfidf_lr"):
        RunConfig(method="tfidf_lr")
    with pytest.raises(ConfigError, match="field 'method'"):
        RunConfig(model="tfidf", method="full")
    assert RunConfig(model="tfidf", method="tfidf_lr").learning_rate is None


@pytest.mark.notebook
def test_report_notebook_only_reads(tmp_path, memory_records):
    """Every cell of report.ipynb, on planted records: no scikit-learn estimator, no torch, no training."""
    plant_grid(tmp_path / "runs", {("minilm", "full"): [0.5, 0.6, 0.7], ("minilm", "lora"): [0.4, 0.45, 0.47]},
               **ACL)
    plant_grid(tmp_path / "runs", {("tfidf", "tfidf_lr"): [0.3, 0.3, 0.3]}, **ACL)
    notebook = json.loads((Path(__file__).parents[1] / "notebooks" / "report.ipynb").read_text())
    cells = ["".join(c["source"]) for c in notebook["cells"]
             if c["cell_type"] == "code" and "parameters" not in c["metadata"].get("tags", [])]
    script = "\n".join([*cells, textwrap.dedent(f"""
        import sys
        loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'peft', 'adapters')
                        or m.startswith(('sklearn.linear_model', 'sklearn.feature_extraction', 'tc_lib.train',
                                         'tc_lib.models')))
        print('LOADED', loaded)
        assert not loaded, loaded
    """)])
    params = (f"runs_dir = {str(tmp_path / 'runs')!r}\nparams_files = []\nmemory_dir = {str(memory_records)!r}\n"
              "exports = []\n")
    (tmp_path / "run.py").write_text(params + script)
    out = subprocess.run([sys.executable, str(tmp_path / "run.py")], capture_output=True, text=True, timeout=300,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "LOADED []" in out.stdout


def _cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tc_lib", *args], capture_output=True, text=True, timeout=120, cwd=cwd)


@pytest.mark.slow
def test_export_and_memory_validate_cli(tmp_path):
    plant_grid(tmp_path / "runs", {("minilm", "full"): [0.5, 0.6]}, **ACL)
    out = _cli("export", "--runs", str(tmp_path / "runs"), "--csv", str(tmp_path / "r.csv"))
    assert out.returncode == 0 and out.stdout.strip() == str(tmp_path / "r.csv")
    assert len(pd.read_csv(tmp_path / "r.csv")) == 2
    (tmp_path / "empty").mkdir()  # a fresh clone's outputs/runs before any grid ran
    for args, pattern in ((["export", "--runs", str(tmp_path / "runs")], "give --csv PATH and/or --xlsx PATH"),
                          (["export", "--runs", str(tmp_path / "none"), "--csv", "x.csv"], "no runs folder"),
                          (["memory", "validate", "--out", "/proc/tc-no-such"], "--out /proc/tc-no-such: cannot write")):
        out = _cli(*args)
        lines = out.stderr.strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and pattern in lines[0], (args, out.stderr)


@pytest.mark.notebook
def test_an_empty_or_all_failed_folder_gives_a_report_and_a_table_that_say_so(tmp_path):
    from tc_lib.config import RunConfig
    from tc_lib.record import ErrorInfo
    from tc_lib.results import finish_run, new_record

    (tmp_path / "empty").mkdir()  # a fresh clone's outputs/runs before any grid ran
    out = _cli("report", "--runs", str(tmp_path / "empty"), "--out", str(tmp_path / "out0"))
    assert out.returncode == 0 and "note: no run in" in out.stderr, out.stderr
    assert "No successful runs were found (no run records at all)" in (tmp_path / "out0" / "report.html").read_text()
    runs = tmp_path / "runs"
    for seed, status, message in ((1, "failed", "DataError: restaurant_sup: 2 files missing\nsecond line"),
                                  (2, "interrupted", "stopped by the user; run the grid again to finish it")):
        cfg = RunConfig(seed=seed, output_dir=str(runs))
        record = new_record(cfg, status=status)
        record.error = ErrorInfo(type=status, message=message)
        cfg.run_dir.mkdir(parents=True)
        finish_run(cfg.run_dir, record)
    out = _cli("report", "--runs", str(runs), "--out", str(tmp_path / "out"))
    assert out.returncode == 0, out.stderr
    html = (tmp_path / "out" / "report.html").read_text()
    assert "No successful runs were found (1 failed, 1 interrupted)" in html
    assert "[failed]: DataError: restaurant_sup: 2 files missing" in html and "second line" not in html
    table = pd.read_csv(tmp_path / "out" / "results.csv")
    assert list(table["status"]) == ["failed", "interrupted"]
    assert table.loc[0, "error"] == "DataError: restaurant_sup: 2 files missing"
    out = _cli("export", "--runs", str(runs), "--csv", str(tmp_path / "x.csv"), "--xlsx", str(tmp_path / "x.xlsx"))
    assert out.returncode == 0 and "no run in" in out.stderr and len(pd.read_csv(tmp_path / "x.csv")) == 2
    assert pd.read_excel(tmp_path / "x.xlsx", sheet_name="runs")["status"].tolist() == ["failed", "interrupted"]


def test_cost_quality_puts_each_arm_beside_its_costs(tmp_path):
    plant_grid(tmp_path, {("minilm", "full"): [0.5, 0.6, 0.7], ("minilm", "lora"): [0.4, 0.45, 0.47]}, **ACL)
    report = _report(tmp_path)
    frame = tables.cost_quality(report.runs, report.arms, report.summary).set_index("name")
    assert frame.loc["minilm · LoRA", "trainable"] == 10 and frame.loc["minilm · 全量微调 full", "trainable"] == 1000
    assert frame.loc["minilm · LoRA", "macro_f1"] == pytest.approx(0.44)
    assert frame.loc["minilm · 全量微调 full", "ci_high"] == pytest.approx(0.6 + 4.302653 * 0.1 / 3 ** 0.5, rel=1e-6)
    assert set(frame["train_time_s"]) == {50.0} and set(frame["peak_mb"]) == {1500.0}
