"""A stage killed with SIGKILL at a random moment leaves nothing DVC would cache as an
output, and its re-run writes the bytes of an uninterrupted run."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT, tiny_params

# Stage module, its arguments, its declared outputs (dvc.yaml) and the fixture holding its
# inputs: one stage of each kind (data, training, report).
STAGES = {
    "data": (
        "stages.prepare",
        ["--dataset", "synthetic"],
        [
            "data/synthetic/prepared",
            "reports/synthetic/contact_sheet.png",
            "reports/synthetic/prepare.json",
        ],
        "empty_project",
    ),
    "training": (
        "stages.train_ldg",
        ["--dataset", "synthetic"],
        [
            "models/synthetic/ldg.pt",
            "reports/synthetic/train/ldg.csv",
            "reports/synthetic/train/ldg.json",
        ],
        "aligned_project",
    ),
    "report": (
        "stages.report",
        [],
        ["results/report.md", "results/figures", "results/summary.json"],
        "report_inputs",
    ),
}


@pytest.fixture(scope="module")
def empty_project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("empty")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    return root


@pytest.fixture(scope="module")
def aligned_project(tmp_path_factory) -> Path:
    """Prepared and aligned faces, and an LDG of two short epochs to train."""
    from lightfer.params import load_params
    from stages import align, prepare

    root = tmp_path_factory.mktemp("aligned")
    raw = tiny_params()
    raw["train"]["ldg"]["train"]["epochs"] = 2
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    params = load_params(root / "params.yaml")
    prepare.run(params, root, dataset="synthetic")
    align.run(params, root, dataset="synthetic")
    return root


@pytest.fixture(scope="module")
def report_inputs(tmp_path_factory) -> Path:
    """Every metric and figure the report reads (the report tests' fake project)."""
    from tests.stages.report_project import make_report_project

    root = tmp_path_factory.mktemp("report")
    make_report_project(root)
    shutil.copy(PROJECT_ROOT / "params.yaml", root / "params.yaml")
    return root


def _run(module: str, args: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", module, *args, "--params", "params.yaml"],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _snapshot(root: Path, outs: list[str]) -> dict[str, bytes]:
    """Every file of the declared outputs (hidden temporaries included), by relative path."""
    files: dict[str, bytes] = {}
    for out in outs:
        path = root / out
        found = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        files.update({p.relative_to(root).as_posix(): p.read_bytes() for p in found})
    return files


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(STAGES))
def test_a_killed_stage_leaves_no_output_and_reruns_to_the_same_bytes(kind, tmp_path, request):
    module, args, outs, inputs = STAGES[kind]
    base = request.getfixturevalue(inputs)

    def copy(name: str) -> Path:
        return Path(shutil.copytree(base, tmp_path / name))

    reference = copy("reference")
    start = time.monotonic()
    done = _run(module, args, reference)
    assert done.wait(timeout=300) == 0, done.stderr.read().decode()
    duration = time.monotonic() - start
    expected = _snapshot(reference, outs)
    assert expected

    killed = copy("killed")
    process = _run(module, args, killed)
    time.sleep(random.Random(kind).uniform(0.3, duration))
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    left = _snapshot(killed, outs)
    # Whatever is there is complete: an output DVC would cache is never a partial one.
    assert {k: v for k, v in left.items() if expected.get(k) != v} == {}

    rerun = _run(module, args, killed)
    assert rerun.wait(timeout=300) == 0, rerun.stderr.read().decode()
    assert _snapshot(killed, outs) == expected
