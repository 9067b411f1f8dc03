"""The `geometry` auxiliary space: Action Unit proxies measured on 68 iBUG landmarks.

Without an AU estimator (OpenFace is a separate C++ install; no PyPI package ships AU models
offline), distances between landmarks give a rough, interpretable stand-in: each feature
below measures the facial movement that one AU, or a group of AUs, produces.

All features are computed in the face frame of `lightfer.au.landmarks.normalise_landmarks`
(origin between the eye centres, eye line horizontal, y pointing down towards the mouth,
unit = inter-ocular distance), so they are invariant to in-plane rotation, scale and
translation of the face. `y_i` below is the face-frame y of iBUG point i (larger = lower on
the face), `p_i` the point, `|.|` a Euclidean distance; "mean over eyes" averages the
subject's right eye (points 36-41, corners 36 outer / 39 inner, upper lid 37-38, lower lid
40-41) and left eye (42-47, corners 45 outer / 42 inner, upper lid 43-44, lower lid 46-47).
Every feature is oriented so that a *larger* value means *more* of the AU.

=========  ==============================================================================
AU01_geo   inner brow raiser: mean(y39 - y21, y42 - y22), inner brow ends above the inner
           eye corners.
AU02_geo   outer brow raiser: mean(y36 - y18, y45 - y25), outer brow above the outer eye
           corners.
AU04_geo   brow lowerer: -(|p22 - p21| + AU01_geo) / 2, brows drawn together and down.
AU05_geo   upper lid raiser: mean over eyes of (corner-line y - upper-lid y) / eye width,
           e.g. ((y36 + y39)/2 - (y37 + y38)/2) / |p39 - p36|.
AU07_geo   lid tightener: minus the mean over eyes of (lower-lid y - corner-line y) / eye
           width, e.g. -((y40 + y41)/2 - (y36 + y39)/2) / |p39 - p36|.
AU09_geo   nose wrinkler: -(y31 + y35)/2, nostril wings pulled up towards the eye line.
AU10_geo   upper lip raiser: -(y51 - y33), upper lip pulled up towards the nose base.
AU12_geo   lip corner puller: (y62 + y66)/2 - (y48 + y54)/2, corners above the inner-lip
           centre.
AU15_geo   lip corner depressor: (y48 + y54)/2 - y33, corners below the nose base.
AU17_geo   chin raiser: -(y8 - y57), chin pushed up towards the lower lip.
AU20_geo   lip stretcher: |p54 - p48|, mouth width.
AU23_geo   lip tightener: -((y62 - y51) + (y57 - y66)), thin (tightened or pressed) lips.
AU25_geo   lips part: mean(y67 - y61, y66 - y62, y65 - y63), inner-lip gap.
AU26_geo   jaw drop: y8 - y33, chin below the nose base.
AU45_geo   blink: minus the eye aspect ratio (Soukupova and Cech 2016), mean over eyes of
           (|p37 - p41| + |p38 - p40|) / (2 |p36 - p39|).
=========  ==============================================================================

Limits, to keep in mind when reading neighbours built on these:

- They are raw proxies, not calibrated 0-5 intensities, and most have a non-zero value on a
  neutral face that depends on the person's face shape (brow height, lip thickness, face
  length). Nothing subtracts a person's neutral face, so identity leaks into the space. The
  kNN stage standardises each dimension; that fixes the scale, not the identity offset.
- Out-of-plane rotation is not removed: pitch changes every vertical distance (brow height,
  nose-lip and chin distances), yaw shortens the far half of the face and the mouth width.
- Several proxies share causes: AU12 also widens the mouth (AU20), AU09 also raises the upper
  lip (AU10), jaw drop opens the lips (AU25) and lowers the corners (AU15), AU05 and AU45 are
  both eye openness, AU06 (cheek raiser) narrows the eye from below like AU07. AU06, AU14
  (dimpler) and AU28 leave too little trace on 68 points and have no proxy.
- Landmark noise dominates small movements, especially for dlib on faces below ~100 px.
"""

from __future__ import annotations

import numpy as np

from lightfer.au import AuxVectors
from lightfer.au.landmarks import landmark_status, normalise_landmarks

