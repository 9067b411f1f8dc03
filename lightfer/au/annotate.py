"""Annotate a dataset's faces with one auxiliary backend (`aux.backend` in params.yaml)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa

from lightfer.au import AuxVectors
from lightfer.au.dlib68 import Dlib68
from lightfer.au.geometry import geometry_aux
from lightfer.au.landmarks import landmark_aux
from lightfer.au.mlcr import mlcr_aux
from lightfer.au.openface import find_openface, openface_aux, run_openface
from lightfer.au.oracle import oracle_aux
from lightfer.errors import AuxLabelError
from lightfer.faces.cache import OK as FACE_OK
from lightfer.manifest import Manifest
from lightfer.params import AuxParams
from lightfer.seeds import derive_seed

__all__ = ["aligned_landmarks", "annotate", "noise_seed", "oracle_vectors", "usable_faces"]

logger = logging.getLogger(__name__)


def usable_faces(faces: pa.Table) -> np.ndarray:
    """Which rows of `faces.parquet` hold a usable aligned face."""
    return np.asarray(faces.column("status").to_pylist(), dtype=object) == FACE_OK


def aligned_landmarks(
    crops: np.ndarray, faces: pa.Table, *, predict: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The 68 points of every face in aligned-crop coordinates, and which faces are usable.

    Dataset-provided landmarks (warped with the face by `align`) are used where present;
    with `predict`, dlib's 68-point model fills in the other usable faces from their crops.
    """
    ok = usable_faces(faces)
    flat = faces.column("landmarks_aligned").combine_chunks().flatten().to_numpy()
    points = np.asarray(flat, dtype=np.float64).reshape(len(faces), 68, 2)
    missing = np.flatnonzero(ok & np.isnan(points).any(axis=(1, 2)))
    if predict and len(missing):
        logger.info("predicting 68 landmarks with dlib for %d faces", len(missing))
        points[missing] = Dlib68().predict_crops(np.asarray(crops[missing]))
    return points, ok


def annotate(
    aux: AuxParams,
    *,
    manifest: Manifest,
    crops: np.ndarray,
    faces: pa.Table,
    dataset: str,
    seed: int,
) -> AuxVectors:
    """The auxiliary vectors of every manifest row with the backend `aux.backend`.

    Raises:
        AuxLabelError: the backend's inputs are missing (no OpenFace, no MLCR file, ...).
    """
    if aux.backend in ("geometry", "landmarks"):
        points, ok = aligned_landmarks(crops, faces, predict=aux.predict_landmarks)
        return (geometry_aux if aux.backend == "geometry" else landmark_aux)(points, ok)
    if aux.backend == "oracle":
        names = tuple(f"{name}_r" for name in manifest.au_names)
        true = manifest.column("aus") if "aus" in manifest.table.column_names else None
        return oracle_aux(true, names, noise=aux.oracle_noise, seed=seed, ok=usable_faces(faces))
    if aux.backend == "mlcr":
        sample_ids = manifest.table.column("sample_id").to_pylist()
        return mlcr_aux(sample_ids, Path(str(aux.mlcr_csv).replace("<dataset>", dataset)))
    binary = None
    if aux.openface_csv_dir is None and (binary := find_openface(aux.openface_binary)) is None:
        raise AuxLabelError(
            "aux.backend is openface but FaceLandmarkImg was not found (aux.openface_binary, "
            "then PATH): install OpenFace 2, set aux.openface_binary, or import CSVs made "
            "elsewhere with aux.openface_csv_dir"
        )
    images = [manifest.image_path(row) for row in range(len(manifest))]
    if binary is None:
        return openface_aux(
            images,
            csv_dir=aux.openface_csv_dir / dataset,
            min_confidence=aux.openface_min_confidence,
        )
    with tempfile.TemporaryDirectory(prefix="openface-") as work:
        return run_openface(binary, images, Path(work), min_confidence=aux.openface_min_confidence)


def noise_seed(base_seed: int, noise: float) -> int:
    """The seed of an oracle noise level's draw: the same for every training seed, so the
    AU-noise study's seeds of one level differ in training only."""
    return derive_seed(base_seed, 0xA0, round(noise * 1000))


def oracle_vectors(
    aux: AuxParams,
    *,
    noise: float,
    manifest: Manifest,
    crops: np.ndarray,
    faces: pa.Table,
    dataset: str,
    base_seed: int,
) -> AuxVectors:
    """The true AUs plus Gaussian noise of std `noise` (the oracle backend), per face."""
    oracle = aux.model_copy(update={"backend": "oracle", "oracle_noise": noise})
    return annotate(
        oracle,
        manifest=manifest,
        crops=crops,
        faces=faces,
        dataset=dataset,
        seed=noise_seed(base_seed, noise),
    )
