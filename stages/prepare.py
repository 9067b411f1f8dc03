"""prepare: turn a dataset (or the synthetic generator) into `manifest.parquet`."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from PIL import Image

from lightfer import catalog
from lightfer.data.contact_sheet import contact_sheet
from lightfer.data.prepare import prepare_dataset
from lightfer.io import atomic_path, remove_stale_temporaries, write_json
from lightfer.manifest import read_manifest
from lightfer.params import Params
from lightfer.stage import DATASET, stage_main

logger = logging.getLogger("lightfer.stages.prepare")


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Write `data/<dataset>/prepared/`, the contact sheet and `reports/<dataset>/prepare.json`."""
    out_dir = catalog.prepared_dir(root, dataset)
    remove_stale_temporaries(out_dir.parent)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        summary = prepare_dataset(
            params.dataset(dataset), tmp, seed=params.base.seed, workers=params.base.threads
        )
        sheet = contact_sheet(read_manifest(tmp / catalog.MANIFEST_FILE), seed=params.base.seed)
    with atomic_path(catalog.contact_sheet_path(root, dataset)) as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")
    write_json(catalog.stage_metrics_path(root, dataset, "prepare"), summary)
    logger.info("prepared %s: %s", dataset, summary["by_split"])
    return summary


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.prepare --dataset NAME [--params FILE]`."""
    return stage_main("prepare", run, argv, options=(DATASET,))


if __name__ == "__main__":
    raise SystemExit(main())
