"""The aligned-face cache: every manifest row as a fixed-size crop in one `.npy` array.

Training reads crops through a memory map instead of decoding and warping images each
epoch. Row i of the cache is manifest row i; a sample that could not be used (unreadable
file, no face found) keeps an all-zero crop and a non-`ok` status with its reason in the
companion table, so nothing disappears silently.

How a crop is made depends on the manifest's face source (see `lightfer.manifest`):
`aligned` images are resized (`passthrough`), rows with landmarks are warped onto the
template (`landmarks`), and the rest go through MTCNN (`mtcnn`, or `center_crop` when no
face is found and the policy allows the fallback).

At dataset scale (CAER-S's 70,000 frames, AffectNet's rows without landmarks) MTCNN runs
over batches of images of one size, on the GPU when there is one, while background
threads decode the next batch. Given a work directory, the cache is built there and
checkpointed every so often (the crops flushed, then the per-row records and which rows
are done written atomically), so a run killed part-way resumes without redoing the rows
it finished.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

from lightfer.errors import DatasetError, ImageReadError, StageOutputError
from lightfer.faces.align import (
    AlignSpec,
    align_face,
    anchor_points,
    apply_transform,
    resize_face,
)
from lightfer.faces.detect import (
    Detection,
    DetectSpec,
    Device,
    FaceDetector,
    align_detections,
    resolve_device,
)
from lightfer.images import load_rgb
from lightfer.io import write_parquet
from lightfer.manifest import Manifest, fixed_list

logger = logging.getLogger(__name__)

CACHE_FILE = "faces.npy"
TABLE_FILE = "faces.parquet"
PROGRESS_FILE = "progress.parquet"
OK = "ok"
_CHUNK = 64  # rows per unit of work among those that need no detection


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

    @classmethod
    def from_table(cls, table: pa.Table) -> _Columns:
        """The records `table` (written by `table`) holds, exactly."""
        out = cls(table.num_rows)
        out.status, out.reason, out.method = (
            table.column(name).to_pylist() for name in ("status", "reason", "method")
        )
        for name in ("n_faces", "score", "box", "matrix", "landmarks_aligned"):
            values = table.column(name).combine_chunks()
            if pa.types.is_fixed_size_list(values.type):
                values = values.flatten()
            shape = getattr(out, name).shape
            setattr(out, name, np.array(values.to_numpy(zero_copy_only=False)).reshape(shape))
        return out


@dataclass(frozen=True)
class _Unit:
    """Rows worked on, and checkpointed, together: detected in one MTCNN call, or not."""

    rows: tuple[int, ...]
    detect: bool


class _LazyDetector:
    """Builds the MTCNN detector on first use: aligned datasets never pay for torch."""

    def __init__(self, spec: DetectSpec, threads: int, device: str) -> None:
        self.spec, self.threads, self.device = spec, threads, device
        self._detector: FaceDetector | None = None

    def get(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector.from_spec(
                self.spec, threads=self.threads, device=self.device
            )
        return self._detector


def _header_size(path: Path) -> tuple[int, int] | None:
    """Width and height from an image file's header (no decoding), or None if unreadable."""
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, Image.DecompressionBombError):
        return None


def _plan(
    manifest: Manifest, detect_rows: np.ndarray, batch_size: int, pool: Executor
) -> list[_Unit]:
    """The units of work, in an order that depends only on the manifest and the files.

    A resumed run must rebuild the batches of the run it resumes: an image's detections
    move by about 1e-4 px with the other images of its batch, so only the same batches
    give byte-identical crops. Rows to detect are grouped by the size their file header
    states, in order of first appearance, and cut into batches of `batch_size`. EXIF
    rotation is not applied here: a rotated image only splits its batch into two passes
    (`FaceDetector.detect_batch` groups by the decoded size).
    """
    rows = np.arange(len(manifest))
    direct = rows[~detect_rows].tolist()
    units = [_Unit(tuple(direct[i : i + _CHUNK]), False) for i in range(0, len(direct), _CHUNK)]
    to_detect = rows[detect_rows].tolist()
    by_size: dict[tuple[int, int] | None, list[int]] = {}
    sizes = pool.map(_header_size, (manifest.image_path(row) for row in to_detect))
    for row, size in zip(to_detect, sizes, strict=True):
        by_size.setdefault(size, []).append(row)
    for group in by_size.values():
        units += [
            _Unit(tuple(group[i : i + batch_size]), True) for i in range(0, len(group), batch_size)
        ]
    return units


def _load(path: Path) -> np.ndarray | ImageReadError:
    try:
        return load_rgb(path)
    except ImageReadError as exc:
        return exc


