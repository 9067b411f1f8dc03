"""The official-style forward, the bench's eager baseline, computes EfficientFace's outputs."""

from __future__ import annotations

import torch

from lightfer.models import create_model, recalibrate_batchnorm
from lightfer.models.official_forward import official_style_forward


def test_official_style_forward_gives_the_models_logits():
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(2, 3, 96, 96, generator=generator) for _ in range(2)]
    model = recalibrate_batchnorm(create_model("efficientface"), batches).eval()
    x = torch.randn(3, 3, 96, 96, generator=generator)
    with torch.inference_mode():
        expected, got = model(x), official_style_forward(model, x)
    assert expected.std() > 0.01  # outputs that differ between images
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
