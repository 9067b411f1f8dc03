"""OpenVINO exports (`lightfer export --runtime openvino`) that `lightfer predict` reads.

The model is a seeded EfficientFace at 64 pixels with recalibrated batch norm, saved as a
lightfer checkpoint (as in tests/test_export_cli.py). The fast tests export fp32 through the
library; the slow ones run the command for fp32, int8 (calibrated on crops of the
astronaut's face) and bf16 and check that `lightfer predict` labels the astronaut as the
checkpoint does.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data
from typer.testing import CliRunner

from lightfer.cli import app
from lightfer.errors import CheckpointError, DeviceError, ExportError
from lightfer.export import export_onnx, inference_metadata
from lightfer.faces.detect import FaceDetector
from lightfer.labels import CLASSES
from lightfer.models import create_model, recalibrate_batchnorm
from lightfer.models.checkpoint import save_checkpoint
from lightfer.models.inference import load_for_inference
from lightfer.openvino_export import cpu_supports_bf16, export_openvino
from lightfer.predict import Predictor

SIZE = 64
MEAN = (0.55, 0.45, 0.40)
STD = (0.25, 0.22, 0.21)
METADATA = inference_metadata(classes=CLASSES, image_size=SIZE, mean=MEAN, std=STD)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 3, SIZE, SIZE, generator=generator) for _ in range(2)]
    return recalibrate_batchnorm(create_model("efficientface"), batches).eval()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("models") / "ef.pt"
    return save_checkpoint(
        path, model, arch="efficientface", classes=CLASSES, image_size=SIZE, mean=MEAN, std=STD
    )


@pytest.fixture(scope="module")
def fp32(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("openvino") / "ef.xml"
    return export_openvino(model, path, image_size=SIZE, metadata=METADATA)


@pytest.fixture(scope="module")
def batch() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((3, 3, SIZE, SIZE)).astype(np.float32)


def test_the_export_is_an_xml_bin_pair_with_the_checkpoint_metadata(fp32, model, batch):
    assert fp32.with_suffix(".bin").stat().st_size > 4 * 1_000_000  # float32 weights
    assert sorted(p.name for p in fp32.parent.iterdir()) == ["ef.bin", "ef.xml"]  # no leftovers
    loaded = load_for_inference(fp32)
    assert (loaded.source, loaded.classes, loaded.image_size) == ("openvino", CLASSES, SIZE)
    assert (loaded.mean, loaded.std) == (MEAN, STD)
    with torch.inference_mode():
        expected = model(torch.from_numpy(batch)).numpy()
    np.testing.assert_allclose(loaded.forward(batch), expected, atol=1e-4)


def test_an_xml_without_its_bin_is_refused_naming_both(fp32, tmp_path):
    alone = shutil.copy(fp32, tmp_path / "ef.xml")
    with pytest.raises(CheckpointError, match=r"ef\.xml has no weights file .*ef\.bin beside it"):
        load_for_inference(alone)


def test_an_xml_without_lightfer_metadata_says_how_to_export_one(model, tmp_path):
    import openvino as ov

    onnx = export_onnx(model, tmp_path / "plain.onnx", image_size=SIZE, check=False)
    plain = tmp_path / "plain.xml"
    ov.save_model(ov.convert_model(onnx), plain)
    with pytest.raises(
        ExportError, match=r"plain\.xml does not record lightfer\.classes.*--runtime"
    ):
        load_for_inference(plain)


def test_openvino_models_run_on_the_cpu_only(fp32):
    with pytest.raises(DeviceError, match="OpenVINO models run on OpenVINO's CPU plugin"):
        load_for_inference(fp32, device="cuda")


def test_bf16_on_a_cpu_without_it_exits_1_and_writes_nothing(checkpoint, tmp_path, monkeypatch):
    monkeypatch.setattr("lightfer.openvino_export.cpu_supports_bf16", lambda: False)
    out = tmp_path / "m.xml"
    args = ["export", str(checkpoint), "--runtime", "openvino", "--out", str(out), "--bf16"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1
    assert "m.bf16.xml" in result.stderr and "no bfloat16 instructions" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--runtime", "openvino", "--out", "m.onnx"], "m.onnx does not end in .xml"),
        (["--runtime", "tflite", "--out", "m.xml"], "'tflite' is not one of onnx, openvino"),
        (["--out", "m.onnx", "--bf16"], "--bf16 needs --runtime openvino"),
    ],
)
def test_export_refuses_mismatched_runtime_options(checkpoint, tmp_path, args, message):
    result = CliRunner().invoke(app, ["export", str(checkpoint), *args])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.split())


# The command end to end, then `lightfer predict` on the astronaut.


@pytest.fixture(scope="module")
def astronaut(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("photo") / "astronaut.jpg"
    assert cv2.imwrite(str(path), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def expected_label(checkpoint, astronaut) -> str:
    previous = torch.get_num_threads()
    predictor = Predictor.from_path(checkpoint, detector=FaceDetector(threads=1))
    torch.set_num_threads(previous)
    (row,) = predictor.predict_paths([astronaut], progress=False)
    probabilities = sorted(row.probabilities.values())
    assert probabilities[-1] - probabilities[-2] > 0.1  # a margin int8 cannot flip by chance
    return row.label


@pytest.fixture(scope="module")
def face_crops(checkpoint, astronaut, tmp_path_factory) -> Path:
    """Calibration faces: the astronaut's aligned face, mirrored and blurred copies."""
    previous = torch.get_num_threads()
    predictor = Predictor.from_path(checkpoint, detector=FaceDetector(threads=1))
    torch.set_num_threads(previous)
    (face,) = predictor.faces(data.astronaut())
    root = tmp_path_factory.mktemp("crops")
    variants = [face.crop, face.crop[:, ::-1], cv2.GaussianBlur(face.crop, (0, 0), 1)]
    for i, crop in enumerate(variants):
        bgr = cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2BGR)
        assert cv2.imwrite(str(root / f"{i}.png"), bgr)
    return root


