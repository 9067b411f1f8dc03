"""train-ef-au: EfficientFace in the ldl_au regime (soft labels + the AU-neighbour term),
every seed of `train.seeds` (`lightfer.ef_runs`).

A stage of its own rather than a third value of `train.regimes`: it depends on the
neighbour graph and the `au_loss` params, so changing lambda or the AU backend re-trains
these runs only, never the sll and ldl ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightfer.ef_runs import train_regime
from lightfer.params import Params
from lightfer.stage import DATASET, stage_main
from lightfer.training.run import AU_REGIME


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Write `models/<dataset>/ef-ldl_au/seed<k>.pt` and their logs, one per seed."""
    return train_regime(params, root, stage="train-ef-au", dataset=dataset, regime=AU_REGIME)


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.train_ef_au --dataset NAME [--params FILE]`."""
    return stage_main("train-ef-au", run, argv, options=(DATASET,))


if __name__ == "__main__":
    raise SystemExit(main())
