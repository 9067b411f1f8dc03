"""A tiny synthetic face cache (`faces.npy` + `faces.parquet`) whose classes are learnable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lightfer.faces.cache import CACHE_FILE, TABLE_FILE
from lightfer.labels import NUM_CLASSES


def write_face_cache(
    directory: Path,
    *,
    n_train: int = 42,
    n_test: int = 14,
    crop: int = 32,
    seed: int = 0,
    bad_rows: tuple[int, ...] = (),
) -> Path:
    """Write a cache whose class k is a bright square at the k-th of 7 positions, plus noise.

    Rows in `bad_rows` get the status "no_face". Labels cycle through the classes.
    """
    rng = np.random.default_rng(seed)
    n = n_train + n_test
    labels = np.arange(n) % NUM_CLASSES
    crops = np.lib.format.open_memmap(
        directory / CACHE_FILE, mode="w+", dtype=np.uint8, shape=(n, crop, crop, 3)
    )
    base = rng.integers(40, 120, size=(n, crop, crop, 3))
    side = crop // 4
    for i, label in enumerate(labels):
        y, x = (label // 3) * side + side // 2, (label % 3) * side + side // 2
        base[i, y : y + side, x : x + side, label % 3] = 250
    crops[:] = base.astype(np.uint8)
    crops.flush()
    del crops
    status = ["no_face" if i in bad_rows else "ok" for i in range(n)]
    table = pa.table(
        {
            "sample_id": [f"s{i:04d}" for i in range(n)],
            "split": ["train"] * n_train + ["test"] * n_test,
            "label": pa.array(labels, pa.int8()),
            "row": pa.array(np.arange(n), pa.int64()),
            "status": status,
        }
    )
    pq.write_table(table, directory / TABLE_FILE)
    return directory
