"""EfficientFace, the lightweight student network, and its ShuffleNetV2 baseline.

Paper: Zengqun Zhao, Qingshan Liu, Feiyue Zhou, "Robust Lightweight Facial Expression
Recognition Network with Label Distribution Training", AAAI 2021.
Upstream code: https://github.com/zengqunzhao/EfficientFace (MIT licence), commit 8d19537,
files `models/EfficientFace.py` and `models/modulator.py`. This is a re-implementation, not a
copy: the module tree and every state_dict key and shape equal upstream's (418 keys,
1,275,293 parameters with 7 classes), so the published weights (an MS-Celeb-1M pre-trained
model with a 12,666-way head and per-dataset 7-class models, linked from upstream's README)
load with `strict=True` through `lightfer.models.checkpoint`.

Differences from upstream, none of which changes a key or, at 224x224, an output:

* The local feature extractor splits the stem output into quadrants computed from its size
  instead of upstream's hard-coded 28-pixel slices, so any input of at least 9x9 pixels works
  (upstream fails at 112 and silently mis-slices at 160). See `quadrant_split`.
* The modulator's channel gate uses a `BatchNorm1d` that normalises a one-sample training
  batch with its running statistics (upstream raises `ValueError`); see
  `SingleSampleBatchNorm1d`.
* The ShuffleNetV2 unit interleaves its two branches with one `stack` instead of a `cat`
  followed by a channel shuffle: the same values with one copy fewer.
* The channel gate pools with a (H, W) kernel rather than (H, H), correct for non-square
  inputs.
* Sizes used in reshapes and slices are Python ints (`_static_size`), so the ONNX export has
  no shape arithmetic.
* On the CPU, max pooling runs on a channels-last copy (faster, bit-identical).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "EfficientFace",
    "LinearHeadMixin",
    "LocalFeatureExtractor",
    "Modulator",
    "SingleSampleBatchNorm1d",
    "efficientface",
    "quadrant_split",
]

logger = logging.getLogger(__name__)


class LinearHeadMixin:
    """The timm-style classifier surface shared by every lightfer model.

    The host class defines `forward_features` (image to feature map) and a linear classifier
    named `fc`, as upstream EfficientFace and torchvision's networks do. The head averages
    the feature map (override `forward_head` to pool otherwise).
    """

    fc: nn.Linear

    @property
    def num_classes(self) -> int:
        """Number of outputs of the classifier."""
        return self.fc.out_features

    @property
    def num_features(self) -> int:
        """Width of the pooled features the classifier reads (`forward_head(pre_logits=True)`)."""
        return self.fc.in_features

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a freshly initialised one.

        Args:
            num_classes: outputs of the new classifier.

        Raises:
            ValueError: `num_classes` is smaller than 1.
        """
        if num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {num_classes}")
        old = self.fc.weight
        self.fc = nn.Linear(self.num_features, num_classes, device=old.device, dtype=old.dtype)

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Average-pool features and, unless `pre_logits`, apply the classifier."""
        x = x.mean((2, 3))
        return x if pre_logits else self.fc(x)

    def forward(self, x: Tensor) -> Tensor:
        """Return the logits of a batch of images `(N, 3, H, W)` as `(N, num_classes)`."""
        return self.forward_head(self.forward_features(x))  # type: ignore[attr-defined]


def _depthwise_conv(in_chs: int, out_chs: int, stride: int) -> nn.Conv2d:
    """A 3x3 grouped convolution with one group per input channel, as upstream's."""
    return nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False, groups=in_chs)


def _static_size(x: Tensor) -> tuple[int, int, int]:
    """Return `(C, H, W)` of `x` as Python ints.

    In eager mode this is `x.shape[1:]`. When the ONNX exporter traces the model, sizes are
    tensors; converting them makes the exported graph use constants (its input size is fixed
    by design, only the batch is dynamic) instead of chains of Shape/Gather/Slice/Concat
    nodes, which made ONNX Runtime about 20% slower at batch 1.
    """
    return int(x.shape[1]), int(x.shape[2]), int(x.shape[3])


