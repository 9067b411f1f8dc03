"""The auxiliary-vector file (`aux.parquet`): one vector and status per sample, by sample_id."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lightfer.au import AuxVectors
from lightfer.errors import StageOutputError
from lightfer.io import write_parquet
from lightfer.manifest import Manifest, fixed_list
from lightfer.sample_ids import align_to_cache

__all__ = ["read_aux", "write_aux"]

_META_BACKEND = b"lightfer.aux_backend"
_META_NAMES = b"lightfer.aux_names"


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


def read_aux(path: Path, *, sample_ids: Sequence[str], cache: Path) -> AuxVectors:
    """The vectors `write_aux` wrote, one per face-cache row in the cache's order.

    Args:
        path: the aux file.
        sample_ids: the face cache's sample_id per row.
        cache: the face cache's folder (for messages).

    Raises:
        StageOutputError: the file is missing, not an aux-labels output, or does not hold
            exactly the face cache's samples (see `lightfer.sample_ids.align_to_cache`).
    """
    if not path.is_file():
        raise StageOutputError(f"{path} does not exist; run the aux-labels stage first")
    table = pq.read_table(path)
    metadata = table.schema.metadata or {}
    if _META_BACKEND not in metadata:
        raise StageOutputError(f"{path} is not an aux-labels output; re-run aux-labels")
    names = tuple(metadata[_META_NAMES].decode().split(","))
    positions = align_to_cache(
        table.column("sample_id").to_pylist(), sample_ids, table=path, cache=cache
    )
    flat = table.column("vector").combine_chunks().flatten().to_numpy(zero_copy_only=False)
    values = np.asarray(flat, dtype=np.float32).reshape(len(table), len(names))
    status = np.asarray(table.column("status").to_pylist(), dtype=object)
    return AuxVectors(
        backend=metadata[_META_BACKEND].decode(),
        names=names,
        values=values[positions],
        status=status[positions],
    )
