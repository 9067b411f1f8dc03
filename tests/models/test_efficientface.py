"""EfficientFace against an independent re-creation of upstream's model, and the registry.

`_Official*` below re-creates upstream's `models/EfficientFace.py` and `models/modulator.py`
(https://github.com/zengqunzhao/EfficientFace, MIT, commit 8d19537) with their quirks:
hard-coded 28-pixel quadrant slices, `x.view` channel shuffle, `avg_pool2d(kernel=H)` and a
plain `BatchNorm1d`. It shares no code with `lightfer.models`.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lightfer.errors import LightferError, UnknownModelError
from lightfer.models import RESNET_NAMES, create_model, ldg, list_models, recalibrate_batchnorm
from lightfer.models.efficientface import (
    LocalFeatureExtractor,
    SingleSampleBatchNorm1d,
    quadrant_split,
)
from tests.conftest import PROJECT_ROOT

# ---------------------------------------------------------------- upstream re-creation


def _official_dw(i: int, o: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(i, o, 3, stride, 1, bias=False, groups=i)


def _official_channel_shuffle(x: torch.Tensor, groups: int) -> torch.Tensor:
    n, c, h, w = x.size()
    x = x.view(n, groups, c // groups, h, w).transpose(1, 2).contiguous()
    return x.view(n, -1, h, w)


class _OfficialLocal(nn.Module):
    def __init__(self, inplanes: int, planes: int) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        for i in (1, 2, 3, 4):
            setattr(self, f"conv{i}_1", _official_dw(inplanes, planes, 2))
            setattr(self, f"bn{i}_1", nn.BatchNorm2d(planes))
            setattr(self, f"conv{i}_2", _official_dw(planes, planes, 1))
            setattr(self, f"bn{i}_2", nn.BatchNorm2d(planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        patches = {
            1: x[:, :, 0:28, 0:28],
            2: x[:, :, 28:56, 0:28],
            3: x[:, :, 0:28, 28:56],
            4: x[:, :, 28:56, 28:56],
        }
        out = {}
        for i, p in patches.items():
            p = self.relu(getattr(self, f"bn{i}_1")(getattr(self, f"conv{i}_1")(p)))
            out[i] = self.relu(getattr(self, f"bn{i}_2")(getattr(self, f"conv{i}_2")(p)))
        return torch.cat([torch.cat([out[1], out[2]], 2), torch.cat([out[3], out[4]], 2)], 3)


class _OfficialUnit(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        f = oup // 2
        if stride > 1:
            self.branch1 = nn.Sequential(
                _official_dw(inp, inp, stride),
                nn.BatchNorm2d(inp),
                nn.Conv2d(inp, f, 1, bias=False),
                nn.BatchNorm2d(f),
                nn.ReLU(inplace=True),
            )
        self.branch2 = nn.Sequential(
            nn.Conv2d(inp if stride > 1 else f, f, 1, bias=False),
            nn.BatchNorm2d(f),
            nn.ReLU(inplace=True),
            _official_dw(f, f, stride),
            nn.BatchNorm2d(f),
            nn.Conv2d(f, f, 1, bias=False),
            nn.BatchNorm2d(f),
            nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 1:
            x1, x2 = x.chunk(2, dim=1)
            out = torch.cat((x1, self.branch2(x2)), dim=1)
        else:
            out = torch.cat((self.branch1(x), self.branch2(x)), dim=1)
        return _official_channel_shuffle(out, 2)


class _OfficialChannel(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.gate_c = nn.Sequential()
        self.gate_c.add_module("gate_c_fc_0", nn.Linear(c, c // 16))
        self.gate_c.add_module("gate_c_bn_1", nn.BatchNorm1d(c // 16))
        self.gate_c.add_module("gate_c_relu_1", nn.ReLU())
        self.gate_c.add_module("gate_c_fc_final", nn.Linear(c // 16, c))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.avg_pool2d(x, x.size(2), stride=x.size(2))
        return self.gate_c(pooled.view(pooled.size(0), -1)).unsqueeze(2).unsqueeze(3).expand_as(x)


class _OfficialSpatial(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        r = c // 16
        self.gate_s = nn.Sequential()
        self.gate_s.add_module("gate_s_conv_reduce0", nn.Conv2d(c, r, 1))
        self.gate_s.add_module("gate_s_bn_reduce0", nn.BatchNorm2d(r))
        self.gate_s.add_module("gate_s_relu_reduce0", nn.ReLU())
        for i in range(2):
            self.gate_s.add_module(f"gate_s_conv_di_{i}", nn.Conv2d(r, r, 3, padding=4, dilation=4))
            self.gate_s.add_module(f"gate_s_bn_di_{i}", nn.BatchNorm2d(r))
            self.gate_s.add_module(f"gate_s_relu_di_{i}", nn.ReLU())
        self.gate_s.add_module("gate_s_conv_final", nn.Conv2d(r, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gate_s(x).expand_as(x)


class _OfficialModulator(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.channel_att = _OfficialChannel(c)
        self.spatial_att = _OfficialSpatial(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.channel_att(x) * self.spatial_att(x)) * x


class _OfficialEfficientFace(nn.Module):
    def __init__(self, num_classes: int = 7) -> None:
        super().__init__()
        widths = [29, 116, 232, 464, 1024]
        self.conv1 = nn.Sequential(
            nn.Conv2d(3, 29, 3, 2, 1, bias=False), nn.BatchNorm2d(29), nn.ReLU(inplace=True)
        )
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        inp = 29
        for name, repeats, oup in zip(
            ("stage2", "stage3", "stage4"), (4, 8, 4), widths[1:4], strict=True
        ):
            units = [_OfficialUnit(inp, oup, 2)]
            units += [_OfficialUnit(oup, oup, 1) for _ in range(repeats - 1)]
            setattr(self, name, nn.Sequential(*units))
            inp = oup
        self.local = _OfficialLocal(29, 116)
        self.modulator = _OfficialModulator(116)
        self.conv5 = nn.Sequential(
            nn.Conv2d(464, 1024, 1, 1, 0, bias=False), nn.BatchNorm2d(1024), nn.ReLU(inplace=True)
        )
        self.fc = nn.Linear(1024, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.conv1(x))
        x = self.modulator(self.stage2(x)) + self.local(x)
        x = self.conv5(self.stage4(self.stage3(x)))
        return self.fc(x.mean([2, 3]))


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def official() -> _OfficialEfficientFace:
    """The upstream re-creation with recalibrated batch-norm statistics, in eval mode."""
    torch.manual_seed(0)
    model = _OfficialEfficientFace()
    recalibrate_batchnorm(model, [torch.randn(4, 3, 224, 224) for _ in range(2)])
    return model.eval()


def _shapes(model: nn.Module) -> list[tuple[str, tuple[int, ...]]]:
    return [(k, tuple(v.shape)) for k, v in model.state_dict().items()]


# ---------------------------------------------------------------- upstream compatibility


def test_state_dict_keys_shapes_and_order_equal_upstream(official):
    ours = create_model("efficientface")
    assert _shapes(ours) == _shapes(official)
    assert len(ours.state_dict()) == 418


def test_parameter_count_matches_upstream():
    model = create_model("efficientface")
    assert sum(p.numel() for p in model.parameters()) == 1_275_293
    model.reset_classifier(12_666)
    assert sum(p.numel() for p in model.parameters()) == 14_250_768


def test_upstream_weights_give_upstream_outputs_at_224(official, tmp_path):
    path = tmp_path / "EfficientFace_Trained_on_X.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in official.state_dict().items()}}, path)
    ours = create_model("efficientface", pretrained=path).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        expected = official(x)
        got = ours(x)
    assert expected.std() > 1e-3  # recalibrated: outputs did not collapse
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)


def test_upstream_local_extractor_only_works_at_224():
    """The re-creation keeps upstream's hard-coded slices; ours adapts to the input size."""
    x = torch.randn(1, 29, 28, 28)  # stem output of a 112x112 image
    with pytest.raises(RuntimeError):
        _OfficialLocal(29, 116)(x)
    assert LocalFeatureExtractor(29, 116)(x).shape == (1, 116, 14, 14)


