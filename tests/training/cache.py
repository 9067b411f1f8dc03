"""A tiny synthetic face cache (`faces.npy` + `faces.parquet`) whose classes are learnable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lightfer.faces.cache import CACHE_FILE, TABLE_FILE
from lightfer.labels import NUM_CLASSES
from lightfer.training.neighbours import dense_neighbour_table


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


def random_soft_labels_and_graph(
    n_rows: int, train: np.ndarray, *, k: int = 3, seed: int = 0
) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """Seeded soft labels for every row and a random K-neighbour graph over `train`.

    Returns `(soft, neighbours, weights)`: `(N, C)` float32 Dirichlet draws, and the
    `dense_neighbour_table` of each training row's `k` distinct neighbours with weights in
    [0.2, 1) (what the AU term reads).
    """
    rng = np.random.default_rng(seed)
    soft = rng.dirichlet(np.ones(NUM_CLASSES), size=n_rows).astype(np.float32)
    picks = np.stack([rng.choice(train, size=k, replace=False) for _ in train])
    weights = rng.uniform(0.2, 1.0, size=picks.shape).astype(np.float32)
    return soft, *dense_neighbour_table(n_rows, train, picks, weights)
