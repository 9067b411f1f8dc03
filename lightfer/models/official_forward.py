"""EfficientFace's forward pass computed as the official code computes it: the speed baseline.

`lightfer.models.efficientface.EfficientFace` returns upstream's outputs
(https://github.com/zengqunzhao/EfficientFace) with the same weights, but computes some
steps faster on the CPU (see the differences its module docstring lists). The issue's
speed targets are ratios to the official code's eager PyTorch, so the benchmark times
`official_style_forward`: the same modules and weights, with upstream's operations where
this project's differ:

* max pooling of the stem on the NCHW map (this project pools a channels-last copy);
* every ShuffleNetV2 unit concatenates its two branches and then shuffles the channels in
  two groups (reshape, transpose, contiguous copy, reshape), where this project interleaves
  the branches with one stack;
* the modulator's channel gate average-pools over an (H, H) window and both gates are
  broadcast to the map's shape with `expand_as` before they are multiplied.

Written for this project from that description of the operations; no upstream code is
copied. Outputs equal `EfficientFace.forward`'s (a test checks it).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lightfer.models.efficientface import EfficientFace, InvertedResidual, Modulator

__all__ = ["official_style_forward"]


def _shuffle_two_groups(x: Tensor) -> Tensor:
    """ShuffleNetV2's channel shuffle with two groups, as a view, transpose and copy."""
    batch, channels, height, width = x.shape
    grouped = x.view(batch, 2, channels // 2, height, width).transpose(1, 2)
    return grouped.contiguous().view(batch, channels, height, width)


def _unit(unit: InvertedResidual, x: Tensor) -> Tensor:
    if unit.branch1 is None:
        kept, transformed = x.chunk(2, dim=1)
        joined = torch.cat((kept, unit.branch2(transformed)), dim=1)
    else:
        joined = torch.cat((unit.branch1(x), unit.branch2(x)), dim=1)
    return _shuffle_two_groups(joined)


def _stage(stage: nn.Sequential, x: Tensor) -> Tensor:
    for unit in stage:
        x = _unit(unit, x)  # type: ignore[arg-type]
    return x


def _modulator(modulator: Modulator, x: Tensor) -> Tensor:
    side = x.size(2)
    pooled = F.avg_pool2d(x, side, stride=side).flatten(1)
    channel = modulator.channel_att.gate_c(pooled).unsqueeze(2).unsqueeze(3).expand_as(x)
    spatial = modulator.spatial_att.gate_s(x).expand_as(x)
    return x * torch.sigmoid(channel * spatial)


def official_style_forward(model: EfficientFace, x: Tensor) -> Tensor:
    """The logits of `model` on images `(N, 3, H, W)`, computed as the official code does.

    Args:
        model: an EfficientFace (e.g. `create_model("efficientface")`), in eval mode for
            inference.
        x: a contiguous NCHW batch of square images.
    """
    x = model.maxpool(model.conv1(x))
    x = _modulator(model.modulator, _stage(model.stage2, x)) + model.local(x)
    x = model.conv5(_stage(model.stage4, _stage(model.stage3, x)))
    return model.fc(x.mean([2, 3]))
