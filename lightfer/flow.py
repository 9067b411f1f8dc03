"""The Prefect flow: the stages of `dvc.yaml` as Prefect tasks, with DVC as the one record.

    lightfer flow run [--stage train-ef ...] [--runner dask] [--workers 2]
                      [--dask-address tcp://scheduler:8786]
    lightfer flow serve [--name lightfer] [...the run options, as defaults]

The flow holds no DAG of its own and no cache of its own. It reads the stages, their
commands and what each reads from DVC's index of `dvc.yaml` (`lightfer.dvc_dag`). Before a
stage runs, the flow asks DVC whether `dvc repro` would run it and skips it if not; after
it runs, the flow records it with `dvc commit` (the lock file and DVC's cache). So after
`dvc repro` the flow runs nothing, after the flow `dvc status` is clean, and `dvc metrics
diff` or `dvc exp show` describe what either front end did. The DVC calls are made here, in
the flow's process, one at a time; only the stage commands run in the task runner.

A stage whose command is `python -m stages.<module> ARGS` runs in-process as
`stages.<module>.main(ARGS)` (imported from the project root): the same function `dvc repro`
runs, without a new interpreter per stage. Any other command runs in a shell, as DVC runs it.

Runners: `sequential` (one stage at a time, in this process), `dask` (each stage starts as
soon as the stages it reads from are recorded, in a local cluster of single-threaded worker
processes or on the cluster at `dask_address`), `threads` (the same fan-out on threads of
this process: only for stages that touch no process-global state, since training seeds
torch's global generator). Stages in `EXCLUSIVE_STAGES` measure time and run alone.
"""

# No `from __future__ import annotations` here: a served run gets the flow pickled by value
# into a fresh process, where string annotations can no longer be resolved, and Prefect then
# fails to validate the run's parameters.
import contextlib
import importlib
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal, get_args
from urllib.parse import urlparse

for _name, _value in {
    "PREFECT_HOME": str(Path.cwd() / ".prefect"),
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # The temporary server needs more than the default 20 s on a busy 2-core machine.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
}.items():
    os.environ.setdefault(_name, _value)

from prefect import flow, task  # noqa: E402  (after the settings above)
from prefect.context import FlowRunContext  # noqa: E402
from prefect.futures import as_completed  # noqa: E402
from prefect.settings import PREFECT_API_URL, temporary_settings  # noqa: E402
from prefect.task_runners import TaskRunner, ThreadPoolTaskRunner  # noqa: E402

from lightfer.dvc_dag import DvcStage, load_stages, needs_run, record, remove_outputs  # noqa: E402
from lightfer.errors import LightferError  # noqa: E402

__all__ = [
    "EXCLUSIVE_STAGES",
    "RUNNERS",
    "deployment_parameters",
    "lightfer_flow",
    "make_task_runner",
    "serve",
]

logger = logging.getLogger("lightfer.flow")

Runner = Literal["sequential", "threads", "dask"]
RUNNERS: tuple[str, ...] = get_args(Runner)
# Stages (by their dvc.yaml name) that measure time: nothing else runs beside them.
EXCLUSIVE_STAGES: frozenset[str] = frozenset({"bench"})
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


@contextlib.contextmanager
def _working_directory(root: Path) -> Iterator[None]:
    """The flow works in the project, as DVC does: stage names and commands are relative
    to it. Only the flow changes it (a stage running on a thread of the flow's process must
    not see it change under it)."""
    cwd = os.getcwd()
    os.chdir(root)
    try:
        yield
    finally:
        os.chdir(cwd)


def _enter_project(root: str) -> None:
    """Make a stage's process (the flow's, or a Dask worker's) work in the project and
    import its `stages` package from there."""
    if os.getcwd() != root:
        os.chdir(root)
    if root not in sys.path:
        sys.path.insert(0, root)


@task
def run_stage(name: str, cmd: str, root: str) -> float:
    """Run one stage's command (in-process for `python -m` modules); return its seconds."""
    start = time.perf_counter()
    call = DvcStage(name=name, cmd=cmd, outs=(), upstream=()).python_module()
    if call is None:
        code = subprocess.run(cmd, shell=True, cwd=root, check=False).returncode
    else:
        module, args = call
        _enter_project(root)
        code = importlib.import_module(module).main(args)
    if code:
        raise LightferError(f"stage {name} failed (exit code {code}); its log is above")
    return time.perf_counter() - start


