"""Batches of face crops for training and evaluation, read from the aligned-face cache.

The cache (`lightfer.faces.cache`) holds every crop as uint8 in one memory-mapped array, so a
batch is one fancy-indexing read followed by vectorised augmentation on uint8 tensors and a
single float conversion; no image is decoded during training.

Determinism: the loader's sampler (`EpochBatchSampler`) draws the order of epoch `e` from
`(seed, e)` only, and hands each batch a seed drawn from `(seed, e, batch index)` that its
augmentation uses. What a batch holds therefore depends neither on the number of worker
processes nor on what ran before, so a run resumed at epoch `e` sees exactly the batches an
uninterrupted run sees.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler
from torchvision.transforms.v2 import functional as TF

from lightfer.errors import DatasetError
from lightfer.faces.cache import OK
from lightfer.training.config import AugmentConfig

__all__ = [
    "AugmentConfig",
    "Batch",
    "BatchRequest",
    "EpochBatchSampler",
    "FaceDataset",
    "channel_stats",
    "derive_seed",
    "holdout_validation",
    "make_loader",
    "usable_rows",
]

logger = logging.getLogger(__name__)


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends only on `keys` (e.g. `(seed, epoch, batch)`)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint32)
    return int(state[0]) << 31 ^ int(state[1])


class Batch(NamedTuple):
    """A batch as the training loop consumes it.

    Attributes:
        images: `(B, 3, H, W)` float32, normalised with the training split's mean and std.
        labels: `(B,)` int64 hard labels (canonical class order).
        rows: `(B,)` int64 rows of the face cache (for look-ups such as kNN neighbours).
        soft: `(B, C)` float32 soft labels, or None when the dataset has none.
        neighbour_images: `(B*K, 3, H, W)` images of each sample's K neighbours in the
            auxiliary space, forwarded with the batch (the `batch` source of the AU term).
        neighbour_logits: the model's outputs on `neighbour_images`, set by the loop.
    """

    images: Tensor
    labels: Tensor
    rows: Tensor
    soft: Tensor | None = None
    neighbour_images: Tensor | None = None
    neighbour_logits: Tensor | None = None

    def to(self, device: torch.device, *, channels_last: bool = False) -> Batch:
        """Move the batch to `device` (asynchronously from pinned memory)."""
        memory_format = torch.channels_last if channels_last else torch.contiguous_format

        def move(tensor: Tensor | None, **kwargs: Any) -> Tensor | None:
            return None if tensor is None else tensor.to(device, non_blocking=True, **kwargs)

        return Batch(
            move(self.images, memory_format=memory_format),
            move(self.labels),
            move(self.rows),
            move(self.soft),
            move(self.neighbour_images, memory_format=memory_format),
            move(self.neighbour_logits),
        )


class BatchRequest(NamedTuple):
    """Which dataset positions form a batch, and the seed of its augmentation.

    Under distributed training every rank receives the whole global batch in `positions`
    and loads only its `part` (start, stop); the augmentation is drawn for the global batch
    and sliced, so each sample is augmented exactly as a single process would.
    """

    positions: np.ndarray
    seed: int
    part: tuple[int, int] | None = None


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
    rows. With groups (e.g. the manifest's `subject` column) whole groups go to validation,
    in a seeded order, until it holds about `fraction` of the rows, so no identity appears
    on both sides.

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
            held[members[: round(fraction * len(members))]] = True
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


class _Part(NamedTuple):
    """Which images of a batch of `total` a process holds (`mine`, a slice)."""

    mine: slice
    total: int


def _pad_crop(images: Tensor, padding: int, gen: torch.Generator, part: _Part) -> Tensor:
    """Zero-pad by `padding` and cut each image back to its size at a random offset."""
    n, _, h, w = images.shape
    padded = F.pad(images, (padding, padding, padding, padding))
    dy = torch.randint(0, 2 * padding + 1, (part.total,), generator=gen)[part.mine]
    dx = torch.randint(0, 2 * padding + 1, (part.total,), generator=gen)[part.mine]
    ys = (dy[:, None] + torch.arange(h))[:, None, :, None]
    xs = (dx[:, None] + torch.arange(w))[:, None, None, :]
    return padded[
        torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None], ys, xs
    ]


def _resized_crop_box(
    h: int, w: int, config: AugmentConfig, gen: torch.Generator
) -> tuple[int, int, int, int]:
    """torchvision's RandomResizedCrop box `(top, left, height, width)`, from `gen`."""
    log_ratio = math.log(config.ratio_max)
    for _ in range(10):
        u = torch.rand(3, generator=gen).tolist()
        area = h * w * (config.scale_min + (1.0 - config.scale_min) * u[0])
        aspect = math.exp(-log_ratio + 2 * log_ratio * u[1])
        cw, ch = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
        if 0 < cw <= w and 0 < ch <= h:
            top = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
            left = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
            return top, left, ch, cw
    side = min(h, w)
    return (h - side) // 2, (w - side) // 2, side, side


