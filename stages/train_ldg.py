"""train-ldg: the label distribution generator, trained on hard labels (eq. 1) and frozen."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightfer.params import Params
from lightfer.splits import load_splits
from lightfer.stage import DATASET, stage_main
from lightfer.training.run import train_ldg


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Train the LDG; write `models/<dataset>/ldg.pt` and `reports/<dataset>/train/ldg.*`."""
    splits = load_splits(params, root, dataset)
    return train_ldg(params, root, dataset=dataset, splits=splits)


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.train_ldg --dataset NAME [--params FILE]`."""
    return stage_main("train-ldg", run, argv, options=(DATASET,))


if __name__ == "__main__":
    raise SystemExit(main())
