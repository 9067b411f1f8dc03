"""aux-labels: one auxiliary vector (AU intensities or landmarks) per face, from the backend
chosen in `aux.backend`, written to `data/<dataset>/aux.parquet` with a status per face."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightfer import catalog
from lightfer.au import OK
from lightfer.au.annotate import annotate
from lightfer.au.store import write_aux
from lightfer.faces.cache import load_face_cache
from lightfer.io import write_json
from lightfer.manifest import read_manifest
from lightfer.params import Params
from lightfer.seeds import derive_seed
from lightfer.stage import DATASET, stage_main

logger = logging.getLogger("lightfer.stages.aux_labels")


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Write `data/<dataset>/aux.parquet` and `reports/<dataset>/aux.json` (counts by status)."""
    manifest = read_manifest(catalog.manifest_path(root, dataset))
    crops, faces = load_face_cache(catalog.faces_dir(root, dataset))
    vectors = annotate(
        params.aux,
        manifest=manifest,
        crops=crops,
        faces=faces,
        dataset=dataset,
        seed=derive_seed(params.base.seed, 0xA0),
    )
    write_aux(catalog.aux_path(root, dataset), vectors, manifest)
    counts = vectors.counts()
    summary = {
        "backend": vectors.backend,
        "dimensions": len(vectors.names),
        "total": len(vectors),
        "ok": counts.get(OK, 0),
        "skipped": len(vectors) - counts.get(OK, 0),
        "by_status": counts,
    }
    write_json(catalog.stage_metrics_path(root, dataset, "aux"), summary)
    if summary["skipped"]:
        logger.warning(
            "%s: no %s vector for %d of %d faces: %s",
            dataset,
            vectors.backend,
            summary["skipped"],
            len(vectors),
            counts,
        )
    return summary


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.aux_labels --dataset NAME [--params FILE]`."""
    return stage_main("aux-labels", run, argv, options=(DATASET,))


if __name__ == "__main__":
    raise SystemExit(main())
