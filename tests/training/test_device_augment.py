"""Batched crop/resize/flip on the device: the same pixels as the per-sample CPU path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from lightfer.faces.cache import load_face_cache
from lightfer.splits import usable_rows
from lightfer.training.config import AugmentConfig
from lightfer.training.data import BatchRequest, FaceDataset, RawBatch
from lightfer.training.device_augment import crop_resize_flip, resize_weights
from tests.training.cache import write_face_cache

CPU = torch.device("cpu")


def _images(rng, n, side):
    pixels = rng.integers(0, 256, (n, side, side, 3), dtype=np.uint8)
    return torch.from_numpy(pixels).permute(0, 3, 1, 2)  # channels-last, as the cache's


def _random_boxes(rng, n, side):
    boxes = []
    for _ in range(n):
        height, width = (int(v) for v in rng.integers(1, side + 1, 2))
        top, left = int(rng.integers(0, side - height + 1)), int(rng.integers(0, side - width + 1))
        boxes.append([top, left, height, width])
    return torch.tensor(boxes)


def _torchvision(images, boxes, flips, size):
    """The CPU path's result, one image at a time with torchvision's uint8 resize."""
    pairs = zip(images, boxes.tolist(), strict=True)
    out = torch.stack([TF.resized_crop(image, *box, [size, size]) for image, box in pairs])
    return torch.where(flips[:, None, None, None], out.flip(-1), out).float()


@pytest.mark.parametrize(("side", "size"), [(37, 37), (40, 23), (24, 61), (9, 90)])
def test_crops_enlarged_or_shrunk_match_torchvision_exactly(side, size):
    rng = np.random.default_rng(side)
    images, boxes = _images(rng, 12, side), _random_boxes(rng, 12, side)
    flips = torch.from_numpy(rng.random(12) < 0.5)
    out = crop_resize_flip(images, boxes, flips, size)
    assert out.shape == (12, 3, size, size) and out.dtype == torch.float32
    assert torch.equal(out, _torchvision(images, boxes, flips, size))


def test_boxes_beyond_the_image_read_zeros():
    images = _images(np.random.default_rng(0), 3, 16)
    boxes = torch.tensor([[-4, 3, 16, 16], [2, -16, 16, 16], [20, 0, 16, 16]])
    flips = torch.tensor([False, True, False])
    out = crop_resize_flip(images, boxes, flips, 16)
    padded = F.pad(images, (20, 20, 20, 20)).float()  # crop=pad's zero padding
    for b, (top, left, _, _) in enumerate(boxes.tolist()):
        expected = padded[b, :, 20 + top : 36 + top, 20 + left : 36 + left]
        assert torch.equal(out[b], expected.flip(-1) if flips[b] else expected)
    assert not out[2].any()  # entirely below the image


def test_spans_of_the_output_size_are_shifted_identities():
    weights, precision = resize_weights(torch.tensor([0, -2]), torch.tensor([6, 6]), 6, 6)
    unit = 2.0 ** precision[:, None, None]
    assert torch.equal(weights[0] / unit[0], torch.eye(6))
    assert torch.equal(weights[1] / unit[1], torch.diag(torch.ones(4), -2))  # -2, -1: zeros


def test_autocast_does_not_lower_the_precision():
    rng = np.random.default_rng(1)
    images, boxes = _images(rng, 4, 32), _random_boxes(rng, 4, 32)
    flips = torch.tensor([True, False, True, False])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = crop_resize_flip(images, boxes, flips, 32)
    assert torch.equal(out, _torchvision(images, boxes, flips, 32))


def _datasets(tmp_path, augment, image_size):
    crops, table = load_face_cache(write_face_cache(tmp_path, crop=40))
    labels = table.column("label").to_numpy()
    soft = np.random.default_rng(0).dirichlet(np.ones(7), len(crops)).astype(np.float32)
    rows = usable_rows(table, "train")
    kwargs = {"mean": (0.5, 0.4, 0.3), "std": (0.2, 0.3, 0.25), "soft": soft}
    kwargs.update(image_size=image_size, augment=augment)
    return [FaceDataset(crops, rows, labels, **kwargs, on_device=flag) for flag in (False, True)]


AUGMENTATIONS = [
    None,
    AugmentConfig(crop="none"),
    AugmentConfig(crop="pad", padding=6),
    AugmentConfig(crop="resized", ratio_max=2.0),
]


@pytest.mark.parametrize("augment", AUGMENTATIONS)
@pytest.mark.parametrize("image_size", [40, 28, 56])
def test_raw_batches_made_on_the_cpu_equal_the_cpu_path(tmp_path, augment, image_size):
    on_cpu, on_device = _datasets(tmp_path, augment, image_size)
    for seed in range(3):
        request = BatchRequest(np.random.default_rng(seed).permutation(len(on_cpu))[:9], seed)
        expected, raw = on_cpu[request], on_device[request]
        assert isinstance(raw, RawBatch) and raw.images.dtype == torch.uint8
        batch = raw.to(CPU, channels_last=True)
        assert batch.images.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(batch.images, expected.images)
        for name in ("labels", "rows", "soft"):
            assert torch.equal(getattr(batch, name), getattr(expected, name))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_raw_batches_made_on_a_gpu_stay_within_a_grey_level_of_the_cpu_path(tmp_path):
    """cuBLAS may sum in another order: exact while sums stay below 2**24 (enlarged crops)."""
    on_cpu, on_device = _datasets(tmp_path, AugmentConfig(crop="resized"), 28)
    level = torch.tensor(on_cpu.std).view(1, 3, 1, 1) * 255
    for seed in range(3):
        request = BatchRequest(np.arange(len(on_cpu)), seed)
        expected = on_cpu[request].images
        images = on_device[request].to(torch.device("cuda")).images.cpu()
        levels = ((images - expected) * level).abs()
        assert levels.max() <= 1.0 + 1e-3 and (levels > 1e-3).float().mean() < 1e-3
