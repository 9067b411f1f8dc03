"""Adapter for already aligned faces in a torchvision ImageFolder layout.

`root/<split folder>/<class folder>/<image>`, with an explicit map from class folder to
canonical emotion (the official EfficientFace folders are `0 Neutral` ... `6 Anger`, other
repositories use other orders, so nothing is guessed from folder names).
"""

from __future__ import annotations

import logging
from collections import Counter
from pathlib import Path

import pyarrow as pa

from lightfer.errors import DatasetError
from lightfer.labels import CLASSES

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def scan_imagefolder(
    root: Path, classes: dict[str, str], splits: dict[str, str]
) -> tuple[pa.Table, dict[str, object]]:
    """List the images under `root` as a manifest table (paths relative to `root`).

    Files that are not images by suffix are counted and named in the summary, never mixed
    into the manifest; whether an image decodes is the align stage's business.

    Raises:
        DatasetError: a class folder is not in `classes`, or a split has no images.
    """
    rows: dict[str, list] = {k: [] for k in ("sample_id", "split", "path", "label", "source")}
    ignored: list[str] = []
    for split, folder in splits.items():
        split_dir = root / folder
        found = sorted(p for p in split_dir.iterdir() if p.is_dir())
        unknown = [p.name for p in found if p.name not in classes]
        if unknown:
            raise DatasetError(
                f"{split_dir} has class folders {unknown} that the class map does not name "
                f"(it maps {sorted(classes)}); add them to datasets.<name>.classes or move them"
            )
        count = 0
        for class_dir in found:
            for file in sorted(p for p in class_dir.rglob("*") if p.is_file()):
                relative = file.relative_to(root).as_posix()
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    ignored.append(relative)
                    continue
                rows["sample_id"].append(relative)
                rows["split"].append(split)
                rows["path"].append(relative)
                rows["label"].append(CLASSES.index(classes[class_dir.name]))
                rows["source"].append(class_dir.name)
                count += 1
        if count == 0:
            raise DatasetError(
                f"{split_dir} holds no images in class folders; expected "
                f"{split_dir}/<class folder>/<image>"
            )
    for name in ignored:
        logger.warning("ignoring %s: not an image file (suffix)", root / name)
    table = pa.table(
        {
            "sample_id": pa.array(rows["sample_id"], pa.string()),
            "split": pa.array(rows["split"], pa.string()),
            "path": pa.array(rows["path"], pa.string()),
            "label": pa.array(rows["label"], pa.int8()),
            "source_label": pa.array(rows["source"], pa.string()),
        }
    )
    summary = {
        "ignored_files": len(ignored),
        "ignored_examples": ignored[:20],
        "by_split": dict(Counter(rows["split"])),
    }
    return table, summary
