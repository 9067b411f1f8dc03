"""Facial expression prediction on images, folders and videos: detect, align, classify.

Every face MTCNN finds (`lightfer.faces.detect`, scoring at least `DetectSpec.min_score`) is
aligned onto the project's template at the model's input size (`lightfer.faces.align`, the
crop the training cache holds), normalised as training normalises it, and classified; each
face becomes one `FaceRow` with its box, the detector's score, the seven-class distribution
in `lightfer.labels.CLASSES` order and its most likely label. The API follows py-feat's
`Detector.detect_image` (https://github.com/cosanlab/py-feat): `Predictor.predict_image` on
an array, `Predictor.predict_paths` on files, folders and videos; `write_rows` writes CSV or
JSONL.

Nothing disappears silently: a file that cannot be read becomes one row whose `error` holds
the reason (`lightfer.images.load_rgb`'s message), an image or sampled video frame without
a face becomes one row with `error == NO_FACE`, and the run goes on.

Models: a lightfer checkpoint (its class order, input size and normalisation are recorded
and used), an official EfficientFace file (no metadata: 224 pixels, the RAF-DB mean and std,
`OFFICIAL_CLASS_ORDER`, as upstream trains), or an ONNX or OpenVINO export carrying
`lightfer.export.inference_metadata`. A class order other than `CLASSES` is refused
(`ClassOrderMismatchError`) rather than mislabelled.

Faces are classified in batches of `batch_size` crops gathered across images and frames;
detection runs one image at a time (batching MTCNN barely pays on the CPU, see
`FaceDetector.detect_batch`).
"""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from tqdm import tqdm

from lightfer.errors import CheckpointError, ImageReadError
from lightfer.faces.align import AlignSpec, align_face, anchor_points_from_five, apply_transform
from lightfer.faces.detect import DetectSpec, FaceDetector, center_crop
from lightfer.images import load_rgb_bounded
from lightfer.io import atomic_path, check_output_file
from lightfer.labels import CLASSES
from lightfer.models.inference import (
    OFFICIAL_IMAGE_SIZE,
    OFFICIAL_MEAN,
    OFFICIAL_STD,
    Forward,
    load_for_inference,
    torch_forward,
)

__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_SIDE",
    "NO_FACE",
    "OFFICIAL_IMAGE_SIZE",
    "OFFICIAL_MEAN",
    "OFFICIAL_STD",
    "VIDEO_SUFFIXES",
    "AlignedFace",
    "FaceRow",
    "PredictionSummary",
    "Predictor",
    "draw_faces",
    "expand_paths",
    "read_video_frames",
    "rows_format",
    "write_rows",
]

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
VIDEO_SUFFIXES = frozenset(
    {".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv"}
)
NO_FACE = "no face found"

# Photos are decoded at most this many pixels on a side (JPEGs straight at a reduced scale),
# so a 10,000 x 10,000 photo costs what a 2,048-pixel one does; boxes are reported in the
# photo's own pixels. MTCNN finds faces down to 20 px at this size.
MAX_IMAGE_SIDE = 2048

Format = Literal["csv", "jsonl"]
_FORMATS: dict[str, Format] = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


