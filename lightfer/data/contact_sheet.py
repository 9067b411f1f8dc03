"""A contact sheet: one row of example faces per emotion, to see a dataset at a glance."""

from __future__ import annotations

import cv2
import numpy as np

from lightfer.errors import ImageReadError
from lightfer.images import load_rgb
from lightfer.labels import CLASSES
from lightfer.manifest import Manifest

_LABEL_WIDTH = 96


def _face_crop(image: np.ndarray, box: np.ndarray | None, tile: int) -> np.ndarray:
    if box is not None and np.isfinite(box).all():
        x0, y0, x1, y1 = box
        cx, cy, side = (x0 + x1) / 2, (y0 + y1) / 2, 1.3 * max(x1 - x0, y1 - y0)
        matrix = np.array(
            [
                [tile / side, 0, tile / 2 - cx * tile / side],
                [0, tile / side, tile / 2 - cy * tile / side],
            ]
        )
        return cv2.warpAffine(image, matrix, (tile, tile), flags=cv2.INTER_AREA)
    return cv2.resize(image, (tile, tile), interpolation=cv2.INTER_AREA)


def contact_sheet(
    manifest: Manifest, *, per_class: int = 8, tile: int = 96, seed: int = 0
) -> np.ndarray:
    """Render an RGB sheet with a row per emotion and `per_class` training faces in each.

    Where true distributions exist, the examples are drawn among the clear cases (the
    annotated label is the argmax and carries at least 70% of the mass), so the rows show
    what each emotion looks like rather than the label noise.
    """
    rng = np.random.default_rng(seed)
    labels = manifest.column("label")
    is_train = manifest.column("split") == "train"
    clear = np.ones(len(manifest), dtype=bool)
    if "true_dist" in manifest.table.column_names:
        dist = manifest.column("true_dist")
        clear = (dist.argmax(1) == labels) & (dist.max(1) >= 0.7)
    boxes = manifest.column("box") if "box" in manifest.table.column_names else None
    sheet = np.full((tile * len(CLASSES), _LABEL_WIDTH + tile * per_class, 3), 255, np.uint8)
    for k, name in enumerate(CLASSES):
        y = k * tile
        cv2.putText(
            sheet,
            name,
            (4, y + tile // 2 + 5),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.5,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
        candidates = np.flatnonzero(is_train & (labels == k) & clear)
        if len(candidates) == 0:
            candidates = np.flatnonzero(labels == k)
        chosen = rng.choice(candidates, size=min(per_class, len(candidates)), replace=False)
        for j, row in enumerate(sorted(chosen)):
            try:
                image = load_rgb(manifest.image_path(int(row)))
            except ImageReadError:
                continue  # the align stage records unreadable files; the sheet leaves a gap
            box = boxes[row] if boxes is not None else None
            x = _LABEL_WIDTH + j * tile
            sheet[y : y + tile, x : x + tile] = _face_crop(image, box, tile)
    return sheet