def _interleave(a: Tensor, b: Tensor) -> Tensor:
    """Return `channel_shuffle(cat([a, b], 1), groups=2)` with a single copy.

    Output channel `2i` is `a[:, i]` and `2i + 1` is `b[:, i]`, which is exactly ShuffleNetV2's
    two-group shuffle of the concatenation. A channels-last `a` (how CUDA training runs) is
    interleaved along its innermost, channel axis, so the output stays channels-last; the
    channel-first stack of such tensors cannot be viewed, only copied a second time.
    """
    channels, height, width = _static_size(a)
    if a.stride(1) == 1 and channels > 1:  # channels-last, or a channel slice of such a map
        nhwc = torch.stack((a.permute(0, 2, 3, 1), b.permute(0, 2, 3, 1)), dim=4)
        return nhwc.view(-1, height, width, 2 * channels).permute(0, 3, 1, 2)
    return torch.stack((a, b), dim=2).view(-1, 2 * channels, height, width)


class InvertedResidual(nn.Module):
    """ShuffleNetV2 unit (Ma et al., ECCV 2018) with torchvision's attribute names.

    A stride-2 unit has two branches over the whole input; a stride-1 unit keeps half of the
    channels and transforms the other half (it has no `branch1`, so no `branch1.*` keys).
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        mid = self.mid_chs = out_chs // 2
        if stride == 1 and in_chs != out_chs:
            raise ValueError(f"a stride-1 unit keeps its width; got {in_chs} -> {out_chs}")
        self.branch1: nn.Sequential | None = None
        if stride == 2:
            self.branch1 = nn.Sequential(
                _depthwise_conv(in_chs, in_chs, stride),
                nn.BatchNorm2d(in_chs),
                nn.Conv2d(in_chs, mid, 1, bias=False),
                nn.BatchNorm2d(mid),
                nn.ReLU(inplace=True),
            )
        self.branch2 = nn.Sequential(
            nn.Conv2d(in_chs if stride == 2 else mid, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
            _depthwise_conv(mid, mid, stride),
            nn.BatchNorm2d(mid),
            nn.Conv2d(mid, mid, 1, bias=False),
            nn.BatchNorm2d(mid),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Apply the unit and shuffle the two branches' channels together."""
        if self.branch1 is None:
            kept, transformed = x.split(self.mid_chs, dim=1)
            return _interleave(kept, self.branch2(transformed))
        return _interleave(self.branch1(x), self.branch2(x))


