"""Batches from the face cache: usable rows, held-out validation, statistics, determinism."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
import torch

from lightfer.errors import DatasetError
from lightfer.faces.cache import load_face_cache
from lightfer.splits import channel_stats, holdout_validation, usable_rows
from lightfer.training.config import AugmentConfig
from lightfer.training.data import BatchRequest, EpochBatchSampler, FaceDataset, make_loader
from tests.training.cache import write_face_cache

MEAN, STD = (0.3, 0.3, 0.3), (0.2, 0.2, 0.2)


@pytest.fixture
def cache(tmp_path):
    return load_face_cache(write_face_cache(tmp_path, bad_rows=(3, 50)))


def _dataset(cache, *, split="train", augment=None, image_size=32, soft=None, on_device=False):
    crops, table = cache
    labels = table.column("label").to_numpy()
    return FaceDataset(
        crops,
        usable_rows(table, split),
        labels,
        mean=MEAN,
        std=STD,
        image_size=image_size,
        soft=soft,
        augment=augment,
        on_device=on_device,
    )


def _collect(loader, epoch):
    """Every batch's images and rows; a `RawBatch` is made on the CPU first."""
    loader.sampler.set_epoch(epoch)
    batches = (b.to(torch.device("cpu")) for b in loader)
    return [(b.images.clone(), b.rows.clone()) for b in batches]


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


@pytest.mark.parametrize("on_device", [False, True])
def test_worker_processes_give_the_same_batches(cache, on_device):
    dataset = _dataset(cache, augment=AugmentConfig(crop="resized"), on_device=on_device)
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


# SHA-256 (first 16 hex digits) of one epoch's float32 images, taken from the loader as it
# was before its speed-ups: any change to the augmentation or normalisation must keep them.
PINNED_EPOCHS = {
    "eval-48": (None, 48, "f7054737f05fdad8"),
    "eval-40": (None, 40, "b407d2b29afa7af5"),
    "none-flip-48": (AugmentConfig(crop="none"), 48, "1eded432661f21c3"),  # params.yaml's
    "pad-48": (AugmentConfig(crop="pad"), 48, "f6e10b0a3d852308"),
    "pad-40": (AugmentConfig(crop="pad"), 40, "52e6282a95a8398a"),
    "resized-48": (AugmentConfig(crop="resized"), 48, "d30344fa0ad6a4be"),
    "resized-40": (AugmentConfig(crop="resized"), 40, "36a15b4a50848b31"),
    "resized-noflip-56": (AugmentConfig(crop="resized", flip=False), 56, "ab5a2f78c8e344a6"),
}


@pytest.mark.parametrize("on_device", [False, True])
@pytest.mark.parametrize("case", sorted(PINNED_EPOCHS))
def test_batches_keep_their_pinned_values(tmp_path, case, on_device):
    """Both paths give these batches, the device path made on the CPU."""
    augment, image_size, digest = PINNED_EPOCHS[case]
    crops, table = load_face_cache(write_face_cache(tmp_path, crop=48, bad_rows=(3,)))
    labels = table.column("label").to_numpy()
    rows = usable_rows(table, "train")
    norm = {"mean": (0.3, 0.4, 0.5), "std": (0.2, 0.25, 0.3)}
    dataset = FaceDataset(
        crops, rows, labels, **norm, image_size=image_size, augment=augment, on_device=on_device
    )
    loader = make_loader(dataset, batch_size=8, train=augment is not None, seed=3)
    loader.sampler.set_epoch(1)
    sha = hashlib.sha256()
    for batch in (b.to(torch.device("cpu")) for b in loader):
        assert batch.images.is_contiguous() and batch.images.dtype == torch.float32
        sha.update(batch.images.numpy().tobytes())
    assert sha.hexdigest()[:16] == digest


def test_balanced_sampling_evens_out_classes():
    labels = np.array([0] * 90 + [1] * 10)
    sampler = EpochBatchSampler(labels, 50, seed=0, balanced=True)
    drawn = np.concatenate([r.positions for e in range(10) for r in _epoch(sampler, e)])
    share = (labels[drawn] == 1).mean()
    assert 0.45 < share < 0.55


def _epoch(sampler, epoch):
    sampler.set_epoch(epoch)
    return list(sampler)


@pytest.mark.parametrize("on_device", [False, True])
@pytest.mark.parametrize("crop", ["pad", "resized"])
def test_ranks_split_every_batch_and_augment_it_as_one_process(cache, crop, on_device):
    """Under DDP the ranks' parts of each batch, concatenated, are the single-process batch."""
    augment = AugmentConfig(crop=crop, padding=4)
    dataset = _dataset(cache, augment=augment, on_device=on_device)
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


def test_every_class_of_two_or_more_images_keeps_one_for_validation():
    labels = np.array([0] * 20 + [1] * 3 + [2])
    train, val = holdout_validation(np.arange(24), labels, fraction=0.1, seed=0)
    assert sorted(labels[val].tolist()) == [0, 0, 1]  # round(0.1 * 3) would be none
    assert 23 in train, "a class's only image stays in training"
