"""The powered AU study: does the AU-neighbour term help, and when? (`studies/au/`)

The paper's AU term gave no gain on RAF-DB and FER+, and the paper blamed noisy automatic
AUs. The synthetic faces know their true AUs and true label distributions, so the study can
vary the AU noise, the neighbour source, lambda and K one at a time, and compare each arm
with LDL on the same seeds and the same test faces (paired).

Every arm trains EfficientFace with the main DAG's `train.ef` settings, on the training
split only, and keeps its last epoch (a rule fixed in advance: the 1-cycle schedule anneals
to its end, so there is no epoch to pick and no validation set to pick it on). Each seed's
test distributions are kept per face (`sample_id`), which the comparisons resample.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lightfer import catalog
from lightfer.au import AuxVectors
from lightfer.au.annotate import aligned_landmarks, oracle_vectors
from lightfer.au.geometry import geometry_aux
from lightfer.au.landmarks import landmark_aux
from lightfer.au.target_quality import target_quality
from lightfer.errors import StageOutputError
from lightfer.evaluation import classification_metrics, ldl_metrics
from lightfer.faces.cache import load_face_cache
from lightfer.io import write_parquet
from lightfer.knn import NeighbourGraph, training_graph
from lightfer.labels import CLASSES, NUM_CLASSES
from lightfer.losses import AUNeighbourKL, Regime, build_regime, with_au_term
from lightfer.manifest import read_manifest
from lightfer.parallel import map_in_workers
from lightfer.params import AuStudyParams, Params, StudyArm
from lightfer.splits import Splits
from lightfer.training.neighbours import dense_neighbour_table
from lightfer.training.run import (
    cached_soft_labels,
    load_trained,
    params_values,
    predict_distributions,
    train_model,
)

__all__ = [
    "arm_vectors",
    "read_arm_predictions",
    "study_of",
    "target_quality_rows",
    "train_arm",
    "write_arm_predictions",
]

logger = logging.getLogger(__name__)

_NO_ROWS = np.empty(0, dtype=np.int64)


def study_of(params: Params) -> AuStudyParams:
    """The params' `au_study` section, refused with the fix when the file has none."""
    if params.au_study is None:
        raise StageOutputError(
            "these params have no au_study section; run the AU study with its own params "
            "(dvc repro studies/au/dvc.yaml)"
        )
    return params.au_study


def arm_vectors(params: Params, root: Path, splits: Splits, arm: StudyArm) -> AuxVectors:
    """The auxiliary vectors of `arm`'s space for every face-cache row."""
    dataset = study_of(params).dataset
    crops, faces = load_face_cache(splits.cache)
    if arm.space == "oracle":
        return oracle_vectors(
            params.aux,
            noise=arm.noise,
            manifest=read_manifest(catalog.manifest_path(root, dataset)),
            crops=crops,
            faces=faces,
            dataset=dataset,
            base_seed=params.base.seed,
        )
    points, ok = aligned_landmarks(crops, faces, predict=params.aux.predict_landmarks)
    return (geometry_aux if arm.space == "geometry" else landmark_aux)(points, ok)


def _one_hot(labels: np.ndarray) -> np.ndarray:
    return np.eye(NUM_CLASSES, dtype=np.float32)[labels]


def _regime(
    arm: StudyArm, splits: Splits, soft: np.ndarray | None, graph: NeighbourGraph | None
) -> tuple[Regime, dict[str, Any]]:
    """The arm's loss and the extra `fit_model` arguments it needs."""
    base = build_regime("sll" if arm.regime.startswith("sll") else "ldl")
    if graph is None:
        return base, {}
    neighbours, weights = dense_neighbour_table(
        len(splits.crops), graph.rows, graph.indices, graph.weights
    )
    # The neighbours' fixed targets (and the bank's start): their LDG soft labels under
    # ldl_au, their hard labels under sll_au.
    init = soft if arm.regime == "ldl_au" else _one_hot(splits.labels)
    term = AUNeighbourKL(
        neighbours,
        weights,
        source=arm.source,
        init=None if arm.source == "batch" else torch.from_numpy(init),
    )
    extra = {"neighbours": neighbours} if arm.source == "batch" else {}
    return with_au_term(base, arm.weight, term), extra