def quadrant_split(size: int) -> int:
    """Return where the local feature extractor cuts a stem-output side of `size` pixels.

    The first part gets `2 * ceil(size / 4)` pixels. Because that is even, each part's
    stride-2 convolution samples the same pixels as stage 2's stride-2 convolution over the
    whole map, and the two outputs stitch to exactly stage 2's `ceil(size / 2)`. At 56 (a
    224x224 input) the cut is 28, upstream's hard-coded value.

    Raises:
        ValueError: `size` is below 3, so one part would be empty.
    """
    if size < 3:
        raise ValueError(
            f"EfficientFace's local feature extractor needs a stem output of at least 3x3 "
            f"pixels to cut into quadrants, got a side of {size}; use inputs of at least 9x9 "
            f"pixels (the project uses 64, 112 and 224)"
        )
    return 2 * ((size + 3) // 4)


class LocalFeatureExtractor(nn.Module):
    """Four depthwise branches, one per quadrant of the stem output, stitched back together.

    Branch `i` is `conv{i}_1` (3x3, stride 2, `in_chs -> out_chs`, one group per input
    channel), BN, ReLU, `conv{i}_2` (3x3 depthwise), BN, ReLU. Quadrants are numbered as
    upstream's: 1 top-left, 2 bottom-left, 3 top-right, 4 bottom-right.
    """

    def __init__(self, in_chs: int, out_chs: int) -> None:
        super().__init__()
        if out_chs % in_chs:
            raise ValueError(
                f"the local extractor's grouped conv needs out_chs ({out_chs}) to be a "
                f"multiple of in_chs ({in_chs})"
            )
        self.relu = nn.ReLU()
        for i in range(1, 5):
            self.add_module(f"conv{i}_1", _depthwise_conv(in_chs, out_chs, stride=2))
            self.add_module(f"bn{i}_1", nn.BatchNorm2d(out_chs))
            self.add_module(f"conv{i}_2", _depthwise_conv(out_chs, out_chs, stride=1))
            self.add_module(f"bn{i}_2", nn.BatchNorm2d(out_chs))

    def _branch(self, i: int, x: Tensor) -> Tensor:
        x = self.relu(getattr(self, f"bn{i}_1")(getattr(self, f"conv{i}_1")(x)))
        return self.relu(getattr(self, f"bn{i}_2")(getattr(self, f"conv{i}_2")(x)))

    def forward(self, x: Tensor) -> Tensor:
        """Map `(N, in_chs, H, W)` to `(N, out_chs, ceil(H / 2), ceil(W / 2))`."""
        _, height, width = _static_size(x)
        top, left = quadrant_split(height), quadrant_split(width)
        out_1 = self._branch(1, x[:, :, :top, :left])
        out_2 = self._branch(2, x[:, :, top:, :left])
        out_3 = self._branch(3, x[:, :, :top, left:])
        out_4 = self._branch(4, x[:, :, top:, left:])
        return torch.cat([torch.cat([out_1, out_2], dim=2), torch.cat([out_3, out_4], dim=2)], 3)


class SingleSampleBatchNorm1d(nn.BatchNorm1d):
    """`BatchNorm1d` that also trains on a batch of one sample.

    PyTorch's `BatchNorm1d` raises `ValueError: Expected more than 1 value per channel` in
    training mode when the batch has one sample, because the batch variance is undefined.
    Upstream EfficientFace therefore crashes on a last batch of size 1. For such a batch this
    layer normalises with the running statistics, exactly as in eval mode, and leaves the
    running statistics untouched; gradients still reach its affine parameters and the
    layers before it. Batches of two or more samples behave as in `BatchNorm1d`. The
    parameters and buffers, hence the state_dict keys, are `BatchNorm1d`'s.
    """

    def forward(self, input: Tensor) -> Tensor:
        """Normalise `input`; see the class docstring for one-sample training batches."""
        if self.training and input.shape[0] == 1 and self.running_mean is not None:
            return F.batch_norm(
                input,
                self.running_mean,
                self.running_var,
                self.weight,
                self.bias,
                training=False,
                momentum=0.0,
                eps=self.eps,
            )
        return super().forward(input)


class ChannelGate(nn.Module):
    """BAM's channel branch: global average pool, Linear, BN, ReLU, Linear -> `(N, C, 1, 1)`."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = channels // reduction
        self.gate_c = nn.Sequential(
            OrderedDict(
                gate_c_fc_0=nn.Linear(channels, hidden),
                gate_c_bn_1=SingleSampleBatchNorm1d(hidden),
                gate_c_relu_1=nn.ReLU(),
                gate_c_fc_final=nn.Linear(hidden, channels),
            )
        )

    def forward(self, x: Tensor) -> Tensor:
        """Return one gate value per sample and channel."""
        _, height, width = _static_size(x)
        pooled = F.avg_pool2d(x, kernel_size=(height, width)).flatten(1)
        return self.gate_c(pooled)[:, :, None, None]


class SpatialGate(nn.Module):
    """BAM's spatial branch: 1x1 reduce, two dilated 3x3 convs, 1x1 to one map `(N, 1, H, W)`."""

    def __init__(self, channels: int, reduction: int, dilation: int = 4) -> None:
        super().__init__()
        hidden = channels // reduction
        layers: OrderedDict[str, nn.Module] = OrderedDict(
            gate_s_conv_reduce0=nn.Conv2d(channels, hidden, 1),
            gate_s_bn_reduce0=nn.BatchNorm2d(hidden),
            gate_s_relu_reduce0=nn.ReLU(),
        )
        for i in range(2):
            layers[f"gate_s_conv_di_{i}"] = nn.Conv2d(
                hidden, hidden, 3, padding=dilation, dilation=dilation
            )
            layers[f"gate_s_bn_di_{i}"] = nn.BatchNorm2d(hidden)
            layers[f"gate_s_relu_di_{i}"] = nn.ReLU()
        layers["gate_s_conv_final"] = nn.Conv2d(hidden, 1, 1)
        self.gate_s = nn.Sequential(layers)

    def forward(self, x: Tensor) -> Tensor:
        """Return one gate value per sample and pixel."""
        return self.gate_s(x)


class Modulator(nn.Module):
    """Channel-spatial modulator: `x * sigmoid(channel_gate(x) * spatial_gate(x))`.

    A BAM-like attention (Park et al., BMVC 2018) whose two maps are multiplied, not summed,
    as upstream does. The layer names (`gate_c_*`, `gate_s_*`) are upstream's.
    """

    def __init__(self, channels: int, reduction: int = 16) -> None:
        super().__init__()
        self.channel_att = ChannelGate(channels, reduction)
        self.spatial_att = SpatialGate(channels, reduction)

    def forward(self, x: Tensor) -> Tensor:
        """Reweight every element of `x` by its attention value in (0, 1)."""
        return x * torch.sigmoid(self.channel_att(x) * self.spatial_att(x))


def _conv_bn_relu(in_chs: int, out_chs: int, kernel_size: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_chs, out_chs, kernel_size, stride, kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_chs),
        nn.ReLU(inplace=True),
    )


