"""`lightfer export`: a checkpoint to an ONNX file (and an int8 copy) that `lightfer predict` reads.

The model is a seeded EfficientFace at 64 pixels with recalibrated batch norm (its outputs
differ between inputs, so comparing runtimes means something), saved as a lightfer
checkpoint; it is exported once per module, with an int8 copy calibrated on a folder of
face-sized images.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

from lightfer.cli import _calibration_batches, app
from lightfer.export import read_inference_metadata
from lightfer.faces.detect import FaceDetector
from lightfer.labels import CLASSES
from lightfer.models import create_model, recalibrate_batchnorm
from lightfer.models.checkpoint import save_checkpoint
from lightfer.predict import Predictor

SIZE = 64
MEAN = (0.55, 0.45, 0.40)
STD = (0.25, 0.22, 0.21)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 3, SIZE, SIZE, generator=generator) for _ in range(2)]
    model = recalibrate_batchnorm(create_model("efficientface"), batches).eval()
    return save_checkpoint(
        tmp_path_factory.mktemp("models") / "ef.pt",
        model,
        arch="efficientface",
        classes=CLASSES,
        image_size=SIZE,
        mean=MEAN,
        std=STD,
    )


@pytest.fixture(scope="module")
def crops(tmp_path_factory) -> Path:
    """Calibration images at 72 px (resized to 64), one in a subfolder, and a corrupt one."""
    root = tmp_path_factory.mktemp("crops")
    (root / "sub").mkdir()
    rng = np.random.default_rng(0)
    for i, name in enumerate(["a.png", "b.png", "sub/c.jpg", "d.png"]):
        image = rng.integers(0, 256, (72, 72, 3), dtype=np.uint8)
        assert cv2.imwrite(str(root / name), cv2.GaussianBlur(image, (0, 0), 1 + i))
    (root / "corrupt.jpg").write_bytes(b"not a jpeg")
    return root


@pytest.fixture(scope="module")
def exported(checkpoint, crops, tmp_path_factory):
    out = tmp_path_factory.mktemp("export") / "model.onnx"
    result = CliRunner().invoke(
        app, ["export", str(checkpoint), "--out", str(out), "--int8", "--calibration", str(crops)]
    )
    assert result.exit_code == 0, result.output
    return out, out.with_name("model.int8.onnx"), result


@pytest.fixture(scope="module")
def detector():
    previous = torch.get_num_threads()
    yield FaceDetector(threads=1)
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def random_crops() -> np.ndarray:
    return np.random.default_rng(1).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)


def test_export_reports_paths_sizes_and_differences(exported):
    fp32, int8, result = exported
    lines = result.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith(f"{fp32}: float32, ") and " MB, 64 px" in lines[0]
    assert lines[1].startswith(f"{int8}: int8, ") and "calibrated on 4 face images" in lines[1]
    difference = float(lines[0].split("vs PyTorch ")[1].split()[0])
    assert difference < 1e-4
    assert "max |logit difference| vs PyTorch" in lines[1]
    assert "skipped 1 unreadable image(s)" in result.stderr and "corrupt.jpg" in result.stderr


def test_onnx_file_records_the_checkpoint_metadata(exported):
    fp32, _, _ = exported
    props = {p.key: p.value for p in onnx.load(str(fp32)).metadata_props}
    assert read_inference_metadata(props, source=fp32) == {
        "classes": CLASSES,
        "image_size": SIZE,
        "mean": MEAN,
        "std": STD,
    }


def test_onnx_predictor_matches_the_pytorch_one(exported, checkpoint, detector, random_crops):
    fp32, _, _ = exported
    onnx_predictor = Predictor.from_path(fp32, detector=detector)
    torch_predictor = Predictor.from_path(checkpoint, detector=detector)
    assert (onnx_predictor.image_size, onnx_predictor.mean, onnx_predictor.std) == (
        SIZE,
        MEAN,
        STD,
    )
    expected = torch_predictor.classify(random_crops)
    assert (expected.max(axis=1) - expected.min(axis=1)).min() > 0.01  # not a flat output
    np.testing.assert_allclose(onnx_predictor.classify(random_crops), expected, atol=1e-4)


def test_int8_copy_is_smaller_and_loads_for_prediction(exported, detector, random_crops):
    fp32, int8, _ = exported
    assert int8.stat().st_size < fp32.stat().st_size / 2
    assert any(n.op_type == "QuantizeLinear" for n in onnx.load(str(int8)).graph.node)
    predictor = Predictor.from_path(int8, detector=detector)
    assert (predictor.image_size, predictor.mean, predictor.std) == (SIZE, MEAN, STD)
    probabilities = predictor.classify(random_crops)
    assert probabilities.shape == (3, len(CLASSES))
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-9)


def test_a_missing_checkpoint_exits_1_with_its_path(tmp_path):
    missing = tmp_path / "nope.pt"
    out = tmp_path / "model.onnx"
    result = CliRunner().invoke(app, ["export", str(missing), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and str(missing) in result.stderr
    assert not out.exists()


def test_an_invalid_checkpoint_exits_1_on_one_line(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    result = CliRunner().invoke(app, ["export", str(bad), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1 and str(bad) in result.stderr


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--out", "model.pt"], "does not end in .onnx"),
        (["--out", "m.onnx", "--int8"], "--int8 needs calibration data"),
        (["--out", "m.onnx", "--random-calibration"], "only applies to --int8"),
        (
            ["--out", "m.onnx", "--int8", "--calibration", ".", "--random-calibration"],
            "not both",
        ),
    ],
)
def test_inconsistent_options_are_usage_errors(checkpoint, argv, message):
    result = CliRunner().invoke(app, ["export", str(checkpoint), *argv])
    assert result.exit_code == 2, result.output
    assert message in " ".join(result.stderr.replace("│", " ").split())


def test_unusable_calibration_data_writes_nothing(checkpoint, tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "model.onnx"
    argv = ["export", str(checkpoint), "--out", str(out), "--int8", "--calibration"]
    result = CliRunner().invoke(app, [*argv, str(tmp_path / "empty")])
    assert result.exit_code == 1, result.output
    assert "holds no readable image" in result.stderr
    assert not out.exists()


def test_a_checkpoint_without_class_order_is_refused(tmp_path):
    """E.g. the 12,666-way MS-Celeb-1M pre-training file (here a 5-way bare state_dict)."""
    path = tmp_path / "pretrain.pth"
    torch.save({"fc.weight": torch.zeros(5, 8), "fc.bias": torch.zeros(5)}, path)
    result = CliRunner().invoke(app, ["export", str(path), "--out", str(tmp_path / "m.onnx")])
    assert result.exit_code == 1, result.output
    assert "5-way classifier and no recorded class order" in result.stderr
    assert result.stderr.count("\n") == 1  # the same message predict gives


def test_face_cache_calibration_uses_usable_training_crops(tmp_path):
    """Crops of the align stage's cache, normalised and resized as the training loader does."""
    crops = np.random.default_rng(2).integers(0, 256, (5, 72, 72, 3), dtype=np.uint8)
    np.save(tmp_path / "faces.npy", crops)
    table = pa.table(
        {
            "split": ["train", "test", "train", "train", "train"],
            "status": ["ok", "ok", "no_face", "ok", "ok"],
            "row": np.arange(5, dtype=np.int64),
        }
    )
    pq.write_table(table, tmp_path / "faces.parquet")
    batches, described = _calibration_batches(
        tmp_path, limit=2, classes=CLASSES, image_size=SIZE, mean=MEAN, std=STD
    )
    assert described == f"2 training crops of the face cache {tmp_path}"
    (batch,) = list(batches())
    assert batch.shape == (2, 3, SIZE, SIZE) and batch.dtype == torch.float32
    assert next(iter(batches())).equal(batch)  # the same inputs on every call

    whole, _ = _calibration_batches(
        tmp_path, limit=10, classes=CLASSES, image_size=72, mean=MEAN, std=STD
    )
    images = torch.from_numpy(crops[[0, 3, 4]]).permute(0, 3, 1, 2).float()
    shift = torch.tensor(MEAN).view(1, 3, 1, 1) * 255
    scale = torch.tensor(STD).view(1, 3, 1, 1) * 255
    torch.testing.assert_close(next(iter(whole())), (images - shift) / scale)


def test_help_lists_the_options():
    help_text = CliRunner().invoke(app, ["export", "--help"]).output
    for option in (
        "--out",
        "--int8",
        "--calibration",
        "--random-calibration",
        "--calibration-limit",
        "--arch",
    ):
        assert option in help_text
