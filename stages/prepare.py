"""prepare: turn a dataset (or the synthetic generator) into `manifest.parquet`."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from tqdm import tqdm

from lightfer.data.affectnet import scan_affectnet
from lightfer.data.caers import scan_caers
from lightfer.data.contact_sheet import contact_sheet
from lightfer.data.ferplus import scan_ferplus
from lightfer.data.imagefolder import scan_imagefolder
from lightfer.data.rafdb import scan_rafdb
from lightfer.data.synthetic.generator import generate_dataset, task_ceiling
from lightfer.io import atomic_path, remove_stale_temporaries, write_json
from lightfer.labels import AU_NAMES, CLASSES
from lightfer.manifest import Manifest, read_manifest, write_manifest
from lightfer.params import Params, SyntheticDataset
from stages.common import StageSpec, stage_main

logger = logging.getLogger("lightfer.stages.prepare")

MANIFEST = "manifest.parquet"


def prepared_dir(root: Path, dataset: str) -> Path:
    return root / "data" / dataset / "prepared"


def _synthetic(cfg: SyntheticDataset, seed: int, out: Path, workers: int) -> dict[str, Any]:
    start = time.perf_counter()
    with tqdm(total=cfg.n_train + cfg.n_test, desc="render", unit="img", file=sys.stderr) as bar:
        table = generate_dataset(cfg, seed, out / "images", workers=workers, progress=bar.update)
    logger.info("rendered %d images in %.1f s", table.num_rows, time.perf_counter() - start)
    write_manifest(
        out / MANIFEST, table, image_root=".", face_source="landmarks", au_names=AU_NAMES
    )
    manifest = read_manifest(out / MANIFEST)
    dist, labels = manifest.column("true_dist"), manifest.column("label")
    is_test = manifest.column("split") == "test"
    votes = manifest.column("votes")
    return {
        "ceiling_test": task_ceiling(dist[is_test], labels[is_test]),
        "ceiling_train": task_ceiling(dist[~is_test], labels[~is_test]),
        "dominant_counts": _counts(dist.argmax(1)),
        "blended_fraction": float((np.sort(dist, 1)[:, -2] >= 0.1).mean()),
        "votes_per_image": int(votes.sum(1)[0]),
        "vote_majority_agrees_with_dominant": float((votes.argmax(1) == dist.argmax(1)).mean()),
    }


_SCANNERS = {"rafdb": scan_rafdb, "caers": scan_caers, "affectnet": scan_affectnet}


def _adapt(cfg: Any, out: Path) -> dict[str, Any]:
    """Run the dataset's adapter and write its manifest; FER+ CSV pixels become PNGs in `out`."""
    if cfg.kind == "imagefolder":
        table, summary = scan_imagefolder(cfg.root, cfg.classes, cfg.splits)
        summary["face_source"] = "aligned"
    elif cfg.kind == "ferplus":
        table, summary = scan_ferplus(cfg.root, image_dir=out / "images")
    else:
        table, summary = _SCANNERS[cfg.kind](cfg.root)
    image_root = "images" if summary.get("image_root") == "image_dir" else cfg.root
    write_manifest(out / MANIFEST, table, image_root=image_root, face_source=summary["face_source"])
    return summary


def _counts(labels: np.ndarray) -> dict[str, int]:
    return {name: int((labels == k).sum()) for k, name in enumerate(CLASSES)}


def _split_summary(manifest: Manifest) -> dict[str, Any]:
    labels, splits = manifest.column("label"), manifest.column("split")
    return {
        "samples": len(manifest),
        "by_split": {s: int((splits == s).sum()) for s in sorted(set(splits))},
        "label_counts": {s: _counts(labels[splits == s]) for s in sorted(set(splits))},
    }


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Write `data/<dataset>/prepared/` (the manifest, and the images for synthetic data
    and FER+'s CSV pixels), a contact sheet and the summary metrics."""
    cfg = params.dataset(dataset)
    out_dir = prepared_dir(root, dataset)
    remove_stale_temporaries(out_dir.parent)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        if isinstance(cfg, SyntheticDataset):
            summary = _synthetic(cfg, params.base.seed, tmp, workers=params.base.threads)
        else:
            summary = _adapt(cfg, tmp)
        manifest = read_manifest(tmp / MANIFEST)
        summary.update(_split_summary(manifest))
        sheet = contact_sheet(manifest, seed=params.base.seed)
    reports = root / "reports" / dataset
    with atomic_path(reports / "contact_sheet.png") as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")
    write_json(reports / "prepare.json", summary)
    logger.info("prepared %s: %s", dataset, summary["by_split"])
    return summary


STAGE = StageSpec(
    name="prepare",
    deps=("stages/prepare.py", "lightfer/data", "lightfer/manifest.py", "lightfer/images.py",
          "lightfer/labels.py"),
    outs=("data/{dataset}/prepared", "reports/{dataset}/contact_sheet.png",
          "reports/{dataset}/prepare.json"),
    params=("base.seed", "datasets.{dataset}"),
    run=run,
)  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(stage_main(STAGE))
