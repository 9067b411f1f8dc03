"""The AU-noise study: ldl_au with oracle AUs of known noise, and its summary rows.

The paper found no gain from the AU term on RAF-DB and FER+ and blamed noisy automatic AU
annotations. On the synthetic dataset the true AUs are known, so each study run gives the
term the true AUs plus Gaussian noise of a set size (the `oracle` backend), builds the
neighbour graph on them, trains EfficientFace in the ldl_au regime with the main DAG's
settings, and scores it on the test split. The summary sets the runs beside the main
DAG's ldl runs (the same seeds, no AU term) and its ldl_au runs on the configured backend;
`lightfer.tables.study_table` renders them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightfer import catalog
from lightfer.au.annotate import oracle_vectors
from lightfer.ef_runs import map_runs, run_workers
from lightfer.errors import StageOutputError
from lightfer.evaluation import evaluate_checkpoint, spread
from lightfer.faces.cache import load_face_cache
from lightfer.io import write_json
from lightfer.knn import training_graph
from lightfer.manifest import read_manifest
from lightfer.params import Params
from lightfer.splits import load_splits
from lightfer.training.run import AU_REGIME, train_efficientface

__all__ = ["METRICS", "summarise", "train_runs"]

METRICS = ("accuracy", "true_majority_accuracy", "kl_divergence")


@dataclass(frozen=True)
class _StudyRun:
    """One (noise, seed) run, sent whole to a worker process."""

    params: Params
    root: Path
    dataset: str
    noise: float
    seed: int


def train_runs(params: Params, root: Path, *, dataset: str) -> list[dict[str, Any]]:
    """Train every study run (`study.noise` x `study.seeds`), `train.workers` at a time.

    Writes each run's model, history and summary (`lightfer.catalog.study_log_paths`) and
    returns the summaries: the noise, the seed, the graph's report, the training summary
    and the test metrics (without the confusion matrix).
    """
    jobs = [
        _StudyRun(params, root, dataset, noise, seed)
        for noise in params.study.noise
        for seed in params.study.seeds
    ]
    return map_runs(params, _train_run, jobs)


def _train_run(job: _StudyRun) -> dict[str, Any]:
    params, root, dataset, noise, seed = job.params, job.root, job.dataset, job.noise, job.seed
    splits = load_splits(params, root, dataset)
    crops, faces = load_face_cache(splits.cache)
    vectors = oracle_vectors(
        params.aux,
        noise=noise,
        manifest=read_manifest(catalog.manifest_path(root, dataset)),
        crops=crops,
        faces=faces,
        dataset=dataset,
        base_seed=params.base.seed,
    )
    graph, graph_report = training_graph(
        vectors,
        splits,
        knn=params.knn,
        threads=params.base.threads,
        seed=params.base.seed,
    )
    model_path = catalog.study_model_path(root, dataset, noise, seed)
    training = train_efficientface(
        params,
        root,
        stage_run=catalog.stage_run_name("study", dataset, noise, seed),
        dataset=dataset,
        regime=AU_REGIME,
        seed=seed,
        splits=splits,
        model_path=model_path,
        logs=catalog.study_log_paths(root, dataset, noise, seed),
        graph=graph,
        settings={
            "noise": noise,
            "knn": params.knn.model_dump(mode="json"),
            "workers": run_workers(params),  # it sets the run's thread count
        },
    )
    metrics = evaluate_checkpoint(model_path, splits, image_size=params.align.crop_size)
    metrics.pop("confusion_matrix")
    summary = {
        "noise": noise,
        "seed": seed,
        "graph": graph_report,
        "training": training,
        "test": metrics,
    }
    write_json(catalog.study_log_paths(root, dataset, noise, seed)[1], summary)
    return summary


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise StageOutputError(f"{path} does not exist; run the stage that writes it first")
    return json.loads(path.read_text())


def _row(
    label: str,
    noise: float | None,
    agreement: dict[str, Any] | None,
    runs: list[dict[str, Any]],
) -> dict[str, Any]:
    row: dict[str, Any] = {"aux": label, "noise": noise, "runs": len(runs)}
    if agreement is not None:
        row["label_agreement"] = agreement["label_agreement"]
        row["chance_agreement"] = agreement["chance_agreement"]
        row["neighbour_kl"] = agreement.get("neighbour_kl")
    for key in METRICS:
        if all(key in run for run in runs):
            row[key] = spread([run[key] for run in runs])
    return row


def summarise(params: Params, root: Path, dataset: str) -> list[dict[str, Any]]:
    """The summary table's rows: `ldl` (no AU term), `ldl_au` on the configured backend
    (`aux.backend`), and `ldl_au` on oracle AUs at each noise level."""
    evaluated = _read(catalog.stage_metrics_path(root, dataset, "evaluate"))["runs"]
    knn = _read(catalog.stage_metrics_path(root, dataset, "knn"))
    seeds = params.study.seeds  # every row over the same seeds: paired comparisons
    ldl = [evaluated[catalog.ef_run_name("ldl", s)] for s in seeds]
    ldl_au = [evaluated[catalog.ef_run_name(AU_REGIME, s)] for s in seeds]
    rows = [_row("none (ldl)", None, None, ldl), _row(params.aux.backend, None, knn, ldl_au)]
    for noise in params.study.noise:
        runs = [_read(catalog.study_log_paths(root, dataset, noise, s)[1]) for s in seeds]
        rows.append(_row("oracle", noise, runs[0]["graph"], [r["test"] for r in runs]))
    return rows
