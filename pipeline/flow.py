"""The lightfer Prefect flow: the DVC DAG's stages, run as cached Prefect tasks.

    python -m pipeline.flow [--params params.yaml] [--stage prepare ...]    # as `run`
    python -m pipeline.flow run [--stages prepare align] [--runner dask] [--workers 2]
                                [--dask-address tcp://scheduler:8786]
    python -m pipeline.flow serve [--name lightfer] [...the run options, as defaults]

Tasks are cached on what DVC hashes (params values, code and data dependencies; see
`stages/fingerprint.py`) and results persist under `PREFECT_HOME`, so a second run skips
stages whose inputs did not change; a stage whose outputs are missing runs again.

Runners: `sequential` (the default; one run after another in plan order, in this process),
`dask` (each run is submitted as soon as the runs it reads from, see `pipeline.dag`, have
finished, to a local cluster of single-threaded worker processes or to a cluster at
`dask_address`), `threads` (the same fan-out on threads of this process: only for stages
that touch no process-global state, since training seeds torch's global generator).
"""

# No `from __future__ import annotations` here: a served run gets the flow pickled by value
# into a fresh process, where string annotations such as "list[StageName]" can no longer
# be resolved, and Prefect then fails to validate the run's parameters.
import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlparse

from prefect import Task, flow, task
from prefect.context import FlowRunContext, TaskRunContext
from prefect.futures import PrefectFuture, wait
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner

from lightfer.errors import LightferError
from lightfer.params import load_params
from pipeline import PROJECT_ROOT
from pipeline.dag import check_outputs_disjoint, execution_order, schedule
from stages.common import StageRun, configure_process
from stages.fingerprint import stage_fingerprint
from stages.registry import STAGES, get_stage, plan

logger = logging.getLogger("lightfer.pipeline")

Runner = Literal["sequential", "threads", "dask"]
RUNNERS: tuple[str, ...] = get_args(Runner)
# The stage names as a type, so the Prefect UI offers them as choices (built from the
# registry: a stage added there appears here).
StageName = Literal[tuple(spec.name for spec in STAGES)]  # type: ignore[valid-type]
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def _cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    run = get_stage(parameters["stage"]).expand(**parameters["values"])
    params = load_params(parameters["params_file"])
    return stage_fingerprint(run, Path(parameters["root"]), params)


@task(cache_key_fn=_cache_key, persist_result=True)
def run_stage(stage: str, values: dict[str, Any], root: str, params_file: str) -> dict[str, Any]:
    """Run one stage function, exactly as `python -m stages.<module>` would (thread counts
    are set here, in whichever process runs the task: a Dask worker too)."""
    params = load_params(params_file)
    configure_process(params)
    return get_stage(stage).run(params, Path(root), **values)


def default_workers(threads: int) -> int:
    """Concurrent stage runs that fill the machine's cores at `threads` threads each."""
    return max(1, (os.cpu_count() or 1) // threads)


def make_task_runner(
    runner: Runner, *, workers: int, dask_address: str | None = None
) -> TaskRunner | None:
    """The task runner for `runner`: None for `sequential` (tasks are called directly), a
    pool of `workers` threads, or Dask: the cluster at `dask_address`, else a local cluster
    of `workers` single-threaded worker processes."""
    if runner == "sequential":
        return None
    if runner == "threads":
        return ThreadPoolTaskRunner(max_workers=workers)
    if runner != "dask":
        raise LightferError(f"unknown runner {runner!r}; runners: {', '.join(RUNNERS)}")
    from prefect_dask import DaskTaskRunner

    if dask_address:
        return DaskTaskRunner(address=dask_address)
    return DaskTaskRunner(
        cluster_class="distributed.LocalCluster",
        cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True},
    )


