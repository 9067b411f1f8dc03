"""AU proxies from 68 landmarks: pose invariance, direction of each proxy, statuses."""

from __future__ import annotations

import numpy as np
import pytest

from lightfer.au import OK, geometry_aux, geometry_features
from lightfer.au.geometry import GEOMETRY_NAMES
from tests.au.conftest import random_similarity, transform

# iBUG indices moved by the edits below.
_JAW_LOW = list(range(5, 12))
_LOWER_LIP = [*range(55, 60), 65, 66, 67]
_UPPER_LIDS = [37, 38, 43, 44]
_LOWER_LIDS = {37: 41, 38: 40, 43: 47, 44: 46}
_BROWS = list(range(17, 27))


def _feature(shape: np.ndarray, name: str) -> float:
    names, values = geometry_features(shape[None])
    return float(values[0, names.index(name)])


def _features(shape: np.ndarray) -> dict[str, float]:
    names, values = geometry_features(shape[None])
    return dict(zip(names, values[0].tolist(), strict=True))


def _iod(shape: np.ndarray) -> float:
    return float(np.linalg.norm(shape[42:48].mean(0) - shape[36:42].mean(0)))


def _smile(shape):
    shape[[48, 54, 60, 64], 1] -= 0.1 * _iod(shape)


def _frown(shape):
    shape[[48, 54, 60, 64], 1] += 0.1 * _iod(shape)


def _open_jaw(shape):
    shape[_JAW_LOW + _LOWER_LIP, 1] += 0.3 * _iod(shape)


def _close_eyes(shape):
    for upper, lower in _LOWER_LIDS.items():
        shape[upper] = shape[lower]


def _widen_eyes(shape):
    shape[_UPPER_LIDS, 1] -= 0.05 * _iod(shape)


def _raise_brows(shape):
    shape[_BROWS, 1] -= 0.15 * _iod(shape)


def _knit_brows(shape):
    centre = shape[[21, 22], 0].mean()
    shape[[20, 21, 22, 23], 0] += 0.4 * (centre - shape[[20, 21, 22, 23], 0])
    shape[[20, 21, 22, 23], 1] += 0.1 * _iod(shape)


def _stretch_lips(shape):
    centre = shape[[48, 54], 0].mean()
    shape[[48, 54, 60, 64], 0] += 0.15 * (shape[[48, 54, 60, 64], 0] - centre)


def _raise_upper_lip(shape):
    shape[[*range(49, 54), 61, 62, 63], 1] -= 0.08 * _iod(shape)


def _thin_lips(shape):
    shape[[*range(49, 54)], 1] += 0.05 * _iod(shape)
    shape[[*range(55, 60)], 1] -= 0.05 * _iod(shape)


def _raise_chin(shape):
    shape[_JAW_LOW, 1] -= 0.1 * _iod(shape)


def _wrinkle_nose(shape):
    shape[31:36, 1] -= 0.05 * _iod(shape)


