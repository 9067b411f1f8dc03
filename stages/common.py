"""What every stage shares: its declaration, process set-up and the command-line wrapper."""

from __future__ import annotations

import argparse
import itertools
import logging
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightfer.errors import LightferError, ParamsError
from lightfer.params import Params, load_params

logger = logging.getLogger("lightfer.stages")

# Every code dependency of a stage lists these, since every stage goes through them.
COMMON_DEPS: tuple[str, ...] = ("stages/common.py", "lightfer/params.py", "lightfer/io.py")


# The axes a stage can expand over, and where their values come from in params (a stage
# may take an axis's values from elsewhere: `StageSpec.axis_values`).
AXES: dict[str, Callable[[Params], list[Any]]] = {
    "dataset": lambda params: list(params.datasets),
    "regime": lambda params: list(params.train.regimes),
    "seed": lambda params: list(params.train.seeds),
    "noise": lambda params: list(params.study.noise),
}
AXIS_TYPES: dict[str, type] = {"seed": int, "noise": float}


@dataclass(frozen=True)
class StageRun:
    """One expanded stage, named as DVC names it: `<name>` for a stage without axes,
    `<name>@<dataset>` for a `foreach`, `<name>@<dataset>-<regime>-<seed>` for a `matrix`."""

    stage: str
    values: dict[str, Any]
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[str, ...]

    @property
    def name(self) -> str:
        if not self.values:
            return self.stage
        return f"{self.stage}@{'-'.join(str(v) for v in self.values.values())}"


@dataclass(frozen=True)
class StageSpec:
    """A stage's declaration: paths and param keys are templates over its `axes`.

    `outs` lists every output, metrics files included; `run(params, root, **values)`
    writes them under `root` and returns the stage's summary. `axes` names what the stage
    expands over, in DVC's matrix order (see `AXES`); none means a single plain stage.
    `sources` overrides where an axis's values come from (e.g. the study's datasets).
    """

    name: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[str, ...]
    run: Callable[..., dict[str, Any]]
    axes: tuple[str, ...] = ("dataset",)
    sources: tuple[tuple[str, Callable[[Params], list[Any]]], ...] = ()

    def axis_values(self, axis: str, params: Params) -> list[Any]:
        """The values this stage expands `axis` over."""
        return dict(self.sources).get(axis, AXES[axis])(params)

    @property
    def module(self) -> str:
        """The module under `stages/` (`train-ef` lives in `stages/train_ef.py`)."""
        return self.name.replace("-", "_")

    def expand(self, **values: Any) -> StageRun:
        """The stage run for one value per axis."""
        if set(values) != set(self.axes):
            raise LightferError(f"stage {self.name} needs values for {self.axes}, got {values}")

        def fill(items: tuple[str, ...]) -> tuple[str, ...]:
            return tuple(item.format(**values) for item in items)

        return StageRun(
            stage=self.name,
            values={axis: values[axis] for axis in self.axes},
            deps=COMMON_DEPS + fill(self.deps),
            outs=fill(self.outs),
            params=fill(self.params),
        )

    def expand_all(self, params: Params) -> list[StageRun]:
        """Every run of this stage for these params, in DVC's order."""
        return [
            self.expand(**dict(zip(self.axes, combo, strict=True)))
            for combo in itertools.product(*(self.axis_values(axis, params) for axis in self.axes))
        ]


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
    """Command-line entry of a stage: `python -m stages.<module> --<axis> VALUE ...`."""
    parser = argparse.ArgumentParser(prog=f"python -m stages.{spec.module}")
    for axis in spec.axes:
        parser.add_argument(f"--{axis}", required=True, type=AXIS_TYPES.get(axis, str))
    parser.add_argument("--params", default="params.yaml", help="params file (params.yaml)")
    args = parser.parse_args(argv)
    values = {axis: getattr(args, axis) for axis in spec.axes}
    configure_logging()
    try:
        params = load_params(args.params)
        for axis, value in values.items():
            if value not in spec.axis_values(axis, params):
                raise ParamsError(
                    f"{axis} {value!r} is not configured in {args.params}; configured: "
                    + ", ".join(map(str, spec.axis_values(axis, params)))
                )
        configure_process(params)
        spec.run(params, Path("."), **values)
    except LightferError as exc:
        logger.error("%s failed: %s", spec.name, exc)
        return 1
    return 0
