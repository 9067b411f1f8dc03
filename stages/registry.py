"""The stages in DAG order, and their expansion over the configured datasets."""

from __future__ import annotations

from lightfer.errors import LightferError
from lightfer.params import Params
from stages import align, bench, evaluate, prepare, soft_labels, train_ef, train_ldg
from stages.common import StageRun, StageSpec

STAGES: tuple[StageSpec, ...] = (
    prepare.STAGE,
    align.STAGE,
    train_ldg.STAGE,
    soft_labels.STAGE,
    train_ef.STAGE,
    evaluate.STAGE,
    bench.STAGE,
)


def get_stage(name: str) -> StageSpec:
    """The stage called `name`."""
    for spec in STAGES:
        if spec.name == name:
            return spec
    raise LightferError(f"unknown stage {name!r}; stages: {', '.join(s.name for s in STAGES)}")


def plan(params: Params) -> list[StageRun]:
    """Every stage run the DAG holds for these params, in an order that respects dependencies."""
    return [run for spec in STAGES for run in spec.expand_all(params)]
