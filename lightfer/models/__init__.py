"""Model registry: EfficientFace (the student), ResNets (the LDG) and ShuffleNetV2 (baseline).

`create_model(name, num_classes=..., pretrained=...)` builds any registered model, in the
manner of timm's factory (https://github.com/huggingface/pytorch-image-models, Apache-2.0).
Every model has the same surface: `forward_features`, `forward_head(x, pre_logits=False)`,
`reset_classifier(num_classes)`, `.num_classes` and `.num_features`.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import torch
from torch import Tensor, nn

from lightfer.errors import UnknownModelError
from lightfer.labels import CLASSES
from lightfer.models.checkpoint import load_pretrained

__all__ = ["RESNET_NAMES", "create_model", "list_models", "recalibrate_batchnorm"]

RESNET_NAMES = ("resnet18", "resnet34", "resnet50")  # `lightfer.models.ldg.RESNET_CONFIGS`

# Name -> (module, factory). The module is imported on first use: the ResNets and
# ShuffleNetV2 subclass torchvision's models, and importing torchvision costs a process about
# 1.5 s here, which the stages that only build EfficientFace should not pay.
# Entries are (module, function, leading arguments).
_REGISTRY: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "efficientface": ("lightfer.models.efficientface", "efficientface", ()),
    "shufflenet_v2_x1_0": ("lightfer.models.shufflenet", "shufflenet_v2_x1_0", ()),
    **{name: ("lightfer.models.ldg", "resnet", (name,)) for name in RESNET_NAMES},
}


def _factory(name: str) -> Callable[..., nn.Module]:
    module, function, args = _REGISTRY[name]
    return functools.partial(getattr(importlib.import_module(module), function), *args)


def list_models() -> list[str]:
    """Return the registered model names, sorted."""
    return sorted(_REGISTRY)


def create_model(
    name: str,
    *,
    num_classes: int = 7,
    pretrained: str | Path | None = None,
    classes: Sequence[str] | None = None,
) -> nn.Module:
    """Build a registered model, optionally with weights from a checkpoint file.

    Args:
        name: a name from `list_models()`, e.g. "efficientface" or "resnet50".
        num_classes: classifier outputs.
        pretrained: a project checkpoint, an official EfficientFace/LDG file or a bare
            state_dict (see `lightfer.models.checkpoint`). A classifier of another size (the
            12,666-way MS-Celeb-1M head) is replaced by a new `num_classes`-way one.
        classes: the run's class names in output order, checked against the checkpoint's
            before its classifier is loaded. Defaults to `lightfer.labels.CLASSES` when
            `num_classes` is 7.

    Returns:
        The model in training mode, on the CPU.

    Raises:
        UnknownModelError: `name` is not registered (the message lists the names).
        CheckpointError: `pretrained` is unreadable or does not fit the model.
        ClassOrderMismatchError: the checkpoint's class order differs from `classes`.
        ValueError: `classes` does not have `num_classes` names.
    """
    try:
        factory = _factory(name)
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; registered models: {', '.join(list_models())}"
        ) from None
    if classes is None and num_classes == len(CLASSES):
        classes = CLASSES
    if classes is not None and len(classes) != num_classes:
        raise ValueError(f"num_classes is {num_classes} but {len(classes)} class names given")
    model = factory(num_classes=num_classes)
    if pretrained is not None:
        load_pretrained(model, pretrained, arch=name, classes=classes)
    return model


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, batches: Iterable[Tensor]) -> nn.Module:
    """Re-estimate every batch-norm layer's running statistics from `batches`, in place.

    The statistics are reset and replaced by the plain average over the batches (forward
    passes in training mode, no gradient, no weight update); the model's train/eval mode is
    restored afterwards. Freshly initialised networks need this before eval-mode outputs are
    meaningful: with the default statistics EfficientFace's activations collapse towards
    zero, which makes output comparisons between runtimes vacuous.

    Args:
        model: the model to update.
        batches: input batches of at least two samples each.

    Returns:
        The model.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
    model.train()
    for batch in batches:
        model(batch)
    for norm, momentum in zip(norms, momenta, strict=True):
        norm.momentum = momentum
    model.train(was_training)
    return model
