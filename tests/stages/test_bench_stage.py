"""The bench stage writes the cost table and the JSON metrics `dvc metrics` reads."""

from __future__ import annotations

import json

import pytest

from lightfer.errors import ParamsError, StageOutputError
from lightfer.params import load_params
from stages import bench
from tests.conftest import tiny_params


@pytest.mark.slow
def test_bench_stage_writes_table_and_metrics(tmp_path, write_params):
    raw = tiny_params()
    raw["bench"] = {
        "models": ["efficientface", "shufflenet_v2_x1_0"],
        "image_size": 64,
        "batch_sizes": [1],
        "repeats": 1,
        "block_seconds": 0.05,
        "int8": False,
        "openvino": False,
        "memory": False,
        "threads": [1],
        "agreement": None,
    }
    params = load_params(write_params(raw))
    results = bench.run(params, tmp_path)
    table = (tmp_path / "reports/bench/bench.md").read_text()
    assert "efficientface" in table and "shufflenet_v2_x1_0" in table
    metrics = json.loads((tmp_path / "reports/bench/bench.json").read_text())
    assert metrics == json.loads(json.dumps(results))
    assert metrics["models"]["efficientface"]["params"] == 1_275_293


def test_agreement_without_its_trained_model_says_which_stage_makes_it(tmp_path, write_params):
    params = load_params(write_params(tiny_params()))  # bench.agreement: synthetic, ldl, seed 0
    with pytest.raises(StageOutputError, match=r"ef-ldl/seed0\.pt, which the train-ef stage"):
        bench.run(params, tmp_path)
    assert not (tmp_path / "reports").exists()


def test_agreement_on_a_dataset_that_is_not_configured_lists_those_that_are(tmp_path, write_params):
    raw = tiny_params()
    raw["bench"]["agreement"]["dataset"] = "rafdb"
    params = load_params(write_params(raw))
    with pytest.raises(ParamsError, match=r"dataset 'rafdb' is not in params\.yaml's datasets"):
        bench.run(params, tmp_path)
