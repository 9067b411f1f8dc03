"""train-ef-au: EfficientFace in the ldl_au regime (soft labels + the AU-neighbour term).

A stage of its own rather than a third value of `train.regimes`: it depends on the
neighbour graph and the `au_loss` params, so changing lambda or the AU backend re-trains
these runs only, never the sll and ldl ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from lightfer.knn import NeighbourGraph
from lightfer.losses import AUNeighbourKL, ldl_au_regime
from lightfer.params import Params
from lightfer.training.neighbours import dense_neighbour_table
from stages.common import StageRun, StageSpec, stage_main
from stages.knn import read_graph
from stages.soft_labels import read_soft_labels
from stages.train_ef import run_name, train_ef
from stages.training import Splits, load_splits

REGIME = "ldl_au"


def train_au(
    params: Params,
    root: Path,
    *,
    run: StageRun,
    dataset: str,
    name: str,
    seed: int,
    splits: Splits,
    graph: NeighbourGraph,
    **paths: Path,
) -> dict[str, Any]:
    """Train one EfficientFace with the AU-neighbour term over `graph` (see `train_ef`)."""
    neighbours, weights = dense_neighbour_table(
        len(splits.crops), graph.rows, graph.indices, graph.weights
    )
    source = params.au_loss.source
    init = None
    if source != "batch":  # the bank starts from, and `ldg` is, the cached LDG soft labels
        init = torch.from_numpy(read_soft_labels(root, dataset, len(splits.crops)))
    term = AUNeighbourKL(neighbours, weights, source=source, init=init)
    return train_ef(
        params, root, run=run, dataset=dataset, name=name, seed=seed, splits=splits,
        regime=ldl_au_regime(params.au_loss.weight, term),
        neighbours=neighbours if source == "batch" else None, **paths,
    )  # fmt: skip


def run(params: Params, root: Path, *, dataset: str, seed: int) -> dict[str, Any]:
    """Train `models/<dataset>/ef-ldl_au-seed<k>.pt` on the dataset's neighbour graph."""
    return train_au(
        params, root, run=STAGE.expand(dataset=dataset, seed=seed), dataset=dataset,
        name=run_name(REGIME, seed), seed=seed, splits=load_splits(params, root, dataset),
        graph=read_graph(root, dataset),
    )  # fmt: skip


STAGE = StageSpec(
    name="train-ef-au",
    deps=("stages/train_ef_au.py", "stages/train_ef.py", "stages/training.py",
          "stages/fingerprint.py", "stages/soft_labels.py", "stages/knn.py",
          "lightfer/training", "lightfer/losses.py", "lightfer/models", "lightfer/knn.py",
          "data/{dataset}/faces", "data/{dataset}/prepared",
          "data/{dataset}/soft_labels.parquet", "models/{dataset}/ldg.pt",
          "data/{dataset}/knn"),
    outs=("models/{dataset}/ef-ldl_au-seed{seed}.pt",
          "reports/{dataset}/train/ef-ldl_au-seed{seed}.csv",
          "reports/{dataset}/train/ef-ldl_au-seed{seed}.json"),
    params=("base.seed", "align.crop_size", "train.val_fraction", "train.ef", "soft_labels",
            "au_loss"),
    run=run,
    axes=("dataset", "seed"),
)  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(stage_main(STAGE))
