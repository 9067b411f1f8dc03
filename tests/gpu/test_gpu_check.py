"""scripts/gpu_check.sh's dry run on the CPU, end to end, so that the script cannot rot while
no GPU runs it (not marked gpu: it runs wherever the suite does)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import PROJECT_ROOT

pytestmark = pytest.mark.slow

SECTIONS = (
    "# GPU check",
    "## Tests marked gpu",
    "## Speed: EfficientFace vs ResNet-50",
    "## train-ef at 32 px on the synthetic set",
    "## NCCL DDP, 2 processes (torchrun)",
)


def test_the_dry_run_writes_every_section_of_the_report(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "LIGHTFER_GPU_CHECK")}
    env.update(LIGHTFER_PYTHON=sys.executable, TMPDIR=str(tmp_path))
    repo_report = PROJECT_ROOT / "reports" / "bench" / "gpu.md"
    before = repo_report.read_bytes() if repo_report.exists() else None
    out = tmp_path / "out"
    done = subprocess.run(
        ["bash", str(PROJECT_ROOT / "scripts" / "gpu_check.sh"), "--cpu", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (repo_report.read_bytes() if repo_report.exists() else None) == before
    markdown = (out / "gpu.md").read_text()
    assert [line for line in markdown.splitlines() if line.startswith("#")] == list(SECTIONS)
    assert "Dry run on the CPU" in markdown
    record = json.loads((out / "gpu.json").read_text())
    assert {s["step"]: s["status"] for s in record["steps"]} == {
        "pytest": 0,
        "bench": 0,
        "data": 0,
        "train-ef": 0,
        "ddp": 0,
    }
    assert "skipped" in record["steps"][-1]["note"]
    assert "skipped" in record["tests"]["summary"]  # no CUDA here: every gpu test skips
    assert "failed" not in record["tests"]["summary"]
    assert "error" not in record["tests"]["summary"]
    rows = record["speed"]["rows"]
    assert [(r["mode"], r["amp"]) for r in rows] == [
        ("train", "off"),
        ("train", "bfloat16"),
        ("infer", "off"),
        ("infer", "bfloat16"),
    ]
    run = record["training"]["train-ef"]
    assert [e["epoch"] for e in run["epochs"]] == [1.0, 2.0]
    assert all(e["images_per_s"] > 0 for e in run["epochs"])
    assert "channels-last on" in run["summary"]["device"]
    assert 0 <= run["summary"]["test_accuracy"] <= 1
    assert sorted(p.name for p in out.iterdir()) == [
        "bench.json",
        "bench.log",
        "data.log",
        "gpu.json",
        "gpu.md",
        "pytest.log",
        "train-ef.log",
    ]