@dataclass(frozen=True)
class FaceRow:
    """One face found in an image or video frame, or one image/frame/file without a result.

    Attributes:
        file: the image or video, as given (or found in a folder); `""` for bare arrays.
        frame: the video frame number (0-based), None for images.
        face: index of the face in its image, in decreasing detector score; None on an
            error row.
        box: x0, y0, x1, y1 of the detector's box in image pixels (may reach beyond the
            image); for `DetectSpec(no_face="center_crop")` the central square used.
        score: the detector's face probability; None for a central-square fallback.
        probabilities: class name to probability, in `CLASSES` order, summing to 1.
        label: the most probable class.
        error: None for a face; `NO_FACE`, or why the file could not be read.
    """

    file: str
    frame: int | None = None
    face: int | None = None
    box: tuple[float, float, float, float] | None = None
    score: float | None = None
    probabilities: dict[str, float] | None = field(default=None, hash=False)
    label: str | None = None
    error: str | None = None

    def to_record(self) -> dict[str, Any]:
        """The row as a flat mapping with the CSV columns (also handy for pandas)."""
        x0, y0, x1, y1 = self.box if self.box is not None else (None,) * 4
        probabilities = self.probabilities or {}
        return {
            "file": self.file,
            "frame": self.frame,
            "face": self.face,
            "x0": x0,
            "y0": y0,
            "x1": x1,
            "y1": y1,
            "score": self.score,
            **{f"p_{name}": probabilities.get(name) for name in CLASSES},
            "label": self.label,
            "error": self.error,
        }

    def to_dict(self) -> dict[str, Any]:
        """The row as a JSON-ready mapping (box as a list, probabilities nested)."""
        return {
            "file": self.file,
            "frame": self.frame,
            "face": self.face,
            "box": None if self.box is None else list(self.box),
            "score": self.score,
            "probabilities": self.probabilities,
            "label": self.label,
            "error": self.error,
        }


CSV_COLUMNS: tuple[str, ...] = tuple(FaceRow("").to_record())


@dataclass(frozen=True, eq=False)
class AlignedFace:
    """A face ready for the model: its box and score in the image, and its aligned crop.

    Attributes:
        box: x0, y0, x1, y1 in image pixels.
        score: the detector's score, None for a central-square fallback.
        crop: (S, S, 3) uint8 RGB, S the model's input size.
    """

    box: tuple[float, float, float, float]
    score: float | None
    crop: np.ndarray


@dataclass
class PredictionSummary:
    """Counts over the rows of a run: `update` each row, or wrap the rows with `track`.

    Attributes:
        files: distinct files seen.
        faces: face rows.
        no_face: images or frames without a face.
        unreadable: the error messages of files that could not be read.
        incomplete: the error messages of videos whose decoding stopped before the frame
            count their header announces (their decoded frames have rows).
    """

    files: int = 0
    faces: int = 0
    no_face: int = 0
    unreadable: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    _seen: set[str] = field(default_factory=set, repr=False)

    @property
    def processed(self) -> int:
        """Files that could be read (with or without a face)."""
        return self.files - len(self.unreadable)

    def update(self, row: FaceRow) -> None:
        """Count one row."""
        if row.file not in self._seen:
            self._seen.add(row.file)
            self.files += 1
        if row.error is None:
            self.faces += 1
        elif row.error == NO_FACE:
            self.no_face += 1
        elif row.frame is not None:
            self.incomplete.append(row.error)
        else:
            self.unreadable.append(row.error)

    def track(self, rows: Iterable[FaceRow]) -> Iterator[FaceRow]:
        """Yield `rows` unchanged, counting each."""
        for row in rows:
            self.update(row)
            yield row

    def __str__(self) -> str:
        cut = f", {len(self.incomplete)} video(s) cut short" if self.incomplete else ""
        return (
            f"{self.files} file(s): {self.processed} read, {len(self.unreadable)} unreadable"
            f"{cut}; {self.faces} face(s); {self.no_face} image(s)/frame(s) without a face"
        )


def _box(values: Iterable[float]) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in values)
    return x0, y0, x1, y1


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    return z / z.sum(axis=1, keepdims=True)


