"""The manifest contract: what prepare writes is what every later stage can trust."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lightfer.errors import DatasetError
from lightfer.manifest import fixed_list, read_manifest, write_manifest


def _table(n: int = 4, **overrides) -> pa.Table:
    dist = np.full((n, 7), 1 / 7, dtype=np.float32)
    columns = {
        "sample_id": pa.array([f"s{i}" for i in range(n)]),
        "split": pa.array(["train"] * (n - 1) + ["test"]),
        "path": pa.array([f"img/{i}.jpg" for i in range(n)]),
        "label": pa.array(np.arange(n) % 7, pa.int8()),
        "source_label": pa.array([str(i) for i in range(n)]),
        "true_dist": fixed_list(dist, pa.float32()),
    }
    columns.update(overrides)
    return pa.table(columns)


def test_round_trip_keeps_values_and_resolves_a_relative_root(tmp_path: Path):
    path = tmp_path / "prepared" / "manifest.parquet"
    write_manifest(path, _table(), image_root="images", face_source="aligned")
    manifest = read_manifest(path)
    assert len(manifest) == 4
    assert manifest.image_path(2) == tmp_path / "prepared" / "images" / "img/2.jpg"
    assert manifest.column("true_dist").shape == (4, 7)
    np.testing.assert_array_equal(manifest.column("label"), [0, 1, 2, 3])


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"label": pa.array([0, 1, 7, 2], pa.int8())}, "label values must lie in 0..6"),
        ({"sample_id": pa.array(["a", "a", "b", "c"])}, "sample_id values are not unique"),
        ({"split": pa.array(["train", "dev", "test", "test"])}, "split values ['dev']"),
        ({"label": pa.array([0, 1, 2, 3], pa.int64())}, "column 'label' is int64"),
        (
            {"true_dist": fixed_list(np.full((4, 7), 0.2, np.float32), pa.float32())},
            "true_dist rows must be non-negative and sum to 1",
        ),
        ({"colour": pa.array(["r"] * 4)}, "unknown columns ['colour']"),
    ],
)
def test_contract_violations_are_refused_before_writing(tmp_path: Path, override, message):
    path = tmp_path / "manifest.parquet"
    with pytest.raises(DatasetError) as info:
        write_manifest(path, _table(**override), image_root=".", face_source="aligned")
    assert message in str(info.value)
    assert not path.exists()


def test_a_manifest_with_another_class_order_is_refused(tmp_path: Path):
    path = tmp_path / "manifest.parquet"
    write_manifest(path, _table(), image_root=".", face_source="aligned")
    table = pq.read_table(path)
    metadata = dict(table.schema.metadata)
    metadata[b"lightfer.classes"] = json.dumps(["anger", "disgust"]).encode()
    pq.write_table(table.replace_schema_metadata(metadata), path)
    with pytest.raises(DatasetError, match="uses class order"):
        read_manifest(path)


def test_missing_or_corrupt_manifest_says_what_to_do(tmp_path: Path):
    with pytest.raises(DatasetError, match="run the prepare stage first"):
        read_manifest(tmp_path / "manifest.parquet")
    (tmp_path / "manifest.parquet").write_bytes(b"not parquet")
    with pytest.raises(DatasetError, match="is not a readable Parquet file"):
        read_manifest(tmp_path / "manifest.parquet")


def test_the_face_source_is_recorded_and_checked(tmp_path: Path):
    path = tmp_path / "manifest.parquet"
    write_manifest(path, _table(), image_root=".", face_source="detect")
    assert read_manifest(path).face_source == "detect"
    with pytest.raises(ValueError, match="face_source 'guess' is not one of"):
        write_manifest(path, _table(), image_root=".", face_source="guess")
    with pytest.raises(DatasetError, match="needs a landmarks column"):
        write_manifest(path, _table(), image_root=".", face_source="landmarks")
