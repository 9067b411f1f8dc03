"""The manifest: one Parquet table per dataset that every later stage reads.

Required columns
    sample_id (string, unique), split (`train`, `val` or `test`), path (image path relative
    to the manifest's image root), label (int8, index into `lightfer.labels.CLASSES`),
    source_label (string: the dataset's own code or name, kept for audits).
Optional columns (present when the dataset has them)
    true_dist (7 float32, canonical order, sums to 1), votes (7 int16 crowd votes),
    box (4 float32: x0, y0, x1, y1 in image pixels), landmarks (136 float32: 68 iBUG points,
    x0, y0, x1, y1, ...), aus (float32 intensities named by the `lightfer.au_names`
    metadata), subject (string: identity, for leakage-free splits).

The image root is stored in the file's key-value metadata (`lightfer.image_root`); a
relative root is resolved against the manifest's own directory, so a project folder can
move without rewriting its manifests. The metadata also says where faces come from
(`lightfer.face_source`, one of `FACE_SOURCES`), which decides how the align stage crops:

- `aligned`: the images are aligned faces already (RAF-DB, FER+, ImageFolder): resize;
- `landmarks`: use the `landmarks` column, detecting faces where a row has none;
- `detect`: whole frames (CAER-S): detect every face with MTCNN.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from lightfer.errors import DatasetError
from lightfer.io import write_parquet
from lightfer.labels import CLASSES, NUM_CLASSES

SPLITS: tuple[str, ...] = ("train", "val", "test")
FACE_SOURCES: tuple[str, ...] = ("aligned", "landmarks", "detect")
NUM_LANDMARKS = 68

REQUIRED: dict[str, pa.DataType] = {
    "sample_id": pa.string(),
    "split": pa.string(),
    "path": pa.string(),
    "label": pa.int8(),
    "source_label": pa.string(),
}
OPTIONAL: dict[str, pa.DataType] = {
    "true_dist": pa.list_(pa.float32(), NUM_CLASSES),
    "votes": pa.list_(pa.int16(), NUM_CLASSES),
    "box": pa.list_(pa.float32(), 4),
    "landmarks": pa.list_(pa.float32(), 2 * NUM_LANDMARKS),
    "subject": pa.string(),
}
_AUS = "aus"
_META_ROOT = b"lightfer.image_root"
_META_AUS = b"lightfer.au_names"
_META_CLASSES = b"lightfer.classes"
_META_FACES = b"lightfer.face_source"


@dataclass(frozen=True)
class Manifest:
    """A validated manifest table and the directory its `path` column is relative to."""

    table: pa.Table
    image_root: Path
    face_source: str
    au_names: tuple[str, ...] = ()

    def __len__(self) -> int:
        return self.table.num_rows

    def column(self, name: str) -> np.ndarray:
        """Return a column as a numpy array (fixed-size lists become 2-D arrays)."""
        col = self.table.column(name).combine_chunks()
        if pa.types.is_fixed_size_list(col.type):
            width = col.type.list_size
            return col.flatten().to_numpy(zero_copy_only=False).reshape(-1, width)
        return col.to_numpy(zero_copy_only=False)

    def image_path(self, row: int) -> Path:
        """Absolute path of the image of row `row`."""
        return self.image_root / self.table.column("path")[row].as_py()


def fixed_list(values: np.ndarray, dtype: pa.DataType) -> pa.FixedSizeListArray:
    """Turn an (N, K) numpy array into a fixed-size list column of width K."""
    values = np.ascontiguousarray(values)
    flat = pa.array(values.reshape(-1), type=dtype)
    return pa.FixedSizeListArray.from_arrays(flat, values.shape[1])


def validate_manifest(table: pa.Table, *, au_names: tuple[str, ...] = (), where: str = "") -> None:
    """Check a manifest table against the contract; raise `DatasetError` naming every problem."""
    problems: list[str] = []
    names = set(table.column_names)
    for name, dtype in REQUIRED.items():
        if name not in names:
            problems.append(f"required column {name!r} is missing")
        elif table.schema.field(name).type != dtype:
            problems.append(f"column {name!r} is {table.schema.field(name).type}, expected {dtype}")
    for name, dtype in OPTIONAL.items():
        if name in names and table.schema.field(name).type != dtype:
            problems.append(f"column {name!r} is {table.schema.field(name).type}, expected {dtype}")
    if _AUS in names:
        expected = pa.list_(pa.float32(), len(au_names))
        if not au_names or table.schema.field(_AUS).type != expected:
            problems.append(f"column 'aus' must be {expected} with matching au_names metadata")
    unknown = names - set(REQUIRED) - set(OPTIONAL) - {_AUS}
    if unknown:
        problems.append(f"unknown columns {sorted(unknown)}")
    if not problems:
        problems += _check_values(table)
    if problems:
        raise DatasetError(
            f"invalid manifest{' ' + where if where else ''}: " + "; ".join(problems)
        )


def _check_values(table: pa.Table) -> list[str]:
    problems = []
    if table.num_rows == 0:
        return ["it has no rows"]
    ids = table.column("sample_id")
    if pc.count_distinct(ids).as_py() != table.num_rows:
        problems.append("sample_id values are not unique")
    bad_split = set(pc.unique(table.column("split")).to_pylist()) - set(SPLITS)
    if bad_split:
        problems.append(f"split values {sorted(map(str, bad_split))} are not one of {SPLITS}")
    labels = table.column("label")
    if pc.min(labels).as_py() < 0 or pc.max(labels).as_py() >= NUM_CLASSES:
        problems.append(f"label values must lie in 0..{NUM_CLASSES - 1} (order {CLASSES})")
    if "true_dist" in table.column_names:
        dist = np.asarray(table.column("true_dist").combine_chunks().flatten()).reshape(-1, 7)
        if (dist < 0).any() or not np.allclose(dist.sum(1), 1.0, atol=1e-4):
            problems.append("true_dist rows must be non-negative and sum to 1")
    if "votes" in table.column_names:
        votes = np.asarray(table.column("votes").combine_chunks().flatten())
        if (votes < 0).any():
            problems.append("votes must be non-negative")
    return problems


def write_manifest(
    path: str | os.PathLike[str],
    table: pa.Table,
    *,
    image_root: str | os.PathLike[str],
    face_source: str,
    au_names: tuple[str, ...] = (),
) -> None:
    """Validate `table` and write it atomically with its image root, face source and AU names."""
    if face_source not in FACE_SOURCES:
        raise ValueError(f"face_source {face_source!r} is not one of {', '.join(FACE_SOURCES)}")
    if face_source == "landmarks" and "landmarks" not in table.column_names:
        raise DatasetError(f"manifest for {path}: face_source 'landmarks' needs a landmarks column")
    validate_manifest(table, au_names=au_names, where=f"for {path}")
    metadata = dict(table.schema.metadata or {})
    metadata[_META_ROOT] = os.fspath(image_root).encode()
    metadata[_META_FACES] = face_source.encode()
    metadata[_META_CLASSES] = json.dumps(CLASSES).encode()
    if au_names:
        metadata[_META_AUS] = json.dumps(list(au_names)).encode()
    write_parquet(path, table.replace_schema_metadata(metadata))


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read and validate a manifest written by `write_manifest`.

    Raises:
        DatasetError: the file is missing, unreadable, was written with another class
            order, or breaks the contract.
    """
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"manifest {path} does not exist; run the prepare stage first")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowInvalid) as exc:
        raise DatasetError(f"manifest {path} is not a readable Parquet file: {exc}") from exc
    metadata = table.schema.metadata or {}
    classes = tuple(json.loads(metadata.get(_META_CLASSES, b"[]")))
    if classes != CLASSES:
        raise DatasetError(
            f"manifest {path} uses class order {classes}, this code expects {CLASSES}; "
            "re-run the prepare stage"
        )
    if _META_ROOT not in metadata or _META_FACES not in metadata:
        raise DatasetError(f"manifest {path} lacks lightfer metadata; re-run the prepare stage")
    au_names = tuple(json.loads(metadata.get(_META_AUS, b"[]")))
    validate_manifest(table, au_names=au_names, where=f"in {path}")
    root = Path(metadata[_META_ROOT].decode())
    if not root.is_absolute():
        root = path.parent / root
    return Manifest(
        table=table,
        image_root=root,
        face_source=metadata[_META_FACES].decode(),
        au_names=au_names,
    )