GEOMETRY_NAMES: tuple[str, ...] = (
    "AU01_geo",
    "AU02_geo",
    "AU04_geo",
    "AU05_geo",
    "AU07_geo",
    "AU09_geo",
    "AU10_geo",
    "AU12_geo",
    "AU15_geo",
    "AU17_geo",
    "AU20_geo",
    "AU23_geo",
    "AU25_geo",
    "AU26_geo",
    "AU45_geo",
)

# Per eye: outer corner, inner corner, upper lid (2), lower lid below each upper-lid point (2).
_EYES = (
    (36, 39, (37, 38), (41, 40)),
    (45, 42, (44, 43), (46, 47)),
)


def _dist(points: np.ndarray, i: int, j: int) -> np.ndarray:
    return np.linalg.norm(points[:, i] - points[:, j], axis=1)


def geometry_features(landmarks: np.ndarray) -> tuple[tuple[str, ...], np.ndarray]:
    """AU proxies of each face, as documented in the module docstring.

    Args:
        landmarks: (N, 68, 2) image coordinates in the iBUG order, or (N, 136) interleaved
            x, y rows as the manifest stores them.

    Returns:
        `GEOMETRY_NAMES` and an (N, 15) float64 array in inter-ocular units (ratios for
        AU05, AU07 and AU45). Rows with a missing point or coincident eyes are NaN.
    """
    p = normalise_landmarks(landmarks)
    y = p[..., 1]

    inner_brow = ((y[:, 39] - y[:, 21]) + (y[:, 42] - y[:, 22])) / 2
    outer_brow = ((y[:, 36] - y[:, 18]) + (y[:, 45] - y[:, 25])) / 2
    upper_lid, lower_lid, aspect = [], [], []
    for outer, inner, (up_a, up_b), (low_a, low_b) in _EYES:
        width = _dist(p, outer, inner)
        corners = (y[:, outer] + y[:, inner]) / 2
        upper_lid.append((corners - (y[:, up_a] + y[:, up_b]) / 2) / width)
        lower_lid.append(((y[:, low_a] + y[:, low_b]) / 2 - corners) / width)
        aspect.append((_dist(p, up_a, low_a) + _dist(p, up_b, low_b)) / (2 * width))
    corners_y = (y[:, 48] + y[:, 54]) / 2

    features = {
        "AU01_geo": inner_brow,
        "AU02_geo": outer_brow,
        "AU04_geo": -(_dist(p, 21, 22) + inner_brow) / 2,
        "AU05_geo": np.mean(upper_lid, axis=0),
        "AU07_geo": -np.mean(lower_lid, axis=0),
        "AU09_geo": -(y[:, 31] + y[:, 35]) / 2,
        "AU10_geo": -(y[:, 51] - y[:, 33]),
        "AU12_geo": (y[:, 62] + y[:, 66]) / 2 - corners_y,
        "AU15_geo": corners_y - y[:, 33],
        "AU17_geo": -(y[:, 8] - y[:, 57]),
        "AU20_geo": _dist(p, 48, 54),
        "AU23_geo": -((y[:, 62] - y[:, 51]) + (y[:, 57] - y[:, 66])),
        "AU25_geo": ((y[:, 67] - y[:, 61]) + (y[:, 66] - y[:, 62]) + (y[:, 65] - y[:, 63])) / 3,
        "AU26_geo": y[:, 8] - y[:, 33],
        "AU45_geo": -np.mean(aspect, axis=0),
    }
    return GEOMETRY_NAMES, np.stack([features[name] for name in GEOMETRY_NAMES], axis=1)


def geometry_aux(landmarks: np.ndarray, ok: np.ndarray | None = None) -> AuxVectors:
    """The `geometry` backend: `geometry_features` with a status per row.

    Args:
        landmarks: (N, 68, 2) or (N, 136) image coordinates, NaN where a row has none.
        ok: (N,) bool, False where the face must not be used (e.g. the face cache's status
            is not ok); None means all usable.

    Returns:
        `AuxVectors` with status `OK`, `no_landmarks` (a missing point, or coincident eye
        centres) or `face_not_usable` (`ok` is False).
    """
    names, values = geometry_features(landmarks)
    return AuxVectors("geometry", names, values, landmark_status(landmarks, ok))