@pytest.fixture(scope="module")
def exported(checkpoint, face_crops, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "model.xml"
    args = ["export", str(checkpoint), "--runtime", "openvino", "--out", str(out), "--int8"]
    args += ["--calibration", str(face_crops)] + (["--bf16"] if cpu_supports_bf16() else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out, result


@pytest.mark.slow
def test_export_prints_each_precision_with_its_agreement(exported):
    out, result = exported
    lines = result.stdout.splitlines()
    assert lines[0].startswith(f"{out}: float32, ") and " MB, 64 px" in lines[0]
    assert lines[1].startswith(f"{out.with_name('model.int8.xml')}: int8, ")
    assert "calibrated on 3 face images" in lines[1]
    assert re.search(r"top-1 agreement \d+% on 3 calibration inputs$", lines[1])
    assert len(lines) == (3 if cpu_supports_bf16() else 2)
    int8 = out.with_name("model.int8.xml")
    assert int8.with_suffix(".bin").stat().st_size < out.with_suffix(".bin").stat().st_size / 2


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["", ".int8", ".bf16"])
def test_predict_labels_the_astronaut_as_the_checkpoint_does(
    exported, astronaut, expected_label, precision, tmp_path
):
    if precision == ".bf16" and not cpu_supports_bf16():
        pytest.skip("this CPU has no bfloat16 (OpenVINO's OPTIMIZATION_CAPABILITIES lack BF16)")
    model = exported[0].with_name(f"model{precision}.xml")
    rows = tmp_path / "rows.csv"
    args = ["predict", str(astronaut), "--model", str(model), "--out", str(rows)]
    result = CliRunner().invoke(app, [*args, "--threads", "1", "--no-progress"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"{rows}: 1 file(s): 1 read") and "1 face(s)" in result.stdout
    header, line = rows.read_text().splitlines()
    assert dict(zip(header.split(","), line.split(","), strict=True))["label"] == expected_label
