"""train-ef: EfficientFace in one regime (sll: hard labels; ldl: the LDG's soft labels),
every seed of `train.seeds` (`lightfer.ef_runs`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightfer.ef_runs import train_regime
from lightfer.params import Params
from lightfer.stage import DATASET, REGIME, stage_main


def run(params: Params, root: Path, *, dataset: str, regime: str) -> dict[str, Any]:
    """Write `models/<dataset>/ef-<regime>/seed<k>.pt` and their logs, one per seed."""
    return train_regime(params, root, stage="train-ef", dataset=dataset, regime=regime)


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.train_ef --dataset NAME --regime R [--params FILE]`."""
    return stage_main("train-ef", run, argv, options=(DATASET, REGIME))


if __name__ == "__main__":
    raise SystemExit(main())
