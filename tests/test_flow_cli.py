"""The flow's runners, its deployment and its command line (nothing is run here)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from lightfer.cli import app
from lightfer.errors import LightferError


def test_task_runners_are_built_as_asked():
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    from lightfer.flow import make_task_runner

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

    from lightfer.flow import _local_cluster_environment

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

    from lightfer.flow import RUNNERS, deployment_parameters, lightfer_flow

    defaults = deployment_parameters(stages=["prepare", "align"], runner="dask", workers=2)
    assert defaults == {
        "root": str(Path(".").resolve()),
        "stages": ["prepare", "align"],
        "runner": "dask",
        "workers": 2,
    }
    deployment = lightfer_flow.to_deployment(
        name="lightfer", parameters=defaults, entrypoint_type=EntrypointType.MODULE_PATH
    )
    assert deployment.name == "lightfer" and deployment.flow_name == "lightfer"
    assert deployment.entrypoint == "lightfer.flow.lightfer_flow"
    assert deployment.parameters == defaults and deployment.enforce_parameter_schema

    schema = parameter_schema(lightfer_flow).model_dump_for_openapi()
    properties = schema["properties"]
    assert list(properties) == ["root", "stages", "runner", "dask_address", "workers"]
    assert properties["runner"]["enum"] == list(RUNNERS)
    assert properties["runner"]["default"] == "sequential"
    assert "independent stages at once" in properties["runner"]["description"]
    assert not schema.get("required")
    assert is_valid(defaults, schema)
    assert not is_valid(dict(defaults, runner="processes"), schema)


def test_a_served_run_can_validate_its_parameters():
    """`serve` runs each flow run in a fresh process with the flow pickled by value; its
    parameter annotations must survive that (string annotations would not)."""
    import cloudpickle

    from lightfer.flow import lightfer_flow

    copy = cloudpickle.loads(cloudpickle.dumps(lightfer_flow))
    values = copy.validate_parameters({"stages": ["align"], "runner": "dask", "workers": 2})
    assert values["stages"] == ["align"] and values["runner"] == "dask"


def test_lightfer_flow_run_and_serve_pass_their_options(monkeypatch):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    import lightfer.flow as module

    calls: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(
        module, "lightfer_flow", lambda **kw: calls.append(("run", kw)) or {"a": "ran"}
    )
    monkeypatch.setattr(module, "serve", lambda name, params: calls.append((name, params)))
    cli = CliRunner()
    result = cli.invoke(app, ["flow", "run", "--stage", "prepare", "-s", "align"])
    assert result.exit_code == 0, result.output
    assert "1 stage(s) ran, 0 up to date" in result.output
    assert calls[0] == (
        "run",
        {
            "root": ".",
            "stages": ["prepare", "align"],
            "runner": "sequential",
            "dask_address": None,
            "workers": None,
        },
    )
    args = ["flow", "run", "--runner", "dask", "--workers", "2"]
    assert cli.invoke(app, args).exit_code == 0
    assert calls[1][1]["runner"] == "dask" and calls[1][1]["workers"] == 2
    assert cli.invoke(app, ["flow", "serve", "--name", "lab", "--runner", "dask"]).exit_code == 0
    assert calls[2] == ("lab", module.deployment_parameters(runner="dask"))
    for wrong in (["--workers", "0"], ["--runner", "processes"]):
        result = cli.invoke(app, ["flow", "run", *wrong])
        assert result.exit_code == 2, result.output

    monkeypatch.undo()
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        result = cli.invoke(app, ["flow", "serve"])
    assert result.exit_code == 1 and "prefect server start" in result.output
