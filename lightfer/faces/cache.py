"""The aligned-face cache: every manifest row as a fixed-size crop in one `.npy` array.

Training reads crops through a memory map instead of decoding and warping images each
epoch. Row i of the cache is manifest row i; a sample that could not be used (unreadable
file, no face found) keeps an all-zero crop and a non-`ok` status with its reason in the
companion table, so nothing disappears silently.

How a crop is made depends on the manifest's face source (see `lightfer.manifest`):
`aligned` images are resized (`passthrough`), rows with landmarks are warped onto the
template (`landmarks`), and the rest go through MTCNN (`mtcnn`, or `center_crop` when no
face is found and the policy allows the fallback).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
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
from lightfer.faces.detect import DetectSpec, FaceDetector, detect_and_align
from lightfer.images import load_rgb
from lightfer.manifest import Manifest, fixed_list

logger = logging.getLogger(__name__)

CACHE_FILE = "faces.npy"
TABLE_FILE = "faces.parquet"
OK = "ok"


@dataclass
class _Columns:
    """Per-sample records of `faces.parquet`, filled row by row."""

    n: int
    status: list[str] = field(init=False)
    reason: list[str] = field(init=False)
    method: list[str] = field(init=False)
    n_faces: np.ndarray = field(init=False)
    score: np.ndarray = field(init=False)
    box: np.ndarray = field(init=False)
    matrix: np.ndarray = field(init=False)
    landmarks_aligned: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.status, self.reason, self.method = [OK] * self.n, [""] * self.n, [""] * self.n
        self.n_faces = np.full(self.n, -1, dtype=np.int16)
        self.score = np.full(self.n, np.nan, dtype=np.float32)
        self.box = np.full((self.n, 4), np.nan, dtype=np.float32)
        self.matrix = np.full((self.n, 6), np.nan, dtype=np.float32)
        self.landmarks_aligned = np.full((self.n, 136), np.nan, dtype=np.float32)

    def table(self, manifest: Manifest) -> pa.Table:
        return pa.table(
            {
                "sample_id": manifest.table.column("sample_id"),
                "split": manifest.table.column("split"),
                "label": manifest.table.column("label"),
                "row": pa.array(np.arange(self.n), pa.int64()),
                "status": pa.array(self.status, pa.string()),
                "reason": pa.array(self.reason, pa.string()),
                "method": pa.array(self.method, pa.string()),
                "n_faces": pa.array(self.n_faces, pa.int16()),
                "score": pa.array(self.score, pa.float32()),
                "box": fixed_list(self.box, pa.float32()),
                "matrix": fixed_list(self.matrix, pa.float32()),
                "landmarks_aligned": fixed_list(self.landmarks_aligned, pa.float32()),
            }
        )


class _LazyDetector:
    """Builds the MTCNN detector on first use: aligned datasets never pay for torch."""

    def __init__(self, spec: DetectSpec, threads: int) -> None:
        self.spec, self.threads = spec, threads
        self._detector: FaceDetector | None = None

    def get(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector.from_spec(self.spec, threads=self.threads)
        return self._detector


def build_face_cache(
    manifest: Manifest,
    spec: AlignSpec,
    out_dir: Path,
    *,
    detect: DetectSpec | None = None,
    threads: int = 1,
    progress: Callable[[int], None] | None = None,
) -> dict[str, object]:
    """Crop every manifest image into `out_dir/faces.npy`; describe each in `faces.parquet`.

    Args:
        manifest: the dataset; its `face_source` decides how crops are made.
        spec: crop size and template.
        out_dir: an existing directory (the caller makes its creation atomic).
        detect: MTCNN settings, used where a face must be detected (defaults apply if None).
        threads: torch threads for MTCNN.
        progress: called with 1 after each sample.

    Returns:
        A summary: counts per status, split and method.
    """
    n = len(manifest)
    cache = np.lib.format.open_memmap(
        out_dir / CACHE_FILE,
        mode="w+",
        dtype=np.uint8,
        shape=(n, spec.crop_size, spec.crop_size, 3),
    )
    detect = detect or DetectSpec()
    detector = _LazyDetector(detect, threads)
    has_landmarks = "landmarks" in manifest.table.column_names
    landmarks = manifest.column("landmarks").reshape(n, 68, 2) if has_landmarks else None
    sample_ids = manifest.table.column("sample_id").to_pylist()
    out = _Columns(n)
    for row in range(n):
        try:
            image = load_rgb(manifest.image_path(row))
        except ImageReadError as exc:
            out.status[row], out.reason[row] = exc.status, str(exc)
            logger.warning("skipping %s: %s", sample_ids[row], exc)
        else:
            if manifest.face_source == "aligned":
                crop, matrix = resize_face(image, spec)
                out.method[row] = "passthrough"
            elif landmarks is not None and np.isfinite(landmarks[row]).all():
                anchors = anchor_points(landmarks[row], use_mouth=spec.use_mouth)
                crop, matrix = align_face(image, anchors, spec)
                out.landmarks_aligned[row] = apply_transform(matrix, landmarks[row]).reshape(-1)
                out.method[row] = "landmarks"
            else:
                found = detect_and_align(image, detector.get(), detect, spec)
                crop, matrix = found.crop, found.matrix
                out.method[row], out.n_faces[row] = found.method, found.n_faces
                if found.detection is not None:
                    out.score[row], out.box[row] = found.detection.score, found.detection.box
                if found.status != OK:
                    out.status[row] = found.status
                    out.reason[row] = f"no face scored >= {detect.min_score} (MTCNN)"
                    logger.warning("skipping %s: no face found", sample_ids[row])
            if crop is not None:
                cache[row] = crop
                out.matrix[row] = matrix.reshape(-1)
        if progress is not None:
            progress(1)
    cache.flush()
    del cache
    table = out.table(manifest)
    pq.write_table(table, out_dir / TABLE_FILE, compression="zstd")
    return summarise(table)


def summarise(table: pa.Table) -> dict[str, object]:
    """Counts of samples per status, per split and per alignment method."""
    status = table.column("status").to_pylist()
    split = table.column("split").to_pylist()
    per_split: dict[str, Counter] = {}
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
