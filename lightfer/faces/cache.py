"""The aligned-face cache: every manifest row as a fixed-size crop in one `.npy` array.

Training reads crops through a memory map instead of decoding and warping images each
epoch. Row i of the cache is manifest row i; a sample that could not be read keeps an
all-zero crop and a non-`ok` status in the companion table, so nothing disappears silently.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lightfer.errors import ImageReadError, StageOutputError
from lightfer.faces.align import (
    AlignSpec,
    align_face,
    anchor_points,
    apply_transform,
    resize_face,
)
from lightfer.images import load_rgb
from lightfer.manifest import Manifest, fixed_list

logger = logging.getLogger(__name__)

CACHE_FILE = "faces.npy"
TABLE_FILE = "faces.parquet"
OK = "ok"


def build_face_cache(
    manifest: Manifest,
    spec: AlignSpec,
    out_dir: Path,
    *,
    progress: Callable[[int], None] | None = None,
) -> dict[str, object]:
    """Align every manifest image into `out_dir/faces.npy` and describe it in `faces.parquet`.

    Samples with landmarks are warped onto the template (`method` = `landmarks`); samples
    without them are treated as already aligned and resized (`passthrough`).

    Returns:
        A summary: counts per status and split, and the alignment method counts.
    """
    n = len(manifest)
    cache = np.lib.format.open_memmap(
        out_dir / CACHE_FILE,
        mode="w+",
        dtype=np.uint8,
        shape=(n, spec.crop_size, spec.crop_size, 3),
    )
    has_landmarks = "landmarks" in manifest.table.column_names
    landmarks = manifest.column("landmarks").reshape(n, 68, 2) if has_landmarks else None
    status, reason, method = [OK] * n, [""] * n, [""] * n
    matrices = np.full((n, 6), np.nan, dtype=np.float32)
    aligned_landmarks = np.full((n, 136), np.nan, dtype=np.float32)
    for row in range(n):
        try:
            image = load_rgb(manifest.image_path(row))
        except ImageReadError as exc:
            status[row], reason[row] = exc.status, str(exc)
            logger.warning("skipping %s: %s", manifest.table.column("sample_id")[row], exc)
        else:
            if landmarks is not None and np.isfinite(landmarks[row]).all():
                anchors = anchor_points(landmarks[row], use_mouth=spec.use_mouth)
                crop, matrix = align_face(image, anchors, spec)
                aligned_landmarks[row] = apply_transform(matrix, landmarks[row]).reshape(-1)
                method[row] = "landmarks"
            else:
                crop, matrix = resize_face(image, spec)
                method[row] = "passthrough"
            cache[row] = crop
            matrices[row] = matrix.reshape(-1)
        if progress is not None:
            progress(1)
    cache.flush()
    del cache

    table = pa.table(
        {
            "sample_id": manifest.table.column("sample_id"),
            "split": manifest.table.column("split"),
            "label": manifest.table.column("label"),
            "row": pa.array(np.arange(n), pa.int64()),
            "status": pa.array(status, pa.string()),
            "reason": pa.array(reason, pa.string()),
            "method": pa.array(method, pa.string()),
            "matrix": fixed_list(matrices, pa.float32()),
            "landmarks_aligned": fixed_list(aligned_landmarks, pa.float32()),
        }
    )
    pq.write_table(table, out_dir / TABLE_FILE, compression="zstd")
    return summarise(table)


def summarise(table: pa.Table) -> dict[str, object]:
    """Counts of samples per status, per split and per alignment method."""
    status = table.column("status").to_pylist()
    split = table.column("split").to_pylist()
    per_split: dict[str, dict[str, int]] = {}
    for s, st in zip(split, status, strict=True):
        per_split.setdefault(s, Counter())[st] += 1
    methods = Counter(m for m in table.column("method").to_pylist() if m)
    return {
        "total": table.num_rows,
        "ok": status.count(OK),
        "skipped": table.num_rows - status.count(OK),
        "by_status": dict(sorted(Counter(status).items())),
        "by_split": {k: dict(sorted(v.items())) for k, v in sorted(per_split.items())},
        "by_method": dict(sorted(methods.items())),
    }


def load_face_cache(directory: Path) -> tuple[np.ndarray, pa.Table]:
    """Memory-map the crops and read their table (what training and analysis use).

    Raises:
        StageOutputError: the cache is missing or its two files disagree.
    """
    cache_path, table_path = directory / CACHE_FILE, directory / TABLE_FILE
    if not (cache_path.is_file() and table_path.is_file()):
        raise StageOutputError(f"no face cache in {directory}; run the align stage first")
    crops, table = np.load(cache_path, mmap_mode="r"), pq.read_table(table_path)
    if len(crops) != table.num_rows:
        raise StageOutputError(
            f"{cache_path} has {len(crops)} crops but {table_path} {table.num_rows} rows; "
            "re-run the align stage"
        )
    return crops, table
