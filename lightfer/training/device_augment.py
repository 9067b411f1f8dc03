"""Crop, resize and flip whole uint8 batches at once, on whatever device they are on.

The loader's CPU path (`lightfer.training.data`) augments image by image with torchvision's
uint8 kernels. At 224 px that per-sample work needs more loader processes than a GPU
server has cores to feed one GPU (`scripts/bench_loader.py`), so a `FaceDataset` built
with `on_device=True` only reads the uint8 crops and draws each sample's crop box and flip
from the batch seed, exactly as the CPU path draws them; `RawBatch.to` moves the batch and
applies them here, where the GPU does the whole batch in a few kernels.

Each box is resized by two batched matrix products, one weight matrix per sample and axis,
that reproduce torchvision's uint8 resize (PyTorch's antialiased bilinear kernel for uint8,
the one CPUs with AVX2 run): the same float64 weights, rounded to the same 16-bit
fixed-point integers, a horizontal pass rounded to whole grey levels, then a vertical one.
Pixels of a box beyond the image get no weight (the zero padding crop=pad wants) and a flip
reverses the column matrix. The products run in float32, which holds their integer sums
exactly while they stay below 2**24: whenever a box is enlarged, or kept, to the output
size (224-pixel crops resized to 224). The result then equals the CPU path's; a box
shrunk to the output can rarely round a pixel the other way (one grey level). TF32
matmuls (`torch.backends.cuda.matmul.allow_tf32`, off by default) would break this, and the
weights need float64 (CPU and CUDA have it; Apple's MPS does not).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["crop_resize_flip", "resize_weights"]

_WEIGHT_BITS = 15  # torchvision's uint8 kernel keeps its weights below 2**15 (int16)


def resize_weights(
    starts: Tensor, lengths: Tensor, size: int, extent: int
) -> tuple[Tensor, Tensor]:
    """Per-sample fixed-point matrices resizing a span of one image axis to `size` pixels.

    Row `i` of sample `b` holds the integer weights, in units of `2**-precision[b]`, of
    output pixel `i` over the input pixels `0..extent-1` when the span
    `[starts[b], starts[b] + lengths[b])` is resized to `size` (antialiased bilinear,
    align_corners=False), computed as PyTorch computes them for uint8 images. Pixels of the
    span outside `0..extent-1` are zeros: they get no weight.

    Args:
        starts: `(B,)` first pixel of each span (may be negative).
        lengths: `(B,)` length of each span (at least 1).
        size: output pixels.
        extent: pixels of the input axis.

    Returns:
        `(B, size, extent)` float32 integer weights and `(B,)` float32 precisions (bits),
        on the device of `starts`.
    """
    device, f64 = starts.device, torch.float64
    length = lengths.to(device, f64)[:, None, None]
    scale = length / size
    support = scale.clamp(min=1.0)  # interp_size / 2 * scale when shrinking, else 1
    inverse = torch.where(scale >= 1.0, 1.0 / scale, 1.0)
    centre = scale * (torch.arange(size, device=device, dtype=f64)[:, None] + 0.5)
    first = (centre - support + 0.5).trunc().clamp(min=0.0)
    stop = torch.minimum((centre + support + 0.5).trunc(), length)
    span = torch.arange(int(lengths.max()), device=device, dtype=f64)
    weights = (1.0 - ((span - centre + 0.5) * inverse).abs()).clamp(min=0.0)
    weights = weights * ((span >= first) & (span < stop))
    weights = weights / weights.sum(-1, keepdim=True)
    # the most bits that keep twice the largest weight, rounded, below 2**15
    largest = weights.amax((1, 2))[:, None]
    bits = torch.arange(22, device=device, dtype=f64)
    too_many = (largest * 2.0 ** (bits + 1) + 0.5).floor() >= 2.0**_WEIGHT_BITS
    precision = torch.where(too_many.any(1), too_many.to(torch.uint8).argmax(1).to(f64), 22.0)
    fixed = (weights * 2.0 ** precision[:, None, None] + 0.5).floor().to(torch.float32)
    pixel = torch.arange(extent, device=device) - starts.to(device)[:, None]
    valid = (pixel >= 0) & (pixel < lengths.to(device)[:, None])
    index = pixel.clamp(0, len(span) - 1)[:, None, :].expand(-1, size, -1)
    return fixed.gather(2, index) * valid[:, None, :], precision.to(torch.float32)


def crop_resize_flip(images: Tensor, boxes: Tensor, flips: Tensor, size: int) -> Tensor:
    """Crop each image to its box, resize it to `size` square and mirror it where flagged.

    Args:
        images: `(B, 3, H, W)` uint8 (any memory format).
        boxes: `(B, 4)` int64 `(top, left, height, width)`; a box may reach beyond the image,
            which is zero there.
        flips: `(B,)` bool, mirror horizontally.
        size: side of the output.

    Returns:
        `(B, 3, size, size)` float32 holding whole grey levels 0..255, on `images`' device.
    """
    device = images.device
    boxes, flips = boxes.to(device), flips.to(device)
    h, w = images.shape[-2:]
    with torch.autocast(device.type, enabled=False):
        columns, column_bits = resize_weights(boxes[:, 1], boxes[:, 3], size, w)
        columns = torch.where(flips[:, None, None], columns.flip(1), columns)
        rows, row_bits = resize_weights(boxes[:, 0], boxes[:, 2], size, h)
        out = _to_levels(images.float() @ columns.transpose(1, 2)[:, None], column_bits)
        return _to_levels(rows[:, None] @ out, row_bits)


def _to_levels(sums: Tensor, precision: Tensor) -> Tensor:
    """Fixed-point sums to whole grey levels: add half a unit, shift, clamp (as the kernel)."""
    unit = (2.0**precision)[:, None, None, None]
    return sums.add_(unit / 2).div_(unit).floor_().clamp_(0.0, 255.0)
