"""Turn a dataset (or the synthetic generator) into a manifest, and summarise it."""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from lightfer.catalog import MANIFEST_FILE
from lightfer.data.affectnet import scan_affectnet
from lightfer.data.caers import scan_caers
from lightfer.data.ferplus import scan_ferplus
from lightfer.data.imagefolder import scan_imagefolder
from lightfer.data.rafdb import scan_rafdb
from lightfer.data.synthetic.generator import generate_dataset, task_ceiling
from lightfer.labels import AU_NAMES, CLASSES
from lightfer.manifest import Manifest, read_manifest, write_manifest
from lightfer.params import SyntheticDataset

__all__ = ["prepare_dataset"]

logger = logging.getLogger(__name__)

_SCANNERS = {"rafdb": scan_rafdb, "caers": scan_caers, "affectnet": scan_affectnet}


def _synthetic(cfg: SyntheticDataset, seed: int, out: Path, workers: int) -> dict[str, Any]:
    start = time.perf_counter()
    with tqdm(total=cfg.n_train + cfg.n_test, desc="render", unit="img", file=sys.stderr) as bar:
        table = generate_dataset(cfg, seed, out / "images", workers=workers, progress=bar.update)
    logger.info("rendered %d images in %.1f s", table.num_rows, time.perf_counter() - start)
    write_manifest(
        out / MANIFEST_FILE, table, image_root=".", face_source="landmarks", au_names=AU_NAMES
    )
    manifest = read_manifest(out / MANIFEST_FILE)
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
    write_manifest(
        out / MANIFEST_FILE, table, image_root=image_root, face_source=summary["face_source"]
    )
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


def prepare_dataset(cfg: Any, out: Path, *, seed: int, workers: int) -> dict[str, Any]:
    """Write `out/manifest.parquet` (and the images, for synthetic data and FER+'s CSV
    pixels) for one dataset of params.yaml's `datasets`; return the summary metrics.

    Args:
        cfg: the dataset's params (`params.dataset(name)`).
        out: an existing, empty folder.
        seed: the synthetic generator's seed.
        workers: rendering processes for synthetic data.
    """
    if isinstance(cfg, SyntheticDataset):
        summary = _synthetic(cfg, seed, out, workers=workers)
    else:
        summary = _adapt(cfg, out)
    summary.update(_split_summary(read_manifest(out / MANIFEST_FILE)))
    return summary
