"""The `landmarks` auxiliary space and the shared result type."""

from __future__ import annotations

import numpy as np
import pytest

from lightfer.au import OK, AuxVectors, landmark_aux, normalise_landmarks
from lightfer.au.landmarks import LANDMARK_NAMES
from tests.au.conftest import random_similarity, transform


def test_normalised_faces_have_unit_horizontal_eye_line(mean_shape):
    rng = np.random.default_rng(1)
    faces = np.stack([transform(random_similarity(rng), mean_shape) for _ in range(8)])
    normalised = normalise_landmarks(faces)
    eyes = np.stack([normalised[:, 36:42].mean(1), normalised[:, 42:48].mean(1)], axis=1)
    np.testing.assert_allclose(eyes, np.broadcast_to([[-0.5, 0], [0.5, 0]], eyes.shape), atol=1e-12)
    # Upright in the face frame whatever the rotation: brows above the eyes, chin below.
    assert (normalised[:, 19, 1] < 0).all() and (normalised[:, 8, 1] > 1).all()
    np.testing.assert_allclose(normalised, normalised[:1].repeat(8, axis=0), atol=1e-9)


def test_landmark_aux_flattens_x_then_y(mean_shape):
    face = mean_shape.copy()
    face[:, 0] = 2 * face[:, 0].mean() - face[:, 0]  # mirrored: eyes swap sides
    aux = landmark_aux(np.stack([mean_shape, face, np.full((68, 2), np.nan)]), [True, True, True])
    assert aux.backend == "landmarks" and aux.names == LANDMARK_NAMES
    assert aux.names[:2] == ("x00", "x01") and aux.names[68] == "y00" and len(aux.names) == 136
    assert aux.status.tolist() == [OK, OK, "no_landmarks"]
    normalised = normalise_landmarks(mean_shape[None])[0]
    np.testing.assert_allclose(aux.values[0, :68], normalised[:, 0], atol=1e-6)
    np.testing.assert_allclose(aux.values[0, 68:], normalised[:, 1], atol=1e-6)
    # A mirror image is no similarity transform: the frame keeps it upside down.
    assert aux.values[1, 68 + 8] < 0 < aux.values[0, 68 + 8]


def test_aux_vectors_blank_unusable_rows_and_are_read_only():
    values = np.arange(6, dtype=np.float64).reshape(3, 2)
    aux = AuxVectors("oracle", ("a", "b"), values, ["ok", "missing", "ok"])
    assert len(aux) == 3 and aux.values.dtype == np.float32
    assert np.isnan(aux.values[1]).all() and aux.values[2].tolist() == [4.0, 5.0]
    assert values[1].tolist() == [2.0, 3.0]  # the caller's array is untouched
    assert aux.ok.tolist() == [True, False, True]
    assert aux.counts() == {"ok": 2, "missing": 1}
    with pytest.raises(ValueError, match="read-only"):
        aux.values[0, 0] = 1.0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "openfaces"}, "Invalid backend 'openfaces'. Only openface, mlcr"),
        ({"names": ("a",)}, r"values must be \(N, D\) = \(2, 1\)"),
        ({"status": ["ok"]}, r"values must be \(N, D\) = \(1, 2\)"),
        ({"names": ("a", "a")}, "dimension names repeat"),
        ({"values": [[1.0, np.inf], [0.0, 0.0]]}, r"rows \[0\] are marked 'ok'"),
    ],
)
def test_aux_vectors_are_checked(kwargs, message):
    arguments = {
        "backend": "geometry",
        "names": ("a", "b"),
        "values": np.zeros((2, 2)),
        "status": ["ok", "ok"],
    } | kwargs
    with pytest.raises(ValueError, match=message):
        AuxVectors(**arguments)


def test_a_constant_space_is_refused_before_t_sne(tmp_path):
    from lightfer.au.analysis import write_tsne_map
    from lightfer.errors import AuxLabelError

    vectors = np.ones((20, 5))
    with pytest.raises(AuxLabelError, match="every vector is the same"):
        write_tsne_map(tmp_path / "map.png", vectors, np.zeros(20, int), title="flat")
    assert not (tmp_path / "map.png").exists()
