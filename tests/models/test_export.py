"""ONNX export with a dynamic batch, its check against PyTorch, and int8 quantisation."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from lightfer.errors import ExportError
from lightfer.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    export_onnx,
    inference_session,
    quantize_int8,
    verify_onnx,
)
from lightfer.models import create_model, recalibrate_batchnorm

SIZE = 64


def _images(count: int, batch: int = 4, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, 3, SIZE, SIZE, generator=generator) for _ in range(count)]


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    """EfficientFace with recalibrated batch norm, so outputs do not collapse to zero."""
    torch.manual_seed(0)
    return recalibrate_batchnorm(create_model("efficientface"), _images(2)).eval()


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "ef.onnx"
    return export_onnx(
        model, path, image_size=SIZE, metadata={"classes": "neutral,happiness", "mean": "0.5"}
    )


@pytest.mark.parametrize("batch", [1, 5])
def test_onnx_runtime_matches_pytorch_at_any_batch(model, exported, batch):
    x = _images(1, batch=batch, seed=batch)[0]
    with torch.inference_mode():
        expected = model(x).numpy()
    assert expected.std() > 1e-2  # recalibrated: a real comparison, not zeros against zeros
    got = inference_session(exported).run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4)


def test_export_keeps_mode_and_writes_metadata(model, exported):
    assert not model.training
    props = {p.key: p.value for p in onnx.load(str(exported)).metadata_props}
    assert props == {"classes": "neutral,happiness", "mean": "0.5"}


def test_export_restores_training_mode(tmp_path):
    model = recalibrate_batchnorm(create_model("resnet18"), _images(1)).train()
    export_onnx(model, tmp_path / "r18.onnx", image_size=SIZE)
    assert model.training


def test_verify_detects_a_model_that_changed(model, exported):
    changed = create_model("efficientface")
    changed.load_state_dict(model.state_dict())
    with torch.no_grad():
        changed.fc.bias += 1.0
    with pytest.raises(ExportError, match="disagrees with PyTorch"):
        verify_onnx(changed.eval(), exported, image_size=SIZE)


def test_int8_model_runs_and_is_smaller(exported, tmp_path):
    batches = _images(3, seed=7)
    path = quantize_int8(exported, tmp_path / "ef-int8.onnx", lambda: iter(batches))
    x = _images(1, batch=2, seed=9)[0].numpy()
    logits = inference_session(path).run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    assert logits.shape == (2, 7)
    assert np.isfinite(logits).all()
    assert path.stat().st_size < exported.stat().st_size / 2
    assert any(node.op_type == "QuantizeLinear" for node in onnx.load(str(path)).graph.node)


def test_int8_without_calibration_batches_is_refused(exported, tmp_path):
    with pytest.raises(ExportError, match="got no calibration batch"):
        quantize_int8(exported, tmp_path / "ef-int8.onnx", [])
    assert not (tmp_path / "ef-int8.onnx").exists()
