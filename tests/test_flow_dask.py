"""The flow's fan-out (which runs wait for which), its runners, its deployment and its CLI.

The slow test runs a subset of the DAG on two tiny datasets sequentially and on a local
Dask cluster (two single-threaded worker processes) and compares the outputs byte for byte.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from lightfer.errors import LightferError
from lightfer.params import load_params
from pipeline.dag import (
    EXCLUSIVE_STAGES,
    check_outputs_disjoint,
    execution_order,
    schedule,
    upstream_runs,
)
from stages.common import StageRun
from stages.registry import STAGES, plan
from tests.conftest import PROJECT_ROOT, tiny_params


def _runs(params: dict[str, Any], tmp_path: Path) -> list[StageRun]:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return plan(load_params(path))


def _two_datasets() -> dict[str, Any]:
    base = tiny_params()["datasets"]["synthetic"]
    base.update(n_train=24, n_test=20, n_subjects=6)
    params = tiny_params(alpha=dict(base), beta=dict(base, n_train=20))
    if isinstance(params.get("study"), dict) and "datasets" in params["study"]:
        params["study"]["datasets"] = ["alpha"]  # the study names a configured dataset
    return params


def _reaches(edges: dict[str, tuple[str, ...]], start: str, target: str) -> bool:
    """Whether `start` waits for `target`, directly or through other runs."""
    seen, todo = set(), [start]
    while todo:
        for upstream in edges[todo.pop()]:
            if upstream == target:
                return True
            if upstream not in seen:
                seen.add(upstream)
                todo.append(upstream)
    return False


def _run(name: str, deps: tuple[str, ...] = (), outs: tuple[str, ...] = ()) -> StageRun:
    return StageRun(stage=name, values={}, deps=deps, outs=outs, params=())


# --- which runs wait for which -------------------------------------------------------------


def test_upstreams_on_the_project_plan():
    params = load_params(PROJECT_ROOT / "params.yaml")
    runs = plan(params)
    edges = upstream_runs(runs)
    assert set(edges) == {run.name for run in runs}
    assert edges["prepare@synthetic"] == ()
    assert edges["align@synthetic"] == ("prepare@synthetic",)
    ldl = set(edges["train-ef@synthetic-ldl-0"])
    assert {"soft-labels@synthetic", "align@synthetic", "train-ldg@synthetic"} <= ldl
    assert not any(name.startswith("train-ef@") for name in ldl)
    # evaluate reads the directory models/synthetic: every model written inside it.
    train_ef = {run.name for run in runs if run.stage == "train-ef"}
    assert len(train_ef) == len(params.train.regimes) * len(params.train.seeds) >= 2
    assert train_ef | {"train-ldg@synthetic"} <= set(edges["evaluate@synthetic"])
    for first, second in itertools.combinations(sorted(train_ef), 2):
        assert not _reaches(edges, first, second) and not _reaches(edges, second, first)


def test_datasets_form_independent_chains(tmp_path: Path):
    runs = _runs(_two_datasets(), tmp_path)
    edges = schedule(runs)
    by_dataset = {
        dataset: {run.name for run in runs if run.values.get("dataset") == dataset}
        for dataset in ("alpha", "beta")
    }
    for dataset, other in (("alpha", "beta"), ("beta", "alpha")):
        for name in by_dataset[dataset]:
            assert not set(edges[name]) & by_dataset[other], name
    assert _reaches(edges, "evaluate@alpha", "prepare@alpha")
    # Timing stages run alone: after every run planned before them.
    for run in runs:
        if run.stage in EXCLUSIVE_STAGES:
            assert set(edges[run.name]) == {r.name for r in runs[: runs.index(run)]}


def test_upstreams_follow_paths_not_characters():
    runs = [
        _run("a", outs=("data/a",)),
        _run("ab", outs=("data/ab",)),
        _run("reads-inside", deps=("data/a/faces.npy",)),
        _run("reads-parent", deps=("data",)),
        _run("reads-ab", deps=("./data/ab/",)),
    ]
    edges = upstream_runs(runs)
    assert edges["reads-inside"] == ("a",)
    assert edges["reads-parent"] == ("a", "ab")
    assert edges["reads-ab"] == ("ab",)
    assert edges["a"] == ()


def test_the_project_plan_has_disjoint_outputs(tmp_path: Path):
    check_outputs_disjoint(plan(load_params(PROJECT_ROOT / "params.yaml")))
    check_outputs_disjoint(_runs(_two_datasets(), tmp_path))


@pytest.mark.parametrize(
    "outs",
    [("models/x/ldg.pt", "models/x/ldg.pt"), ("models/x", "models/x/ef.pt")],
    ids=["same", "nested"],
)
def test_overlapping_outputs_are_refused(outs: tuple[str, str]):
    runs = [_run("first", outs=(outs[0],)), _run("second", outs=("reports/y.json", outs[1]))]
    with pytest.raises(LightferError, match=r"overlapping outputs.*first writes models/x"):
        check_outputs_disjoint(runs)


def test_execution_order_puts_upstreams_first_and_refuses_cycles():
    reader = _run("reader", deps=("data/a",))
    writer = _run("writer", outs=("data/a",))
    assert [r.name for r in execution_order([reader, writer], upstream_runs([reader, writer]))] == [
        "writer",
        "reader",
    ]
    loop = [_run("p", deps=("q",), outs=("p",)), _run("q", deps=("p",), outs=("q",))]
    with pytest.raises(LightferError, match="cycle"):
        execution_order(loop, upstream_runs(loop))


# --- runners, deployment and CLI (nothing is started) --------------------------------------


def test_task_runners_are_built_as_asked():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from pipeline.flow import make_task_runner

    assert make_task_runner("sequential", workers=2) is None
    threads = make_task_runner("threads", workers=3)
    assert isinstance(threads, ThreadPoolTaskRunner) and threads._max_workers == 3
    local = make_task_runner("dask", workers=2)
    assert isinstance(local, DaskTaskRunner) and local.address is None
    assert local.cluster_kwargs == {"n_workers": 2, "threads_per_worker": 1, "processes": True}
    remote = make_task_runner("dask", workers=2, dask_address="tcp://10.0.0.1:8786")
    assert remote.address == "tcp://10.0.0.1:8786"
    with pytest.raises(LightferError, match="unknown runner"):
        make_task_runner("processes", workers=2)  # type: ignore[arg-type]


def test_local_workers_get_their_thread_counts_before_spawning():
    import dask

    from pipeline.flow import _local_cluster_environment

    before = dict(os.environ)
    with _local_cluster_environment(threads=3):
        spawn = dask.config.get("distributed.nanny.pre-spawn-environ")
        assert spawn["OMP_NUM_THREADS"] == "3" and spawn["OPENBLAS_NUM_THREADS"] == "3"
        os.environ["OMP_NUM_THREADS"] = "3"  # what a Nanny does to this process
    assert dict(os.environ) == before
    assert dask.config.get("distributed.nanny.pre-spawn-environ.OMP_NUM_THREADS") == 1


def test_the_deployment_offers_every_parameter_with_its_choices():
    from prefect.deployments.runner import EntrypointType
    from prefect.utilities.callables import parameter_schema
    from prefect.utilities.schema_tools.validation import is_valid

    from pipeline.flow import RUNNERS, deployment_parameters, lightfer_flow

    defaults = deployment_parameters(stages=["prepare", "align"], runner="dask", workers=2)
    assert defaults == {
        "root": str(Path(".").resolve()),
        "params_file": "params.yaml",
        "stages": ["prepare", "align"],
        "runner": "dask",
        "workers": 2,
    }
    deployment = lightfer_flow.to_deployment(
        name="lightfer", parameters=defaults, entrypoint_type=EntrypointType.MODULE_PATH
    )
    assert deployment.name == "lightfer" and deployment.flow_name == "lightfer"
    assert deployment.entrypoint == "pipeline.flow.lightfer_flow"
    assert deployment.parameters == defaults
    assert deployment.enforce_parameter_schema

    schema = parameter_schema(lightfer_flow).model_dump_for_openapi()
    properties = schema["properties"]
    assert list(properties) == [
        "root",
        "params_file",
        "stages",
        "runner",
        "dask_address",
        "workers",
    ]
    assert properties["runner"]["enum"] == list(RUNNERS)
    assert properties["runner"]["default"] == "sequential"
    stage_choices = properties["stages"]["anyOf"][0]["items"]["enum"]
    assert stage_choices == [spec.name for spec in STAGES]
    assert "runs at once" in properties["runner"]["description"]
    assert not schema.get("required")
    assert is_valid(defaults, schema)
    assert not is_valid(dict(defaults, runner="processes"), schema)
    assert not is_valid(dict(defaults, stages=["nope"]), schema)


def test_a_served_run_can_validate_its_parameters():
    """`serve` runs each flow run in a fresh process with the flow pickled by value; its
    parameter annotations must survive that (string annotations would not)."""
    import cloudpickle

    from pipeline.flow import lightfer_flow

    copy = cloudpickle.loads(cloudpickle.dumps(lightfer_flow))
    values = copy.validate_parameters({"stages": ["align"], "runner": "dask", "workers": 2})
    assert values["stages"] == ["align"] and values["runner"] == "dask"


def test_cli_keeps_the_old_invocation_and_adds_run_and_serve(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import pipeline.flow as module

    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(module, "lightfer_flow", lambda **kw: calls.append(("run", kw)))
    monkeypatch.setattr(module, "serve", lambda name, params: calls.append((name, params)))

    assert module.main(["--params", "p.yaml", "--stage", "prepare", "--stage", "align"]) == 0
    assert module.main(["run", "--stages", "align", "--runner", "dask", "--workers", "2"]) == 0
    assert module.main(["serve", "--name", "lab", "--runner", "dask"]) == 0
    assert calls[0] == (
        "run",
        {
            "root": ".",
            "params_file": "p.yaml",
            "stages": ["prepare", "align"],
            "runner": "sequential",
            "dask_address": None,
            "workers": None,
        },
    )
    assert calls[1][1]["runner"] == "dask" and calls[1][1]["workers"] == 2
    assert calls[2] == ("lab", module.deployment_parameters(runner="dask"))
    for wrong in (["--stage", "nope"], ["run", "--workers", "0"], ["--runner", "processes"]):
        with pytest.raises(SystemExit):
            module.main(wrong)

    monkeypatch.undo()
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        assert module.main(["serve"]) == 1  # no server to serve to: says so, starts nothing


# --- the fan-out end to end ---------------------------------------------------------------

SUBSET = ["prepare", "align", "train-ldg"]


def _project(root: Path, params: dict[str, Any]) -> Path:
    """The code the stages fingerprint, and params; no DVC repo is needed by the flow."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in ("lightfer", "stages", "pipeline"):
        shutil.copytree(PROJECT_ROOT / name, root / name, ignore=ignore)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return root