@pytest.mark.parametrize(
    ("edit", "up", "down", "unchanged"),
    [
        (_smile, ["AU12_geo"], ["AU15_geo"], ["AU01_geo", "AU45_geo", "AU26_geo"]),
        (_frown, ["AU15_geo"], ["AU12_geo"], ["AU01_geo", "AU45_geo"]),
        (_open_jaw, ["AU26_geo", "AU25_geo"], [], ["AU17_geo", "AU01_geo", "AU45_geo", "AU10_geo"]),
        (_close_eyes, ["AU45_geo"], ["AU05_geo"], ["AU01_geo", "AU12_geo", "AU26_geo"]),
        (_widen_eyes, ["AU05_geo"], ["AU45_geo"], ["AU07_geo", "AU12_geo"]),
        (_raise_brows, ["AU01_geo", "AU02_geo"], ["AU04_geo"], ["AU45_geo", "AU12_geo"]),
        (_knit_brows, ["AU04_geo"], ["AU01_geo"], ["AU02_geo", "AU45_geo"]),
        (_stretch_lips, ["AU20_geo"], [], ["AU12_geo", "AU25_geo", "AU01_geo"]),
        (_raise_upper_lip, ["AU10_geo"], [], ["AU26_geo", "AU09_geo"]),
        (_thin_lips, ["AU23_geo"], [], ["AU20_geo", "AU25_geo"]),
        (_raise_chin, ["AU17_geo"], ["AU26_geo"], ["AU12_geo", "AU25_geo"]),
        (_wrinkle_nose, ["AU09_geo"], ["AU10_geo"], ["AU12_geo", "AU01_geo"]),
    ],
    ids=lambda value: getattr(value, "__name__", None),
)
def test_each_proxy_moves_the_way_its_action_unit_does(mean_shape, edit, up, down, unchanged):
    """An edit moves its proxies by more than 0.02 IOD and unrelated ones by under 0.005 or 1%.

    Unrelated proxies move at all only when an edit shifts the eye centres (means of all six
    eye points), which define the face frame: closing or widening the eyes.
    """
    before = _features(mean_shape)
    edited = mean_shape.copy()
    edit(edited)
    after = _features(edited)
    for name in up:
        assert after[name] > before[name] + 0.02, (name, before[name], after[name])
    for name in down:
        assert after[name] < before[name] - 0.02, (name, before[name], after[name])
    for name in unchanged:
        assert after[name] == pytest.approx(before[name], rel=0.01, abs=0.005), name


def test_the_mean_face_has_open_eyes_and_closed_lips(mean_shape):
    features = _features(mean_shape)
    assert features["AU45_geo"] < -0.2  # eye aspect ratio above 0.2: open
    assert abs(features["AU25_geo"]) < 0.15  # inner lips nearly touch
    assert features["AU20_geo"] == pytest.approx(
        np.linalg.norm(mean_shape[54] - mean_shape[48]) / _iod(mean_shape)
    )


def test_features_are_invariant_to_in_plane_similarity_transforms(mean_shape):
    rng = np.random.default_rng(0)
    faces = mean_shape + rng.normal(0, 2.0, (6, 68, 2))  # six different faces
    names, reference = geometry_features(faces)
    assert names == GEOMETRY_NAMES and reference.shape == (6, len(GEOMETRY_NAMES))
    assert np.isfinite(reference).all()
    for _ in range(5):
        matrix = random_similarity(rng)
        _, moved = geometry_features(transform(matrix, faces))
        np.testing.assert_allclose(moved, reference, atol=1e-9)


def test_manifest_rows_and_point_arrays_give_the_same_features(mean_shape):
    faces = np.stack([mean_shape, mean_shape * 1.5])
    _, from_points = geometry_features(faces)
    _, from_rows = geometry_features(faces.reshape(2, 136))
    np.testing.assert_array_equal(from_points, from_rows)


def test_missing_landmarks_give_nan_rows_and_statuses(mean_shape):
    faces = np.stack([mean_shape] * 4)
    faces[1, 30] = np.nan  # one point missing
    faces[2] = np.nan  # no landmarks at all
    ok = np.array([True, True, True, False])
    _, values = geometry_features(faces)
    assert np.isfinite(values[[0, 3]]).all() and np.isnan(values[[1, 2]]).all()

    aux = geometry_aux(faces, ok)
    assert aux.backend == "geometry" and aux.names == GEOMETRY_NAMES
    assert aux.status.tolist() == [OK, "no_landmarks", "no_landmarks", "face_not_usable"]
    assert aux.values.dtype == np.float32 and aux.values.shape == (4, 15)
    assert np.isfinite(aux.values[0]).all() and np.isnan(aux.values[1:]).all()
    assert aux.counts() == {"no_landmarks": 2, OK: 1, "face_not_usable": 1}


def test_coincident_eyes_are_not_measured(mean_shape):
    face = mean_shape.copy()
    face[36:48] = face[36:48].mean(0)
    assert geometry_aux(face[None]).status.tolist() == ["no_landmarks"]


def test_bad_inputs_are_refused(mean_shape):
    with pytest.raises(ValueError, match=r"\(N, 68, 2\).*landmarks\[None\]"):
        geometry_features(mean_shape)
    with pytest.raises(ValueError, match="one flag per landmark row"):
        geometry_aux(mean_shape[None], np.array([True, False]))