def _prefetched(
    units: Iterable[_Unit], manifest: Manifest, pool: Executor
) -> Iterator[tuple[_Unit, list[np.ndarray | ImageReadError]]]:
    """Each unit with its decoded images; the next unit decodes while the caller works."""
    pending: tuple[_Unit, list[Future]] | None = None
    for unit in units:
        futures = [pool.submit(_load, manifest.image_path(row)) for row in unit.rows]
        if pending is not None:
            yield pending[0], [future.result() for future in pending[1]]
        pending = unit, futures
    if pending is not None:
        yield pending[0], [future.result() for future in pending[1]]


@dataclass
class _Cropper:
    """Makes each row's crop and record, writing them into the cache and the columns."""

    manifest: Manifest
    spec: AlignSpec
    detect: DetectSpec
    detector: _LazyDetector
    landmarks: np.ndarray | None
    cache: np.ndarray
    out: _Columns
    detected: int = 0

    def crop(self, unit: _Unit, images: list[np.ndarray | ImageReadError]) -> None:
        """Crop the rows of `unit` from their images (or record why not)."""
        readable: list[tuple[int, np.ndarray]] = []
        for row, image in zip(unit.rows, images, strict=True):
            if isinstance(image, ImageReadError):
                self.out.status[row], self.out.reason[row] = image.status, str(image)
                logger.warning("skipping %s: %s", self._sample_id(row), image)
            elif unit.detect:
                readable.append((row, image))
            else:
                self._without_detection(row, image)
        if readable:
            found = self.detector.get().detect_batch([image for _, image in readable])
            self.detected += len(readable)
            for (row, image), faces in zip(readable, found, strict=True):
                self._from_detections(row, image, faces)

    def _without_detection(self, row: int, image: np.ndarray) -> None:
        if self.manifest.face_source == "aligned":
            crop, matrix = resize_face(image, self.spec)
            self.out.method[row] = "passthrough"
        else:
            anchors = anchor_points(self.landmarks[row], use_mouth=self.spec.use_mouth)
            crop, matrix = align_face(image, anchors, self.spec)
            aligned = apply_transform(matrix, self.landmarks[row])
            self.out.landmarks_aligned[row] = aligned.reshape(-1)
            self.out.method[row] = "landmarks"
        self._store(row, crop, matrix)

    def _from_detections(self, row: int, image: np.ndarray, faces: list[Detection]) -> None:
        found = align_detections(image, faces, self.detect, self.spec)
        self.out.method[row], self.out.n_faces[row] = found.method, found.n_faces
        if found.detection is not None:
            self.out.score[row], self.out.box[row] = found.detection.score, found.detection.box
        if found.status != OK:
            self.out.status[row] = found.status
            self.out.reason[row] = f"no face scored >= {self.detect.min_score} (MTCNN)"
            logger.warning("skipping %s: no face found", self._sample_id(row))
        if found.crop is not None:
            self._store(row, found.crop, found.matrix)

    def _store(self, row: int, crop: np.ndarray, matrix: np.ndarray) -> None:
        self.cache[row] = crop
        self.out.matrix[row] = matrix.reshape(-1)

    def _sample_id(self, row: int) -> str:
        return self.manifest.table.column("sample_id")[row].as_py()


def _open_state(
    work_dir: Path, manifest: Manifest, shape: tuple[int, ...]
) -> tuple[np.ndarray, _Columns, np.ndarray]:
    """The crops, records and done rows a killed run checkpointed in `work_dir`, or new ones."""
    cache_path, progress_path = work_dir / CACHE_FILE, work_dir / PROGRESS_FILE
    if cache_path.is_file() and progress_path.is_file():
        try:
            cache = np.lib.format.open_memmap(cache_path, mode="r+")
            table = pq.read_table(progress_path)
        except (OSError, ValueError) as exc:
            logger.warning("cannot resume from %s (%s); starting afresh", work_dir, exc)
        else:
            if cache.shape == shape and cache.dtype == np.uint8 and table.num_rows == shape[0]:
                done = np.array(table.column("done").to_numpy(zero_copy_only=False), dtype=bool)
                logger.info(
                    "resuming from %s: %d of %d images already done",
                    work_dir,
                    done.sum(),
                    len(done),
                )
                return cache, _Columns.from_table(table), done
            logger.warning("the state in %s does not fit this manifest; starting afresh", work_dir)
            del cache
    work_dir.mkdir(parents=True, exist_ok=True)
    # Without this, a kill before the first checkpoint would pair old records with new crops.
    progress_path.unlink(missing_ok=True)
    cache = np.lib.format.open_memmap(cache_path, mode="w+", dtype=np.uint8, shape=shape)
    return cache, _Columns(shape[0]), np.zeros(shape[0], dtype=bool)


