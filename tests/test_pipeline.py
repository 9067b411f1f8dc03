"""End to end on a tiny synthetic dataset: DVC caching behaviour and Prefect/DVC parity."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import PROJECT_ROOT, tiny_params

pytestmark = pytest.mark.slow
DATA_STAGES = ["prepare", "align"]

ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    "DVC_NO_ANALYTICS": "1",
}


def _make_project(root: Path, params: dict) -> Path:
    """A copy of the project's code and DAG with its own params and a fresh DVC repo."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("lightfer", "stages"):
        shutil.copytree(PROJECT_ROOT / name, root / name, ignore=ignore)
    shutil.copy(PROJECT_ROOT / "dvc.yaml", root / "dvc.yaml")
    shutil.copy(PROJECT_ROOT / ".dvcignore", root / ".dvcignore")
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, env=ENV, check=True)
    return root


def _repro(root: Path) -> tuple[list[str], float]:
    """`dvc repro align`: the data stages (the benchmark stage has tests of its own)."""
    start = time.perf_counter()
    proc = subprocess.run(
        ["dvc", "repro", "align"], cwd=root, env=ENV, capture_output=True, text=True, check=False
    )
    seconds = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return sorted(re.findall(r"Running stage '([^']+)'", proc.stdout)), seconds


def _fingerprints(root: Path) -> dict[str, str]:
    """Content hashes of every output file under data/ and reports/."""
    files = [p for d in ("data", "reports") for p in (root / d).rglob("*") if p.is_file()]
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if not p.name.startswith(".")
    }


def _set(params_file: Path, dotted: str, value) -> None:
    raw = yaml.safe_load(params_file.read_text())
    node = raw
    *parents, last = dotted.split(".")
    for part in parents:
        node = node[part]
    node[last] = value
    params_file.write_text(yaml.safe_dump(raw, sort_keys=False))


@pytest.fixture(scope="module")
def dvc_project(tmp_path_factory) -> Path:
    base = tiny_params()["datasets"]["synthetic"]
    base.update(n_train=24, n_test=20, n_subjects=6)
    params = tiny_params(alpha=dict(base), beta=dict(base, n_train=20))
    root = _make_project(tmp_path_factory.mktemp("dvc"), params)
    ran, _ = _repro(root)
    assert ran == ["align@alpha", "align@beta", "prepare@alpha", "prepare@beta"]
    return root


def test_outputs_are_complete(dvc_project: Path):
    for dataset in ("alpha", "beta"):
        assert (dvc_project / f"data/{dataset}/prepared/manifest.parquet").is_file()
        assert (dvc_project / f"data/{dataset}/faces/faces.npy").is_file()
        assert (dvc_project / f"reports/{dataset}/contact_sheet.png").is_file()
    align = yaml.safe_load((dvc_project / "reports/alpha/align.json").read_text())
    assert align["total"] == 44 and align["ok"] == 44


def test_a_second_repro_does_nothing_quickly(dvc_project: Path):
    before = _fingerprints(dvc_project)
    ran, seconds = _repro(dvc_project)
    assert ran == []
    assert seconds < 15
    assert _fingerprints(dvc_project) == before


def test_one_param_change_reruns_exactly_its_dependants(dvc_project: Path):
    params_file = dvc_project / "params.yaml"
    _set(params_file, "datasets.alpha.jpeg_quality", 80)
    assert _repro(dvc_project)[0] == ["align@alpha", "prepare@alpha"]
    _set(params_file, "align.crop_size", 40)
    assert _repro(dvc_project)[0] == ["align@alpha", "align@beta"]


def test_a_params_typo_fails_before_any_stage_writes(tmp_path: Path):
    params = tiny_params()
    params["align"]["crop_sise"] = params["align"].pop("crop_size")
    root = _make_project(tmp_path, params)
    proc = subprocess.run(
        ["dvc", "repro", "align"], cwd=root, env=ENV, capture_output=True, text=True
    )
    assert proc.returncode != 0
    assert "align.crop_sise: unknown key; did you mean 'crop_size'?" in proc.stderr + proc.stdout
    assert not (root / "data").exists()


def test_dvc_and_the_prefect_flow_keep_one_record(tmp_path: Path):
    """`dvc repro` then the flow runs nothing; a flow run (fanned out on Dask) writes DVC's
    bytes and leaves `dvc status` clean, so `dvc repro` then runs nothing either."""
    from prefect.testing.utilities import prefect_test_harness

    from lightfer.flow import lightfer_flow

    params = tiny_params()
    dvc_root = _make_project(tmp_path / "dvc", params)
    _repro(dvc_root)
    flow_root = _make_project(tmp_path / "flow", params)
    up_to_date = {"prepare@synthetic": "up to date", "align@synthetic": "up to date"}
    with prefect_test_harness(server_startup_timeout=180):
        assert lightfer_flow(root=str(dvc_root), stages=DATA_STAGES) == up_to_date

        first = lightfer_flow(root=str(flow_root), stages=DATA_STAGES, runner="dask", workers=2)
        assert first == {"prepare@synthetic": "ran", "align@synthetic": "ran"}
        assert _fingerprints(flow_root) == _fingerprints(dvc_root)
        status = subprocess.run(
            ["dvc", "status", "align"], cwd=flow_root, env=ENV, capture_output=True, text=True
        )
        assert "up to date" in status.stdout, status.stdout + status.stderr
        assert _repro(flow_root)[0] == []

        manifest = flow_root / "data/synthetic/prepared/manifest.parquet"
        stamp = manifest.stat().st_mtime_ns
        shutil.rmtree(flow_root / "data/synthetic/faces")
        again = lightfer_flow(root=str(flow_root), stages=DATA_STAGES)
        assert again == {"prepare@synthetic": "up to date", "align@synthetic": "ran"}
        assert manifest.stat().st_mtime_ns == stamp
        assert _fingerprints(flow_root) == _fingerprints(dvc_root)


def test_the_flow_on_dask_runs_a_stage_that_trains_its_seeds_in_processes(tmp_path: Path):
    """train-ef trains its two seeds in processes of its own; on the flow's Dask workers
    (not daemonic) it can start them, and DVC records the stage as `dvc repro` would."""
    from prefect.testing.utilities import prefect_test_harness

    from lightfer.flow import lightfer_flow

    params = tiny_params()
    params["base"]["threads"] = 2
    params["train"].update(regimes=["sll"], seeds=[0, 1], workers=2)
    for model in ("ldg", "ef"):
        params["train"][model]["train"].update(epochs=1, batch_size=16)
    root = _make_project(tmp_path / "flow", params)
    stages = ["prepare", "align", "train-ldg", "soft-labels", "train-ef"]
    with prefect_test_harness(server_startup_timeout=180):
        ran = lightfer_flow(root=str(root), stages=stages, runner="dask", workers=1)
    assert ran["train-ef@synthetic-sll"] == "ran"
    for seed in (0, 1):
        assert (root / f"models/synthetic/ef-sll/seed{seed}.pt").is_file()
        assert (root / f"reports/synthetic/train/ef-sll/seed{seed}.json").is_file()
    status = subprocess.run(
        ["dvc", "status", "train-ef@synthetic-sll"],
        cwd=root,
        env=ENV,
        capture_output=True,
        text=True,
    )
    assert "up to date" in status.stdout, status.stdout + status.stderr
