"""Batches from the face cache: usable rows, held-out validation, statistics, determinism."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from lightfer.errors import DatasetError
from lightfer.faces.cache import load_face_cache
from lightfer.training.config import AugmentConfig
from lightfer.training.data import (
    BatchRequest,
    EpochBatchSampler,
    FaceDataset,
    channel_stats,
    holdout_validation,
    make_loader,
    usable_rows,
)
from tests.training.cache import write_face_cache

MEAN, STD = (0.3, 0.3, 0.3), (0.2, 0.2, 0.2)


@pytest.fixture
def cache(tmp_path):
    return load_face_cache(write_face_cache(tmp_path, bad_rows=(3, 50)))


def _dataset(cache, *, split="train", augment=None, image_size=32, soft=None):
    crops, table = cache
    labels = table.column("label").to_numpy()
    return FaceDataset(
        crops, usable_rows(table, split), labels, mean=MEAN, std=STD, image_size=image_size,
        soft=soft, augment=augment,
    )  # fmt: skip


def _collect(loader, epoch):
    loader.sampler.set_epoch(epoch)
    return [(b.images.clone(), b.rows.clone()) for b in loader]


def test_usable_rows_skip_bad_status_and_unknown_split_says_so(cache):
    _, table = cache
    train = usable_rows(table, "train")
    assert 3 not in train and len(train) == 41
    assert 50 not in usable_rows(table, "test")
    with pytest.raises(DatasetError, match=r"no usable 'val' rows \(splits present"):
        usable_rows(table, "val")


def test_batches_are_normalised_and_carry_labels_rows_and_soft_labels(cache):
    crops, table = cache
    soft = np.full((len(crops), 7), 1 / 7, dtype=np.float32)
    dataset = _dataset(cache, split="test", soft=soft)
    batches = list(make_loader(dataset, batch_size=5, train=False))
    rows = torch.cat([b.rows for b in batches]).numpy()
    assert np.array_equal(rows, usable_rows(table, "test"))  # every row once, in order
    first = batches[0]
    assert first.images.shape == (5, 3, 32, 32) and first.images.dtype == torch.float32
    expected = (crops[rows[0]].transpose(2, 0, 1) / 255.0 - 0.3) / 0.2
    assert np.allclose(first.images[0].numpy(), expected, atol=1e-5)
    assert np.array_equal(first.labels.numpy(), table.column("label").to_numpy()[rows[:5]])
    assert first.soft.shape == (5, 7)


def test_images_are_resized_to_the_model_input(cache):
    for augment in (None, AugmentConfig(), AugmentConfig(crop="resized")):
        dataset = _dataset(cache, augment=augment, image_size=24)
        batch = next(iter(make_loader(dataset, batch_size=4, train=True)))
        assert batch.images.shape == (4, 3, 24, 24)


def test_epoch_order_and_augmentation_depend_only_on_seed_and_epoch(cache):
    dataset = _dataset(cache, augment=AugmentConfig(crop="resized"))
    loader = make_loader(dataset, batch_size=8, train=True, seed=5)
    epoch2 = _collect(loader, 2)
    _collect(loader, 0)  # whatever ran before does not matter
    again = _collect(make_loader(dataset, batch_size=8, train=True, seed=5), 2)
    assert len(epoch2) == 41 // 8  # drop_last
    for (a, ra), (b, rb) in zip(epoch2, again, strict=True):
        assert torch.equal(ra, rb) and torch.equal(a, b)
    other = _collect(loader, 3)
    assert not torch.equal(other[0][1], epoch2[0][1])


def test_worker_processes_give_the_same_batches(cache):
    dataset = _dataset(cache, augment=AugmentConfig())
    in_process = _collect(make_loader(dataset, batch_size=8, train=True, seed=1), 1)
    workers = _collect(make_loader(dataset, batch_size=8, train=True, seed=1, num_workers=1), 1)
    for (a, ra), (b, rb) in zip(in_process, workers, strict=True):
        assert torch.equal(ra, rb) and torch.equal(a, b)


def test_memmap_is_reopened_not_copied_when_pickled(cache):
    dataset = _dataset(cache)
    blob = pickle.dumps(dataset)
    assert len(blob) < dataset.crops.nbytes / 4
    assert np.array_equal(pickle.loads(blob).crops, dataset.crops)


def test_pad_crop_shifts_content_and_flip_mirrors(cache):
    dataset = _dataset(cache, augment=AugmentConfig(crop="pad", padding=4, flip=True))
    plain = _dataset(cache)
    batch = next(iter(make_loader(dataset, batch_size=8, train=True, seed=0)))
    positions = np.searchsorted(plain.rows, batch.rows.numpy())
    originals = plain[BatchRequest(positions, 0)].images
    zero = (0.0 - 0.3) / 0.2
    matched = 0
    for image, original in zip(batch.images, originals, strict=True):
        for flipped in (original, original.flip(-1)):
            for dy in range(-4, 5):
                for dx in range(-4, 5):
                    shifted = torch.full_like(flipped, zero)
                    src = flipped[:, max(dy, 0) : 32 + min(dy, 0), max(dx, 0) : 32 + min(dx, 0)]
                    shifted[:, max(-dy, 0) : 32 + min(-dy, 0), max(-dx, 0) : 32 + min(-dx, 0)] = src
                    matched += torch.allclose(shifted, image, atol=1e-5)
    assert matched >= len(batch.images)


def test_balanced_sampling_evens_out_classes():
    labels = np.array([0] * 90 + [1] * 10)
    sampler = EpochBatchSampler(labels, 50, seed=0, balanced=True)
    drawn = np.concatenate([r.positions for e in range(10) for r in _epoch(sampler, e)])
    share = (labels[drawn] == 1).mean()
    assert 0.45 < share < 0.55


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("crop", ["pad", "resized"])
def test_ranks_split_every_batch_and_augment_it_as_one_process(cache, crop):
    """Under DDP the ranks' parts of each batch, concatenated, are the single-process batch."""
    dataset = _dataset(cache, augment=AugmentConfig(crop=crop, padding=4))
    whole = make_loader(dataset, batch_size=6, train=True, seed=3)
    parts = [
        make_loader(dataset, batch_size=6, train=True, seed=3, rank=r, world_size=2) for r in (0, 1)
    ]
    single = _collect(whole, 2)
    ranks = [_collect(loader, 2) for loader in parts]
    assert len(single) == len(ranks[0]) == len(ranks[1])  # equal step counts: no DDP hang
    for (images, rows), (images0, rows0), (images1, rows1) in zip(single, *ranks, strict=True):
        assert len(rows0) == len(rows1) == 3
        assert torch.equal(torch.cat([rows0, rows1]), rows)
        assert torch.equal(torch.cat([images0, images1]), images)


