"""aux-labels: one auxiliary vector (AU intensities or landmarks) per face, from the backend
chosen in `aux.backend`, written to `data/<dataset>/aux.parquet` with a status per face."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lightfer.au import OK, AuxVectors
from lightfer.au.dlib68 import Dlib68
from lightfer.au.geometry import geometry_aux
from lightfer.au.landmarks import landmark_aux
from lightfer.au.mlcr import mlcr_aux
from lightfer.au.openface import find_openface, openface_aux, run_openface
from lightfer.au.oracle import oracle_aux
from lightfer.errors import AuxLabelError, StageOutputError
from lightfer.faces.cache import OK as FACE_OK
from lightfer.faces.cache import load_face_cache
from lightfer.io import write_json, write_parquet
from lightfer.manifest import Manifest, fixed_list, read_manifest
from lightfer.params import AuxParams, Params
from lightfer.training.data import derive_seed
from stages.align import faces_dir
from stages.common import StageSpec, stage_main
from stages.prepare import MANIFEST, prepared_dir

logger = logging.getLogger("lightfer.stages.aux_labels")

_META_BACKEND = b"lightfer.aux_backend"
_META_NAMES = b"lightfer.aux_names"


def aux_path(root: Path, dataset: str) -> Path:
    return root / "data" / dataset / "aux.parquet"


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
        return openface_aux(images, csv_dir=aux.openface_csv_dir / dataset)
    with tempfile.TemporaryDirectory(prefix="openface-") as work:
        return run_openface(binary, images, Path(work))


def write_aux(path: Path, vectors: AuxVectors, manifest: Manifest) -> None:
    """`aux.parquet`: sample_id, row, split, status, vector; backend and names as metadata."""
    table = pa.table(
        {
            "sample_id": manifest.table.column("sample_id"),
            "row": pa.array(np.arange(len(manifest), dtype=np.int64)),
            "split": manifest.table.column("split"),
            "status": pa.array([str(s) for s in vectors.status]),
            "vector": fixed_list(vectors.values.astype(np.float32), pa.float32()),
        }
    )
    metadata = {_META_BACKEND: vectors.backend.encode(), _META_NAMES: ",".join(vectors.names)}
    write_parquet(path, table.replace_schema_metadata(metadata))


def read_aux(path: Path) -> AuxVectors:
    """The vectors `write_aux` wrote, rows in face-cache order.

    Raises:
        StageOutputError: the file is missing or not an aux-labels output.
    """
    if not path.is_file():
        raise StageOutputError(f"{path} does not exist; run the aux-labels stage first")
    table = pq.read_table(path)
    metadata = table.schema.metadata or {}
    if _META_BACKEND not in metadata:
        raise StageOutputError(f"{path} is not an aux-labels output; re-run aux-labels")
    names = tuple(metadata[_META_NAMES].decode().split(","))
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    return AuxVectors(
        backend=metadata[_META_BACKEND].decode(),
        names=names,
        values=np.asarray(flat, dtype=np.float32).reshape(len(table), len(names)),
        status=np.asarray(table.column("status").to_pylist(), dtype=object),
    )


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Write `data/<dataset>/aux.parquet` and `reports/<dataset>/aux.json` (counts by status)."""
    manifest = read_manifest(prepared_dir(root, dataset) / MANIFEST)
    crops, faces = load_face_cache(faces_dir(root, dataset))
    vectors = annotate(
        params.aux, manifest=manifest, crops=crops, faces=faces, dataset=dataset,
        seed=derive_seed(params.base.seed, 0xA0),
    )  # fmt: skip
    write_aux(aux_path(root, dataset), vectors, manifest)
    counts = vectors.counts()
    summary = {
        "backend": vectors.backend,
        "dimensions": len(vectors.names),
        "total": len(vectors),
        "ok": counts.get(OK, 0),
        "skipped": len(vectors) - counts.get(OK, 0),
        "by_status": counts,
    }
    write_json(root / "reports" / dataset / "aux.json", summary)
    if summary["skipped"]:
        logger.warning("%s: no %s vector for %d of %d faces: %s", dataset, vectors.backend,
                       summary["skipped"], len(vectors), counts)  # fmt: skip
    return summary


STAGE = StageSpec(
    name="aux-labels",
    deps=("stages/aux_labels.py", "lightfer/au", "lightfer/manifest.py",
          "data/{dataset}/prepared", "data/{dataset}/faces"),
    outs=("data/{dataset}/aux.parquet", "reports/{dataset}/aux.json"),
    params=("base.seed", "aux"),
    run=run,
)  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(stage_main(STAGE))