def _checkpoint(
    work_dir: Path, cache: np.ndarray, out: _Columns, done: np.ndarray, manifest: Manifest
) -> None:
    """Flush the crops, then atomically write the records and which rows are done."""
    cache.flush()
    table = out.table(manifest).append_column("done", pa.array(done, pa.bool_()))
    write_parquet(work_dir / PROGRESS_FILE, table)


def build_face_cache(
    manifest: Manifest,
    spec: AlignSpec,
    out_dir: Path,
    *,
    detect: DetectSpec | None = None,
    threads: int = 1,
    detect_batch_size: int = 1,
    device: Device = "cpu",
    work_dir: Path | None = None,
    checkpoint_seconds: float = 60.0,
    progress: Callable[[int], None] | None = None,
) -> dict[str, object]:
    """Crop every manifest image into `out_dir/faces.npy`; describe each in `faces.parquet`.

    Args:
        manifest: the dataset; its `face_source` decides how crops are made.
        spec: crop size and template.
        out_dir: an existing directory (the caller makes its creation atomic).
        detect: MTCNN settings, used where a face must be detected (defaults apply if None).
        threads: torch threads for MTCNN, and threads decoding images.
        detect_batch_size: images of one size per MTCNN call.
        device: where MTCNN runs (`auto`: the GPU if torch sees one).
        work_dir: where to build the cache and checkpoint it, resuming what a killed run
            with the same inputs left there (the caller names it by those inputs and
            deletes it afterwards); None builds it in `out_dir` without checkpoints.
        checkpoint_seconds: least time between two checkpoints.
        progress: called with the number of rows done, after each unit of work (and once
            for the rows a resumed run finds done).

    Returns:
        A summary: counts per status, split and method.

    Raises:
        ValueError: `device` is `cuda` but torch sees no GPU (asked only when some row
            needs detection).
    """
    n = len(manifest)
    shape = (n, spec.crop_size, spec.crop_size, 3)
    detect = detect or DetectSpec()
    has_landmarks = "landmarks" in manifest.table.column_names
    landmarks = manifest.column("landmarks").reshape(n, 68, 2) if has_landmarks else None
    if manifest.face_source == "aligned":
        detect_rows = np.zeros(n, dtype=bool)
    elif landmarks is None:
        detect_rows = np.ones(n, dtype=bool)
    else:
        detect_rows = ~np.isfinite(landmarks).all(axis=(1, 2))
    detector = _LazyDetector(
        detect, threads, resolve_device(device) if detect_rows.any() else "cpu"
    )
    if work_dir is None:
        cache = np.lib.format.open_memmap(
            out_dir / CACHE_FILE, mode="w+", dtype=np.uint8, shape=shape
        )
        out, done = _Columns(n), np.zeros(n, dtype=bool)
    else:
        cache, out, done = _open_state(work_dir, manifest, shape)
    if progress is not None and done.any():
        progress(int(done.sum()))
    cropper = _Cropper(manifest, spec, detect, detector, landmarks, cache, out)
    last_checkpoint = time.monotonic()
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="decode") as pool:
        units = [
            unit
            for unit in _plan(manifest, detect_rows, detect_batch_size, pool)
            if not done[list(unit.rows)].all()
        ]
        for unit, images in _prefetched(units, manifest, pool):
            cropper.crop(unit, images)
            done[list(unit.rows)] = True
            if progress is not None:
                progress(len(unit.rows))
            if work_dir is not None and time.monotonic() - last_checkpoint >= checkpoint_seconds:
                _checkpoint(work_dir, cache, out, done, manifest)
                last_checkpoint = time.monotonic()
    if cropper.detected:
        logger.info("MTCNN searched %d images on %s", cropper.detected, detector.device)
    cache.flush()
    del cache, cropper
    if work_dir is not None:
        shutil.move(work_dir / CACHE_FILE, out_dir / CACHE_FILE)
    table = out.table(manifest)
    summary = summarise(table)
    if not summary["ok"]:  # a cache of no faces would only fail later, far from the cause
        raise DatasetError(
            f"no usable face among the {summary['total']} images under {manifest.image_root}: "
            f"{summary['by_status']}; check the dataset root and the `align.detect` settings"
        )
    pq.write_table(table, out_dir / TABLE_FILE, compression="zstd")
    return summary


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
