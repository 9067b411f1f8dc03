"""Similarity alignment of a face to a fixed template, from landmarks.

A face is aligned by the least-squares similarity transform (rotation, uniform scale,
translation; no reflection or shear) that maps its eye centres, and optionally its mouth
corners, onto template positions in a square crop. This is the alignment RAF-DB's and
AffectNet's aligned faces use; MTCNN's five points feed the same transform.

Template coordinates are fractions of the crop side, in *image* orientation: `eye_left` is
the eye on the left of the image (the subject's right eye, iBUG points 36-41).
"""

from __future__ import annotations

from typing import Literal

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

# iBUG 68-point indices.
_RIGHT_EYE = slice(36, 42)  # image-left eye
_LEFT_EYE = slice(42, 48)  # image-right eye
_MOUTH_LEFT = 48
_MOUTH_RIGHT = 54

_BORDERS = {"constant": cv2.BORDER_CONSTANT, "replicate": cv2.BORDER_REPLICATE}


class Template(BaseModel):
    """Where the eyes and mouth corners land in the aligned crop (fractions of its side)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    eye_left: tuple[float, float] = (0.34, 0.40)
    eye_right: tuple[float, float] = (0.66, 0.40)
    mouth_left: tuple[float, float] = (0.37, 0.74)
    mouth_right: tuple[float, float] = (0.63, 0.74)

    @model_validator(mode="after")
    def _plausible_face(self) -> Template:
        points = np.array(self.as_array())
        if not ((points >= 0) & (points <= 1)).all():
            raise ValueError("template points must lie inside the crop (fractions in 0..1)")
        if not (self.eye_left[0] < self.eye_right[0] and self.mouth_left[0] < self.mouth_right[0]):
            raise ValueError("eye_left/mouth_left must be left of eye_right/mouth_right")
        if not max(self.eye_left[1], self.eye_right[1]) < min(
            self.mouth_left[1], self.mouth_right[1]
        ):
            raise ValueError("the eyes must be above the mouth")
        return self

    def as_array(self) -> list[tuple[float, float]]:
        """The four points in the order eyes (left, right), mouth corners (left, right)."""
        return [self.eye_left, self.eye_right, self.mouth_left, self.mouth_right]


class AlignSpec(BaseModel):
    """How aligned crops are made."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    crop_size: int = Field(64, ge=16, le=512, description="side of the square aligned crop, px")
    template: Template = Field(default_factory=Template, description="target landmark positions")
    use_mouth: bool = Field(True, description="fit mouth corners too, not only the eyes")
    border: Literal["constant", "replicate"] = Field(
        "constant", description="how pixels outside the source image are filled"
    )


def anchor_points(landmarks68: np.ndarray, *, use_mouth: bool) -> np.ndarray:
    """Eye centres (and mouth corners) from 68 iBUG landmarks, in template order."""
    points = np.asarray(landmarks68, dtype=np.float64).reshape(68, 2)
    anchors = [points[_RIGHT_EYE].mean(0), points[_LEFT_EYE].mean(0)]
    if use_mouth:
        anchors += [points[_MOUTH_LEFT], points[_MOUTH_RIGHT]]
    return np.stack(anchors)


def anchor_points_from_five(points5: np.ndarray, *, use_mouth: bool) -> np.ndarray:
    """Anchors from MTCNN's five points (eye, eye, nose, mouth corner, mouth corner).

    The eyes are ordered by x so that the first is the image-left eye, as in the template.
    """
    points = np.asarray(points5, dtype=np.float64).reshape(5, 2)
    eyes = points[:2][np.argsort(points[:2, 0])]
    mouth = points[3:][np.argsort(points[3:, 0])]
    return np.concatenate([eyes, mouth]) if use_mouth else eyes


def template_points(spec: AlignSpec, n_points: int) -> np.ndarray:
    """The first `n_points` template points in crop pixels."""
    return np.asarray(spec.template.as_array()[:n_points], dtype=np.float64) * spec.crop_size


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (2x3) mapping `src` points onto `dst` (Umeyama 1991).

    Raises:
        ValueError: fewer than two points, or all source points coincide.
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 2 or len(src) < 2:
        raise ValueError(f"need matching (N>=2, 2) point arrays, got {src.shape} and {dst.shape}")
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    src_var = (src_c**2).sum() / len(src)
    if src_var < 1e-12:
        raise ValueError("source points coincide; cannot estimate a similarity transform")
    cov = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[-1] = -1.0
    rotation = u @ np.diag(sign) @ vt
    scale = (s * sign).sum() / src_var
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - matrix[:, :2] @ src_mean
    return matrix


def apply_transform(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a 2x3 affine matrix."""
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def align_face(
    image: np.ndarray, anchors: np.ndarray, spec: AlignSpec
) -> tuple[np.ndarray, np.ndarray]:
    """Warp `image` so the face's anchors (from `anchor_points*`) land on the template.

    Returns:
        The (crop_size, crop_size, 3) uint8 crop and the 2x3 image-to-crop matrix.
    """
    matrix = similarity_transform(anchors, template_points(spec, len(anchors)))
    crop = cv2.warpAffine(
        image,
        matrix,
        (spec.crop_size, spec.crop_size),
        flags=cv2.INTER_LINEAR,
        borderMode=_BORDERS[spec.border],
    )
    return crop, matrix


def resize_face(image: np.ndarray, spec: AlignSpec) -> tuple[np.ndarray, np.ndarray]:
    """Resize an already aligned face to the crop size (the pass-through path)."""
    height, width = image.shape[:2]
    matrix = np.array(
        [[spec.crop_size / width, 0, 0], [0, spec.crop_size / height, 0]], dtype=np.float64
    )
    interpolation = cv2.INTER_AREA if width > spec.crop_size else cv2.INTER_LINEAR
    return cv2.resize(image, (spec.crop_size, spec.crop_size), interpolation=interpolation), matrix
