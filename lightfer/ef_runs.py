"""The main DAG's EfficientFace runs: every seed of one regime, `train.workers` at a time.

One `train-ef` stage (and one `train-ef-au` stage) per dataset and regime trains all of
`train.seeds`. Small models on small crops use threads badly (`lightfer.parallel`), so the
seeds go to `train.workers` processes of `base.threads // train.workers` threads each: on
the two-core reference machine, two seeds train in about the time one takes with both
threads. With one worker, or one seed, they train here, one after another.

The thread count moves a run's floating-point results, so `train.workers` is a DVC param of
these stages and part of each run's fingerprint.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from lightfer import catalog
from lightfer.knn import read_graph
from lightfer.parallel import map_in_workers
from lightfer.params import Params
from lightfer.splits import load_splits
from lightfer.training.distributed import Distributed
from lightfer.training.run import AU_REGIME, train_efficientface

__all__ = ["map_runs", "run_workers", "train_regime"]

Job = TypeVar("Job")
Result = TypeVar("Result")


@dataclass(frozen=True)
class _SeedRun:
    """One seed's run, sent whole to a worker process."""

    params: Params
    root: Path
    stage: str
    dataset: str
    regime: str
    seed: int


def run_workers(params: Params) -> int:
    """How many EfficientFace runs train at once: `train.workers`, at most `base.threads`
    (a stage's share of the CPU), and 1 under `torchrun` (whose processes already share
    the work of each run)."""
    if Distributed.from_environment().enabled:
        return 1
    return min(params.train.workers, params.base.threads)


def map_runs(
    params: Params, function: Callable[[Job], Result], jobs: Sequence[Job]
) -> list[Result]:
    """`function` over `jobs`, `run_workers(params)` at a time on `base.threads` threads."""
    return map_in_workers(function, jobs, workers=run_workers(params), threads=params.base.threads)


def train_regime(params: Params, root: Path, *, stage: str, dataset: str, regime: str) -> dict:
    """Train EfficientFace in `regime` for every seed; their summaries by run name.

    Writes `models/<dataset>/ef-<regime>/seed<k>.pt`, `reports/<dataset>/train/ef-<regime>/
    seed<k>.json` and `reports/<dataset>/curves/ef-<regime>/seed<k>.csv` for each of
    `train.seeds`.
    The `ldl_au` regime reads the dataset's neighbour graph. A killed stage resumes each
    seed from `.runs/<stage>@<dataset>-...-<seed>/`.
    """
    jobs = [_SeedRun(params, root, stage, dataset, regime, seed) for seed in params.train.seeds]
    summaries = map_runs(params, _train_seed, jobs)
    return {
        catalog.ef_run_name(job.regime, job.seed): summary
        for job, summary in zip(jobs, summaries, strict=True)
    }


def _train_seed(job: _SeedRun) -> dict[str, Any]:
    params, root, dataset = job.params, job.root, job.dataset
    splits = load_splits(params, root, dataset)
    graph, inputs = None, []
    if job.regime == AU_REGIME:
        graph_file = catalog.graph_path(root, dataset)
        graph = read_graph(graph_file, sample_ids=splits.sample_ids, cache=splits.cache)
        inputs = [graph_file]
    # The AU regime's stage has no regime argument: its runs are `train-ef-au@<dataset>-<k>`.
    values = (dataset, job.seed) if job.regime == AU_REGIME else (dataset, job.regime, job.seed)
    name = catalog.ef_run_name(job.regime, job.seed)
    return train_efficientface(
        params,
        root,
        stage_run=catalog.stage_run_name(job.stage, *values),
        dataset=dataset,
        regime=job.regime,
        seed=job.seed,
        splits=splits,
        model_path=catalog.model_path(root, dataset, name),
        logs=catalog.training_log_paths(root, dataset, name),
        graph=graph,
        settings={"workers": run_workers(params)},  # it sets the run's thread count
        inputs=inputs,
    )
