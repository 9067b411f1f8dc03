"""A dataset's splits for training and evaluation, read from its face cache and manifest."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from lightfer import catalog
from lightfer.errors import DatasetError
from lightfer.faces.cache import OK, load_face_cache
from lightfer.manifest import read_manifest
from lightfer.params import Params
from lightfer.sample_ids import align_to_cache
from lightfer.seeds import derive_seed

__all__ = [
    "Splits",
    "channel_stats",
    "holdout_validation",
    "load_splits",
    "usable_rows",
]

logger = logging.getLogger(__name__)


def usable_rows(table: pa.Table, split: str) -> np.ndarray:
    """Rows of the face cache in `split` whose crop is usable (status "ok"), ascending.

    Raises:
        DatasetError: the split has no usable row.
    """
    mask = pc.and_(pc.equal(table.column("split"), split), pc.equal(table.column("status"), OK))
    rows = table.column("row").filter(mask).to_numpy().astype(np.int64)
    if len(rows) == 0:
        found = sorted(set(table.column("split").to_pylist()))
        raise DatasetError(
            f"the face cache has no usable {split!r} rows (splits present: {found}); check "
            f"the manifest's split column and the align stage's summary"
        )
    return np.sort(rows)


def holdout_validation(
    rows: np.ndarray,
    labels: np.ndarray,
    *,
    fraction: float,
    seed: int,
    groups: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Split training rows into a training and a validation part, reproducibly.

    Without groups the split is stratified: each class gives `round(fraction * n_class)`
    rows, at least one where the class has two or more. With groups (e.g. the manifest's
    `subject` column) whole groups go to validation, in a seeded order, until it holds
    about `fraction` of the rows, so no identity appears on both sides.

    Args:
        rows: candidate rows of the face cache.
        labels: hard label of each of `rows`.
        fraction: share of rows to hold out, in (0, 1).
        seed: seed of the draw.
        groups: group (identity) of each of `rows`, or None.

    Returns:
        `(train_rows, val_rows)`, each ascending.

    Raises:
        ValueError: `fraction` is outside (0, 1), the arrays differ in length, or a
            grouped split would leave either side empty (too few groups).
    """
    rows, labels = np.asarray(rows), np.asarray(labels)
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation fraction {fraction} must lie strictly between 0 and 1")
    if len(labels) != len(rows) or (groups is not None and len(groups) != len(rows)):
        raise ValueError("rows, labels and groups must have one entry per row")
    rng = np.random.default_rng(derive_seed(seed, 0x7A1))
    held = np.zeros(len(rows), dtype=bool)
    if groups is None:
        for label in np.unique(labels):
            members = rng.permutation(np.flatnonzero(labels == label))
            # At least one image of every class that has two (a split without a class
            # cannot select on it), never a class's only image.
            count = max(1, round(fraction * len(members))) if len(members) > 1 else 0
            held[members[:count]] = True
    else:
        names, inverse = np.unique(np.asarray(groups), return_inverse=True)
        counts = np.bincount(inverse, minlength=len(names))
        target, taken = fraction * len(rows), 0
        for group in rng.permutation(len(names)):
            if taken >= target:
                break
            held[inverse == group] = True
            taken += counts[group]
        if held.all() or not held.any():
            raise ValueError(
                f"{len(names)} groups cannot be split {fraction:.0%} / {1 - fraction:.0%} "
                f"with both sides non-empty; use more subjects or no groups"
            )
    return np.sort(rows[~held]), np.sort(rows[held])


def channel_stats(
    crops: np.ndarray,
    rows: np.ndarray,
    *,
    max_images: int | None = 20_000,
    seed: int = 0,
    chunk: int = 1024,
) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Per-channel mean and standard deviation of RGB crops scaled to [0, 1].

    Args:
        crops: the cache, `(N, S, S, 3)` uint8.
        rows: the rows to measure (the training split).
        max_images: measure a seeded random subset of at most this many rows (None: all).
        seed: seed of the subset.
        chunk: rows read at a time.

    Returns:
        `(mean, std)`, three floats each, in the form checkpoints record.
    """
    rows = np.sort(np.asarray(rows))
    if max_images is not None and len(rows) > max_images:
        rng = np.random.default_rng(derive_seed(seed, 0x57A7))
        rows = np.sort(rng.choice(rows, size=max_images, replace=False))
    total = np.zeros(3)
    squares = np.zeros(3)
    for start in range(0, len(rows), chunk):
        pixels = np.asarray(crops[rows[start : start + chunk]], dtype=np.float64) / 255.0
        total += pixels.sum((0, 1, 2))
        squares += np.square(pixels).sum((0, 1, 2))
    count = len(rows) * crops.shape[1] * crops.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0))
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


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
