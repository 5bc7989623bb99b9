"""The record schema (tc_lib.record): records written by the previous version (committed under
tests/fixtures/records_v2: a LoRA run and a TF-IDF reference of the tuned quick profile, schema 2) still
read, with the same numbers, run ids and arms; a field that is off is named; the runs table follows it."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from tc_lib.config import RunConfig
from tc_lib.record import DataInfo, Memory, RunRecord, Timing, column_dtype, field_type
from tc_lib.report.runs import FROM_RECORD, RUN_COLUMNS, current_runs, read_history, read_runs
from tc_lib.results import check_record, new_record

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "records_v2"


def test_records_of_the_previous_version_still_read():
    runs = read_runs(FIXTURE)
    assert sorted(runs["method"]) == ["lora", "tfidf_lr"] and set(runs["status"]) == {"success"}
    for run_dir in sorted(FIXTURE.iterdir()):
        record = json.loads((run_dir / "metrics.json").read_text())
        assert record["schema_version"] == 2 and check_record(record) is None
        row = runs.set_index("run_id").loc[record["run_id"]]
        assert row["macro_f1"] == record["metrics"]["macro_f1"] and row["accuracy"] == record["metrics"]["accuracy"]
        assert row["dev_score"] == record["selection"]["score"] and row["train_size"] == 256
        cfg = RunConfig.from_dict(record["config"])
        assert (cfg.run_id, cfg.arm_id) == (record["run_id"], record["arm_id"])  # ids and arms unchanged
    lora = runs[runs["method"] == "lora"].iloc[0]
    assert (lora["learning_rate"], lora["chosen_epoch"], lora["seed"]) == (0.005, 3, 2)
    history = read_history(FIXTURE)
    epochs = history[(history["method"] == "lora") & (history["split"] == "dev")]["epoch"].tolist()
    assert epochs == [1, 2, 3]  # dev scored every epoch, test once at the chosen epoch
    assert history[(history["method"] == "lora") & (history["split"] == "test")]["epoch"].tolist() == [3]
    assert len(current_runs(runs)[0]) == 2


def test_a_fixture_record_reads_into_the_schema_and_writes_back_unchanged():
    """The typed record holds every field the previous version wrote: read, then written, it is the same."""
    for run_dir in sorted(FIXTURE.iterdir()):
        raw = json.loads((run_dir / "metrics.json").read_text())
        record = RunRecord.from_dict(raw)
        assert isinstance(record.timing, Timing) and isinstance(record.data, DataInfo)
        assert record.to_dict() == raw
        assert record.used_device == "cpu" and record.environment.packages["torch"] == raw["environment"]["packages"]["torch"]


def test_a_new_record_is_every_field_of_the_schema_and_reads_back():
    cfg = RunConfig(seed=3, class_weights="balanced", selection="dev")
    record = new_record(cfg, status="running")
    written = record.to_dict()
    assert list(written) == [f.name for f in dataclasses.fields(RunRecord)]
    assert set(written["timing"]) == set(Timing.__dataclass_fields__)
    assert "class_weights" not in written["data"]  # written only once the run's weights are known
    assert RunRecord.from_dict(json.loads(json.dumps(written))) == record
    assert record.selection.rule == "dev" and record.data.data_seed == cfg.effective_data_seed


@pytest.mark.parametrize("path,value,reason", [
    ("status", "done", "unknown status 'done'"),
    ("schema_version", 3, "schema version 3; this tc_lib reads version 2 (rerun it)"),
    ("data.label_names", ["a", 1], "field 'data.label_names': expected a list of strings or null, got ['a', 1]"),
    ("timing.train_time_s", True, "field 'timing.train_time_s': expected a number or null, got True"),
    ("params", {"total": 1.5}, "field 'params': expected a mapping or null, got {'total': 1.5}"),
    ("selection.chosen_epoch", None, None),  # null is allowed; a missing key is not (below)
    ("error", {"type": "X", "message": 3}, "field 'error.message': expected a string or null, got 3"),
    ("stage", "pilot", "field 'stage': expected tune or final, got 'pilot'"),
])
def test_the_schema_names_the_first_field_that_is_off(path, value, reason):
    raw = new_record(RunConfig(), status="success").to_dict()
    *parents, last = path.split(".")
    target = raw
    for part in parents:
        target = target[part]
    target[last] = value
    assert check_record(raw) == reason


def test_a_section_key_that_readers_need_must_be_there():
    raw = new_record(RunConfig(), status="success").to_dict()
    del raw["selection"]["chosen_epoch"]
    assert check_record(raw) == "field 'selection.chosen_epoch' missing"
    raw = new_record(RunConfig(), status="success").to_dict()
    del raw["timing"]["setup_s"]  # a later field: an older record without it still reads, as null
    assert check_record(raw) is None and RunRecord.from_dict(raw).timing.setup_s is None


def test_the_runs_table_takes_its_columns_and_dtypes_from_the_schema():
    for column, path in FROM_RECORD.items():
        assert RUN_COLUMNS[column] == column_dtype(field_type(path)), column
    for name in (*Timing.__dataclass_fields__, *Memory.__dataclass_fields__):  # a new timing is a new column
        assert RUN_COLUMNS[name] == "Float64"
    assert (RUN_COLUMNS["trial"], RUN_COLUMNS["selection"], RUN_COLUMNS["label_names"]) == ("Int64", "string", "object")
    frame = read_runs(FIXTURE)
    assert list(frame.columns) == list(RUN_COLUMNS) and dict(frame.dtypes.astype(str)) == RUN_COLUMNS
