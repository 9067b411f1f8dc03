"""Adapter for CAER-S: whole video frames in class folders.

```
<root>/train/<Anger|Disgust|Fear|Happy|Neutral|Sad|Surprise>/0001.png ...
<root>/test/<same class folders>/...
```

48,995 train and 20,987 test frames in the real data. The images are scenes, not face crops,
and CAER-S ships no face boxes: faces must be detected before alignment, so the manifest has
no box or landmarks column and the summary says `face_source: detect`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pyarrow as pa

from lightfer.data._layout import layout_error, missing, nested_hint, summarise
from lightfer.data.imagefolder import scan_class_folders
from lightfer.errors import DatasetError

logger = logging.getLogger(__name__)

# CAER-S class folder -> canonical emotion: the folders are `Anger,
# Disgust, Fear, Happy, Neutral, Sad, Surprise` (the README's 'Angry' is not a folder name);
# they are matched by name, never by their alphabetical ImageFolder index.
CAERS_LABELS: dict[str, str] = {
    "Anger": "anger",
    "Disgust": "disgust",
    "Fear": "fear",
    "Happy": "happiness",
    "Neutral": "neutral",
    "Sad": "sadness",
    "Surprise": "surprise",
}
# Manifest split -> folder under the root.
CAERS_SPLITS: dict[str, str] = {"train": "train", "test": "test"}


def _class_folders(root: Path) -> dict[str, list[str]]:
    """The class folders missing from each split folder, after refusing unknown ones."""
    absent = missing(root, folders=list(CAERS_SPLITS.values()))
    if absent:
        raise layout_error(
            "CAER-S",
            root,
            f"split folders {', '.join(f'{root / s}/' for s in CAERS_SPLITS.values())} holding "
            f"class folders {', '.join(CAERS_LABELS)} (missing: {', '.join(absent)})",
            nested_hint(root, "train/Happy"),
        )
    lacking = {}
    for folder in CAERS_SPLITS.values():
        found = {p.name for p in (root / folder).iterdir() if p.is_dir()}
        unknown = sorted(found - set(CAERS_LABELS))
        if unknown:
            raise DatasetError(
                f"CAER-S split folder {root / folder} has class folders {unknown} that are not "
                f"CAER-S classes; expected only {', '.join(CAERS_LABELS)}"
            )
        lacking[folder] = [c for c in CAERS_LABELS if c not in found]
    return lacking


def check_caers_layout(root: Path) -> None:
    """Check that `root` holds `train/` and `test/` with only CAER-S class folders (no scan).

    A missing class folder is allowed here (and reported by `scan_caers`).

    Raises:
        DatasetError: a split folder is missing, or a class folder has an unknown name.
    """
    _class_folders(root)


def scan_caers(root: Path) -> tuple[pa.Table, dict[str, Any]]:
    """List CAER-S frames as a manifest table, to be face-detected later.

    The image root is the dataset root `root`: `path` and `sample_id` are
    `<split>/<Class>/<file>`, `source_label` the class folder name. Entries that are not
    images are skipped and counted as `scan_imagefolder` says; missing class folders are
    logged and listed in the summary.

    Returns:
        The table (required columns only) and a summary with `layout`, `image_root`
        (`"root"`), `face_source` (`"detect"`: whole frames, detect faces before alignment),
        `missing_class_folders`, and the per-split, per-class and skip counts of
        `_layout.summarise`.

    Raises:
        DatasetError: the layout is wrong, or a split folder holds no image.
    """
    lacking = _class_folders(root)
    for folder, classes in lacking.items():
        if classes:
            logger.warning("CAER-S: %s has no class folder %s", root / folder, ", ".join(classes))
    table, skipped = scan_class_folders(root, CAERS_LABELS, CAERS_SPLITS)
    summary = summarise(
        "CAER-S",
        table,
        skipped,
        layout="folders",
        image_root="root",
        face_source="detect",
        missing_class_folders={k: v for k, v in lacking.items() if v},
    )
    return table, summary