# ---------------------------------------------------------------- any input size


def test_quadrant_split_reproduces_upstream_at_56():
    assert quadrant_split(56) == 28


@pytest.mark.parametrize("size", range(3, 42))
def test_local_extractor_output_aligns_with_stage2(size):
    local = LocalFeatureExtractor(2, 4).eval()
    out = local(torch.randn(1, 2, size, size + 1))
    assert out.shape[-2:] == (math.ceil(size / 2), math.ceil((size + 1) / 2))


def test_too_small_input_names_the_minimum():
    model = create_model("efficientface").eval()
    with pytest.raises(ValueError, match="at least 9x9"):
        model(torch.randn(1, 3, 8, 8))


def test_non_square_input():
    model = create_model("efficientface").eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 96)).shape == (1, 7)


# ---------------------------------------------------------------- batch of one in training


def test_single_sample_batchnorm_uses_running_stats_and_keeps_them():
    norm = SingleSampleBatchNorm1d(7).train()
    norm.running_mean.fill_(1.0)
    norm.running_var.fill_(4.0)
    x = torch.randn(1, 7)
    out = norm(x)
    torch.testing.assert_close(out, (x - 1.0) / torch.sqrt(torch.tensor(4.0 + norm.eps)))
    assert torch.all(norm.running_mean == 1.0)
    assert norm.num_batches_tracked == 0


