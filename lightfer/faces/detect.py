"""Face detection with MTCNN, the choice of one face per image, and alignment from its points.

MTCNN is the three-network cascade (P-Net, R-Net, O-Net) of Zhang et al., "Joint Face
Detection and Alignment Using Multitask Cascaded Convolutional Networks", IEEE Signal
Processing Letters 23(10), 2016. The implementation and its pnet/rnet/onet weights come from
facenet-pytorch 2.6.0 (Tim Esler, MIT licence, https://github.com/timesler/facenet-pytorch);
the weights ship inside its wheel, so nothing is downloaded.

`FaceDetector` returns every face with its box, score and five points (`detect_batch`: of
many images, one MTCNN pass per image size); `select_face` keeps one by a policy;
`align_detections` turns the kept face's points into an aligned crop with
`lightfer.faces.align`, or falls back to a central square, as `DetectSpec` says;
`detect_and_align` does both for one image.

Threads: `FaceDetector` calls `torch.set_num_threads`, which is process-global. It changes
the thread count of every torch operation in the process, and any later call elsewhere
changes the detector's. Build the detector in the process that owns the stage, with the
stage's thread budget: with other work on the machine, MTCNN's many small calls can run 30x
slower with oversubscribed threads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Literal, get_args

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from lightfer.faces.align import AlignSpec, align_face, anchor_points_from_five, resize_face

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

Policy = Literal["most_confident", "largest"]
POLICIES: tuple[str, ...] = get_args(Policy)
Device = Literal["auto", "cpu", "cuda"]

_Threshold = Annotated[float, Field(gt=0.0, lt=1.0)]


class DetectSpec(BaseModel):
    """How faces are detected and which one is aligned (`align.detect` in params.yaml)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_face_size: int = Field(
        20,
        ge=8,
        le=1024,
        description="smallest face side MTCNN searches for, px (larger is faster)",
    )
    thresholds: tuple[_Threshold, _Threshold, _Threshold] = Field(
        (0.6, 0.7, 0.7), description="score thresholds of the P-Net, R-Net and O-Net stages"
    )
    factor: float = Field(
        0.709, ge=0.5, lt=1.0, description="scale step of the image pyramid (nearer 1 is slower)"
    )
    min_score: float = Field(
        0.9, ge=0.0, le=1.0, description="faces scoring below this are ignored"
    )
    multiple_faces: Policy = Field(
        "most_confident", description="which face to align when several pass min_score"
    )
    no_face: Literal["skip", "center_crop"] = Field(
        "skip",
        description="without a face: skip (status no_face) or align a central square crop",
    )


@dataclass(frozen=True, eq=False)
class Detection:
    """One face found by MTCNN, in the pixel coordinates of the image searched.

    Attributes:
        box: (4,) float64 x0, y0, x1, y1 (read-only).
        score: O-Net's face probability.
        points: (5, 2) float64 x, y of eye, eye, nose, mouth corner, mouth corner, in
            MTCNN's order (read-only).
    """

    box: np.ndarray
    score: float
    points: np.ndarray

    def __post_init__(self) -> None:
        box = np.array(self.box, dtype=np.float64)
        points = np.array(self.points, dtype=np.float64)
        if box.shape != (4,) or points.shape != (5, 2):
            raise ValueError(
                f"a Detection needs a box of 4 values and (5, 2) points, got shapes "
                f"{box.shape} and {points.shape}"
            )
        box.setflags(write=False)
        points.setflags(write=False)
        object.__setattr__(self, "box", box)
        object.__setattr__(self, "score", float(self.score))
        object.__setattr__(self, "points", points)

    @property
    def area(self) -> float:
        """Area of the box in square pixels."""
        x0, y0, x1, y1 = self.box
        return max(x1 - x0, 0.0) * max(y1 - y0, 0.0)


@dataclass(frozen=True, eq=False)
class FaceResult:
    """What `detect_and_align` made of one image.

    Attributes:
        crop: (S, S, 3) uint8 aligned crop, or None when skipped.
        matrix: 2x3 image-to-crop affine matrix, or None when skipped.
        method: `mtcnn` (aligned from the face's points), `center_crop` (fallback), or ``""``
            when skipped.
        status: `ok`, or `no_face` when no face passed `min_score` and the policy is skip.
        detection: the aligned face, or None.
        n_faces: how many faces scored at least `min_score`.
    """

    crop: np.ndarray | None
    matrix: np.ndarray | None
    method: Literal["mtcnn", "center_crop", ""]
    status: Literal["ok", "no_face"]
    detection: Detection | None
    n_faces: int


def _check_image(image: np.ndarray) -> None:
    """Raise unless `image` is an (H, W, 3) uint8 array."""
    if not isinstance(image, np.ndarray):
        raise TypeError(
            f"expected an (H, W, 3) uint8 RGB numpy array, got {type(image).__name__}; "
            "read files with lightfer.images.load_rgb"
        )
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(
            f"expected an (H, W, 3) uint8 RGB image, got shape {image.shape} and dtype "
            f"{image.dtype}; convert grey, RGBA and 16-bit images with lightfer.images.load_rgb"
        )


