"""align: crop every face onto the template and cache the crops for training.

The cache is built in `.runs/<stage run>/<fingerprint>/`, outside DVC's outputs (DVC
deletes those before a run), and checkpointed there every `CHECKPOINT_SECONDS`; the
fingerprint covers the stage's params and dependency contents (`stages.fingerprint`), so
a killed run resumes when started again with the same inputs and starts afresh when they
changed. Only the finished cache moves into `data/<dataset>/faces/`.
"""

from __future__ import annotations

import logging
import shutil
import sys
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lightfer.faces.cache import build_face_cache
from lightfer.io import atomic_path, remove_stale_temporaries, write_json
from lightfer.manifest import read_manifest
from lightfer.params import Params
from stages.common import StageSpec, stage_main
from stages.fingerprint import stage_fingerprint
from stages.prepare import MANIFEST, prepared_dir

logger = logging.getLogger("lightfer.stages.align")

RUNS_DIR = ".runs"
CHECKPOINT_SECONDS = 60.0


def faces_dir(root: Path, dataset: str) -> Path:
    return root / "data" / dataset / "faces"


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Write `data/<dataset>/faces/` (faces.npy + faces.parquet) and the summary metrics."""
    manifest = read_manifest(prepared_dir(root, dataset) / MANIFEST)
    out_dir = faces_dir(root, dataset)
    remove_stale_temporaries(out_dir.parent)
    stage_run = STAGE.expand(dataset=dataset)
    work_dir = root / RUNS_DIR / stage_run.name / stage_fingerprint(stage_run, root, params)[:16]
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
    write_json(root / "reports" / dataset / "align.json", summary)
    shutil.rmtree(work_dir.parent)
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