class Predictor:
    """Detects, aligns and classifies faces with one model; reuse it for many inputs.

    Build it with `from_path` (checkpoint or ONNX file) or `from_model` (a torch module).

    Args:
        forward: maps a float32 `(N, 3, S, S)` batch, normalised as below, to `(N, 7)`
            logits in `CLASSES` order.
        image_size: S, the model's input side; faces are aligned at this size.
        mean: per-channel mean of [0, 1] RGB used in training.
        std: per-channel standard deviation.
        detect: detection settings (default `DetectSpec()`); every face scoring at least
            `min_score` is classified (`multiple_faces` is not used), and `no_face` says
            whether an image without one is reported or classified from its central square.
        detector: a detector built for `detect` to reuse (default: a new one).
        align: template, landmarks and border of the alignment (default `AlignSpec()`, the
            project's); its crop size is replaced by `image_size`.
        batch_size: faces per forward pass.
        threads: torch CPU threads for a new detector (process-wide, see
            `lightfer.faces.detect`); default: the current `torch.get_num_threads()`.
        device: where a new detector runs.

    Raises:
        ValueError: `batch_size` is below 1, or `detector` searches with settings other
            than `detect`'s.
    """

    def __init__(
        self,
        forward: Forward,
        *,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        detect: DetectSpec | None = None,
        detector: FaceDetector | None = None,
        align: AlignSpec | None = None,
        batch_size: int = 32,
        threads: int | None = None,
        device: str = "cpu",
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.detect = detect or DetectSpec()
        if detector is None:
            import torch

            detector = FaceDetector.from_spec(
                self.detect, threads=threads or torch.get_num_threads(), device=device
            )
        elif not detector.matches(self.detect):
            raise ValueError(
                f"the detector searches with min_face_size={detector.min_face_size}, "
                f"thresholds={detector.thresholds}, factor={detector.factor}, which differ "
                f"from detect; build it with FaceDetector.from_spec(detect, threads=...)"
            )
        self.detector = detector
        self.align = AlignSpec(**{**(align or AlignSpec()).model_dump(), "crop_size": image_size})
        self.image_size = int(image_size)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.batch_size = batch_size
        self._forward = forward
        # The training loader's arithmetic (`FaceDataset`): (x - 255 mean) / (255 std), float32.
        self._shift = np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1) * np.float32(255)
        self._scale = np.asarray(self.std, np.float32).reshape(1, 3, 1, 1) * np.float32(255)

    @classmethod
    def from_model(
        cls,
        model: Any,
        *,
        image_size: int,
        mean: Sequence[float],
        std: Sequence[float],
        device: str = "cpu",
        **kwargs: Any,
    ) -> Predictor:
        """A predictor around a torch module whose outputs are in `CLASSES` order.

        Args:
            model: the network; moved to `device` and put in eval mode.
            image_size: its input side.
            mean: normalisation mean of [0, 1] RGB.
            std: normalisation standard deviation.
            device: where the model (and a new detector) run.
            **kwargs: `detect`, `detector`, `align`, `batch_size`, `threads` as in `Predictor`.
        """
        return cls(
            torch_forward(model, device),
            image_size=image_size,
            mean=mean,
            std=std,
            device=device,
            **kwargs,
        )

    @classmethod
    def from_path(
        cls,
        model_path: str | os.PathLike[str],
        *,
        device: str = "cpu",
        detect: DetectSpec | None = None,
        detector: FaceDetector | None = None,
        align: AlignSpec | None = None,
        batch_size: int = 32,
        threads: int | None = None,
        arch: str = "efficientface",
    ) -> Predictor:
        """A predictor for a checkpoint (`.pt`, `.pth`, `.tar`, ...) or an export (`.onnx`, `.xml`).

        A lightfer checkpoint brings its architecture, class order, input size and
        normalisation. An official EfficientFace file records none of them: it is built as
        `arch` at 224 pixels with the official training's (RAF-DB) mean and std and
        upstream's class order (a warning says so). An ONNX or OpenVINO file must carry
        `lightfer.export.inference_metadata`; it runs on ONNX Runtime's CPU provider or
        OpenVINO's CPU plugin with `threads` threads.

        Args:
            model_path: the model file.
            device: torch device of the model and the detector (exports: "cpu" only).
            detect: detection settings, as in `Predictor`.
            detector: a detector to reuse, as in `Predictor`.
            align: alignment settings, as in `Predictor`.
            batch_size: faces per forward pass.
            threads: CPU threads (torch's process-wide count for a new detector, ONNX
                Runtime's intra-op count, OpenVINO's inference threads).
            arch: registry name used when the file does not record one (official files).

        Raises:
            CheckpointError: the file is missing, empty, unreadable, not a 7-way classifier,
                does not fit the architecture or records unusable metadata.
            ClassOrderMismatchError: its classes differ from `CLASSES` (names or order).
            ExportError: an ONNX or OpenVINO file lacks lightfer's metadata.
            DeviceError: the device is not available, or an export on another than the CPU.
        """
        loaded = load_for_inference(
            model_path, device=device, arch=arch, classes=CLASSES, threads=threads
        )
        return cls(
            loaded.forward,
            image_size=loaded.image_size,
            mean=loaded.mean,
            std=loaded.std,
            detect=detect,
            detector=detector,
            align=align,
            batch_size=batch_size,
            threads=threads,
            device=device,
        )

    def faces(self, image: np.ndarray) -> list[AlignedFace]:
        """Detect the faces of an RGB image and align each as training does.

        Args:
            image: (H, W, 3) uint8 RGB.

        Returns:
            The faces scoring at least `detect.min_score`, highest score first; with
            `detect.no_face == "center_crop"` and none found, the central square.

        Raises:
            TypeError, ValueError: `image` is not an (H, W, 3) uint8 array.
        """
        found = [d for d in self.detector.detect(image) if d.score >= self.detect.min_score]
        faces = []
        for detection in found:
            anchors = anchor_points_from_five(detection.points, use_mouth=self.align.use_mouth)
            crop, _ = align_face(image, anchors, self.align)
            faces.append(AlignedFace(_box(detection.box), detection.score, crop))
        if not faces and self.detect.no_face == "center_crop" and min(image.shape[:2]) > 0:
            crop, matrix = center_crop(image, self.align)
            side = self.image_size
            corners = apply_transform(cv2.invertAffineTransform(matrix), [[0, 0], [side, side]])
            faces.append(AlignedFace(_box(corners.ravel()), None, crop))
        return faces

    def classify(self, crops: np.ndarray) -> np.ndarray:
        """Class probabilities of aligned crops.

        Args:
            crops: `(N, S, S, 3)` uint8 RGB crops at the model's input size.

        Returns:
            `(N, 7)` float64 probabilities in `CLASSES` order; rows sum to 1.
        """
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(
                f"expected (N, {self.image_size}, {self.image_size}, 3) crops, got {crops.shape}"
            )
        out = np.empty((len(crops), len(CLASSES)), dtype=np.float64)
        for start in range(0, len(crops), self.batch_size):
            chunk = crops[start : start + self.batch_size].transpose(0, 3, 1, 2)
            batch = (chunk.astype(np.float32) - self._shift) / self._scale
            logits = np.asarray(self._forward(np.ascontiguousarray(batch)))
            if logits.shape != (len(chunk), len(CLASSES)):
                raise CheckpointError(
                    f"the model returned outputs of shape {logits.shape} for {len(chunk)} "
                    f"faces; expected ({len(chunk)}, {len(CLASSES)}), one per class of "
                    f"{', '.join(CLASSES)}"
                )
            if not np.isfinite(logits).all():
                raise CheckpointError(
                    f"the model returned non-finite outputs (NaN or infinity) for "
                    f"{int((~np.isfinite(logits)).any(axis=1).sum())} of {len(chunk)} faces; "
                    f"its weights or normalisation are broken, so no label would mean anything"
                )
            out[start : start + len(chunk)] = _softmax(logits)
        return out

    def predict_image(
        self, image: np.ndarray, *, file: str | os.PathLike[str] = "", frame: int | None = None
    ) -> list[FaceRow]:
        """One row per face of an RGB image, or one `NO_FACE` row if there is none.

        Args:
            image: (H, W, 3) uint8 RGB (read files with `lightfer.images.load_rgb`).
            file: recorded in the rows.
            frame: recorded in the rows (a video frame number).

        Returns:
            The rows, faces in decreasing detector score.
        """
        return self._rows([self._prepare(image, str(file), frame)])

    def predict_paths(
        self,
        paths: Sequence[str | os.PathLike[str]],
        *,
        frame_stride: int = 1,
        progress: bool = True,
        draw_dir: str | os.PathLike[str] | None = None,
    ) -> Iterator[FaceRow]:
        """Rows for images, videos and folders (searched recursively), in input order.

        Folders expand to their image and video files by suffix (`IMAGE_SUFFIXES`,
        `VIDEO_SUFFIXES`), sorted; a file named directly is a video if its suffix says so
        and an image otherwise. A file that cannot be read yields one row with the reason
        in `error`, and the run goes on.

        Args:
            paths: files and folders.
            frame_stride: classify video frames 0, k, 2k, ...
            progress: show a bar on stderr (files; frames within a video).
            draw_dir: also write each input image with its boxes and labels drawn, under
                the same relative name (see `expand_paths`). Video frames are not drawn.

        Yields:
            One row per face, per image or sampled frame without a face, and per
            unreadable file.

        Raises:
            ValueError: `frame_stride` is below 1.
        """
        if frame_stride < 1:
            raise ValueError(f"frame_stride must be at least 1, got {frame_stride}")
        inputs = _expand(paths)
        draw_root = None if draw_dir is None else Path(draw_dir)
        pending: list[_Pending] = []
        queued = 0
        with tqdm(
            total=len(inputs),
            desc="predict",
            unit="file",
            file=sys.stderr,
            disable=not progress or len(inputs) < 2,
        ) as bar:
            for path, name in inputs:
                for item in self._read(path, frame_stride, progress):
                    if draw_root is not None and item.frame is None and item.image is not None:
                        item.draw_path = draw_root / name
                    else:
                        item.image = None  # not needed after alignment
                    pending.append(item)
                    queued += len(item.faces)
                    # Flushing on queued items too bounds the images held for drawing and
                    # the delay of rows when few images have a face.
                    if queued >= self.batch_size or len(pending) >= self.batch_size:
                        yield from self._rows(pending)
                        pending, queued = [], 0
                bar.update()
            yield from self._rows(pending)

    def _read(self, path: Path, frame_stride: int, progress: bool) -> Iterator[_Pending]:
        """Aligned faces of an image, or of a video's sampled frames, or the read error."""
        file = str(path)
        try:
            if path.suffix.lower() in VIDEO_SUFFIXES:
                for frame, image in read_video_frames(path, frame_stride, progress=progress):
                    yield self._prepare(image, file, frame)
            else:
                image, scale = load_rgb_bounded(path, MAX_IMAGE_SIDE)
                yield self._prepare(image, file, None, scale)
        except ImageReadError as err:
            logger.warning("%s", err)
            yield _Pending(file, err.frame, [], error=str(err))

    def _prepare(
        self, image: np.ndarray, file: str, frame: int | None, scale: float = 1.0
    ) -> _Pending:
        faces = self.faces(image)
        error = None if faces else NO_FACE
        return _Pending(file, frame, faces, image=image, error=error, scale=scale)

    def _rows(self, pending: list[_Pending]) -> list[FaceRow]:
        """Classify the queued faces in one go and turn every item into its rows."""
        crops = [face.crop for item in pending for face in item.faces]
        if crops:
            probabilities = iter(self.classify(np.stack(crops)))
        rows: list[FaceRow] = []
        for item in pending:
            if not item.faces:
                item_rows = [FaceRow(item.file, item.frame, error=item.error)]
            else:
                item_rows = []
                for index, face in enumerate(item.faces):
                    p = next(probabilities)
                    item_rows.append(
                        FaceRow(
                            file=item.file,
                            frame=item.frame,
                            face=index,
                            box=face.box,
                            score=face.score,
                            probabilities={c: float(v) for c, v in zip(CLASSES, p, strict=True)},
                            label=CLASSES[int(p.argmax())],
                        )
                    )
            if item.draw_path is not None and item.image is not None:
                _write_drawing(item.draw_path, draw_faces(item.image, item_rows))
            if item.scale != 1.0:  # boxes in the file's own pixels
                item_rows = [
                    replace(r, box=_box(v / item.scale for v in r.box)) if r.box else r
                    for r in item_rows
                ]
            rows.extend(item_rows)
        return rows


