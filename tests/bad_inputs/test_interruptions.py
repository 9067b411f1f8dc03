"""A stage killed with SIGKILL at a random moment leaves nothing DVC would cache as an
output, and its re-run writes the bytes of an uninterrupted run."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT, tiny_params

# Stage module, its arguments, and its declared outputs (stages/<module>.py's STAGE.outs).
STAGES = {
    "data": (
        "stages.prepare",
        ["--dataset", "synthetic"],
        [
            "data/synthetic/prepared",
            "reports/synthetic/contact_sheet.png",
            "reports/synthetic/prepare.json",
        ],
    ),
}


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


def _project(tmp_path: Path, name: str) -> Path:
    root = tmp_path / name
    root.mkdir()
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params(), sort_keys=False))
    return root


@pytest.mark.slow
@pytest.mark.parametrize("kind", sorted(STAGES))
def test_a_killed_stage_leaves_no_output_and_reruns_to_the_same_bytes(kind, tmp_path):
    module, args, outs = STAGES[kind]
    reference = _project(tmp_path, "reference")
    start = time.monotonic()
    done = _run(module, args, reference)
    assert done.wait(timeout=300) == 0, done.stderr.read().decode()
    duration = time.monotonic() - start
    expected = _snapshot(reference, outs)
    assert expected

    killed = _project(tmp_path, "killed")
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
