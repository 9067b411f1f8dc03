"""The stages in DAG order, and their expansion over the configured datasets."""

from __future__ import annotations

from lightfer.errors import LightferError
from lightfer.params import Params
from stages import align, prepare
from stages.common import StageRun, StageSpec

STAGES: tuple[StageSpec, ...] = (prepare.STAGE, align.STAGE)


def get_stage(name: str) -> StageSpec:
    """The stage called `name`."""
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise LightferError(f"unknown stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


def plan(params: Params) -> list[StageRun]:
    """Every stage run the DAG holds for these params, in an order that respects dependencies."""
    runs = []
    for spec in STAGES:
        datasets = list(params.datasets) if spec.per_dataset else [None]
        runs += [spec.expand(dataset) for dataset in datasets]
    return runs
