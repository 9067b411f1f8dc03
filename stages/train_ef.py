"""train-ef: EfficientFace in one regime (sll: hard labels; ldl: the LDG's soft labels)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightfer import catalog
from lightfer.params import Params
from lightfer.splits import load_splits
from lightfer.stage import DATASET, REGIME, SEED, stage_main
from lightfer.training.run import train_efficientface


def run(params: Params, root: Path, *, dataset: str, regime: str, seed: int) -> dict[str, Any]:
    """Train one EfficientFace; write `models/<dataset>/ef-<regime>-seed<k>.pt` and its logs."""
    name = catalog.ef_run_name(regime, seed)
    return train_efficientface(
        params,
        root,
        stage_run=catalog.stage_run_name("train-ef", dataset, regime, seed),
        dataset=dataset,
        regime=regime,
        seed=seed,
        splits=load_splits(params, root, dataset),
        model_path=catalog.model_path(root, dataset, name),
        logs=catalog.training_log_paths(root, dataset, name),
    )


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.train_ef --dataset NAME --regime R --seed K [--params FILE]`."""
    return stage_main("train-ef", run, argv, options=(DATASET, REGIME, SEED))


if __name__ == "__main__":
    raise SystemExit(main())
