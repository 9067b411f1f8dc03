"""A dataset's splits for training and evaluation, read from its face cache and manifest."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lightfer import catalog
from lightfer.faces.cache import load_face_cache
from lightfer.manifest import read_manifest
from lightfer.params import Params
from lightfer.sample_ids import align_to_cache
from lightfer.training.data import channel_stats, holdout_validation, usable_rows

__all__ = ["Splits", "load_splits"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Splits:
    """A dataset's face cache split for training, with the training split's statistics.

    Every array is in face-cache row order; `sample_ids` names every cache row, the key by
    which other tables (the manifest, soft labels, auxiliary vectors, the neighbour graph)
    join the cache.
    """

    crops: np.ndarray
    labels: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    true_dist: np.ndarray | None
    sample_ids: np.ndarray
    cache: Path

    @property
    def usable(self) -> np.ndarray:
        """`(N,)` bool: the cache rows in a split (their faces usable)."""
        mask = np.zeros(len(self.crops), dtype=bool)
        mask[np.concatenate([self.train, self.val, self.test])] = True
        return mask


def load_splits(params: Params, root: Path, dataset: str) -> Splits:
    """Usable rows per split; validation is the dataset's own or held out from train.

    The held-out validation split (`train.val_fraction`) depends on `base.seed` only, so
    the LDG and every EfficientFace run of a dataset select their epoch on the same
    images; it is drawn by subject where the manifest knows subjects, so no identity is
    on both sides.
    """
    val_fraction, seed = params.train.val_fraction, params.base.seed
    cache, manifest_path = catalog.faces_dir(root, dataset), catalog.manifest_path(root, dataset)
    crops, table = load_face_cache(cache)
    manifest = read_manifest(manifest_path)
    sample_ids = np.asarray(table.column("sample_id").to_pylist(), dtype=object)
    # The manifest's row of each cache row, matched by sample_id.
    order = align_to_cache(
        manifest.table.column("sample_id").to_pylist(), sample_ids, table=manifest_path, cache=cache
    )
    labels = np.asarray(table.column("label").to_numpy(), dtype=np.int64)
    present = set(table.column("split").to_pylist())
    train = usable_rows(table, "train")
    val = usable_rows(table, "val") if "val" in present else np.empty(0, dtype=np.int64)
    if len(val) == 0 and val_fraction > 0:
        has_subjects = "subject" in manifest.table.column_names
        groups = manifest.column("subject")[order[train]] if has_subjects else None
        train, val = holdout_validation(
            train, labels[train], fraction=val_fraction, seed=seed, groups=groups
        )
    mean, std = channel_stats(crops, train, seed=seed)
    test = usable_rows(table, "test")
    has_dist = "true_dist" in manifest.table.column_names
    logger.info("%s: %d train, %d val, %d test faces", dataset, len(train), len(val), len(test))
    return Splits(
        crops=crops,
        labels=labels,
        train=train,
        val=val,
        test=test,
        mean=mean,
        std=std,
        true_dist=manifest.column("true_dist")[order] if has_dist else None,
        sample_ids=sample_ids,
        cache=cache,
    )
