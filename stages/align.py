"""align: crop every face onto the template and cache the crops for training."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lightfer.faces.cache import build_face_cache
from lightfer.io import atomic_path, remove_stale_temporaries, write_json
from lightfer.manifest import read_manifest
from lightfer.params import Params
from stages.common import StageSpec, stage_main
from stages.prepare import MANIFEST, prepared_dir

logger = logging.getLogger("lightfer.stages.align")


def faces_dir(root: Path, dataset: str) -> Path:
    return root / "data" / dataset / "faces"


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Write `data/<dataset>/faces/` (faces.npy + faces.parquet) and the summary metrics."""
    manifest = read_manifest(prepared_dir(root, dataset) / MANIFEST)
    out_dir = faces_dir(root, dataset)
    remove_stale_temporaries(out_dir.parent)
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
            progress=bar.update,
        )
    write_json(root / "reports" / dataset / "align.json", summary)
    if summary["skipped"]:
        logger.warning("%s: %d of %d samples skipped: %s", dataset, summary["skipped"],
                       summary["total"], summary["by_status"])  # fmt: skip
    logger.info("aligned %s: %d faces", dataset, summary["ok"])
    return summary


STAGE = StageSpec(
    name="align",
    deps=("stages/align.py", "stages/prepare.py", "lightfer/faces", "lightfer/images.py",
          "lightfer/manifest.py", "data/{dataset}/prepared"),
    outs=("data/{dataset}/faces", "reports/{dataset}/align.json"),
    params=("align",),
    run=run,
)  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(stage_main(STAGE))
