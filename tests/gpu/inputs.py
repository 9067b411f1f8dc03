"""Inputs and models of the CUDA tests, at the paper's input size."""

from __future__ import annotations

import torch
from torch import nn

from lightfer.models import create_model, recalibrate_batchnorm

IMAGE_SIZE = 224  # the shapes the GPU will train on


def images(batch: int, *, seed: int = 0) -> torch.Tensor:
    """Random normalised images `(batch, 3, IMAGE_SIZE, IMAGE_SIZE)` on the CPU."""
    shape = (batch, 3, IMAGE_SIZE, IMAGE_SIZE)
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed))


def calibrated(name: str, device: torch.device) -> nn.Module:
    """A registry model on `device` in eval mode, batch norm recalibrated on random images
    (else eval-mode activations collapse and any comparison of outputs is vacuous)."""
    torch.manual_seed(0)
    model = create_model(name).to(device)
    return recalibrate_batchnorm(model, [images(8, seed=s).to(device) for s in (1, 2)]).eval()