class FaceDetector:
    """MTCNN face detector, built once and reused for every image.

    Args:
        threads: torch CPU threads; set process-wide with `torch.set_num_threads` (see the
            module docstring).
        min_face_size: smallest face side searched for, px.
        thresholds: score thresholds of the P-Net, R-Net and O-Net stages.
        factor: scale step of the image pyramid.
        device: where the networks run.

    Raises:
        ValueError: `threads` is below 1.
    """

    def __init__(
        self,
        *,
        threads: int,
        min_face_size: int = 20,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        device: str | torch.device = "cpu",
    ) -> None:
        # Imported here: the params schema imports `DetectSpec`, and a stage that never
        # detects a face should not pay for loading torch.
        import torch
        from facenet_pytorch import MTCNN

        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)
        self.threads = threads
        self.min_face_size = min_face_size
        self.thresholds = tuple(float(t) for t in thresholds)
        self.factor = factor
        self.device = torch.device(device)
        self._mtcnn = MTCNN(
            min_face_size=min_face_size,
            thresholds=list(self.thresholds),
            factor=factor,
            keep_all=True,
            select_largest=False,
            device=self.device,
        ).eval()
        logger.info(
            "MTCNN on %s with %d torch thread(s), min_face_size=%d, thresholds=%s, factor=%s",
            self.device,
            threads,
            min_face_size,
            self.thresholds,
            factor,
        )

    @classmethod
    def from_spec(
        cls, spec: DetectSpec, *, threads: int, device: str | torch.device = "cpu"
    ) -> FaceDetector:
        """A detector with the search settings of `spec`."""
        return cls(
            threads=threads,
            min_face_size=spec.min_face_size,
            thresholds=spec.thresholds,
            factor=spec.factor,
            device=device,
        )

    def matches(self, spec: DetectSpec) -> bool:
        """Whether this detector searches with the settings `spec` asks for."""
        return (self.min_face_size, self.thresholds, self.factor) == (
            spec.min_face_size,
            spec.thresholds,
            spec.factor,
        )

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Find the faces in one (H, W, 3) uint8 RGB image.

        Returns:
            The faces, highest score first; empty when there is none.

        Raises:
            TypeError: `image` is not a numpy array.
            ValueError: `image` is not (H, W, 3) uint8 (grey, RGBA, float...).
        """
        _check_image(image)
        return self._detect_stack(image[np.newaxis])[0]

    def detect_batch(self, images: list[np.ndarray]) -> list[list[Detection]]:
        """Find the faces in several images, in one MTCNN pass per image size.

        MTCNN stacks only images of one size, so the images are grouped by size (in order
        of first appearance) and each group goes through in one pass; the caller bounds the
        pass by how many images it hands over. Results equal one call per image to about
        1e-3 px: the networks' arithmetic differs slightly with the batch, so they are
        close, not bit-identical. On one CPU thread batching gains little (0.96-1.20x the
        images/s of single calls for 2-16 images of 512 px, two runs of
        `scripts/bench_mtcnn.py` on a shared 2-core machine); on a GPU one pass spreads the
        cost of MTCNN's many small kernel launches over the whole batch.

        Returns:
            Per image, in the order given, as `detect` would return it.

        Raises:
            TypeError: an image is not a numpy array.
            ValueError: an image is not (H, W, 3) uint8.
        """
        for image in images:
            _check_image(image)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for index, image in enumerate(images):
            by_shape.setdefault(image.shape, []).append(index)
        results: list[list[Detection]] = [[] for _ in images]
        for indices in by_shape.values():
            found = self._detect_stack(np.stack([images[i] for i in indices]))
            for index, faces in zip(indices, found, strict=True):
                results[index] = faces
        return results

    def _detect_stack(self, stack: np.ndarray) -> list[list[Detection]]:
        """Detections for each image of an (N, H, W, 3) uint8 stack."""
        if min(stack.shape[1:3]) < self.min_face_size:
            # No face that small is searched for (and MTCNN fails on an empty image pyramid).
            return [[] for _ in stack]
        boxes, probs, points = self._mtcnn.detect(stack, landmarks=True)
        # MTCNN gives dtype=object arrays with one entry per image, None where it found no face.
        results = []
        for image_boxes, image_probs, image_points in zip(boxes, probs, points, strict=True):
            if image_boxes is None:
                results.append([])
                continue
            found = [
                Detection(box=box, score=score, points=five)
                for box, score, five in zip(
                    np.asarray(image_boxes, dtype=np.float64).reshape(-1, 4),
                    np.asarray(image_probs, dtype=np.float64).reshape(-1),
                    np.asarray(image_points, dtype=np.float64).reshape(-1, 5, 2),
                    strict=True,
                )
            ]
            results.append(sorted(found, key=lambda d: d.score, reverse=True))
        return results


def resolve_device(device: Device) -> str:
    """The torch device MTCNN runs on: `auto` is `cuda` when torch sees a GPU, else `cpu`.

    Raises:
        ValueError: `cuda` is asked for but torch sees no GPU, or `device` is unknown.
    """
    import torch

    if device not in get_args(Device):
        raise ValueError(f"Invalid device {device!r}. Only auto, cpu and cuda are supported.")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            "device 'cuda' was asked for but torch sees no GPU; use 'auto' or 'cpu', or "
            "install a CUDA build of torch"
        )
    return device


def select_face(detections: list[Detection], policy: Policy = "most_confident") -> Detection | None:
    """The face to align: the highest score, or the largest box; None if there is none.

    Raises:
        ValueError: `policy` is not one of `POLICIES`.
    """
    if policy not in POLICIES:
        raise ValueError(
            f"Invalid face selection policy {policy!r}. Only {', '.join(POLICIES)} are supported."
        )
    if not detections:
        return None
    if policy == "largest":
        return max(detections, key=lambda d: d.area)
    return max(detections, key=lambda d: d.score)


def center_crop(image: np.ndarray, spec: AlignSpec) -> tuple[np.ndarray, np.ndarray]:
    """The largest central square of `image`, resized to the crop size.

    Returns:
        The (crop_size, crop_size, 3) uint8 crop and the 2x3 image-to-crop matrix.
    """
    height, width = image.shape[:2]
    side = min(height, width)
    x0, y0 = (width - side) // 2, (height - side) // 2
    crop, matrix = resize_face(image[y0 : y0 + side, x0 : x0 + side], spec)
    matrix[:, 2] -= matrix[:, :2] @ np.array([x0, y0], dtype=np.float64)
    return crop, matrix


def align_detections(
    image: np.ndarray,
    detections: list[Detection],
    detect_spec: DetectSpec,
    align_spec: AlignSpec,
) -> FaceResult:
    """Choose one of the faces MTCNN found in `image` and align it onto the template.

    Faces scoring below `detect_spec.min_score` are ignored; of the rest, one is chosen by
    `detect_spec.multiple_faces` and aligned from its eyes (and mouth corners, if
    `align_spec.use_mouth`). Without a face the image is skipped or centre-cropped, as
    `detect_spec.no_face` says.

    Args:
        image: (H, W, 3) uint8 RGB image.
        detections: what `FaceDetector.detect` (or `detect_batch`) found in it.
        detect_spec: selection and fallback settings.
        align_spec: crop size, template and landmarks used.

    Returns:
        The crop, its matrix and how they were made.
    """
    kept = [d for d in detections if d.score >= detect_spec.min_score]
    if len(kept) < len(detections):
        logger.debug(
            "ignored %d of %d faces scoring below %s",
            len(detections) - len(kept),
            len(detections),
            detect_spec.min_score,
        )
    chosen = select_face(kept, detect_spec.multiple_faces)
    if chosen is not None:
        anchors = anchor_points_from_five(chosen.points, use_mouth=align_spec.use_mouth)
        crop, matrix = align_face(image, anchors, align_spec)
        return FaceResult(crop, matrix, "mtcnn", "ok", chosen, len(kept))
    if detect_spec.no_face == "center_crop":
        crop, matrix = center_crop(image, align_spec)
        return FaceResult(crop, matrix, "center_crop", "ok", None, 0)
    return FaceResult(None, None, "", "no_face", None, 0)


def detect_and_align(
    image: np.ndarray, detector: FaceDetector, detect_spec: DetectSpec, align_spec: AlignSpec
) -> FaceResult:
    """Detect the faces in an RGB image, choose one, and align it onto the template.

    `align_detections` on what `detector` finds; see it for the choice and the fallback.

    Args:
        image: (H, W, 3) uint8 RGB image.
        detector: built with `FaceDetector.from_spec(detect_spec, ...)`.
        detect_spec: detection, selection and fallback settings.
        align_spec: crop size, template and landmarks used.

    Returns:
        The crop, its matrix and how they were made.

    Raises:
        TypeError: `image` is not a numpy array.
        ValueError: `image` is not (H, W, 3) uint8, or `detector` searches with other
            settings than `detect_spec`.
    """
    if not detector.matches(detect_spec):
        raise ValueError(
            f"the detector searches with min_face_size={detector.min_face_size}, "
            f"thresholds={detector.thresholds}, factor={detector.factor}, but detect_spec asks "
            f"for {detect_spec.min_face_size}, {detect_spec.thresholds}, {detect_spec.factor}; "
            "build it with FaceDetector.from_spec(detect_spec, threads=...)"
        )
    return align_detections(image, detector.detect(image), detect_spec, align_spec)
