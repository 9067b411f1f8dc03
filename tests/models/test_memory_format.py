"""Every registry model computes the same logits in channels-last memory as in NCHW.

CUDA training keeps the model and every batch channels-last; a layer that assumes NCHW
strides (a `view` over a channel shuffle, say) crashes or silently permutes channels there.
"""

from __future__ import annotations

import copy

import pytest
import torch

from lightfer.models import create_model, list_models


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_channels_last_gives_the_logits_of_the_contiguous_model(name, training):
    torch.manual_seed(0)
    model = create_model(name, num_classes=7).train(training)
    channels_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
        got = channels_last(x.contiguous(memory_format=torch.channels_last))
    # Same arithmetic, other summation orders in the convolution kernels.
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_efficientface_stays_channels_last_through_its_channel_shuffles():
    model = create_model("efficientface").to(memory_format=torch.channels_last)
    x = torch.randn(2, 3, 64, 64).contiguous(memory_format=torch.channels_last)
    features = model.forward_features(x)
    assert features.is_contiguous(memory_format=torch.channels_last)
