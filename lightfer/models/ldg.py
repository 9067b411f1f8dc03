"""ResNets for the label distribution generator (LDG).

The LDG of EfficientFace (Zhao et al., AAAI 2021; upstream https://github.com/zengqunzhao/
EfficientFace, MIT licence, `models/resnet.py`) is a ResNet-50 (He et al., CVPR 2016) with a
7-way classifier, initialised from MS-Celeb-1M face-recognition weights (upstream's
`Pretrained_LDG.tar`) and fine-tuned per dataset. Upstream's file is a copy of torchvision's
ResNet, so these models subclass torchvision's and keep its keys: upstream's files load
through `lightfer.models.checkpoint`, with a head of another size (12,666 identities,
torchvision's 1,000 ImageNet classes) replaced by a new 7-way one. Nothing is downloaded.
Smaller depths are registered for quick CPU runs.
"""

from __future__ import annotations

import logging

from torch import Tensor
from torchvision.models.resnet import BasicBlock, Bottleneck
from torchvision.models.resnet import ResNet as _TorchvisionResNet

from lightfer.models.efficientface import LinearHeadMixin

__all__ = ["RESNET_CONFIGS", "ResNet", "resnet"]

logger = logging.getLogger(__name__)


class ResNet(LinearHeadMixin, _TorchvisionResNet):
    """torchvision's ResNet with the lightfer model surface (`forward_features`, ...)."""

    def forward_features(self, x: Tensor) -> Tensor:
        """Map images `(N, 3, H, W)` to `layer4` features `(N, num_features, H/32, W/32)`."""
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        """Pool with torchvision's `avgpool` (same outputs as torchvision) and classify."""
        x = self.avgpool(x).flatten(1)
        return x if pre_logits else self.fc(x)


# name: (residual block, blocks per stage). resnet50 is the paper's LDG.
RESNET_CONFIGS: dict[str, tuple[type[BasicBlock | Bottleneck], tuple[int, int, int, int]]] = {
    "resnet18": (BasicBlock, (2, 2, 2, 2)),
    "resnet34": (BasicBlock, (3, 4, 6, 3)),
    "resnet50": (Bottleneck, (3, 4, 6, 3)),
}


def resnet(name: str, num_classes: int = 7) -> ResNet:
    """Build the ResNet called `name` (a key of `RESNET_CONFIGS`) with random weights.

    Raises:
        KeyError: `name` is not in `RESNET_CONFIGS`.
    """
    block, layers = RESNET_CONFIGS[name]
    return ResNet(block, list(layers), num_classes=num_classes)
