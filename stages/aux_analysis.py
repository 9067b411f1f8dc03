"""aux-analysis: the auxiliary spaces against the emotions (the paper's Sec. 4.5;
`lightfer.au.spaces`). Writes `reports/<dataset>/aux_analysis.json` and the figures in
`reports/<dataset>/aux/`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightfer import catalog
from lightfer.au.spaces import analyse_spaces
from lightfer.io import atomic_path, write_json
from lightfer.params import Params
from lightfer.splits import load_splits
from lightfer.stage import DATASET, stage_main


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Write `reports/<dataset>/aux_analysis.json` and the figures in `reports/<dataset>/aux/`."""
    splits = load_splits(params, root, dataset)
    with atomic_path(catalog.aux_figures_dir(root, dataset)) as figures_dir:
        figures_dir.mkdir()
        summary = analyse_spaces(
            params, root, dataset=dataset, splits=splits, figures_dir=figures_dir
        )
    write_json(catalog.stage_metrics_path(root, dataset, "aux_analysis"), summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.aux_analysis --dataset NAME [--params FILE]`."""
    return stage_main("aux-analysis", run, argv, options=(DATASET,))


if __name__ == "__main__":
    raise SystemExit(main())
