"""align: crop every face onto the template and cache the crops for training.

The cache is built in `.runs/align@<dataset>/<fingerprint>/`, outside DVC's outputs (DVC
deletes those before a run), and checkpointed there every `CHECKPOINT_SECONDS`; the
fingerprint covers the `align` params, the prepared data and the lightfer code
(`lightfer.fingerprint`), so a killed run resumes when started again with the same ones
and starts afresh when they changed. Only the finished cache moves into
`data/<dataset>/faces/`.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lightfer import catalog
from lightfer.faces.cache import build_face_cache
from lightfer.fingerprint import run_fingerprint
from lightfer.io import atomic_path, remove_stale_temporaries, write_json
from lightfer.manifest import read_manifest
from lightfer.params import Params
from lightfer.stage import DATASET, stage_main

logger = logging.getLogger("lightfer.stages.align")

CHECKPOINT_SECONDS = 60.0


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Write `data/<dataset>/faces/` (faces.npy + faces.parquet) and the summary metrics."""
    manifest = read_manifest(catalog.manifest_path(root, dataset))
    out_dir = catalog.faces_dir(root, dataset)
    remove_stale_temporaries(out_dir.parent)
    settings = {"align": params.align.model_dump(mode="json")}
    fingerprint = run_fingerprint(settings, [catalog.prepared_dir(root, dataset)])
    work_dir = catalog.run_state_dir(root, catalog.stage_run_name("align", dataset), fingerprint)
    with (
        atomic_path(out_dir) as tmp,
        tqdm(total=len(manifest), desc="align", unit="img", file=sys.stderr) as bar,
    ):
        tmp.mkdir()
        summary = build_face_cache(
            manifest,
            params.align,
            tmp,
            detect=params.align.detect,
            threads=params.base.threads,
            detect_batch_size=params.align.detect_batch_size,
            device=params.align.device,
            work_dir=work_dir,
            checkpoint_seconds=CHECKPOINT_SECONDS,
            progress=bar.update,
        )
    write_json(catalog.stage_metrics_path(root, dataset, "align"), summary)
    shutil.rmtree(work_dir.parent)
    if summary["skipped"]:
        logger.warning(
            "%s: %d of %d samples skipped: %s",
            dataset,
            summary["skipped"],
            summary["total"],
            summary["by_status"],
        )
    logger.info("aligned %s: %d faces", dataset, summary["ok"])
    return summary


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.align --dataset NAME [--params FILE]`."""
    return stage_main("align", run, argv, options=(DATASET,))


if __name__ == "__main__":
    raise SystemExit(main())