@dataclass(eq=False)
class _Pending:
    """An image or frame whose faces are aligned and wait for the next forward pass."""

    file: str
    frame: int | None
    faces: list[AlignedFace]
    image: np.ndarray | None = None
    error: str | None = None
    draw_path: Path | None = None
    scale: float = 1.0


def _expand(paths: Sequence[str | os.PathLike[str]]) -> list[tuple[Path, Path]]:
    """Each input file with the relative name its drawing gets."""
    inputs: list[tuple[Path, Path]] = []
    for given in map(Path, paths):
        if not given.is_dir():
            inputs.append((given, Path(given.name)))
            continue
        media = IMAGE_SUFFIXES | VIDEO_SUFFIXES
        entries = [p for p in given.rglob("*") if not p.is_dir()]
        # Broken or looping links are kept, so that each gets an error row.
        found = sorted(p for p in entries if p.suffix.lower() in media)
        others = sorted(p.relative_to(given).as_posix() for p in set(entries) - set(found))
        if others:
            logger.warning(
                "%s: %d file(s) are not images or videos by suffix, not read: %s",
                given,
                len(others),
                ", ".join(others[:5]) + (", ..." if len(others) > 5 else ""),
            )
        if not found:
            logger.warning("%s holds no image or video file (%s)", given, ", ".join(sorted(media)))
        prefix = Path(given.resolve().name)
        inputs.extend((p, prefix / p.relative_to(given)) for p in found)
    return inputs


