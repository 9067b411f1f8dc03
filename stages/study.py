"""study: ldl_au with oracle AUs of known noise, one run per noise level and seed
(`lightfer.study`); `study-summary` sets the runs beside the main DAG's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightfer.params import Params
from lightfer.stage import STUDY_DATASET, stage_main
from lightfer.study import train_runs


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Write `models/study/<dataset>/` and `reports/<dataset>/study/`: every run's model,
    history and summary."""
    return {"runs": train_runs(params, root, dataset=dataset)}


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.study --dataset NAME [--params FILE]`."""
    return stage_main("study", run, argv, options=(STUDY_DATASET,))


if __name__ == "__main__":
    raise SystemExit(main())