def test_single_sample_batchnorm_equals_batchnorm1d_for_larger_batches():
    ours, reference = SingleSampleBatchNorm1d(7).train(), nn.BatchNorm1d(7).train()
    x = torch.randn(5, 7)
    torch.testing.assert_close(ours(x), reference(x))
    torch.testing.assert_close(ours.running_var, reference.running_var)


def test_upstream_modulator_fails_on_a_batch_of_one():
    with pytest.raises(ValueError, match="more than 1 value"):
        _OfficialModulator(116).train()(torch.randn(1, 116, 8, 8))


# ---------------------------------------------------------------- every registered model


def test_registry_lists_the_project_models():
    assert {"efficientface", "resnet50", "resnet18", "shufflenet_v2_x1_0"} <= set(list_models())
    assert set(RESNET_NAMES) == set(ldg.RESNET_CONFIGS)


def test_an_efficientface_stage_starts_without_importing_torchvision():
    """torchvision costs each stage process about 1.5 s; only the ResNet stages need it."""
    code = (
        "import sys, stages.train_ef, stages.study\n"
        "from lightfer.models import create_model\n"
        "create_model('efficientface')\n"
        "print('torchvision' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=PROJECT_ROOT
    )
    assert result.stdout.strip() == "False"


def test_unknown_model_lists_registered_names():
    with pytest.raises(UnknownModelError, match=r"registered models: .*efficientface") as info:
        create_model("efficentface")
    assert isinstance(info.value, LightferError)


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("size", [64, 112, 224])
def test_forward_shapes(name, size):
    model = create_model(name).eval()
    with torch.no_grad():
        logits = model(torch.randn(2, 3, size, size))
    assert logits.shape == (2, 7)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("name", list_models())
def test_batch_of_one_training_step_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(name).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    loss = F.cross_entropy(model(torch.randn(1, 3, 64, 64)), torch.tensor([3]))
    loss.backward()
    assert torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters())
    optimizer.step()


@pytest.mark.parametrize("name", list_models())
def test_model_surface(name):
    model = create_model(name, num_classes=5).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        features = model.forward_features(x)
        pooled = model.forward_head(features, pre_logits=True)
        torch.testing.assert_close(model.forward_head(features), model(x))
    assert model.num_classes == 5
    assert pooled.shape == (2, model.num_features)
    model.reset_classifier(3)
    assert model.num_classes == 3
    with torch.no_grad():
        assert model(x).shape == (2, 3)
