"""Batches of real face crops, normalised as training normalises them, for deployment checks.

int8 calibration (`lightfer export --int8`, the benchmark's int8 files) and the benchmark's
agreement between runtimes both feed exported models the align stage's crops of one split,
through the training loader's evaluation path (`FaceDataset` without augmentation: resized
to the model's input size when needed, then `(x - 255 mean) / (255 std)`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np
from torch import Tensor

from lightfer.faces.cache import load_face_cache
from lightfer.splits import usable_rows
from lightfer.training.data import BatchRequest, FaceDataset

__all__ = ["FaceBatches", "cache_split", "normalised_batches", "seeded_subset"]

FaceBatches = Callable[[], Iterator[Tensor]]


def seeded_subset(count: int, limit: int, *, seed: int = 0) -> np.ndarray:
    """Positions of at most `limit` of `count` items, a seeded random choice, ascending."""
    if count <= limit:
        return np.arange(count)
    return np.sort(np.random.default_rng(seed).choice(count, limit, replace=False))


def cache_split(cache: str | Path, split: str, *, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """The crops of a face cache and its usable rows of `split` (at most `limit`, seeded).

    Raises:
        StageOutputError: the cache is missing or inconsistent (`load_face_cache`).
        DatasetError: the split has no usable row.
    """
    crops, table = load_face_cache(Path(cache))
    rows = usable_rows(table, split)
    return crops, rows[seeded_subset(len(rows), limit)]


def normalised_batches(
    crops: np.ndarray,
    rows: np.ndarray,
    *,
    mean: Sequence[float],
    std: Sequence[float],
    image_size: int,
    batch_size: int = 32,
) -> FaceBatches:
    """A callable yielding `(n, 3, S, S)` float32 batches of `crops[rows]`, in row order.

    Args:
        crops: `(N, H, W, 3)` uint8 RGB crops (e.g. a face cache's memory map).
        rows: the crops to use.
        mean: per-channel normalisation mean of [0, 1] RGB (the model's).
        std: per-channel normalisation standard deviation.
        image_size: S, the model's input side; crops are resized to it.
        batch_size: images per batch.
    """
    labels = np.zeros(len(crops), np.int64)  # unused: these batches feed inference only
    dataset = FaceDataset(crops, rows, labels, mean=mean, std=std, image_size=image_size)

    def batches() -> Iterator[Tensor]:
        for start in range(0, len(dataset), batch_size):
            positions = np.arange(start, min(start + batch_size, len(dataset)))
            yield dataset[BatchRequest(positions, 0)].images

    return batches
