"""Neighbour look-ups for the AU-neighbour term: dense per-row tables and neighbour images."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from lightfer.training.data import Batch, BatchRequest, FaceDataset, LoaderWrapper

__all__ = ["NeighbourImages", "dense_neighbour_table"]


def dense_neighbour_table(
    num_rows: int, rows: np.ndarray, neighbours: np.ndarray, weights: np.ndarray
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(num_rows, K)` neighbour rows (-1: none) and weights (0: none) for every cache row.

    A batch's rows index these tables directly; rows outside the graph (validation, test,
    faces without an auxiliary vector) have no neighbours, so the AU term is 0 for them.
    """
    table = np.full((num_rows, neighbours.shape[1]), -1, dtype=np.int64)
    table_weights = np.zeros((num_rows, neighbours.shape[1]), dtype=np.float32)
    table[rows], table_weights[rows] = neighbours, weights
    return torch.from_numpy(table), torch.from_numpy(table_weights)


class NeighbourImages(LoaderWrapper):
    """A training loader whose batches also carry their samples' neighbours' images.

    For the AU term's `batch` source: the loop forwards `batch.neighbour_images` with the
    batch, so `f(x_j)` is the current model's prediction on each neighbour's own image.
    Neighbour images are served unaugmented (the neighbour as it is); a missing neighbour
    (-1) is replaced by the sample itself, with weight 0 in the term.

    Args:
        loader: a training loader yielding `Batch`es.
        dataset: an unaugmented `FaceDataset` whose rows include every neighbour.
        neighbours: `(N, K)` neighbour cache rows of every cache row (-1: none).
    """

    def __init__(self, loader: Any, dataset: FaceDataset, neighbours: torch.Tensor) -> None:
        if dataset.augment is not None:
            raise ValueError("neighbour images are served unaugmented: pass a plain dataset")
        super().__init__(loader)
        self.dataset = dataset
        self.neighbours = neighbours.numpy()
        self.position = np.full(len(self.neighbours), -1, dtype=np.int64)
        self.position[dataset.rows] = np.arange(len(dataset.rows))

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            rows = batch.rows.numpy()
            wanted = self.neighbours[rows]
            wanted = np.where(wanted >= 0, wanted, rows[:, None]).ravel()
            positions = self.position[wanted]
            if (positions < 0).any():
                missing = wanted[positions < 0][:5].tolist()
                raise ValueError(f"neighbour rows {missing} are not in the neighbour dataset")
            images = self.dataset[BatchRequest(positions, 0)].images
            yield batch._replace(neighbour_images=images)
