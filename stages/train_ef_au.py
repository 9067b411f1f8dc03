"""train-ef-au: EfficientFace in the ldl_au regime (soft labels + the AU-neighbour term).

A stage of its own rather than a third value of `train.regimes`: it depends on the
neighbour graph and the `au_loss` params, so changing lambda or the AU backend re-trains
these runs only, never the sll and ldl ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightfer import catalog
from lightfer.knn import read_graph
from lightfer.params import Params
from lightfer.splits import load_splits
from lightfer.stage import DATASET, SEED, stage_main
from lightfer.training.run import AU_REGIME, train_efficientface


def run(params: Params, root: Path, *, dataset: str, seed: int) -> dict[str, Any]:
    """Train `models/<dataset>/ef-ldl_au-seed<k>.pt` on the dataset's neighbour graph."""
    splits = load_splits(params, root, dataset)
    graph_file = catalog.graph_path(root, dataset)
    name = catalog.ef_run_name(AU_REGIME, seed)
    return train_efficientface(
        params,
        root,
        stage_run=catalog.stage_run_name("train-ef-au", dataset, seed),
        dataset=dataset,
        regime=AU_REGIME,
        seed=seed,
        splits=splits,
        model_path=catalog.model_path(root, dataset, name),
        logs=catalog.training_log_paths(root, dataset, name),
        graph=read_graph(graph_file, sample_ids=splits.sample_ids, cache=splits.cache),
        inputs=[graph_file],
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.train_ef_au --dataset NAME --seed K [--params FILE]`."""
    return stage_main("train-ef-au", run, argv, options=(DATASET, SEED))


if __name__ == "__main__":
    raise SystemExit(main())