def train_arm(
    params: Params, root: Path, *, arm_name: str, splits: Splits
) -> tuple[list[dict[str, Any]], pa.Table]:
    """Train `arm_name` for every study seed; return per-seed summaries and test outputs.

    The seeds train `au_study.workers` at a time, each in its own process
    (`lightfer.parallel`). Writes each seed's checkpoint to
    `models/<dataset>/arms/<arm>/seed<k>.pt`. Returns the
    summaries (training summary and test metrics per seed) and a table of every seed's test
    distributions (`seed`, `sample_id`, `label`, `p_<class>`...).
    """
    study = study_of(params)
    arm = study.arms[arm_name]
    dataset = study.dataset
    soft = None
    if arm.regime in ("ldl", "ldl_au"):
        soft = cached_soft_labels(root, dataset, splits)
    elif arm.regime == "truth":
        if splits.true_dist is None:
            raise StageOutputError(f"{dataset} has no true distributions for the truth arm")
        soft = splits.true_dist.astype(np.float32)
    graph, graph_report = None, None
    if arm.uses_graph:
        knn = params.knn.model_copy(update={"k": arm.k})
        vectors = arm_vectors(params, root, splits, arm)
        graph, graph_report = training_graph(
            vectors, splits, knn=knn, threads=params.base.threads, seed=params.base.seed
        )
    settings = {
        **params_values(params, "base.seed", "align.crop_size", "train.ef", "knn"),
        "arm": arm.model_dump(mode="json", by_alias=True),
        "workers": study.workers,  # it sets each run's thread count, which moves its floats
    }
    inputs = [catalog.faces_dir(root, dataset), catalog.manifest_path(root, dataset)]
    if soft is not None and arm.regime != "truth":
        inputs += [catalog.soft_labels_path(root, dataset), catalog.ldg_path(root, dataset)]
    jobs = [
        _SeedJob(root, arm_name, arm, seed, splits, soft, graph, settings, inputs, params)
        for seed in study.seeds
    ]
    results = map_in_workers(_train_seed, jobs, workers=study.workers, threads=params.base.threads)
    summaries = [summary for summary, _ in results]
    if graph_report is not None:
        summaries = [{**summary, "graph": graph_report} for summary in summaries]
    return summaries, pa.concat_tables([table for _, table in results])


@dataclass(frozen=True)
class _SeedJob:
    """What one seed of an arm needs, sent whole to a worker process."""

    root: Path
    arm_name: str
    arm: StudyArm
    seed: int
    splits: Splits
    soft: np.ndarray | None
    graph: NeighbourGraph | None
    settings: dict[str, Any]
    inputs: list[Path]
    params: Params


def _train_seed(job: _SeedJob) -> tuple[dict[str, Any], pa.Table]:
    """Train one seed of an arm; its summary and its test distributions."""
    dataset, splits, params = study_of(job.params).dataset, job.splits, job.params
    run = catalog.arm_run_name(job.arm_name, job.seed)
    model_path = catalog.arm_models_dir(job.root, dataset, job.arm_name) / f"seed{job.seed}.pt"
    logs_dir = catalog.arm_report_path(job.root, dataset, job.arm_name).parent / job.arm_name
    regime, extra = _regime(job.arm, splits, job.soft, job.graph)
    training = train_model(
        job.root,
        stage_run=catalog.stage_run_name("au-study", run),
        settings=job.settings,
        inputs=job.inputs,
        model_path=model_path,
        logs=(logs_dir / f"seed{job.seed}.csv", logs_dir / f"seed{job.seed}.json"),
        dataset=dataset,
        model_cfg=params.train.ef,
        regime=regime,
        seed=job.seed,
        splits=replace(splits, val=_NO_ROWS, test=_NO_ROWS),  # the last epoch is kept
        image_size=params.align.crop_size,
        soft=job.soft,
        **extra,
    )
    probs = _test_distributions(model_path, splits, params.align.crop_size)
    metrics = classification_metrics(probs, splits.labels[splits.test], CLASSES)
    metrics.pop("confusion_matrix")
    if splits.true_dist is not None:
        metrics.update(ldl_metrics(probs, splits.true_dist[splits.test]))
    logger.info("%s seed %d: test accuracy %.4f", job.arm_name, job.seed, metrics["accuracy"])
    summary = {"seed": job.seed, "training": training, "test": metrics}
    return summary, _predictions_table(job.seed, splits, probs)