def test_channel_stats_match_numpy(cache):
    crops, table = cache
    rows = usable_rows(table, "train")
    mean, std = channel_stats(crops, rows, chunk=7)
    pixels = crops[rows].astype(np.float64) / 255.0
    assert np.allclose(mean, pixels.mean((0, 1, 2))) and np.allclose(std, pixels.std((0, 1, 2)))
    sub_mean, _ = channel_stats(crops, rows, max_images=10, seed=1)
    assert sub_mean == channel_stats(crops, rows, max_images=10, seed=1)[0]


def test_stratified_holdout_is_seeded_and_disjoint():
    rows, labels = np.arange(70), np.arange(70) % 7
    train, val = holdout_validation(rows, labels, fraction=0.2, seed=0)
    assert len(val) == 14 and np.bincount(labels[val]).tolist() == [2] * 7
    assert not set(train) & set(val) and len(train) + len(val) == 70
    again = holdout_validation(rows, labels, fraction=0.2, seed=0)
    assert np.array_equal(val, again[1])


def test_subject_holdout_keeps_each_identity_on_one_side():
    rows = np.arange(60)
    groups = np.array([f"p{i % 12}" for i in rows])
    train, val = holdout_validation(rows, rows % 7, fraction=0.25, seed=4, groups=groups)
    assert not set(groups[train]) & set(groups[val])
    assert 10 <= len(val) <= 20
    with pytest.raises(ValueError, match="1 groups cannot be split"):
        holdout_validation(rows, rows % 7, fraction=0.1, seed=0, groups=rows * 0)