class EfficientFace(LinearHeadMixin, nn.Module):
    """ShuffleNetV2 with a local feature extractor and a channel-spatial modulator.

    `conv1 -> maxpool` gives the stem output `s`; then `modulator(stage2(s)) + local(s)`
    feeds stage 3, stage 4 and `conv5`; the classifier `fc` reads the global average of
    `conv5`'s output. The modules are registered in upstream's order, so `state_dict()`
    lists the keys in upstream's order too.

    Args:
        stages_repeats: units in stages 2, 3 and 4.
        stages_out_channels: widths of the stem, stages 2-4 and `conv5`. Stage 2's width
            must be a multiple of the stem's (the local extractor's grouped convolution).
        num_classes: classifier outputs.
    """

    def __init__(
        self,
        stages_repeats: Sequence[int],
        stages_out_channels: Sequence[int],
        num_classes: int = 7,
    ) -> None:
        super().__init__()
        if len(stages_repeats) != 3 or len(stages_out_channels) != 5:
            raise ValueError(
                f"expected 3 stage repeats and 5 widths, got {list(stages_repeats)} and "
                f"{list(stages_out_channels)}"
            )
        stem, *stage_chs, final = stages_out_channels
        self.conv1 = _conv_bn_relu(3, stem, 3, stride=2)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_chs = stem
        stages = zip(("stage2", "stage3", "stage4"), stages_repeats, stage_chs, strict=True)
        for name, repeats, out_chs in stages:
            units = [InvertedResidual(in_chs, out_chs, 2)]
            units += [InvertedResidual(out_chs, out_chs, 1) for _ in range(repeats - 1)]
            self.add_module(name, nn.Sequential(*units))
            in_chs = out_chs
        self.local = LocalFeatureExtractor(stem, stage_chs[0])
        self.modulator = Modulator(stage_chs[0])
        self.conv5 = _conv_bn_relu(in_chs, final, 1, stride=1)
        self.fc = nn.Linear(final, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        """Map images `(N, 3, H, W)` to `conv5` features `(N, num_features, H/32, W/32)`."""
        x = self.conv1(x)
        if x.is_cpu and x.is_contiguous():
            # PyTorch's CPU max pooling is about 4x faster on channels-last memory (5 ms vs
            # 1.4 ms at 224x224, an eighth of the forward pass). Pooling only selects values,
            # so the result is bit-identical; the ONNX exporter ignores memory formats. A
            # channels-last input (a channels-last model) is pooled as it is and stays so.
            x = self.maxpool(x.contiguous(memory_format=torch.channels_last)).contiguous()
        else:
            x = self.maxpool(x)
        x = self.modulator(self.stage2(x)) + self.local(x)
        return self.conv5(self.stage4(self.stage3(x)))


# Architectures: stage repeats (stages 2-4), then widths (stem, stages 2-4, conv5).
_EFFICIENTFACE_CFG = ((4, 8, 4), (29, 116, 232, 464, 1024))


def efficientface(num_classes: int = 7) -> EfficientFace:
    """EfficientFace as published (1,275,293 parameters with 7 classes)."""
    return EfficientFace(*_EFFICIENTFACE_CFG, num_classes=num_classes)
