"""Channels-last models give the logits of contiguous ones on CUDA, in float32 and under AMP."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.gpu.inputs import calibrated, images

pytestmark = pytest.mark.gpu

# Largest |difference| / largest |logit|: float32 differs by summation order only (TF32 off);
# AMP by the rounding of 16-bit activations, which the two layouts' kernels do differently.
TOLERANCE = {None: 5e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}


@pytest.mark.parametrize("dtype", list(TOLERANCE), ids=["float32", "float16", "bfloat16"])
@pytest.mark.parametrize("name", ["efficientface", "resnet50"])
def test_channels_last_logits_equal_contiguous_ones(name, dtype, cuda, full_float32):
    contiguous = calibrated(name, cuda)
    channels_last = copy.deepcopy(contiguous).to(memory_format=torch.channels_last)
    x = images(16, seed=3).to(cuda)
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        expected = contiguous(x).float()
        got = channels_last(x.contiguous(memory_format=torch.channels_last)).float()
    scale = expected.abs().max().item()
    assert scale > 1e-3, "collapsed logits would make the comparison vacuous"
    assert expected.std(0).mean().item() > 1e-3 * scale, "the logits ignore the images"
    assert torch.isfinite(got).all()
    error = (got - expected).abs().max().item() / scale
    assert error <= TOLERANCE[dtype], f"{name}: channels-last differs by {error:.2e} of the scale"
