"""The lightfer Prefect flow: the DVC DAG's stages, run as cached Prefect tasks.

    python -m pipeline.flow [--params params.yaml] [--stage prepare ...]

Tasks are cached on what DVC hashes (params values, code and data dependencies; see
`stages/fingerprint.py`) and results persist under `PREFECT_HOME`, so a second run skips
stages whose inputs did not change; a stage whose outputs are missing runs again.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.context import TaskRunContext

from lightfer.errors import LightferError
from lightfer.params import load_params
from stages.common import configure_process
from stages.fingerprint import stage_fingerprint
from stages.registry import get_stage, plan

logger = logging.getLogger("lightfer.pipeline")


def _cache_key(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    run = get_stage(parameters["stage"]).expand(**parameters["values"])
    params = load_params(parameters["params_file"])
    return stage_fingerprint(run, Path(parameters["root"]), params)


@task(cache_key_fn=_cache_key, persist_result=True)
def run_stage(stage: str, values: dict[str, Any], root: str, params_file: str) -> dict[str, Any]:
    """Run one stage function, exactly as `python -m stages.<module>` would."""
    params = load_params(params_file)
    configure_process(params)
    return get_stage(stage).run(params, Path(root), **values)


@flow(name="lightfer")
def lightfer_flow(
    root: str = ".", params_file: str = "params.yaml", stages: list[str] | None = None
) -> dict[str, dict[str, Any]]:
    """Run the lightfer DAG (optionally only some stages) on the datasets in params.yaml."""
    project = Path(root).resolve()
    params_path = project / params_file
    params = load_params(params_path)
    results: dict[str, dict[str, Any]] = {}
    for run in plan(params):
        if stages and run.stage not in stages:
            continue
        outputs_missing = not all((project / out).exists() for out in run.outs)
        task_run = run_stage.with_options(name=run.name, refresh_cache=outputs_missing)
        results[run.name] = task_run(run.stage, run.values, str(project), str(params_path))
    return results


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: run the flow from the project root."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.flow")
    parser.add_argument("--root", default=".", help="project directory (.)")
    parser.add_argument("--params", default="params.yaml", help="params file, relative to root")
    parser.add_argument("--stage", action="append", help="run only this stage (repeatable)")
    args = parser.parse_args(argv)
    # Prefect's own console handler prints what propagates from the `lightfer` loggers.
    logging.getLogger("lightfer").setLevel(logging.INFO)
    try:
        lightfer_flow(root=args.root, params_file=args.params, stages=args.stage)
    except LightferError as exc:
        logger.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
