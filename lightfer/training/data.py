"""Batches of face crops for training and evaluation, read from the aligned-face cache.

The cache (`lightfer.faces.cache`) holds every crop as uint8 in one memory-mapped array, so a
batch is one fancy-indexing read, augmentation on uint8 (image by image: each crop has its
own box) and one float conversion and normalisation of the whole batch; no image is decoded
during training. At 224 px that per-sample work cannot feed a GPU from a few processes
(`scripts/bench_loader.py`): a dataset built with `on_device=True` serves `RawBatch`es
instead, whose augmentation is drawn alike but applied, batched, on the device
(`lightfer.training.device_augment`), with the same results.

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
import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from lightfer.seeds import derive_seed
from lightfer.training.config import AugmentConfig
from lightfer.training.device_augment import crop_resize_flip

__all__ = [
    "AugmentConfig",
    "Batch",
    "BatchRequest",
    "EpochBatchSampler",
    "FaceDataset",
    "RawBatch",
    "make_loader",
]

logger = logging.getLogger(__name__)


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


class RawBatch(NamedTuple):
    """A batch of uint8 crops whose augmentation and normalisation wait for the device.

    A `FaceDataset` built with `on_device=True` serves these: the loader only reads the
    crops and draws their augmentation, and `to` moves the batch and makes there the `Batch`
    the CPU path makes (see `lightfer.training.device_augment` for how close), so a loop
    that calls `batch.to(device)` consumes either kind. A quarter of the float batch's
    size, it is also cheaper to pass between processes and to pin.

    Attributes:
        images: `(B, 3, S, S)` uint8 crops as the cache holds them (channels-last memory).
        labels: as in `Batch`.
        rows: as in `Batch`.
        soft: as in `Batch`.
        boxes: `(B, 4)` int64 crop boxes `(top, left, height, width)`, or None: no
            augmentation.
        flips: `(B,)` bool, mirror the crop horizontally (None with `boxes`).
        crop_size: side of the crops (each box is resized to it).
        shift: `(1, 3, 1, 1)` float32, 255 times the mean subtracted.
        scale: `(1, 3, 1, 1)` float32, 255 times the standard deviation divided by.
        image_size: side of the images the model receives.
        neighbour_images: as in `Batch` (normalised float32).
    """

    images: Tensor
    labels: Tensor
    rows: Tensor
    soft: Tensor | None
    boxes: Tensor | None
    flips: Tensor | None
    crop_size: int
    shift: Tensor
    scale: Tensor
    image_size: int
    neighbour_images: Tensor | None = None

    def to(self, device: torch.device, *, channels_last: bool = False) -> Batch:
        """Move the batch to `device`, then crop, flip and normalise it there."""
        images = self.images.to(device, non_blocking=True)
        if self.boxes is None or self.flips is None:
            images = images.to(torch.float32, memory_format=torch.contiguous_format)
        else:
            images = crop_resize_flip(images, self.boxes, self.flips, self.crop_size)
        shift, scale = self.shift.to(device), self.scale.to(device)
        images = _normalise(images, shift, scale, self.image_size)
        batch = Batch(images, self.labels, self.rows, self.soft, self.neighbour_images)
        return batch.to(device, channels_last=channels_last)


class BatchRequest(NamedTuple):
    """Which dataset positions form a batch, and the seed of its augmentation.

    Under distributed training every rank receives the whole global batch in `positions`
    and loads only its `part` (start, stop); the augmentation is drawn for the global batch
    and sliced, so each sample is augmented exactly as a single process would.
    """

    positions: np.ndarray
    seed: int
    part: tuple[int, int] | None = None


class _Part(NamedTuple):
    """Which images of a batch of `total` a process holds (`mine`, a slice)."""

    mine: slice
    total: int


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


class _Augmentation(NamedTuple):
    """A batch's random augmentation, drawn from its seed.

    Attributes:
        boxes: `(B, 4)` int64 `(top, left, height, width)` of each sample's crop; a box
            reaching beyond the image takes zeros there (crop=pad).
        flips: `(B,)` bool, mirror the crop horizontally.
        size: side of the crops (each box is resized to it).
    """

    boxes: Tensor
    flips: Tensor
    size: int


def _draw_augmentation(
    config: AugmentConfig, side: int, image_size: int, gen: torch.Generator, part: _Part
) -> _Augmentation:
    """Draw the augmentation of a batch of `side`-pixel crops for the whole batch, keep `part`'s.

    The draws come from `gen` in a fixed order (crop offsets or boxes, then flips), so a
    batch is augmented alike wherever the augmentation is applied.
    """
    n = part.total
    boxes = torch.tensor([[0, 0, side, side]]).repeat(n, 1)
    size = side
    if config.crop == "pad" and config.padding > 0:
        for axis in (0, 1):
            offset = torch.randint(0, 2 * config.padding + 1, (n,), generator=gen)
            boxes[:, axis] = offset - config.padding
    elif config.crop == "resized":
        boxes = torch.tensor([_resized_crop_box(side, side, config, gen) for _ in range(n)])
        size = image_size
    flips = torch.zeros(n, dtype=torch.bool)
    if config.flip:
        flips = torch.rand(n, generator=gen) < 0.5
    return _Augmentation(boxes[part.mine], flips[part.mine], size)


def _augment(images: Tensor, augmentation: _Augmentation) -> Tensor:
    """Apply `augmentation` to uint8 `(B, 3, S, S)` images, image by image.

    A box of the output's size is copied (zeros beyond the image), any other one is resized
    by torchvision (antialiased bilinear, its uint8 kernel). Without crops the flips are made
    in `images` itself, which must then be writable.
    """
    n, _, h, w = images.shape
    size = augmentation.size
    boxes = augmentation.boxes.tolist()
    if size != h or size != w or any(box != [0, 0, h, w] for box in boxes):
        out = torch.empty((n, size, size, 3), dtype=torch.uint8).permute(0, 3, 1, 2)
        for target, image, box in zip(out, images, boxes, strict=True):
            _crop(target, image, *box)
        images = out
    for index in augmentation.flips.nonzero()[:, 0].tolist():
        images[index] = images[index].flip(-1)
    return images


def _crop(target: Tensor, image: Tensor, top: int, left: int, height: int, width: int) -> None:
    """Write `image`'s box into `target`, resized to `target`'s size if it differs."""
    size, h, w = target.shape[-1], image.shape[-2], image.shape[-1]
    if (height, width) != (size, size):
        # Imported here: torchvision costs a process about 1.5 s, and 48-pixel runs never crop.
        from torchvision.transforms.v2 import functional as TF

        target.copy_(TF.resized_crop(image, top, left, height, width, [size, size]))
        return
    y0, y1, x0, x1 = max(0, -top), min(size, h - top), max(0, -left), min(size, w - left)
    if (y0, y1, x0, x1) != (0, size, 0, size):
        target.zero_()
    if y0 < y1 and x0 < x1:
        target[:, y0:y1, x0:x1] = image[:, top + y0 : top + y1, left + x0 : left + x1]


def _batch_tensor(shape: Sequence[int], dtype: torch.dtype) -> Tensor:
    """An empty tensor for a batch; in a loader worker, in shared memory.

    A worker hands its batches to the main process through shared memory: a tensor
    allocated there from the start needs no copy into it (`default_collate` does the same).
    """
    if get_worker_info() is None:
        return torch.empty(shape, dtype=dtype)
    storage = torch.UntypedStorage._new_shared(math.prod(shape) * dtype.itemsize)
    return torch.empty(0, dtype=dtype).set_(storage, 0, shape)


def _normalise(images: Tensor, shift: Tensor, scale: Tensor, image_size: int) -> Tensor:
    """Normalise float grey levels in place; resize them to `image_size` square if needed."""
    images = images.sub_(shift).div_(scale)
    if images.shape[-1] != image_size or images.shape[-2] != image_size:
        size = (image_size, image_size)
        images = F.interpolate(images, size=size, mode="bilinear", antialias=True)
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
        on_device: serve `RawBatch`es, whose augmentation (drawn here, as for `Batch`es)
            and normalisation are made on the device they are moved to; for GPUs, which
            the per-sample CPU work cannot feed at 224 px.
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
        on_device: bool = False,
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
        self.on_device = on_device
        self._scale = torch.tensor(self.std).view(1, 3, 1, 1) * 255.0
        self._shift = torch.tensor(self.mean).view(1, 3, 1, 1) * 255.0

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def row_labels(self) -> np.ndarray:
        """Hard label of each of the dataset's rows, in position order."""
        return self.labels[self.rows]

    def __getitem__(self, request: BatchRequest) -> Batch | RawBatch:
        """Read, augment and normalise the batch of `request.positions`.

        With `on_device`, read it and draw its augmentation only (a `RawBatch`).
        """
        part = slice(None) if request.part is None else slice(*request.part)
        rows = self.rows[request.positions[part]]
        order = np.argsort(rows, kind="stable")
        shape = (len(rows), *self.crops.shape[1:])
        if self.on_device:
            crops = _batch_tensor(shape, torch.uint8)
        else:
            crops = torch.empty(shape, dtype=torch.uint8)
        crops.numpy()[order] = self.crops[rows[order]]  # ascending reads from the memmap
        images, side = crops.permute(0, 3, 1, 2), shape[-2]
        augmentation = None
        if self.augment is not None:
            gen = torch.Generator().manual_seed(request.seed)
            whole = _Part(part, len(request.positions))
            augmentation = _draw_augmentation(self.augment, side, self.image_size, gen, whole)
        soft = None if self.soft is None else torch.from_numpy(self.soft[rows])
        labels, rows = torch.from_numpy(self.labels[rows]), torch.from_numpy(rows)
        if self.on_device:
            boxes, flips, size = (None, None, side) if augmentation is None else augmentation
            return RawBatch(
                images,
                labels,
                rows,
                soft,
                boxes=boxes,
                flips=flips,
                crop_size=size,
                shift=self._shift,
                scale=self._scale,
                image_size=self.image_size,
            )
        if augmentation is not None:
            images = _augment(images, augmentation)
        images = _batch_tensor(images.shape, torch.float32).copy_(images)
        images = _normalise(images, self._shift, self._scale, self.image_size)
        return Batch(images, labels, rows, soft)

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
    """A `DataLoader` that yields `Batch`es of `dataset` (`RawBatch`es if `on_device`).

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
        dataset.row_labels,
        batch_size,
        seed=seed,
        shuffle=train,
        balanced=balanced and train,
        drop_last=train,
        rank=rank,
        world_size=world_size,
    )
    return DataLoader(
        dataset,
        batch_size=None,
        sampler=sampler,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )
