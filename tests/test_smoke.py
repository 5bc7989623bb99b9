"""Smoke: the real all-MiniLM-L6-v2 on real data, each method, a small subsample and one epoch."""

from __future__ import annotations

import pytest

from tc_lib import train
from tc_lib.config import RunConfig

pytestmark = pytest.mark.smoke

H, LAYERS, CLASSES = 384, 6, 6  # MiniLM; acl_sup has 6 classes
POOLER, CLASSIFIER = H * H + H, H * CLASSES + CLASSES


@pytest.mark.parametrize("method,adapted", [
    ("full", None),
    ("lora", LAYERS * 2 * 8 * (H + H)),  # r=8 on query and value
    ("adapter", LAYERS * (H * 24 + 24 + 24 * H + H)),  # seq_bn, bottleneck 384/16 = 24, after the FFN
])
def test_minilm_real_data(real_data, tmp_path, method, adapted):
    cfg = RunConfig(model="minilm", dataset="acl_sup", method=method, epochs=1, max_train_samples=48,
                    max_seq_length=64, output_dir=str(tmp_path))
    result = train.train_and_evaluate(cfg)
    rec = result.record.to_dict()  # as written
    assert rec["status"] == "success" and rec["data"]["test_size"] == 139 and rec["data"]["train_size"] == 48
    assert 0.0 <= rec["metrics"]["macro_f1"] <= 1.0 and rec["metrics"]["loss"] > 0
    assert rec["data"]["majority_floor"]["accuracy"] == pytest.approx(71 / 139)
    params = rec["params"]
    if method == "full":
        assert params["total"] == params["trainable"] == 22_713_216 + CLASSIFIER
    else:
        assert params["trainable_no_head"] == adapted
        assert params["trainable"] == adapted + POOLER + CLASSIFIER
        assert params["total"] == 22_713_216 + CLASSIFIER + adapted
    assert (result.run_dir / "weights").is_dir() == (method != "full")
