"""`lightfer flow run|serve`: the Prefect flow from the command line (see `lightfer.flow`).

Prefect is imported only when one of these commands runs, so the rest of the CLI starts fast.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Any

import typer

from lightfer.errors import LightferError

flow_app = typer.Typer(help="Run the DAG of dvc.yaml as a Prefect flow, recorded by DVC.")

Root = Annotated[Path, typer.Option("--root", help="The project (holds dvc.yaml).")]
Stages = Annotated[
    list[str] | None,
    typer.Option(
        "--stage",
        "-s",
        help="Run only this stage: a dvc.yaml name (all its runs) or one run's address; "
        "repeatable.",
    ),
]
RunnerOption = Annotated[
    str, typer.Option("--runner", help="sequential, dask (fan-out in worker processes) or threads.")
]
DaskAddress = Annotated[
    str | None, typer.Option("--dask-address", help="A running Dask scheduler, tcp://host:8786.")
]
Workers = Annotated[
    int | None,
    typer.Option("--workers", min=1, help="Local Dask workers or threads (cores / base.threads)."),
]


def _options(
    stages: list[str] | None, runner: str, dask_address: str | None, workers: int | None
) -> dict[str, Any]:
    """The flow's keyword arguments, the runner checked."""
    from lightfer.flow import RUNNERS

    if runner not in RUNNERS:
        raise typer.BadParameter(
            f"{runner!r} is not one of {', '.join(RUNNERS)}", param_hint="'--runner'"
        )
    return {
        "stages": stages or None,
        "runner": runner,
        "dask_address": dask_address,
        "workers": workers,
    }


@flow_app.command("run")
def run(
    root: Root = Path("."),
    stages: Stages = None,
    runner: RunnerOption = "sequential",
    dask_address: DaskAddress = None,
    workers: Workers = None,
) -> None:
    """Run the stages DVC finds out of date, and record each in dvc.lock and DVC's cache."""
    from lightfer.flow import lightfer_flow

    options = _options(stages, runner, dask_address, workers)
    logging.getLogger("lightfer").setLevel(logging.INFO)
    try:
        outcome = lightfer_flow(root=str(root), **options)
    except LightferError as exc:
        typer.echo(f"lightfer flow: {exc}", err=True)
        raise typer.Exit(code=1) from None
    ran = sum(state == "ran" for state in outcome.values())
    typer.echo(f"{ran} stage(s) ran, {len(outcome) - ran} up to date")


@flow_app.command("serve")
def serve(
    root: Root = Path("."),
    stages: Stages = None,
    runner: RunnerOption = "sequential",
    dask_address: DaskAddress = None,
    workers: Workers = None,
    name: Annotated[str, typer.Option("--name", help="Deployment name.")] = "lightfer",
) -> None:
    """Serve the flow as deployment lightfer/NAME: runs start from the Prefect UI."""
    from lightfer.flow import deployment_parameters
    from lightfer.flow import serve as serve_flow

    options = _options(stages, runner, dask_address, workers)
    try:
        serve_flow(name, deployment_parameters(root, **options))
    except LightferError as exc:
        typer.echo(f"lightfer flow: {exc}", err=True)
        raise typer.Exit(code=1) from None