def _test_distributions(model_path: Path, splits: Splits, image_size: int) -> np.ndarray:
    model, checkpoint = load_trained(model_path)
    every = predict_distributions(model, splits, splits.test, checkpoint.image_size or image_size)
    return every[splits.test]


def _predictions_table(seed: int, splits: Splits, probs: np.ndarray) -> pa.Table:
    columns: dict[str, Any] = {
        "seed": pa.array(np.full(len(splits.test), seed, dtype=np.int64)),
        "sample_id": pa.array(splits.sample_ids[splits.test]),
        "label": pa.array(splits.labels[splits.test].astype(np.int64)),
    }
    columns.update({f"p_{name}": pa.array(probs[:, i]) for i, name in enumerate(CLASSES)})
    return pa.table(columns)


def write_arm_predictions(path: Path, table: pa.Table) -> None:
    """Store an arm's test distributions (atomically)."""
    write_parquet(path, table)


def read_arm_predictions(path: Path, seeds: tuple[int, ...], sample_ids: np.ndarray) -> np.ndarray:
    """An arm's test distributions as `(seeds, faces, classes)`, faces in `sample_ids` order.

    Raises:
        StageOutputError: the file is missing, or lacks a seed or a face (written by other
            params: re-run the arm's stage).
    """
    if not path.is_file():
        raise StageOutputError(f"{path} does not exist; run the arm's au-study stage first")
    table = pq.read_table(path).to_pandas()
    out = np.empty((len(seeds), len(sample_ids), NUM_CLASSES), dtype=np.float32)
    probs = [f"p_{name}" for name in CLASSES]
    for i, seed in enumerate(seeds):
        rows = table[table["seed"] == seed].set_index("sample_id")
        missing = len(set(sample_ids) - set(rows.index))
        if missing:
            raise StageOutputError(
                f"{path}: seed {seed} lacks {missing} of {len(sample_ids)} test faces; "
                f"re-run the arm's au-study stage with these params"
            )
        out[i] = rows.loc[sample_ids, probs].to_numpy(dtype=np.float32)
    return out


def _space_label(arm: StudyArm) -> str:
    return f"oracle@{arm.noise:g}" if arm.space == "oracle" else arm.space


def target_quality_rows(params: Params, root: Path, splits: Splits) -> list[dict[str, Any]]:
    """Offline: how close each training target is to the truth, per AU space and K.

    One row per distinct (space, noise, K) of the AU arms: the KL to the true distributions
    of the LDG soft labels, the neighbour mean, the mixed target `(d + lambda s q) / (1 +
    lambda s)` at each `au_study.target_lambdas`, and the same for hard labels
    (`lightfer.au.target_quality`). Seconds, no training.
    """
    study = study_of(params)
    if splits.true_dist is None:
        raise StageOutputError(f"{study.dataset} has no true distributions to score targets")
    soft = cached_soft_labels(root, study.dataset, splits)
    seen: dict[tuple[str, float, int], StudyArm] = {}
    for arm in study.arms.values():
        if arm.uses_graph:
            seen.setdefault((arm.space, arm.noise if arm.space == "oracle" else 0.0, arm.k), arm)
    rows = []
    for (space, noise, k), arm in sorted(seen.items()):
        graph, report = training_graph(
            arm_vectors(params, root, splits, arm),
            splits,
            knn=params.knn.model_copy(update={"k": k}),
            threads=params.base.threads,
            seed=params.base.seed,
        )
        quality = target_quality(
            splits.true_dist,
            soft,
            graph,
            rows=graph.rows,
            lambdas=study.target_lambdas,
            hard=_one_hot(splits.labels),
        )
        label_agreement = report.get("label_agreement")
        rows.append(
            {"space": _space_label(arm), "noise": noise if space == "oracle" else None, "k": k}
            | {"label_agreement": label_agreement}
            | quality
        )
    return rows
