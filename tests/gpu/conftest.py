"""Fixtures of the CUDA tests (marked `gpu`; tests/conftest.py skips them without CUDA)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def cuda() -> torch.device:
    return torch.device("cuda")


@pytest.fixture
def full_float32():
    """Plain float32 convolutions and matrix products: without TF32, which CUDA uses by
    default for convolutions, two memory formats may differ by TF32's 1e-3 rounding."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
