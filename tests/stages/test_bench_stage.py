"""The bench stage writes the cost table and the JSON metrics `dvc metrics` reads."""

from __future__ import annotations

import json

import pytest

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
        "memory": False,
    }
    params = load_params(write_params(raw))
    results = bench.run(params, tmp_path)
    table = (tmp_path / "reports/bench/bench.md").read_text()
    assert "efficientface" in table and "shufflenet_v2_x1_0" in table
    metrics = json.loads((tmp_path / "reports/bench/bench.json").read_text())
    assert metrics == json.loads(json.dumps(results))
    assert metrics["models"]["efficientface"]["params"] == 1_275_293
