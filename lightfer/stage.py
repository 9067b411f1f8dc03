"""What every stage's `main` shares: its arguments, process set-up and error handling.

A stage module runs as `python -m stages.<module> --dataset X [--regime R] [--arm A]
[--params FILE]`, the command `dvc.yaml` gives it, and the Prefect flow calls its
`main(argv)` with the same arguments. `stage_main` parses them, configures logging, loads
and validates the params, checks that each value is one the params configure, sets the
thread counts, and calls the stage's `run(params, root, **values)`. A `LightferError`
becomes one logged line and exit status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightfer.errors import LightferError, ParamsError
from lightfer.params import Params, load_params

__all__ = [
    "ARM",
    "DATASET",
    "REGIME",
    "STUDY_DATASET",
    "Option",
    "configure_logging",
    "configure_process",
    "stage_main",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Option:
    """A stage argument (`--<name> VALUE`) and the values params.yaml configures for it."""

    name: str
    type: type
    configured: Callable[[Params], list[Any]]


DATASET = Option("dataset", str, lambda params: list(params.datasets))
STUDY_DATASET = Option("dataset", str, lambda params: list(params.study.datasets))
REGIME = Option("regime", str, lambda params: list(params.train.regimes))
ARM = Option("arm", str, lambda params: list(params.au_study.arms) if params.au_study else [])


def configure_process(params: Params) -> None:
    """Set thread counts deliberately: two busy processes on two cores crawl."""
    threads = params.base.threads
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ.setdefault(var, str(threads))
    import cv2

    cv2.setNumThreads(threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)


def configure_logging() -> None:
    """Log `lightfer` messages to stderr (entry points only; the library never configures)."""
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("lightfer")
    if not root.handlers:
        root.addHandler(handler)
    root.setLevel(logging.INFO)


def stage_main(
    stage: str,
    run: Callable[..., object],
    argv: list[str] | None = None,
    *,
    options: tuple[Option, ...] = (),
) -> int:
    """Run one stage from its command line; returns the exit status.

    Args:
        stage: the stage's name in `dvc.yaml` (for messages).
        run: `run(params, root, **values)`, writing the stage's outputs under `root` (here
            the working directory, where `dvc repro` runs the stage).
        argv: the arguments after `python -m stages.<module>` (None: `sys.argv[1:]`).
        options: the stage's arguments besides `--params`, in its command's order.
    """
    parser = argparse.ArgumentParser(prog=f"python -m stages.{stage.replace('-', '_')}")
    for option in options:
        parser.add_argument(f"--{option.name}", required=True, type=option.type)
    parser.add_argument("--params", default="params.yaml", help="params file (params.yaml)")
    args = parser.parse_args(argv)
    values = {option.name: getattr(args, option.name) for option in options}
    configure_logging()
    try:
        params = load_params(args.params)
        for option in options:
            configured = option.configured(params)
            if values[option.name] not in configured:
                raise ParamsError(
                    f"{option.name} {values[option.name]!r} is not configured in "
                    f"{args.params}; configured: {', '.join(map(str, configured))}"
                )
        configure_process(params)
        run(params, Path("."), **values)
    except LightferError as exc:
        logger.error("%s failed: %s", stage, exc)
        return 1
    return 0