@contextlib.contextmanager
def _local_cluster_environment(threads: int) -> Iterator[None]:
    """Worker processes of a local cluster start with `threads` BLAS/OpenMP threads and
    quiet `distributed` logs.

    These must be in a worker's environment before it imports numpy, which only Dask's
    `pre-spawn-environ` achieves (a Nanny's `env` is applied after the import); the Nanny
    writes them into this process's environment too, so they are restored afterwards.
    torch and OpenCV threads are set per run by `configure_process`, in the task.
    """
    import dask
    import distributed  # noqa: F401  (loads the defaults the keys below extend)

    spawn = {var: str(threads) for var in _THREAD_VARS}
    spawn["DASK_LOGGING__DISTRIBUTED"] = "warning"
    key = "distributed.nanny.pre-spawn-environ"
    with dask.config.set({f"{key}.{name}": value for name, value in spawn.items()}):
        saved = {name: os.environ.get(name) for name in dask.config.get(key)}
        dask_logger = logging.getLogger("distributed")
        level = dask_logger.level
        dask_logger.setLevel(logging.WARNING)
        try:
            yield
        finally:
            dask_logger.setLevel(level)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value


def _api_url_for_workers(dask_address: str | None) -> str | None:
    """The API URL Dask workers must use, when this process has none configured.

    In ephemeral mode the flow's process starts a temporary server but records its address
    nowhere a worker looks, so each worker process would start a server of its own (20 s or
    more each, all on one SQLite file). The address travels to the workers in the settings
    Prefect serialises with each task.
    """
    if PREFECT_API_URL.value():
        return None
    context = FlowRunContext.get()
    url = str(context.client.api_url) if context and context.client else ""
    if not url.startswith("http"):
        return None
    if dask_address and urlparse(url).hostname in ("127.0.0.1", "localhost"):
        logger.warning(
            "the Prefect API is a temporary server at %s, which workers on other machines "
            "cannot reach: run `prefect server start --host 0.0.0.0` and set "
            "PREFECT_API_URL to an address they can reach",
            url,
        )
    return url


def _task_for(run: StageRun, project: Path) -> Task[..., dict[str, Any]]:
    """`run_stage` named after the run; its cache is refreshed when an output is missing."""
    outputs_missing = not all((project / out).exists() for out in run.outs)
    return run_stage.with_options(name=run.name, refresh_cache=outputs_missing)


def _arguments(run: StageRun, project: Path, params_path: Path) -> dict[str, Any]:
    return {
        "stage": run.stage,
        "values": run.values,
        "root": str(project),
        "params_file": str(params_path),
    }


@flow(name="lightfer")
def lightfer_flow(
    root: str = ".",
    params_file: str = "params.yaml",
    stages: list[StageName] | None = None,
    runner: Runner = "sequential",
    dask_address: str | None = None,
    workers: int | None = None,
) -> dict[str, dict[str, Any]]:
    """Run the lightfer DAG (optionally only some stages) on the datasets in params.yaml.

    Args:
        root: the project directory (holding dvc.yaml, params.yaml and the outputs).
        params_file: the params file, relative to root.
        stages: run only these stages (all their runs); empty: every stage.
        runner: sequential (one run at a time), dask (independent runs at once, each in a
            worker process; outputs identical to sequential) or threads (in this process).
        dask_address: a running Dask scheduler, tcp://host:8786; empty: a local cluster.
        workers: local Dask workers or threads; empty: CPU cores / base.threads.
    """
    project = Path(root).resolve()
    params_path = project / params_file
    params = load_params(params_path)
    runs = [run for run in plan(params) if not stages or run.stage in stages]
    check_outputs_disjoint(runs)
    if workers is not None and workers < 1:
        raise LightferError(f"workers must be at least 1, got {workers}")
    task_runner = make_task_runner(
        runner, workers=workers or default_workers(params.base.threads), dask_address=dask_address
    )
    if task_runner is None:
        return {
            run.name: _task_for(run, project)(**_arguments(run, project, params_path))
            for run in runs
        }
    if runner == "threads":
        logger.warning(
            "runner 'threads': runs share this process's torch generator and thread "
            "settings, so training outputs may differ from a sequential run's; use 'dask'"
        )
    edges = schedule(runs)
    futures: dict[str, PrefectFuture[dict[str, Any]]] = {}
    with contextlib.ExitStack() as stack:
        if runner == "dask":
            api_url = _api_url_for_workers(dask_address)
            if api_url:
                stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api_url}))
            if not dask_address:
                stack.enter_context(_local_cluster_environment(params.base.threads))
        stack.enter_context(task_runner)
        order = execution_order(runs, edges)
        for run in order:
            futures[run.name] = task_runner.submit(
                _task_for(run, project),
                parameters=_arguments(run, project, params_path),
                wait_for=[futures[name] for name in edges[run.name]],
            )
        # Every run ends before the runner (and a local cluster) shuts down; then the first
        # failure in execution order is raised: an upstream's, not the unready runs after it.
        wait(list(futures.values()))
        results = {run.name: futures[run.name].result() for run in order}
    return {run.name: results[run.name] for run in runs}


