"""MTCNN detection, face selection and detection-driven alignment, on real face pixels.

The detector is built once per module (loading three networks and setting torch to one
thread); each MTCNN call on the images here takes 30-300 ms on one core.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from pydantic import ValidationError
from skimage import data

from lightfer.faces.align import AlignSpec, anchor_points_from_five, template_points
from lightfer.faces.detect import (
    Detection,
    DetectSpec,
    FaceDetector,
    center_crop,
    detect_and_align,
    resolve_device,
    select_face,
)

ASTRONAUT_BOX = [181, 62, 268, 172]  # facenet-pytorch MTCNN's box on skimage's astronaut


@pytest.fixture(scope="module")
def detector():
    previous = torch.get_num_threads()
    yield FaceDetector(threads=1)
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def two_faces(astronaut) -> np.ndarray:
    """The astronaut's head (256 px square) and, to its right, a copy at 0.75 scale.

    MTCNN scores the smaller copy higher, so the two policies choose different faces.
    """
    head = astronaut[:256, 96:352]
    small = cv2.resize(head, None, fx=0.75, fy=0.75, interpolation=cv2.INTER_AREA)
    canvas = np.zeros((256, 448, 3), np.uint8)
    canvas[:, :256] = head
    canvas[:192, 256:] = small
    return canvas


def _detection(box: list[float], score: float) -> Detection:
    return Detection(box=box, score=score, points=np.zeros((5, 2)))


def test_astronaut_has_one_confident_face_where_expected(detector, astronaut):
    faces = detector.detect(astronaut)
    assert len(faces) == 1
    face = faces[0]
    assert face.score > 0.99
    np.testing.assert_allclose(face.box, ASTRONAUT_BOX, atol=10)
    assert face.points.shape == (5, 2)
    x0, y0, x1, y1 = face.box
    assert ((face.points >= [x0, y0]) & (face.points <= [x1, y1])).all()


@pytest.mark.parametrize(
    ("angle", "use_mouth", "tolerance_px"), [(0, False, 2.0), (15, False, 2.0), (15, True, 5.0)]
)
def test_aligned_eyes_land_on_the_template_in_pixels(
    detector, astronaut, angle, use_mouth, tolerance_px
):
    """MTCNN run again on the aligned crop finds the eyes on the template.

    Re-detection locates the eyes from the crop's pixels alone, independently of the matrix,
    so it catches a wrong warp (inverted matrix, swapped axes, wrong face) that a check of
    the transformed points against the template would not. Fitting the eyes alone makes the
    transform exact, so the tolerance is MTCNN's landmark noise; with the mouth corners the
    least-squares fit also spreads the mismatch between the astronaut's face proportions
    and the template's (about 3 px at 112 px) onto the eyes.
    """
    rotation = cv2.getRotationMatrix2D((224.0, 120.0), angle, 1.0)
    image = cv2.warpAffine(astronaut, rotation, (512, 512))
    align_spec = AlignSpec(crop_size=112, use_mouth=use_mouth)
    result = detect_and_align(image, detector, DetectSpec(), align_spec)

    assert (result.status, result.method, result.n_faces) == ("ok", "mtcnn", 1)
    assert result.crop.shape == (112, 112, 3) and result.crop.dtype == np.uint8
    assert result.matrix.shape == (2, 3)
    # MTCNN wants context around a face: upscale the tight crop and pad it before searching.
    scale, pad = 2, 48
    enlarged = cv2.resize(result.crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    enlarged = cv2.copyMakeBorder(enlarged, pad, pad, pad, pad, cv2.BORDER_CONSTANT)
    (again,) = detector.detect(enlarged)
    eyes = (anchor_points_from_five(again.points, use_mouth=False) - pad) / scale
    errors = np.linalg.norm(eyes - template_points(align_spec, 2), axis=1)
    assert errors.max() < tolerance_px, errors


@pytest.mark.parametrize("kind", ["blank", "noise"])
def test_an_image_without_a_face_is_skipped_or_centre_cropped(detector, kind):
    rng = np.random.default_rng(0)
    image = (
        np.full((240, 320, 3), 128, np.uint8)
        if kind == "blank"
        else rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    )
    assert detector.detect(image) == []
    align_spec = AlignSpec(crop_size=64)

    skipped = detect_and_align(image, detector, DetectSpec(no_face="skip"), align_spec)
    assert (skipped.status, skipped.method, skipped.n_faces) == ("no_face", "", 0)
    assert skipped.crop is None and skipped.matrix is None and skipped.detection is None

    fallback = detect_and_align(image, detector, DetectSpec(no_face="center_crop"), align_spec)
    assert (fallback.status, fallback.method, fallback.detection) == ("ok", "center_crop", None)
    np.testing.assert_array_equal(fallback.crop, center_crop(image, align_spec)[0])


def test_center_crop_takes_the_largest_central_square():
    image = np.zeros((200, 300, 3), np.uint8)
    image[:, 50:250] = 200  # the central 200 px square; the margins stay black
    spec = AlignSpec(crop_size=64)
    crop, matrix = center_crop(image, spec)
    assert crop.shape == (64, 64, 3)
    assert (crop == 200).all()
    corners = np.array([[50, 0, 1], [250, 200, 1]], dtype=np.float64) @ matrix.T
    np.testing.assert_allclose(corners, [[0, 0], [64, 64]])


def test_policies_choose_the_largest_or_the_most_confident_face(detector, two_faces):
    faces = detector.detect(two_faces)
    assert len(faces) == 2
    assert faces[0].score >= faces[1].score
    largest = select_face(faces, "largest")
    assert largest.area == max(f.area for f in faces)
    assert largest.box[2] < 256  # the full-size head, not the 0.75 copy
    assert select_face(faces, "most_confident") is faces[0]
    assert select_face(faces) is faces[0]
    assert faces[0] is not largest  # the 0.75 copy scores higher

    result = detect_and_align(
        two_faces, detector, DetectSpec(multiple_faces="largest"), AlignSpec()
    )
    assert result.n_faces == 2
    np.testing.assert_array_equal(result.detection.box, largest.box)


def test_faces_below_min_score_are_ignored(detector, two_faces):
    weak, strong = sorted(detector.detect(two_faces), key=lambda f: f.score)
    spec = DetectSpec(min_score=(weak.score + strong.score) / 2, multiple_faces="largest")
    result = detect_and_align(two_faces, detector, spec, AlignSpec())
    assert result.n_faces == 1
    np.testing.assert_array_equal(result.detection.box, strong.box)


def test_select_face_follows_the_policy():
    small_sure = _detection([0, 0, 10, 10], 0.99)
    big_unsure = _detection([0, 0, 50, 50], 0.95)
    faces = [big_unsure, small_sure]
    assert select_face(faces, "most_confident") is small_sure
    assert select_face(faces, "largest") is big_unsure
    assert select_face([], "largest") is None
    with pytest.raises(ValueError, match="Only most_confident, largest are supported"):
        select_face(faces, "biggest")


@pytest.mark.parametrize(
    "image",
    [
        np.zeros((64, 64), np.uint8),
        np.zeros((64, 64, 4), np.uint8),
        np.zeros((64, 64, 3), np.float32),
    ],
    ids=["grey", "rgba", "float"],
)
def test_non_rgb_images_are_rejected(detector, image):
    with pytest.raises(ValueError, match=r"\(H, W, 3\) uint8 RGB.*lightfer.images.load_rgb"):
        detector.detect(image)
    with pytest.raises(ValueError, match="load_rgb"):
        detector.detect_batch([np.zeros((64, 64, 3), np.uint8), image])


def test_a_non_array_is_rejected(detector):
    with pytest.raises(TypeError, match="got list"):
        detector.detect([[0, 0, 0]])


def test_batched_detection_matches_one_image_at_a_time(detector, two_faces, astronaut):
    """Images of several sizes, with and without faces, in one call: one pass per size."""
    noise = np.random.default_rng(1).integers(0, 256, two_faces.shape, dtype=np.uint8)
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    images = [two_faces, small, noise, data.chelsea(), two_faces[:, ::-1].copy(), small[::-1]]
    batched = detector.detect_batch(images)
    for found, image in zip(batched, images, strict=True):
        alone = detector.detect(image)
        assert len(found) == len(alone)
        for a, b in zip(found, alone, strict=True):
            np.testing.assert_allclose(a.box, b.box, atol=1e-3)
            np.testing.assert_allclose(a.points, b.points, atol=1e-3)
            assert a.score == pytest.approx(b.score, abs=1e-5)
    assert [len(found) for found in batched] == [2, 1, 0, 0, 2, 0]  # upside down: no face
    assert detector.detect_batch([]) == []


def test_resolve_device():
    assert resolve_device("cpu") == "cpu"
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="Only auto, cpu and cuda are supported"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="torch sees no GPU; use 'auto' or 'cpu'"):
            resolve_device("cuda")


@pytest.mark.parametrize("shape", [(0, 0, 3), (10, 10, 3), (19, 100, 3)])
def test_images_smaller_than_the_smallest_face_have_none(detector, shape):
    assert detector.detect(np.zeros(shape, np.uint8)) == []


def test_a_detector_built_for_other_settings_is_refused(detector, astronaut):
    with pytest.raises(ValueError, match=r"min_face_size=20.*FaceDetector\.from_spec"):
        detect_and_align(astronaut, detector, DetectSpec(min_face_size=40), AlignSpec())


def test_the_detector_sets_torch_threads(detector):
    assert detector.threads == 1 and torch.get_num_threads() == 1
    with pytest.raises(ValueError, match="threads must be at least 1"):
        FaceDetector(threads=0)


def test_from_spec_builds_a_matching_detector():
    previous = torch.get_num_threads()
    spec = DetectSpec(min_face_size=40, thresholds=(0.5, 0.6, 0.8), factor=0.6)
    try:
        built = FaceDetector.from_spec(spec, threads=1)
    finally:
        torch.set_num_threads(previous)
    assert built.matches(spec) and not built.matches(DetectSpec())


def test_detect_spec_schema():
    for name, field in DetectSpec.model_fields.items():
        assert not field.is_required() and field.description, name
    assert not {"size", "nfiles"} & set(DetectSpec.model_fields)  # DVC's run-cache drops them
    assert DetectSpec(thresholds=[0.5, 0.6, 0.7]).thresholds == (0.5, 0.6, 0.7)
    for bad in (
        {"thresholds": (0.6, 0.7, 1.5)},
        {"min_score": 1.2},
        {"factor": 1.0},
        {"min_face_size": 2},
        {"multiple_faces": "biggest"},
        {"no_face": "drop"},
        {"unknown": 1},
    ):
        with pytest.raises(ValidationError):
            DetectSpec(**bad)
    with pytest.raises(ValidationError, match="frozen"):
        DetectSpec().min_score = 0.5


def test_a_detection_is_read_only_and_checked():
    face = _detection([1, 2, 11, 22], 0.9)
    assert face.area == 200.0
    with pytest.raises(ValueError, match="read-only"):
        face.box[0] = 5
    with pytest.raises(ValueError, match=r"box of 4 values and \(5, 2\) points"):
        Detection(box=[0, 0, 1], score=0.5, points=np.zeros((5, 2)))
