"""au-study compare: the AU study's paired comparisons, tables and figure
(`lightfer.au_study_compare`). Runs in `studies/au/`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightfer import catalog
from lightfer.au_study import study_of
from lightfer.au_study_compare import compare_arms, write_gain_figure
from lightfer.errors import StageOutputError
from lightfer.io import atomic_path, write_json
from lightfer.params import Params
from lightfer.splits import load_splits
from lightfer.stage import stage_main
from lightfer.tables import au_study_tables


def run(params: Params, root: Path) -> dict[str, Any]:
    """Write `reports/<dataset>/au_study.{json,md}` and `au_study_gain.png`."""
    dataset = study_of(params).dataset
    targets_path = catalog.stage_metrics_path(root, dataset, "targets")
    if not targets_path.is_file():
        raise StageOutputError(f"{targets_path} does not exist; run the targets stage first")
    result = compare_arms(params, root, load_splits(params, root, dataset))
    write_json(catalog.stage_metrics_path(root, dataset, "au_study"), result)
    targets = json.loads(targets_path.read_text())["rows"]
    table = catalog.stage_metrics_path(root, dataset, "au_study").with_suffix(".md")
    with atomic_path(table) as tmp:
        tmp.write_text(au_study_tables(dataset, result, targets))
    write_gain_figure(result, catalog.au_study_figure_path(root, dataset))
    return result


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.au_study_compare [--params FILE]`."""
    return stage_main("au-study-compare", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
