"""The `landmarks` auxiliary space: 68 iBUG points normalised for in-plane pose.

Chen et al. ("Label Distribution Learning on Auxiliary Label Space Graphs for Facial
Expression Recognition", CVPR 2020) built their auxiliary-label graph on facial landmarks as
well as on action units. Here the 68 points are expressed in a face frame that removes the
in-plane similarity (translation, rotation, scale) of the face:

- origin: the midpoint of the two eye centres (eye centre = mean of iBUG points 36-41 and
  42-47);
- x axis: from the image-left eye centre (points 36-41, the subject's right eye) to the
  other one, so the eye line is horizontal;
- y axis: x rotated by +90 degrees in image coordinates, i.e. pointing down towards the
  mouth for an upright face (as image y does);
- unit: the inter-ocular distance (distance between the eye centres).

The eye centres therefore land at (-0.5, 0) and (0.5, 0). Out-of-plane rotation (yaw,
pitch) and identity (face shape) are not removed.
"""

from __future__ import annotations

import numpy as np

from lightfer.au import OK, AuxVectors

NUM_POINTS = 68
LANDMARK_NAMES: tuple[str, ...] = tuple(f"x{i:02d}" for i in range(NUM_POINTS)) + tuple(
    f"y{i:02d}" for i in range(NUM_POINTS)
)
_RIGHT_EYE = slice(36, 42)  # image-left eye
_LEFT_EYE = slice(42, 48)  # image-right eye
_MIN_IOD = 1e-6


def as_points(landmarks: np.ndarray) -> np.ndarray:
    """(N, 68, 2) float64 from (N, 68, 2) or the manifest's (N, 136) x0, y0, x1, y1, ... rows.

    Raises:
        ValueError: any other shape.
    """
    array = np.asarray(landmarks, dtype=np.float64)
    if array.ndim == 2 and array.shape[1] == 2 * NUM_POINTS:
        array = array.reshape(len(array), NUM_POINTS, 2)
    if array.ndim != 3 or array.shape[1:] != (NUM_POINTS, 2):
        raise ValueError(
            f"expected (N, 68, 2) landmarks or (N, 136) rows of x0, y0, x1, y1, ..., got shape "
            f"{array.shape}; wrap a single face as landmarks[None]"
        )
    return array


def normalise_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Map each face's 68 points into the face frame described in the module docstring.

    Args:
        landmarks: (N, 68, 2) image coordinates, or (N, 136) interleaved x, y rows.

    Returns:
        (N, 68, 2) float64. Rows with a non-finite point or coincident eye centres are NaN.
    """
    points = as_points(landmarks)
    eye_a = points[:, _RIGHT_EYE].mean(axis=1)
    eye_b = points[:, _LEFT_EYE].mean(axis=1)
    axis = eye_b - eye_a
    iod = np.linalg.norm(axis, axis=1)
    usable = np.isfinite(points).all(axis=(1, 2)) & (iod > _MIN_IOD)
    iod = np.where(usable, iod, np.nan)
    cos, sin = axis[:, 0] / iod, axis[:, 1] / iod
    centred = points - ((eye_a + eye_b) / 2)[:, None, :]
    x = (centred[..., 0] * cos[:, None] + centred[..., 1] * sin[:, None]) / iod[:, None]
    y = (-centred[..., 0] * sin[:, None] + centred[..., 1] * cos[:, None]) / iod[:, None]
    return np.stack([x, y], axis=-1)


def landmark_status(landmarks: np.ndarray, ok: np.ndarray | None) -> np.ndarray:
    """Per-row status shared by the landmark-based backends.

    `face_not_usable` where `ok` is False (the caller's verdict, e.g. the face cache's
    status), else `no_landmarks` where a point is missing or the eyes coincide, else `OK`.

    Raises:
        ValueError: `ok` does not have one entry per row.
    """
    points = as_points(landmarks)
    n = len(points)
    ok = np.ones(n, dtype=bool) if ok is None else np.asarray(ok, dtype=bool).ravel()
    if ok.shape != (n,):
        raise ValueError(f"ok must have one flag per landmark row ({n}), got shape {ok.shape}")
    iod = np.linalg.norm(
        points[:, _LEFT_EYE].mean(axis=1) - points[:, _RIGHT_EYE].mean(axis=1), axis=1
    )
    measured = np.isfinite(points).all(axis=(1, 2)) & (iod > _MIN_IOD)
    status = np.full(n, OK, dtype=object)
    status[~measured] = "no_landmarks"
    status[~ok] = "face_not_usable"
    return status


def landmark_aux(landmarks: np.ndarray, ok: np.ndarray | None = None) -> AuxVectors:
    """The `landmarks` backend: normalised points flattened to 136 dims `x00..x67, y00..y67`.

    Args:
        landmarks: (N, 68, 2) or (N, 136) image coordinates, NaN where a row has none.
        ok: (N,) bool, False where the face must not be used; None means all usable.

    Returns:
        `AuxVectors` with status `OK`, `no_landmarks` or `face_not_usable`.
    """
    normalised = normalise_landmarks(landmarks)
    status = landmark_status(landmarks, ok)
    values = np.concatenate([normalised[..., 0], normalised[..., 1]], axis=1)
    return AuxVectors("landmarks", LANDMARK_NAMES, values, status)