def expand_paths(paths: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """The files `Predictor.predict_paths` reads for `paths`, in that order.

    A folder expands to the files below it whose suffix is in `IMAGE_SUFFIXES` or
    `VIDEO_SUFFIXES`, sorted, broken or looping links included (each yields an error row;
    other files are counted in a warning); anything else is kept as given (a missing file yields an
    error row later). A drawing is written under `draw_dir` as the file's name, or, for a
    file found in a folder, as the folder's name joined with the path inside it.
    """
    return [path for path, _ in _expand(paths)]


def read_video_frames(
    path: str | os.PathLike[str], frame_stride: int = 1, *, progress: bool = False
) -> Iterator[tuple[int, np.ndarray]]:
    """Frames 0, k, 2k, ... of a video as (number, (H, W, 3) uint8 RGB), with OpenCV.

    Args:
        path: the video file.
        frame_stride: k; skipped frames are grabbed, not converted.
        progress: show a bar on stderr (its total is the container's frame count).

    Raises:
        ImageReadError: the file is missing, cannot be opened, or yields no frame; or, after
            the frames that decoded, it stopped before the header's frame count (`frame` is
            the first missing one).
        ValueError: `frame_stride` is below 1.
    """
    if frame_stride < 1:
        raise ValueError(f"frame_stride must be at least 1, got {frame_stride}")
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "missing", "file does not exist")
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise ImageReadError(path, "unreadable", "OpenCV cannot open it as a video")
        total = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or None
        bar = tqdm(
            total=total,
            desc=path.name,
            unit="frame",
            file=sys.stderr,
            leave=False,
            disable=not progress,
        )
        with bar:
            frame = 0
            while capture.grab():
                if frame % frame_stride == 0:
                    ok, bgr = capture.retrieve()
                    if not ok:
                        break
                    yield frame, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
                frame += 1
                bar.update()
        if frame == 0:
            raise ImageReadError(path, "unreadable", "no video frame could be decoded")
        if total is not None and frame < total:
            raise ImageReadError(
                path,
                "truncated",
                f"decoding stopped after {frame} of the {total} frames its header announces; "
                f"the file is cut short or damaged",
                frame=frame,
            )
    finally:
        capture.release()


