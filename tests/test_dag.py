"""dvc.yaml and the Prefect flow describe one DAG: same stages, deps, params and outputs."""

from __future__ import annotations

from pathlib import Path

import pytest
from dvc.repo import Repo

from lightfer.params import load_params
from stages.registry import plan
from tests.conftest import PROJECT_ROOT, tiny_params


def _dvc_view(root: Path) -> dict[str, dict[str, frozenset[str]]]:
    """Each DVC stage's path deps, param keys and outputs (metrics included), as DVC sees them."""
    view = {}
    with Repo(str(root)) as repo:
        for stage in repo.index.stages:
            deps, params = set(), set()
            for dep in stage.deps:
                if hasattr(dep, "params"):
                    params.update(dep.params)
                else:
                    deps.add(Path(dep.fs_path).relative_to(root).as_posix())
            outs = {Path(out.fs_path).relative_to(root).as_posix() for out in stage.outs}
            view[stage.name] = {
                "deps": frozenset(deps),
                "params": frozenset(params),
                "outs": frozenset(outs),
            }
    return view


def _flow_view(params_file: Path) -> dict[str, dict[str, frozenset[str]]]:
    return {
        run.name: {
            "deps": frozenset(run.deps),
            "params": frozenset(run.params),
            "outs": frozenset(run.outs),
        }
        for run in plan(load_params(params_file))
    }


def _copy_project(tmp_path: Path, params: dict, write_params) -> Path:
    (tmp_path / ".dvc").mkdir()
    (tmp_path / ".dvc" / "config").write_text("[core]\n    no_scm = true\n")
    (tmp_path / "dvc.yaml").write_text((PROJECT_ROOT / "dvc.yaml").read_text())
    return write_params(params)


def test_the_project_dag_and_the_flow_agree():
    dvc = _dvc_view(PROJECT_ROOT)
    flow = _flow_view(PROJECT_ROOT / "params.yaml")
    assert sorted(dvc) == sorted(flow)
    for name in dvc:
        assert dvc[name] == flow[name], name


def test_stages_expand_over_every_configured_dataset(tmp_path: Path, write_params):
    base = tiny_params()["datasets"]["synthetic"]
    params = tiny_params(alpha=dict(base), beta=dict(base, n_train=30))
    params_file = _copy_project(tmp_path, params, write_params)
    dvc = _dvc_view(tmp_path)
    expected = {"prepare@alpha", "align@beta", "train-ldg@beta", "evaluate@alpha", "bench"}
    assert expected <= set(dvc)
    runs = len(params["train"]["regimes"]) * len(params["train"]["seeds"])
    assert len([name for name in dvc if name.startswith("train-ef@")]) == 2 * runs
    assert dvc == _flow_view(params_file)


@pytest.mark.parametrize("field", ["deps", "params", "outs"])
def test_a_disagreement_is_detected(tmp_path: Path, write_params, field):
    """Guard the guard: editing one side of the contract makes the comparison fail."""
    params_file = _copy_project(tmp_path, tiny_params(), write_params)
    text = (tmp_path / "dvc.yaml").read_text()
    edits = {
        "deps": ("        - lightfer/faces\n", ""),
        "params": ("        - align\n", "        - align.size\n"),
        "outs": ("        - data/${key}/faces\n", "        - data/${key}/crops\n"),
    }
    old, new = edits[field]
    assert old in text
    (tmp_path / "dvc.yaml").write_text(text.replace(old, new))
    assert _dvc_view(tmp_path)["align@synthetic"] != _flow_view(params_file)["align@synthetic"]