def deployment_parameters(
    root: str | os.PathLike[str] = ".",
    params_file: str = "params.yaml",
    stages: list[str] | None = None,
    runner: Runner = "sequential",
    dask_address: str | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """The default parameters of the served deployment (each can be changed per run).

    `root` is made absolute: runs started from the UI do not share the caller's directory.
    Unset options are left out, so the flow's own defaults apply.
    """
    values: dict[str, Any] = {
        "root": str(Path(root).resolve()),
        "params_file": params_file,
        "stages": list(stages) if stages else None,
        "runner": runner,
        "dask_address": dask_address,
        "workers": workers,
    }
    return {key: value for key, value in values.items() if value is not None}


def serve(name: str = "lightfer", parameters: dict[str, Any] | None = None) -> None:
    """Serve the flow as deployment `lightfer/<name>` until interrupted: runs started from
    the Prefect UI or `prefect deployment run lightfer/<name>` execute in this machine's
    processes. Needs a Prefect server (`prefect server start`) and `PREFECT_API_URL`."""
    from prefect.deployments.runner import EntrypointType

    if not PREFECT_API_URL.value():
        raise LightferError(
            "serving needs a Prefect server the UI talks to: run `prefect server start` in "
            "another shell, then `export PREFECT_API_URL=http://127.0.0.1:4200/api`"
        )
    # Each flow run executes in a fresh process (and its stages perhaps in Dask workers),
    # which import the project's modules by name: make them importable from anywhere. The
    # entrypoint is a module path too: loaded from its file, the module would get a name
    # Dask workers cannot import.
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), path]))
    lightfer_flow.serve(
        name=name,
        parameters=parameters or deployment_parameters(),
        description="The lightfer DAG (the stages of dvc.yaml) with chosen params and runner.",
        tags=["lightfer"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.flow",
        description="Run the lightfer flow (the default command) or serve it as a deployment.",
    )
    commands = parser.add_subparsers(dest="command", metavar="{run,serve}")
    options = argparse.ArgumentParser(add_help=False)
    options.add_argument("--root", default=".", help="project directory (.)")
    options.add_argument("--params", default="params.yaml", help="params file, relative to root")
    options.add_argument(
        "--stage",
        "--stages",
        dest="stages",
        action="extend",
        nargs="+",
        choices=[spec.name for spec in STAGES],
        metavar="STAGE",
        help="run only these stages (repeatable)",
    )
    options.add_argument("--runner", choices=RUNNERS, default="sequential", help="(sequential)")
    options.add_argument("--dask-address", help="scheduler of a running Dask cluster, tcp://...")
    options.add_argument(
        "--workers", type=_positive, help="local Dask workers or threads (cores / base.threads)"
    )
    commands.add_parser("run", parents=[options], help="run the flow once (default)")
    serve_parser = commands.add_parser(
        "serve", parents=[options], help="serve the flow; the options become run defaults"
    )
    serve_parser.add_argument("--name", default="lightfer", help="deployment name (lightfer)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: run the flow from the project root, or serve it."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("run", "serve", "-h", "--help"):
        argv = ["run", *argv]  # `python -m pipeline.flow [--stage ...]` runs, as it always did
    args = _parser().parse_args(argv)
    options = {"stages": args.stages, "runner": args.runner, "dask_address": args.dask_address}
    options["workers"] = args.workers
    # Prefect's own console handler prints what propagates from the `lightfer` loggers.
    logging.getLogger("lightfer").setLevel(logging.INFO)
    try:
        if args.command == "serve":
            serve(args.name, deployment_parameters(args.root, args.params, **options))
        else:
            lightfer_flow(root=args.root, params_file=args.params, **options)
    except LightferError as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    # Re-import under the module's own name: Dask workers unpickle tasks by module path,
    # and a deployment's entrypoint is named from it, neither of which `__main__` offers.
    from pipeline.flow import main as _main

    raise SystemExit(_main())
