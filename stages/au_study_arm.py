"""au-study-arm: one arm of the powered AU study, every seed (`lightfer.au_study`).

Runs in `studies/au/` (its own params.yaml, data, models and reports).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightfer import catalog
from lightfer.au_study import study_of, train_arm, write_arm_predictions
from lightfer.io import write_json
from lightfer.params import Params
from lightfer.splits import load_splits
from lightfer.stage import ARM, stage_main


def run(params: Params, root: Path, *, arm: str) -> dict[str, Any]:
    """Write `models/<dataset>/arms/<arm>/`, the arm's test distributions and its report."""
    dataset = study_of(params).dataset
    splits = load_splits(params, root, dataset)
    summaries, predictions = train_arm(params, root, arm_name=arm, splits=splits)
    write_arm_predictions(catalog.arm_predictions_path(root, dataset, arm), predictions)
    report = {"arm": arm, "runs": summaries}
    write_json(catalog.arm_report_path(root, dataset, arm), report)
    return report


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.au_study_arm --arm NAME [--params FILE]`."""
    return stage_main("au-study-arm", run, argv, options=(ARM,))


if __name__ == "__main__":
    raise SystemExit(main())
