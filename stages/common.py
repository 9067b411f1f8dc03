"""What every stage shares: its declaration, process set-up and the command-line wrapper."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightfer.errors import LightferError
from lightfer.params import Params, load_params

logger = logging.getLogger("lightfer.stages")

# Every code dependency of a stage lists these, since every stage goes through them.
COMMON_DEPS: tuple[str, ...] = ("stages/common.py", "lightfer/params.py", "lightfer/io.py")


@dataclass(frozen=True)
class StageRun:
    """One expanded stage (`<name>@<dataset>`, or `<name>` for a stage that is not per
    dataset), as DVC names and resolves it."""

    stage: str
    dataset: str | None
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[str, ...]

    @property
    def name(self) -> str:
        return self.stage if self.dataset is None else f"{self.stage}@{self.dataset}"


@dataclass(frozen=True)
class StageSpec:
    """A stage's declaration: paths and param keys are templates over `{dataset}`.

    `outs` lists every output, metrics files included; `run(params, dataset, root)` writes
    them under `root` and returns the stage's summary. A stage with `per_dataset=False`
    runs once (its `dataset` is None), as a plain DVC stage instead of a `foreach`.
    """

    name: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[str, ...]
    run: Callable[[Params, str | None, Path], dict[str, Any]]
    per_dataset: bool = True

    def expand(self, dataset: str | None) -> StageRun:
        def fill(items: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(item.format(dataset=dataset) for item in items)

        return StageRun(
            stage=self.name,
            dataset=dataset,
            deps=COMMON_DEPS + fill(self.deps),
            outs=fill(self.outs),
            params=fill(self.params),
        )


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


def stage_main(spec: StageSpec, argv: list[str] | None = None) -> int:
    """Command-line entry of a stage: `python -m stages.<name> --dataset NAME`."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{spec.name}")
    if spec.per_dataset:
        parser.add_argument("--dataset", required=True, help="a key of params.yaml's datasets")
    parser.add_argument("--params", default="params.yaml", help="params file (params.yaml)")
    args = parser.parse_args(argv)
    dataset = getattr(args, "dataset", None)
    configure_logging()
    try:
        params = load_params(args.params)
        if dataset is not None:
            params.dataset(dataset)
        configure_process(params)
        spec.run(params, dataset, Path("."))
    except LightferError as exc:
        logger.error("%s failed: %s", spec.name, exc)
        return 1
    return 0
