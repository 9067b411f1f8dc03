"""au-study targets: the training targets' distance to the truth, offline, per AU space
(`lightfer.au_study.target_quality_rows`). Runs in `studies/au/`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightfer import catalog
from lightfer.au_study import study_of, target_quality_rows
from lightfer.io import write_json
from lightfer.params import Params
from lightfer.splits import load_splits
from lightfer.stage import stage_main


def run(params: Params, root: Path) -> dict[str, Any]:
    """Write `reports/<dataset>/targets.json`."""
    dataset = study_of(params).dataset
    rows = target_quality_rows(params, root, load_splits(params, root, dataset))
    report = {"rows": rows}
    write_json(catalog.stage_metrics_path(root, dataset, "targets"), report)
    return report


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.au_study_targets [--params FILE]`."""
    return stage_main("au-study-targets", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
