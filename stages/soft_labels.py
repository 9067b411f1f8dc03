"""soft-labels: the frozen LDG's softmax for every face (eq. 2), stored by sample_id."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightfer import catalog
from lightfer.io import write_json
from lightfer.params import Params
from lightfer.splits import load_splits
from lightfer.stage import DATASET, stage_main
from lightfer.training.run import label_with_ldg

logger = logging.getLogger("lightfer.stages.soft_labels")


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Write `data/<dataset>/soft_labels.parquet` and `reports/<dataset>/soft_labels.json`:
    how confident the LDG is on its training faces and on held-out ones."""
    splits = load_splits(params, root, dataset)
    summary = label_with_ldg(params, root, dataset=dataset, splits=splits)
    write_json(catalog.stage_metrics_path(root, dataset, "soft_labels"), summary)
    logger.info("soft labels for %s: %s", dataset, summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.soft_labels --dataset NAME [--params FILE]`."""
    return stage_main("soft-labels", run, argv, options=(DATASET,))


if __name__ == "__main__":
    raise SystemExit(main())
