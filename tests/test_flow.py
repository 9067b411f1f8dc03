"""The Prefect flow and DVC keep one record: a toy DAG, so every case takes seconds.

The toy stages stand in for the real ones (which `tests/test_pipeline.py` runs through both
front ends): two Python stages, `a` then `b` reading `a`'s output, and `c`, a shell command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import tiny_params

pytestmark = pytest.mark.slow

ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    "DVC_NO_ANALYTICS": "1",
}
STAGE_CODE = '''
"""A toy stage: writes out/NAME.txt from toy.yaml's value and an optional input file."""
import argparse
import pathlib

import yaml


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--read")
    parser.add_argument("--fail", action="store_true")
    args = parser.parse_args(argv)
    if args.fail:
        return 3
    value = yaml.safe_load(pathlib.Path("toy.yaml").read_text())["value"]
    text = f"{args.name}={value}"
    if args.read:
        text += " <- " + pathlib.Path(args.read).read_text()
    pathlib.Path("out").mkdir(exist_ok=True)
    pathlib.Path(f"out/{args.name}.txt").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
'''
DAG = {
    "stages": {
        "a": {
            "cmd": "python -m toystages.make --name a",
            "deps": ["toystages/make.py"],
            "params": [{"toy.yaml": ["value"]}],
            "outs": ["out/a.txt"],
        },
        "b": {
            "cmd": "python -m toystages.make --name b --read out/a.txt",
            "deps": ["toystages/make.py", "out/a.txt"],
            "params": [{"toy.yaml": ["value"]}],
            "outs": ["out/b.txt"],
        },
        "c": {"cmd": "mkdir -p out && echo c > out/c.txt", "outs": ["out/c.txt"]},
    }
}


def _project(root: Path, dag: dict = DAG) -> Path:
    (root / "toystages").mkdir(parents=True)
    (root / "toystages" / "__init__.py").write_text("")
    (root / "toystages" / "make.py").write_text(STAGE_CODE)
    (root / "toy.yaml").write_text("value: 1\n")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    (root / "dvc.yaml").write_text(yaml.safe_dump(dag, sort_keys=False))
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, env=ENV, check=True)
    return root


def _dvc(root: Path, *args: str) -> str:
    proc = subprocess.run(["dvc", *args], cwd=root, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _stamps(root: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in (root / "out").iterdir()}


@pytest.fixture(scope="module")
def harness():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


def test_after_dvc_repro_the_flow_runs_nothing(harness, tmp_path):
    from lightfer.flow import lightfer_flow

    root = _project(tmp_path)
    _dvc(root, "repro")
    stamps = _stamps(root)
    assert lightfer_flow(root=str(root)) == {
        "a": "up to date",
        "b": "up to date",
        "c": "up to date",
    }
    assert _stamps(root) == stamps, "an up-to-date stage rewrote its output"


def test_a_flow_run_is_recorded_in_dvc_lock_and_cache(harness, tmp_path):
    from lightfer.flow import lightfer_flow

    root = _project(tmp_path)
    assert lightfer_flow(root=str(root)) == {"a": "ran", "b": "ran", "c": "ran"}
    assert (root / "out/b.txt").read_text() == "b=1 <- a=1"
    assert "Data and pipelines are up to date" in _dvc(root, "status")
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert set(lock) == {"a", "b", "c"} and lock["a"]["params"]["toy.yaml"] == {"value": 1}
    assert any((root / ".dvc" / "cache").rglob("*")), "outputs were not saved to DVC's cache"
    assert "Running stage" not in _dvc(root, "repro")

    # A change seen by DVC re-runs exactly its dependants, through either front end.
    (root / "toy.yaml").write_text("value: 2\n")
    assert lightfer_flow(root=str(root)) == {"a": "ran", "b": "ran", "c": "up to date"}
    assert (root / "out/b.txt").read_text() == "b=2 <- a=2"
    assert "Data and pipelines are up to date" in _dvc(root, "status")


def test_a_selected_stage_and_a_missing_output(harness, tmp_path):
    from lightfer.errors import LightferError
    from lightfer.flow import lightfer_flow

    root = _project(tmp_path)
    assert lightfer_flow(root=str(root), stages=["a"]) == {"a": "ran"}
    (root / "out/a.txt").unlink()
    assert lightfer_flow(root=str(root), stages=["a", "c"]) == {"a": "ran", "c": "ran"}
    with pytest.raises(LightferError, match="no stage called nope"):
        lightfer_flow(root=str(root), stages=["nope"])


def test_a_failing_stage_stops_its_dependants_and_is_not_recorded(harness, tmp_path):
    from lightfer.errors import LightferError
    from lightfer.flow import lightfer_flow

    dag = yaml.safe_load(yaml.safe_dump(DAG))
    dag["stages"]["a"]["cmd"] += " --fail"
    root = _project(tmp_path, dag)
    with pytest.raises(LightferError, match="stage a failed \\(exit code 3\\)"):
        lightfer_flow(root=str(root))
    assert not (root / "out/b.txt").exists()
    lock = root / "dvc.lock"
    assert not lock.exists() or "a" not in (yaml.safe_load(lock.read_text()) or {}).get(
        "stages", {}
    )


def test_dask_fan_out_records_every_stage(harness, tmp_path):
    from lightfer.flow import lightfer_flow

    root = _project(tmp_path)
    outcome = lightfer_flow(root=str(root), runner="dask", workers=2)
    assert outcome == {"a": "ran", "b": "ran", "c": "ran"}
    assert (root / "out/b.txt").read_text() == "b=1 <- a=1"
    assert "Data and pipelines are up to date" in _dvc(root, "status")


def test_the_flow_takes_only_the_root_pipeline_not_the_studies_beside_it(tmp_path, monkeypatch):
    """studies/au/dvc.yaml is in DVC's index too, but it runs on its own (90 minutes)."""
    from lightfer.dvc_dag import load_stages

    monkeypatch.chdir(tmp_path)  # DVC names stages relative to the working directory

    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=tmp_path, env=ENV, check=True)
    stage = {"cmd": "echo main > main.txt", "outs": ["main.txt"]}
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"main": stage}}))
    study = tmp_path / "studies" / "au"
    study.mkdir(parents=True)
    other = {"cmd": "echo study > study.txt", "outs": ["study.txt"]}
    (study / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"arm": other}}))
    assert [s.name for s in load_stages(tmp_path)] == ["main"]