def default_workers(threads: int) -> int:
    """Concurrent stages that fill the machine's cores at `threads` threads each."""
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
    quiet `distributed` logs, and are not daemonic: a training stage trains its seeds in
    processes of its own (`lightfer.parallel`), which a daemonic process may not start.

    These must be in a worker's environment before it imports numpy, which only Dask's
    `pre-spawn-environ` achieves (a Nanny's `env` is applied after the import); the Nanny
    writes them into this process's environment too, so they are restored afterwards.
    torch and OpenCV threads are set by each stage itself.
    """
    import dask
    import distributed  # noqa: F401  (loads the defaults the keys below extend)

    spawn = {var: str(threads) for var in _THREAD_VARS}
    spawn["DASK_LOGGING__DISTRIBUTED"] = "warning"
    key = "distributed.nanny.pre-spawn-environ"
    settings: dict[str, object] = {f"{key}.{name}": value for name, value in spawn.items()}
    settings["distributed.worker.daemon"] = False
    with dask.config.set(settings):
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


class _Finished:
    """A sequential stage's outcome, shaped like a future that is already done."""

    def __init__(self, call: Callable[[], float]) -> None:
        self._value: float | None = None
        self._error: Exception | None = None
        try:
            self._value = call()
        except Exception as err:  # re-raised by `result`, as a failed future's would be
            self._error = err

    def result(self) -> float | None:
        if self._error is not None:
            raise self._error
        return self._value


def _drive(stages: list[DvcStage], project: Path, submit: Callable[[DvcStage], Any]) -> dict:
    """Run `stages` as their upstreams allow: skip what DVC finds up to date, submit the
    rest, record each in DVC as it succeeds. After a failure nothing new starts; the
    running stages finish (and are recorded), then the first failure is raised."""
    outcome: dict[str, str] = {}
    pending = list(stages)
    running: dict[str, Any] = {}
    failures: list[Exception] = []

    def startable(stage: DvcStage) -> bool:
        if not all(outcome.get(up) in ("ran", "up to date") for up in stage.upstream):
            return False
        alone = stage.base in EXCLUSIVE_STAGES
        return not running or not (
            alone or any(s.split("@")[0] in EXCLUSIVE_STAGES for s in running)
        )

    while pending or running:
        while not failures and (stage := next(filter(startable, pending), None)) is not None:
            pending.remove(stage)
            reasons = needs_run(project, stage.name)
            if not reasons:
                logger.info("%s is up to date", stage.name)
                outcome[stage.name] = "up to date"
                continue
            logger.info("running %s (%s)", stage.name, "; ".join(reasons))
            remove_outputs(project, stage)
            running[stage.name] = submit(stage)
        if not running:
            break
        finished = [name for name, f in running.items() if isinstance(f, _Finished)]
        if finished:
            name = finished[0]
        else:
            done = next(as_completed(list(running.values())))
            name = next(n for n, f in running.items() if f is done)
        future = running.pop(name)
        try:
            seconds = future.result()
        except Exception as err:
            logger.error("%s failed: %s", name, err)
            outcome[name] = "failed"
            failures.append(err)
            continue
        record(project, name)
        logger.info("%s ran in %.1f s", name, seconds)
        outcome[name] = "ran"
    if failures:
        raise failures[0]
    for stage in pending:
        outcome[stage.name] = "not run"
    return outcome


@flow(name="lightfer")
def lightfer_flow(
    root: str = ".",
    stages: list[str] | None = None,
    runner: Runner = "sequential",
    dask_address: str | None = None,
    workers: int | None = None,
) -> dict[str, str]:
    """Run the DAG of `root/dvc.yaml` (optionally only some stages), recorded by DVC.

    Args:
        root: the project directory (holding dvc.yaml, params.yaml and the outputs).
        stages: run only these stages (a dvc.yaml name selects all its runs, e.g.
            `train-ef`; an address selects one, e.g. `train-ef@synthetic-ldl`).
        runner: sequential (one stage at a time), dask (independent stages at once, each
            in a worker process; outputs identical to sequential) or threads.
        dask_address: a running Dask scheduler, tcp://host:8786; empty: a local cluster.
        workers: local Dask workers or threads; empty: CPU cores / base.threads.

    Returns:
        Each stage's outcome: "ran", "up to date" (DVC would skip it), or "not run".
    """
    from lightfer.params import load_params

    project = Path(root).resolve()
    if workers is not None and workers < 1:
        raise LightferError(f"workers must be at least 1, got {workers}")
    with _working_directory(project):
        plan = load_stages(project, stages or ())
        threads = load_params(project / "params.yaml").base.threads
        task_runner = make_task_runner(
            runner, workers=workers or default_workers(threads), dask_address=dask_address
        )
        if task_runner is None:
            return _drive(plan, project, lambda stage: _Finished(lambda: _call(stage, project)))
        return _fan_out(plan, project, runner, task_runner, dask_address, threads)


def _call(stage: DvcStage, project: Path) -> float:
    """Run `stage` as a task in this thread (the sequential runner)."""
    return run_stage.with_options(name=stage.name)(stage.name, stage.cmd, str(project))


def _fan_out(
    plan: list[DvcStage],
    project: Path,
    runner: Runner,
    task_runner: TaskRunner,
    dask_address: str | None,
    threads: int,
) -> dict[str, str]:
    """`_drive` with stages submitted to `task_runner` (Dask or threads)."""
    if runner == "threads":
        logger.warning(
            "runner 'threads': stages share this process's torch generator and thread "
            "settings, so training outputs may differ from a sequential run's; use 'dask'"
        )
    with contextlib.ExitStack() as stack:
        if runner == "dask":
            api_url = _api_url_for_workers(dask_address)
            if api_url:
                stack.enter_context(temporary_settings(updates={PREFECT_API_URL: api_url}))
            if not dask_address:
                stack.enter_context(_local_cluster_environment(threads))
        stack.enter_context(task_runner)
        return _drive(
            plan,
            project,
            lambda stage: task_runner.submit(
                run_stage.with_options(name=stage.name),
                parameters={"name": stage.name, "cmd": stage.cmd, "root": str(project)},
            ),
        )


def deployment_parameters(
    root: str | os.PathLike[str] = ".",
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
    lightfer_flow.serve(
        name=name,
        parameters=parameters or deployment_parameters(),
        description="The lightfer DAG (the stages of dvc.yaml), recorded by DVC.",
        tags=["lightfer"],
        entrypoint_type=EntrypointType.MODULE_PATH,
    )
