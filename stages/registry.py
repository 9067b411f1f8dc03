"""The stages in DAG order, and their expansion over the configured datasets."""

from __future__ import annotations

from lightfer.errors import LightferError
from lightfer.params import Params
from stages import (
    align,
    aux_analysis,
    aux_labels,
    bench,
    evaluate,
    knn,
    prepare,
    report,
    soft_labels,
    study,
    study_summary,
    train_ef,
    train_ef_au,
    train_ldg,
)
from stages.common import StageRun, StageSpec

STAGES: tuple[StageSpec, ...] = (
    prepare.STAGE,
    align.STAGE,
    aux_labels.STAGE,
    train_ldg.STAGE,
    soft_labels.STAGE,
    knn.STAGE,
    train_ef.STAGE,
    train_ef_au.STAGE,
    study.STAGE,
    evaluate.STAGE,
    study_summary.STAGE,
    aux_analysis.STAGE,
    bench.STAGE,
    report.STAGE,
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
