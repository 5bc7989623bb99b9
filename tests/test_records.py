"""Records written by the previous version (committed under tests/fixtures/records_v2: a LoRA run and a
TF-IDF reference of the tuned quick profile, schema 2) still read, with the same numbers, run ids and arms."""

from __future__ import annotations

import json
from pathlib import Path

from tc_lib.config import RunConfig
from tc_lib.results import check_record
from tc_lib.runs import current_runs, read_history, read_runs

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