def draw_faces(image: np.ndarray, rows: Sequence[FaceRow]) -> np.ndarray:
    """A copy of an RGB image with each row's box and `label probability` drawn on it."""
    canvas = np.ascontiguousarray(image).copy()
    thickness = max(1, round(min(canvas.shape[:2]) / 250))
    scale = max(0.4, min(canvas.shape[:2]) / 800)
    colour = (0, 255, 0)
    for row in rows:
        if row.box is None or row.label is None or row.probabilities is None:
            continue
        x0, y0, x1, y1 = (round(v) for v in row.box)
        cv2.rectangle(canvas, (x0, y0), (x1, y1), colour, thickness)
        text = f"{row.label} {row.probabilities[row.label]:.2f}"
        (width, height), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
        top = y0 - height - base if y0 - height - base >= 0 else y1
        cv2.rectangle(canvas, (x0, top), (x0 + width, top + height + base), colour, cv2.FILLED)
        cv2.putText(
            canvas,
            text,
            (x0, top + height),
            cv2.FONT_HERSHEY_SIMPLEX,
            scale,
            (0, 0, 0),
            thickness,
            cv2.LINE_AA,
        )
    return canvas


def _write_drawing(path: Path, image: np.ndarray) -> None:
    """Encode by the suffix (PNG appended when OpenCV cannot write it) and write atomically."""
    if not cv2.haveImageWriter(f"x{path.suffix}"):
        path = path.with_name(f"{path.name}.png")
    ok, encoded = cv2.imencode(path.suffix, cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise OSError(f"OpenCV could not encode {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())


def rows_format(path: str | os.PathLike[str], format: Format | None = None) -> Format:
    """The format `write_rows` uses: `format` if given, else from the suffix of `path`.

    Raises:
        ValueError: `format` is not csv or jsonl, or the suffix is not .csv, .jsonl, .ndjson.
    """
    path = Path(path)
    if format is not None:
        if format not in ("csv", "jsonl"):
            raise ValueError(f"Invalid format {format!r}. Only csv and jsonl are supported.")
        return format
    try:
        return _FORMATS[path.suffix.lower()]
    except KeyError:
        raise ValueError(
            f"cannot tell the format of {path} from its suffix {path.suffix!r}; name it "
            f"{', '.join(sorted(_FORMATS))} or pass the format (csv or jsonl)"
        ) from None


def write_rows(
    rows: Iterable[FaceRow], path: str | os.PathLike[str], *, format: Format | None = None
) -> int:
    """Write rows to CSV or JSONL as they come, committing the file only when all are written.

    CSV columns: file, frame, face, x0, y0, x1, y1, score, `p_<class>` for each class in
    `CLASSES` order, label, error (missing values are empty cells). JSONL: one `FaceRow.to_dict`
    object per line.

    Args:
        rows: the rows, e.g. straight from `Predictor.predict_paths`.
        path: the output file; written atomically (`lightfer.io.atomic_path`), so an
            interrupted run leaves the previous file, if any, untouched.
        format: "csv" or "jsonl"; default from the suffix (.csv, .jsonl, .ndjson).

    Returns:
        The number of rows written.

    Raises:
        ValueError: the format is unknown or cannot be told from the suffix.
        OutputPathError: `path` cannot be written (checked before the first row is read).
    """
    kind = rows_format(path, format)
    path = check_output_file(path)
    count = 0
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        if kind == "csv":
            writer = csv.DictWriter(handle, fieldnames=CSV_COLUMNS)
            writer.writeheader()
            for row in rows:
                writer.writerow(row.to_record())
                count += 1
        else:
            for row in rows:
                handle.write(json.dumps(row.to_dict(), allow_nan=False) + "\n")
                count += 1
    return count
