"""Adapter for already aligned faces in a torchvision ImageFolder layout.

`root/<split folder>/<class folder>/<image>`, with an explicit map from class folder to
canonical emotion (the official EfficientFace folders are `0 Neutral` ... `6 Anger`, other
repositories use other orders, so nothing is guessed from folder names).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa

from lightfer.data._layout import Tally, summarise
from lightfer.errors import DatasetError
from lightfer.labels import CLASSES

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


def scan_imagefolder(
    root: Path, classes: dict[str, str], splits: dict[str, str]
) -> tuple[pa.Table, dict[str, object]]:
    """List the images under `root` as a manifest table (paths relative to `root`).

    Every entry that does not become a row is counted by reason and named in the summary,
    never mixed into the manifest: `not_an_image` (suffix), `outside_class_folder` (a file
    directly in a split folder, which has no class), `not_a_file` (a broken or looping
    symbolic link, a socket, ...). Whether an image decodes is the align stage's business.

    Returns:
        The table, and a summary with `ignored_files` and `ignored_examples` (the
        `not_an_image` files) and `_layout.summarise`'s counts, `skipped` included.

    Raises:
        DatasetError: a class folder is not in `classes`, or a split has no images.
    """
    table, skipped = scan_class_folders(root, classes, splits)
    not_images = skipped.report()["examples"].get("not_an_image", [])
    summary = summarise(
        "ImageFolder",
        table,
        skipped,
        ignored_files=skipped.counts["not_an_image"],
        ignored_examples=not_images,
    )
    return table, summary


def scan_class_folders(
    root: Path, classes: dict[str, str], splits: dict[str, str]
) -> tuple[pa.Table, Tally]:
    """The manifest table of `root/<split folder>/<class folder>/<image>` and what was
    skipped, by reason (see `scan_imagefolder`)."""
    rows: dict[str, list] = {k: [] for k in ("sample_id", "split", "path", "label", "source")}
    skipped = Tally()
    for split, folder in splits.items():
        split_dir = root / folder
        entries = sorted(split_dir.iterdir())
        found = [p for p in entries if p.is_dir()]
        unknown = [p.name for p in found if p.name not in classes]
        if unknown:
            raise DatasetError(
                f"{split_dir} has class folders {unknown} that the class map does not name "
                f"(it maps {sorted(classes)}); add them to datasets.<name>.classes or move them"
            )
        for entry in entries:
            if not entry.is_dir():
                reason = "outside_class_folder" if entry.is_file() else "not_a_file"
                skipped.add(reason, entry.relative_to(root).as_posix())
        count = 0
        for class_dir in found:
            for file in sorted(p for p in class_dir.rglob("*") if not p.is_dir()):
                relative = file.relative_to(root).as_posix()
                if not file.is_file():
                    skipped.add("not_a_file", relative)
                    continue
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    skipped.add("not_an_image", relative)
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
    skipped.log(logger, f"{root}: skipped")
    table = pa.table(
        {
            "sample_id": pa.array(rows["sample_id"], pa.string()),
            "split": pa.array(rows["split"], pa.string()),
            "path": pa.array(rows["path"], pa.string()),
            "label": pa.array(rows["label"], pa.int8()),
            "source_label": pa.array(rows["source"], pa.string()),
        }
    )
    return table, skipped