def _augment(
    images: Tensor,
    config: AugmentConfig,
    image_size: int,
    gen: torch.Generator,
    part: _Part | None = None,
) -> Tensor:
    """Random crop and flip of uint8 `(B, 3, S, S)` images; the result is `image_size` square.

    `part` says which slice of a larger batch `images` are: the random draws are made for
    the whole batch and the slice's own are applied (see `BatchRequest`).
    """
    part = _Part(slice(0, len(images)), len(images)) if part is None else part
    if config.crop == "pad" and config.padding > 0:
        images = _pad_crop(images, config.padding, gen, part)
    elif config.crop == "resized":
        h, w = images.shape[-2:]
        boxes = [_resized_crop_box(h, w, config, gen) for _ in range(part.total)][part.mine]
        pairs = zip(images, boxes, strict=True)
        images = torch.stack([TF.resized_crop(img, *box, [image_size] * 2) for img, box in pairs])
    if config.flip:
        flip = torch.rand(part.total, generator=gen)[part.mine] < 0.5
        images = torch.where(flip[:, None, None, None], images.flip(-1), images)
    return images


class FaceDataset(Dataset):
    """Some rows of the face cache, served a batch at a time (index with a `BatchRequest`).

    Args:
        crops: the cache, `(N, S, S, 3)` uint8 (a memmap is reopened, not copied, in worker
            processes).
        rows: the rows of this dataset (e.g. `usable_rows(table, "train")`).
        labels: hard label of every cache row, `(N,)`.
        mean: per-channel mean of [0, 1] RGB (from `channel_stats` on the training split).
        std: per-channel standard deviation.
        image_size: side of the images the model receives; crops are resized to it.
        soft: soft label of every cache row, `(N, C)`, or None.
        augment: augmentation for training, None for evaluation.
    """

    def __init__(
        self,
        crops: np.ndarray,
        rows: np.ndarray,
        labels: np.ndarray,
        *,
        mean: Sequence[float],
        std: Sequence[float],
        image_size: int,
        soft: np.ndarray | None = None,
        augment: AugmentConfig | None = None,
    ) -> None:
        self.crops = crops
        self.rows = np.asarray(rows, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.soft = None if soft is None else np.asarray(soft, dtype=np.float32)
        if len(self.labels) != len(crops) or (
            self.soft is not None and len(self.soft) != len(crops)
        ):
            raise ValueError(
                f"labels ({len(self.labels)}) and soft labels must have one entry per cache "
                f"row ({len(crops)})"
            )
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.image_size = int(image_size)
        self.augment = augment
        self._scale = torch.tensor(self.std).view(1, 3, 1, 1) * 255.0
        self._shift = torch.tensor(self.mean).view(1, 3, 1, 1) * 255.0

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def row_labels(self) -> np.ndarray:
        """Hard label of each of the dataset's rows, in position order."""
        return self.labels[self.rows]

    def __getitem__(self, request: BatchRequest) -> Batch:
        """Read, augment and normalise the batch of `request.positions`."""
        part = None if request.part is None else slice(*request.part)
        rows = self.rows[request.positions if part is None else request.positions[part]]
        order = np.argsort(rows, kind="stable")
        crops = np.empty((len(rows), *self.crops.shape[1:]), dtype=np.uint8)
        crops[order] = self.crops[rows[order]]  # ascending reads from the memmap
        images = torch.from_numpy(crops).permute(0, 3, 1, 2)
        if self.augment is not None:
            gen = torch.Generator().manual_seed(request.seed)
            whole = None if part is None else _Part(part, len(request.positions))
            images = _augment(images, self.augment, self.image_size, gen, whole)
        images = (images.float() - self._shift) / self._scale
        if images.shape[-1] != self.image_size or images.shape[-2] != self.image_size:
            size = (self.image_size, self.image_size)
            images = F.interpolate(images, size=size, mode="bilinear", antialias=True)
        soft = None if self.soft is None else torch.from_numpy(self.soft[rows])
        labels = torch.from_numpy(self.labels[rows])
        return Batch(images.contiguous(), labels, torch.from_numpy(rows), soft)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        crops = self.crops
        if isinstance(crops, np.memmap) and crops.filename is not None:
            state["crops"] = (crops.filename, crops.offset, crops.shape, crops.dtype.str)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if isinstance(state["crops"], tuple):
            filename, offset, shape, dtype = state["crops"]
            state["crops"] = np.memmap(filename, dtype, mode="r", offset=offset, shape=shape)
        self.__dict__.update(state)


class EpochBatchSampler(Sampler[BatchRequest]):
    """Yields the `BatchRequest`s of one epoch; the order depends only on (seed, epoch).

    Call `set_epoch` before each epoch (as with `DistributedSampler`). With `world_size > 1`
    every rank walks the same global batches of `batch_size` samples and takes its own
    near-equal contiguous part of each, so the ranks together see exactly the
    batches, and augmentations, of a single process: with gradients averaged across ranks
    (DDP), one step trains on the same global batch.

    Args:
        labels: label of each dataset position (used when `balanced`).
        batch_size: samples per batch.
        seed: seed of every draw.
        shuffle: draw a random order (training) instead of the positions in order.
        balanced: draw `len(labels)` positions with replacement, with probability
            proportional to 1 / (size of the position's class).
        drop_last: drop a final incomplete batch (training: batch norm needs >= 2 samples).
        rank: this process's rank.
        world_size: number of processes sharing the epoch.
    """

    def __init__(
        self,
        labels: np.ndarray,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        balanced: bool = False,
        drop_last: bool = True,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size {batch_size} must be at least 1")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must lie in 0..{world_size - 1}")
        self.labels = np.asarray(labels)
        self.batch_size, self.seed, self.shuffle = batch_size, seed, shuffle
        self.balanced, self.drop_last = balanced, drop_last
        self.rank, self.world_size = rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order and augmentation seeds `__iter__` yields."""
        self.epoch = epoch

    def _order(self) -> np.ndarray:
        n = len(self.labels)
        if not self.shuffle:
            return np.arange(n)
        rng = np.random.default_rng(derive_seed(self.seed, self.epoch))
        if not self.balanced:
            return rng.permutation(n)
        _, inverse, counts = np.unique(self.labels, return_inverse=True, return_counts=True)
        weights = 1.0 / counts[inverse]
        return rng.choice(n, size=n, replace=True, p=weights / weights.sum())

    def _batches(self) -> list[np.ndarray]:
        order = self._order()
        stop = len(order) // self.batch_size * self.batch_size if self.drop_last else len(order)
        if stop == 0:
            stop = len(order)  # fewer samples than one batch: keep them rather than nothing
        return [order[i : i + self.batch_size] for i in range(0, stop, self.batch_size)]

    def __iter__(self) -> Iterator[BatchRequest]:
        for index, positions in enumerate(self._batches()):
            seed = derive_seed(self.seed, self.epoch, index, 0)
            if self.world_size == 1:
                yield BatchRequest(positions, seed)
                continue
            bounds = np.linspace(0, len(positions), self.world_size + 1).round().astype(int)
            part = (int(bounds[self.rank]), int(bounds[self.rank + 1]))
            yield BatchRequest(positions, seed, part)

    def __len__(self) -> int:
        return len(self._batches())


class LoaderWrapper:
    """A training loader that adds something to each batch of the loader it wraps.

    Subclasses define `__iter__`; everything else (`sampler`, `len`) is the wrapped
    loader's, so `fit` treats the wrapper as any training loader.
    """

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)


def make_loader(
    dataset: FaceDataset,
    *,
    batch_size: int,
    train: bool,
    seed: int = 0,
    balanced: bool = False,
    num_workers: int = 0,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A `DataLoader` that yields `Batch`es of `dataset`.

    Args:
        dataset: the rows to serve.
        batch_size: samples per batch.
        train: shuffle (seeded per epoch) and drop the last incomplete batch; otherwise
            serve every position once, in order.
        seed: seed of the order and the augmentation.
        balanced: class-balanced resampling with replacement (training only).
        num_workers: worker processes (0: load in the main process).
        pin_memory: pin batches for asynchronous copies to a GPU.
        rank: this process's rank under distributed training.
        world_size: number of distributed processes.

    Returns:
        The loader; its `sampler` has `set_epoch`.
    """
    sampler = EpochBatchSampler(
        dataset.row_labels, batch_size, seed=seed, shuffle=train, balanced=balanced and train,
        drop_last=train, rank=rank, world_size=world_size,
    )  # fmt: skip
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )
