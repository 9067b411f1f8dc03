"""Alignment: template landmarks land where the template says, in the math and in pixels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from lightfer.faces.align import (
    AlignSpec,
    align_face,
    anchor_points,
    anchor_points_from_five,
    apply_transform,
    resize_face,
    similarity_transform,
    template_points,
)


def _rotation(angle_deg: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    a = np.deg2rad(angle_deg)
    return np.array(
        [
            [scale * np.cos(a), -scale * np.sin(a), shift[0]],
            [scale * np.sin(a), scale * np.cos(a), shift[1]],
        ]
    )


def _face_landmarks(spec: AlignSpec, matrix: np.ndarray) -> np.ndarray:
    """68 landmarks whose eye centres and mouth corners sit exactly on the template after
    mapping through `matrix` (the other points are filler)."""
    rng = np.random.default_rng(0)
    canonical = rng.uniform(0, spec.crop_size, size=(68, 2))
    eye_l, eye_r, mouth_l, mouth_r = template_points(spec, 4)
    canonical[36:42] = eye_l + rng.normal(0, 1, (6, 2))
    canonical[36:42] += eye_l - canonical[36:42].mean(0)
    canonical[42:48] = eye_r + rng.normal(0, 1, (6, 2))
    canonical[42:48] += eye_r - canonical[42:48].mean(0)
    canonical[48], canonical[54] = mouth_l, mouth_r
    inverse = cv2.invertAffineTransform(matrix)
    return apply_transform(inverse, canonical)


@pytest.mark.parametrize(("angle", "scale"), [(0, 1.0), (17, 2.3), (-25, 0.6), (180, 1.5)])
def test_similarity_transform_recovers_a_known_transform(angle, scale):
    truth = _rotation(angle, scale, (12.5, -7.0))
    src = np.random.default_rng(1).uniform(-50, 50, size=(5, 2))
    estimated = similarity_transform(src, apply_transform(truth, src))
    np.testing.assert_allclose(estimated, truth, atol=1e-9)


def test_similarity_transform_never_reflects():
    src = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    mirrored = src * np.array([-1.0, 1.0])
    matrix = similarity_transform(src, mirrored)
    assert np.linalg.det(matrix[:, :2]) > 0


def test_degenerate_points_raise_a_clear_error():
    with pytest.raises(ValueError, match="coincide"):
        similarity_transform(np.ones((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match="matching"):
        similarity_transform(np.ones((3, 2)), np.zeros((2, 2)))


@pytest.mark.parametrize("use_mouth", [True, False])
def test_anchor_landmarks_land_on_the_template_within_a_pixel(use_mouth):
    spec = AlignSpec(crop_size=112, use_mouth=use_mouth)
    landmarks = _face_landmarks(spec, _rotation(-20, 0.45, (30.0, 55.0)))
    image = np.zeros((400, 400, 3), np.uint8)
    anchors = anchor_points(landmarks, use_mouth=use_mouth)
    _, matrix = align_face(image, anchors, spec)
    landed = apply_transform(matrix, anchors)
    np.testing.assert_allclose(landed, template_points(spec, len(anchors)), atol=1.0)


def test_pixels_follow_the_landmarks():
    """Bright dots drawn at the eyes and mouth corners of a rotated, scaled face end up at
    the template positions of the aligned crop (within 1.5 px)."""
    spec = AlignSpec(crop_size=64)
    landmarks = _face_landmarks(spec, _rotation(15, 0.35, (-40.0, -30.0)))
    anchors = anchor_points(landmarks, use_mouth=True)
    image = np.zeros((300, 300, 3), np.uint8)
    for x, y in anchors:
        cv2.circle(image, (round(x), round(y)), 4, (255, 255, 255), -1, cv2.LINE_AA)
    crop, _ = align_face(image, anchors, spec)
    grey = crop[..., 0].astype(np.float64)
    for target in template_points(spec, 4):
        x0, y0 = np.round(target).astype(int) - 5
        window = grey[y0 : y0 + 11, x0 : x0 + 11]
        ys, xs = np.mgrid[y0 : y0 + 11, x0 : x0 + 11]
        centroid = np.array([(xs * window).sum(), (ys * window).sum()]) / window.sum()
        assert np.linalg.norm(centroid - target) < 1.5


def test_passthrough_resizes_an_aligned_face():
    spec = AlignSpec(crop_size=64)
    crop, matrix = resize_face(np.full((100, 100, 3), 7, np.uint8), spec)
    assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
    np.testing.assert_allclose(apply_transform(matrix, [[100, 100]]), [[64, 64]])


def test_template_must_look_like_a_face():
    with pytest.raises(ValueError, match="eyes must be above the mouth"):
        AlignSpec(template={"eye_left": (0.3, 0.8), "eye_right": (0.7, 0.8)})


def test_five_point_anchors_follow_the_template_order():
    five = np.array([[60.0, 40.0], [20.0, 41.0], [40.0, 55.0], [55.0, 70.0], [25.0, 71.0]])
    anchors = anchor_points_from_five(five, use_mouth=True)
    np.testing.assert_array_equal(anchors, [[20, 41], [60, 40], [25, 71], [55, 70]])
    assert anchor_points_from_five(five, use_mouth=False).shape == (2, 2)
