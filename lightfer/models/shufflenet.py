"""torchvision's ShuffleNetV2 x1.0 with the lightfer model surface: the speed baseline.

A module of its own so that importing EfficientFace does not import torchvision (about
1.5 s a process here, most of it `torch._dynamo` through `torchvision.ops`).
"""

from __future__ import annotations

import torchvision
from torch import Tensor

from lightfer.models.efficientface import LinearHeadMixin

__all__ = ["ShuffleNetV2", "shufflenet_v2_x1_0"]

# Stage repeats (stages 2-4), then widths (stem, stages 2-4, conv5), as EfficientFace's.
_SHUFFLENET_V2_X1_0_CFG = ((4, 8, 4), (24, 116, 232, 464, 1024))


class ShuffleNetV2(LinearHeadMixin, torchvision.models.ShuffleNetV2):
    """torchvision's ShuffleNetV2 with the lightfer model surface.

    The backbone EfficientFace extends, kept as torchvision implements it: the speed baseline
    of `lightfer.bench` and an ablation without the local extractor and the modulator. Keys
    are torchvision's, so its ImageNet weights load from a file (with a new 7-way head).
    """

    def forward_features(self, x: Tensor) -> Tensor:
        """Map images `(N, 3, H, W)` to `conv5` features."""
        x = self.maxpool(self.conv1(x))
        return self.conv5(self.stage4(self.stage3(self.stage2(x))))


def shufflenet_v2_x1_0(num_classes: int = 7) -> ShuffleNetV2:
    """torchvision's ShuffleNetV2 x1.0 (1,260,779 parameters with 7 classes)."""
    repeats, widths = _SHUFFLENET_V2_X1_0_CFG
    return ShuffleNetV2(list(repeats), list(widths), num_classes=num_classes)
