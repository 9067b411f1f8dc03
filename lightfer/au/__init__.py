"""Auxiliary label spaces: per-sample vectors the label-distribution stage builds its kNN on.

Each backend turns per-row inputs (image paths, sample ids, landmarks) into one
`AuxVectors`: a float32 matrix with one row per manifest row, in manifest order, and a
status per row. A row whose status is not `OK` holds NaN: a backend never invents values
for a face it could not measure, and the caller decides whether to drop or impute it.

Backends:

- `openface`: OpenFace 2's 17 AU intensities (`AUxx_r`, 0-5) from `FaceLandmarkImg`
  CSVs, imported or produced by running the program (`run_openface`).
- `mlcr`: 12 AU probabilities from an MLCR (Niu et al., NeurIPS 2019) output table.
- `geometry`: AU proxies computed from 68 iBUG landmarks (raw, uncalibrated).
- `landmarks`: the 68 landmarks themselves, normalised for pose in the image plane (Chen
  et al. used landmarks as an auxiliary label space).
- `oracle`: reserved for dataset-provided AU labels (the manifest's `aus` column).

Landmarks for the last two come from the manifest, the face cache, or `dlib68.Dlib68`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import numpy as np

OK = "ok"
BACKENDS: tuple[str, ...] = ("openface", "mlcr", "geometry", "landmarks", "oracle")


@dataclass(frozen=True, eq=False)
class AuxVectors:
    """Auxiliary vectors of a set of samples, row i belonging to manifest row i.

    The arrays are copied, made read-only, and rows whose status is not `OK` are set to NaN.

    Attributes:
        backend: which backend made them, one of `BACKENDS`.
        names: dimension names, e.g. ``("AU01_r", ..., "AU45_r")``.
        values: (N, D) float32; NaN rows where `status` is not `OK`.
        status: (N,) object array of str: `OK` or a short reason such as
            `openface_no_face`, `openface_missing_csv`, `no_landmarks`, `not_in_csv`,
            `face_not_usable`.

    Raises:
        ValueError: unknown backend, shapes that disagree, or a non-finite value in a row
            marked `OK` (a backend bug: an OK row must be usable as is).
    """

    backend: str
    names: tuple[str, ...]
    values: np.ndarray
    status: np.ndarray

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(
                f"Invalid backend {self.backend!r}. Only {', '.join(BACKENDS)} are supported."
            )
        names = tuple(str(name) for name in self.names)
        if len(set(names)) != len(names):
            raise ValueError(f"dimension names repeat: {names}")
        values = np.array(self.values, dtype=np.float32)
        status = np.array([str(s) for s in np.asarray(self.status).ravel()], dtype=object)
        if values.ndim != 2 or values.shape != (len(status), len(names)):
            raise ValueError(
                f"values must be (N, D) = ({len(status)}, {len(names)}) to match status and "
                f"names, got {values.shape}"
            )
        ok = status == OK
        values[~ok] = np.nan
        bad = ok & ~np.isfinite(values).all(axis=1)
        if bad.any():
            raise ValueError(
                f"{self.backend}: rows {np.flatnonzero(bad)[:10].tolist()} are marked {OK!r} "
                "but hold non-finite values"
            )
        values.setflags(write=False)
        status.setflags(write=False)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "values", values)
        object.__setattr__(self, "status", status)

    def __len__(self) -> int:
        return len(self.status)

    @property
    def ok(self) -> np.ndarray:
        """(N,) bool: rows with usable values."""
        return self.status == OK

    def counts(self) -> dict[str, int]:
        """How many rows have each status, most frequent first."""
        return dict(Counter(self.status.tolist()).most_common())


# Re-exports; the submodules import `AuxVectors` and `OK` from this module, so they come last.
from lightfer.au.dlib68 import Dlib68  # noqa: E402
from lightfer.au.geometry import GEOMETRY_NAMES, geometry_aux, geometry_features  # noqa: E402
from lightfer.au.landmarks import LANDMARK_NAMES, landmark_aux, normalise_landmarks  # noqa: E402
from lightfer.au.mlcr import EMOTIONET_12, mlcr_aux  # noqa: E402
from lightfer.au.openface import (  # noqa: E402
    OPENFACE_NAMES,
    find_openface,
    openface_aux,
    openface_command,
    read_openface_csv,
    run_openface,
)

__all__ = [
    "BACKENDS",
    "EMOTIONET_12",
    "GEOMETRY_NAMES",
    "LANDMARK_NAMES",
    "OK",
    "OPENFACE_NAMES",
    "AuxVectors",
    "Dlib68",
    "find_openface",
    "geometry_aux",
    "geometry_features",
    "landmark_aux",
    "mlcr_aux",
    "normalise_landmarks",
    "openface_aux",
    "openface_command",
    "read_openface_csv",
    "run_openface",
]
