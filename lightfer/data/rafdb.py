"""Adapter for RAF-DB (basic emotions) in its official layout.

```
<root>/EmoLabel/list_patition_label.txt     # "patition" is the official spelling
<root>/Image/aligned/train_00001_aligned.jpg ... test_3068_aligned.jpg
<root>/EmoLabel/distribution_basic.txt      # optional, or <root>/distribution_basic.txt
```

Each label line is `<name>.jpg <code>` (the name has no `_aligned` suffix), the split is the
name's prefix (`train` / `test`: 12,271 / 3,068 images in the real data) and codes 1..7 are
Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral. The optional distribution file
holds `<name>.jpg p1 ... p7` in the same 1..7 order.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from lightfer.data._layout import (
    FileIndex,
    ManifestBuilder,
    Tally,
    canonical_order,
    layout_error,
    missing,
    nested_hint,
    parse_int,
    read_text,
)
from lightfer.labels import CLASSES

logger = logging.getLogger(__name__)

LABEL_FILE = "EmoLabel/list_patition_label.txt"
IMAGE_DIR = "Image/aligned"
DISTRIBUTION_FILES = ("EmoLabel/distribution_basic.txt", "distribution_basic.txt")

# RAF-DB code (1-based, as stored in list_patition_label.txt) -> canonical emotion.
# "1 Surprise, 2 Fear, 3 Disgust, 4 Happiness, 5 Sadness, 6 Anger, 7 Neutral": SCN, DAN,
# POSTER and RUL all read it so.
RAFDB_LABELS: dict[int, str] = {
    1: "surprise",
    2: "fear",
    3: "disgust",
    4: "happiness",
    5: "sadness",
    6: "anger",
    7: "neutral",
}
# Name prefix -> manifest split.
SPLIT_PREFIXES: dict[str, str] = {"train": "train", "test": "test"}

_TO_CANONICAL = canonical_order(list(RAFDB_LABELS), RAFDB_LABELS)


def check_rafdb_layout(root: Path) -> None:
    """Check that `root` holds the RAF-DB label file and aligned-image folder (no scan).

    Raises:
        DatasetError: naming the expected paths, what `root` holds and, where it helps, the
            folder below `root` that does hold the layout or the misspelt label file.
    """
    absent = missing(root, files=[LABEL_FILE], folders=[IMAGE_DIR])
    if not absent:
        return
    hint = nested_hint(root, LABEL_FILE)
    if (root / "EmoLabel/list_partition_label.txt").is_file():
        hint += (
            "; EmoLabel/list_partition_label.txt exists: the official file is spelt "
            "'patition', rename it"
        )
    raise layout_error(
        "RAF-DB",
        root,
        f"{root / LABEL_FILE} (the official spelling) and {root / IMAGE_DIR}/ "
        f"(missing: {', '.join(absent)})",
        hint,
    )


def scan_rafdb(root: Path) -> tuple[pa.Table, dict[str, Any]]:
    """List RAF-DB's labelled aligned images as a manifest table.

    The image root is the dataset root `root`: `path` is `Image/aligned/<stem>_aligned.jpg`.
    `sample_id` is the label file's stem (`train_00001`) and `source_label` its 1..7 code.
    When `distribution_basic.txt` exists (in `EmoLabel/` or the root) its rows, reordered to
    the canonical classes and renormalised, become `true_dist`; a labelled image without a
    usable distribution row gets the one-hot of its label, counted in the summary.

    Skipped rows (reason): a line that is not `<name> <code>` (`malformed_line`), a code
    outside 1..7 (`unknown_label`), a name not starting with train/test (`unknown_split`),
    a listed image that is not on disk (`missing_file`), a repeated name (`duplicate`).

    Returns:
        The table, and a summary with `layout`, `image_root` (`"root"`), `face_source`
        (`"aligned"`), `true_dist` (None without a distribution file, else the file, the
        one-hot fallbacks by reason, and how many rows' distribution peaks at another class
        than the label, a check of the file's column order),
        and the per-split, per-class and skip counts of `_layout.summarise`.

    Raises:
        DatasetError: the layout is wrong, or no row is usable.
    """
    check_rafdb_layout(root)
    dist_file = next((f for f in DISTRIBUTION_FILES if (root / f).is_file()), None)
    distributions = _read_distributions(root / dist_file) if dist_file else {}
    fallback = Tally()
    builder = ManifestBuilder("RAF-DB", logger, ("true_dist",) if dist_file else ())
    images = FileIndex(root)
    lines = read_text(root / LABEL_FILE).splitlines()
    for number, line in enumerate(lines, start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{LABEL_FILE}:{number} {line.strip()!r}"
        if len(fields) != 2:
            builder.skip("malformed_line", where)
            continue
        name, code = fields
        label = RAFDB_LABELS.get(parse_int(code))
        split = SPLIT_PREFIXES.get(next((p for p in SPLIT_PREFIXES if name.startswith(p)), ""))
        stem = name.rsplit(".", 1)[0]
        path = f"{IMAGE_DIR}/{stem}_aligned.jpg"
        if label is None:
            builder.skip("unknown_label", where)
        elif split is None:
            builder.skip("unknown_split", where)
        elif path not in images:
            builder.skip("missing_file", f"{where}: no {path}")
        elif not dist_file:
            builder.add(stem, split, path, label, code)
        else:
            dist = distributions.get(name)
            if dist is None:
                fallback.add(
                    "bad_distribution" if name in distributions else "no_distribution", name
                )
                dist = np.eye(len(CLASSES))[CLASSES.index(label)]
            builder.add(stem, split, path, label, code, true_dist=dist)
    table, summary = builder.finish(
        layout="list_patition_label", image_root="root", face_source="aligned", true_dist=None
    )
    if dist_file:
        fallback.log(logger, f"RAF-DB: one-hot true_dist from the label for {dist_file}")
        dist = np.asarray(table.column("true_dist").combine_chunks().flatten())
        disagree = dist.reshape(-1, len(CLASSES)).argmax(1) != table.column("label").to_numpy()
        summary["true_dist"] = {
            "file": dist_file,
            "one_hot_fallback": fallback.report(),
            "argmax_disagrees_with_label": int(disagree.sum()),
        }
    return table, summary


def _read_distributions(path: Path) -> dict[str, np.ndarray | None]:
    """`<name>.jpg p1..p7` lines as canonical-order distributions (None: unusable values)."""
    distributions: dict[str, np.ndarray | None] = {}
    for line in read_text(path).splitlines():
        name, *fields = line.split() or [""]
        try:
            values = np.array([float(v) for v in fields])
        except ValueError:
            values = np.array([np.nan])
        usable = len(values) == len(RAFDB_LABELS) and np.isfinite(values).all()
        if usable and (values >= 0).all() and values.sum() > 0:
            distributions[name] = values[_TO_CANONICAL] / values.sum()
        elif name:
            distributions[name] = None
    return distributions
