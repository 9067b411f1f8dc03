"""study: ldl_au with oracle AUs of known noise, one run per noise level and seed
(`lightfer.study`); `study-summary` sets the runs beside the main DAG's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightfer import catalog
from lightfer.io import write_json
from lightfer.params import Params
from lightfer.splits import load_splits
from lightfer.stage import NOISE, STUDY_DATASET, STUDY_SEED, stage_main
from lightfer.study import train_run


def run(params: Params, root: Path, *, dataset: str, noise: float, seed: int) -> dict[str, Any]:
    """Write `models/study/<dataset>/<run>.pt` and `reports/<dataset>/study/<run>.{json,csv}`."""
    splits = load_splits(params, root, dataset)
    summary = train_run(params, root, dataset=dataset, noise=noise, seed=seed, splits=splits)
    write_json(catalog.study_log_paths(root, dataset, noise, seed)[1], summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.study --dataset NAME --noise X --seed K [--params FILE]`."""
    return stage_main("study", run, argv, options=(STUDY_DATASET, NOISE, STUDY_SEED))


if __name__ == "__main__":
    raise SystemExit(main())