def _hashes(root: Path) -> dict[str, str]:
    files = [p for d in ("data", "models", "reports") for p in (root / d).rglob("*")]
    return {
        p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in files
        if p.is_file() and not p.name.startswith(".")
    }


@pytest.fixture(scope="module")
def prefect_api():
    """One temporary Prefect server for the module's flow runs (it takes 20-30 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.mark.slow
def test_dask_fan_out_writes_what_the_sequential_flow_writes(prefect_api, tmp_path: Path):
    from prefect.settings import PREFECT_RESULTS_LOCAL_STORAGE_PATH, temporary_settings

    from pipeline.flow import lightfer_flow

    params = _two_datasets()
    params["train"]["ldg"]["train"]["epochs"] = 1
    sequential = _project(tmp_path / "sequential", params)
    fanned = _project(tmp_path / "dask", params)

    def results_in(name: str):
        return temporary_settings({PREFECT_RESULTS_LOCAL_STORAGE_PATH: tmp_path / name})

    with results_in("results-sequential"):
        first = lightfer_flow(root=str(sequential), stages=SUBSET)
    with results_in("results-dask"):
        second = lightfer_flow(root=str(fanned), stages=SUBSET, runner="dask", workers=2)
    assert (
        list(second)
        == list(first)
        == [f"{stage}@{dataset}" for stage in SUBSET for dataset in ("alpha", "beta")]
    )
    assert second == first
    expected = _hashes(sequential)
    assert "models/beta/ldg.pt" in expected and "reports/alpha/align.json" in expected
    assert _hashes(fanned) == expected

    # The workers stored their results where this process said: a rerun is all cache hits.
    model = fanned / "models/alpha/ldg.pt"
    stamp = model.stat().st_mtime_ns
    with results_in("results-dask"):
        assert lightfer_flow(root=str(fanned), stages=SUBSET) == first
    assert model.stat().st_mtime_ns == stamp, "a cached run rewrote its outputs"


@pytest.mark.slow
def test_a_failed_run_fails_the_flow_with_its_own_error(prefect_api, tmp_path: Path):
    """align on a project with no prepared data: the error is align's, not the unready
    train-ldg runs' behind it."""
    from pipeline.flow import lightfer_flow

    root = _project(tmp_path / "empty", _two_datasets())
    with pytest.raises(LightferError, match="run the prepare stage first"):
        lightfer_flow(root=str(root), stages=["align", "train-ldg"], runner="threads")
    assert not (root / "models").exists()
