"""`lightfer.predict` and `lightfer predict`: real MTCNN faces, a small seeded EfficientFace.

The model is a randomly initialised EfficientFace at 64 pixels whose batch norm is
recalibrated (so its outputs differ between faces and the runtimes' comparison means
something); it is saved as a lightfer checkpoint, an official-style file and an ONNX export
once per module. The detector is built once too; each MTCNN call here takes 0.1-1 s.
"""

from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from skimage import data
from typer.testing import CliRunner

from lightfer.cli import app
from lightfer.errors import CheckpointError, ClassOrderMismatchError, ExportError
from lightfer.export import export_onnx, inference_metadata, read_inference_metadata
from lightfer.faces.align import AlignSpec
from lightfer.faces.detect import DetectSpec, FaceDetector, detect_and_align
from lightfer.labels import CLASSES
from lightfer.models import create_model, recalibrate_batchnorm
from lightfer.models.checkpoint import save_checkpoint
from lightfer.predict import (
    NO_FACE,
    OFFICIAL_MEAN,
    OFFICIAL_STD,
    FaceRow,
    Predictor,
    expand_paths,
    read_video_frames,
    write_rows,
)
from lightfer.training.data import BatchRequest, FaceDataset

SIZE = 64
MEAN = (0.55, 0.45, 0.40)
STD = (0.25, 0.22, 0.21)
ASTRONAUT_BOX = [181, 62, 268, 172]  # MTCNN's box on skimage's astronaut (tests/faces)


def _softmax(logits: torch.Tensor) -> np.ndarray:
    return torch.softmax(logits.double(), dim=1).numpy()


@pytest.fixture(scope="module")
def detector():
    previous = torch.get_num_threads()
    yield FaceDetector(threads=1)
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randn(4, 3, SIZE, SIZE, generator=generator) for _ in range(2)]
    return recalibrate_batchnorm(create_model("efficientface"), batches).eval()


@pytest.fixture(scope="module")
def files(model, tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    checkpoint = save_checkpoint(
        root / "ef.pt",
        model,
        arch="efficientface",
        classes=CLASSES,
        image_size=SIZE,
        mean=MEAN,
        std=STD,
    )
    onnx = export_onnx(
        model,
        root / "ef.onnx",
        image_size=SIZE,
        metadata=inference_metadata(classes=CLASSES, image_size=SIZE, mean=MEAN, std=STD),
    )
    return {"checkpoint": checkpoint, "onnx": onnx}


@pytest.fixture(scope="module")
def predictor(files, detector) -> Predictor:
    return Predictor.from_path(files["checkpoint"], detector=detector)


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return data.astronaut()


@pytest.fixture(scope="module")
def head(astronaut) -> np.ndarray:
    """The astronaut's head, 256 px square: faster to search than the whole picture."""
    return np.ascontiguousarray(astronaut[:256, 96:352])


@pytest.fixture(scope="module")
def astronaut_rows(predictor, astronaut) -> list[FaceRow]:
    return predictor.predict_image(astronaut, file="astronaut.png")


def _write_image(path: Path, rgb: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return path


@pytest.fixture(scope="module")
def folder(head, tmp_path_factory) -> Path:
    """A face, a picture without one, a corrupt JPEG and a file that is not an image."""
    root = tmp_path_factory.mktemp("inputs") / "photos"
    _write_image(root / "head.png", head)
    _write_image(root / "blank.png", np.full((120, 160, 3), 128, np.uint8))
    (root / "sub").mkdir()
    (root / "sub" / "corrupt.jpg").write_bytes(np.random.default_rng(0).bytes(2000))
    (root / "notes.txt").write_text("not an image")
    return root


def test_the_astronaut_is_one_face_row(astronaut_rows):
    (row,) = astronaut_rows
    assert (row.file, row.frame, row.face, row.error) == ("astronaut.png", None, 0, None)
    np.testing.assert_allclose(row.box, ASTRONAUT_BOX, atol=10)
    assert row.score > 0.99
    assert tuple(row.probabilities) == CLASSES
    assert sum(row.probabilities.values()) == pytest.approx(1.0, abs=1e-9)
    assert row.label == max(row.probabilities, key=row.probabilities.get)


def test_faces_are_cropped_and_normalised_as_training_does(
    predictor, model, detector, astronaut, astronaut_rows
):
    """Same crop as the align stage at the model's size, same tensor as the training loader."""
    (face,) = predictor.faces(astronaut)
    aligned = detect_and_align(astronaut, detector, DetectSpec(), AlignSpec(crop_size=SIZE))
    np.testing.assert_array_equal(face.crop, aligned.crop)

    loader = FaceDataset(
        face.crop[np.newaxis], np.array([0]), np.array([0]), mean=MEAN, std=STD, image_size=SIZE
    )
    with torch.inference_mode():
        expected = _softmax(model(loader[BatchRequest(np.array([0]), 0)].images))[0]
    got = np.array(list(astronaut_rows[0].probabilities.values()))
    np.testing.assert_allclose(got, expected, atol=1e-6)


def test_onnx_and_pytorch_predictions_agree(files, detector, astronaut, astronaut_rows):
    onnx = Predictor.from_path(files["onnx"], detector=detector)
    assert (onnx.image_size, onnx.mean, onnx.std) == (SIZE, MEAN, STD)
    (got,) = onnx.predict_image(astronaut, file="astronaut.png")
    (expected,) = astronaut_rows
    p_onnx = np.array(list(got.probabilities.values()))
    p_torch = np.array(list(expected.probabilities.values()))
    assert p_torch.max() - p_torch.min() > 0.05  # not a uniform output compared with itself
    assert np.abs(p_onnx - p_torch).max() < 1e-4
    assert (got.box, got.label) == (expected.box, expected.label)


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_rows_are_written_as_csv_or_jsonl(astronaut_rows, tmp_path, suffix):
    rows = [
        *astronaut_rows,
        FaceRow("bad.jpg", error="bad.jpg: not an image format PIL can decode"),
    ]
    path = tmp_path / f"out{suffix}"
    assert write_rows(iter(rows), path) == 2
    face = astronaut_rows[0]
    if suffix == ".csv":
        with path.open(newline="") as handle:
            records = list(csv.DictReader(handle))
        assert list(records[0]) == [
            "file",
            "frame",
            "face",
            "x0",
            "y0",
            "x1",
            "y1",
            "score",
            *(f"p_{name}" for name in CLASSES),
            "label",
            "error",
        ]
        assert records[0]["frame"] == "" and records[0]["error"] == ""
        assert float(records[0]["x0"]) == face.box[0]
        assert float(records[0]["p_anger"]) == face.probabilities["anger"]
        assert records[0]["label"] == face.label
        assert records[1]["error"].startswith("bad.jpg:") and records[1]["p_neutral"] == ""
    else:
        records = [json.loads(line) for line in path.read_text().splitlines()]
        assert records[0] == face.to_dict()
        assert records[1]["probabilities"] is None and records[1]["error"].startswith("bad.jpg")
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary left behind


def test_an_unknown_output_suffix_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"\.csv, \.jsonl, \.ndjson"):
        write_rows([], tmp_path / "out.xlsx")
    assert write_rows([], tmp_path / "out.xlsx", format="csv") == 0


def test_a_folder_with_a_corrupt_and_a_faceless_file_yields_a_row_for_each(
    predictor, folder, tmp_path, caplog
):
    draw = tmp_path / "drawn"
    with caplog.at_level(logging.WARNING, logger="lightfer"):
        rows = list(predictor.predict_paths([folder], progress=False, draw_dir=draw))
    assert [Path(r.file).relative_to(folder).as_posix() for r in rows] == [
        "blank.png",
        "head.png",
        "sub/corrupt.jpg",
    ]
    blank, face, corrupt = rows
    assert blank.error == NO_FACE and blank.probabilities is None
    assert face.error is None and face.label in CLASSES and face.score > 0.99
    assert corrupt.error == f"{folder / 'sub' / 'corrupt.jpg'}: not an image format PIL can decode"
    assert corrupt.probabilities is None and corrupt.box is None
    assert "corrupt.jpg" in caplog.text
    drawn = sorted(p.relative_to(draw).as_posix() for p in draw.rglob("*") if p.is_file())
    assert drawn == ["photos/blank.png", "photos/head.png"]
    original = cv2.imread(str(folder / "head.png"))
    marked = cv2.imread(str(draw / "photos" / "head.png"))
    assert marked.shape == original.shape and (marked != original).any()


def test_missing_files_are_rows_and_bad_strides_are_refused(predictor, tmp_path):
    missing = tmp_path / "gone.jpg"
    (row,) = predictor.predict_paths([missing], progress=False)
    assert row == FaceRow(str(missing), error=f"{missing}: file does not exist")
    assert expand_paths([tmp_path, missing]) == [missing]  # an empty folder adds nothing
    with pytest.raises(ValueError, match="frame_stride must be at least 1"):
        next(predictor.predict_paths([missing], frame_stride=0))


def test_video_frames_are_sampled_with_the_stride_and_batched(files, detector, head, tmp_path):
    """Frames 0-4 are face, face, blank, face, face; stride 2 samples 0, 2, 4."""
    small = cv2.resize(head, (128, 128), interpolation=cv2.INTER_AREA)
    blank = np.full_like(small, 128)
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 5.0, (128, 128))
    for frame in (small, small, blank, small, small):
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()
    assert [n for n, _ in read_video_frames(path, 3)] == [0, 3]

    predictor = Predictor.from_path(files["checkpoint"], detector=detector, batch_size=1)
    rows = list(predictor.predict_paths([path], frame_stride=2, progress=False))
    assert [(r.file, r.frame, r.face, r.error) for r in rows] == [
        (str(path), 0, 0, None),
        (str(path), 2, None, NO_FACE),
        (str(path), 4, 0, None),
    ]
    assert rows[0].probabilities == pytest.approx(rows[2].probabilities, abs=1e-9)


def test_an_unreadable_video_is_one_error_row(predictor, tmp_path):
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00" * 64)
    (row,) = predictor.predict_paths([path], progress=False)
    assert row.frame is None and row.error.startswith(f"{path}: ")


def test_without_a_face_the_central_square_can_be_classified(files, detector):
    spec = DetectSpec(no_face="center_crop")
    predictor = Predictor.from_path(files["checkpoint"], detector=detector, detect=spec)
    (row,) = predictor.predict_image(np.full((120, 160, 3), 128, np.uint8))
    assert row.error is None and row.score is None and row.label in CLASSES
    np.testing.assert_allclose(row.box, [20, 0, 140, 120], atol=1e-6)


def test_an_official_checkpoint_uses_the_official_defaults(model, detector, tmp_path, caplog):
    """upstream's `{'state_dict': ...}` from DataParallel: `module.` keys and no metadata."""
    path = tmp_path / "official.pth.tar"
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    with caplog.at_level(logging.WARNING, logger="lightfer"):
        official = Predictor.from_path(path, detector=detector)
    assert "official checkpoint without metadata" in caplog.text
    assert (official.image_size, official.mean, official.std) == (224, OFFICIAL_MEAN, OFFICIAL_STD)
    reference = Predictor.from_model(
        model, image_size=224, mean=OFFICIAL_MEAN, std=OFFICIAL_STD, detector=detector
    )
    crops = np.random.default_rng(0).integers(0, 256, (3, 224, 224, 3), dtype=np.uint8)
    np.testing.assert_allclose(official.classify(crops), reference.classify(crops), atol=1e-6)


def test_another_class_order_or_head_is_refused(model, detector, tmp_path):
    reordered = save_checkpoint(
        tmp_path / "reordered.pt",
        model,
        arch="efficientface",
        classes=CLASSES[::-1],
        image_size=SIZE,
        mean=MEAN,
        std=STD,
    )
    with pytest.raises(ClassOrderMismatchError, match="would be mislabelled"):
        Predictor.from_path(reordered, detector=detector)
    pretraining = tmp_path / "pretrained.pth.tar"
    torch.save(
        {"state_dict": create_model("efficientface", num_classes=12).state_dict()}, pretraining
    )
    with pytest.raises(CheckpointError, match="12-way classifier"):
        Predictor.from_path(pretraining, detector=detector)


def test_onnx_files_without_lightfer_metadata_are_refused():
    with pytest.raises(ExportError, match=r"does not record lightfer\.classes.*inference_metadata"):
        read_inference_metadata({"classes": "neutral"}, source="old.onnx")
    props = inference_metadata(classes=CLASSES, image_size=SIZE, mean=MEAN, std=STD)
    assert read_inference_metadata(props, source="x.onnx") == {
        "classes": CLASSES,
        "image_size": SIZE,
        "mean": MEAN,
        "std": STD,
    }


# The CLI. CliRunner keeps stdout and stderr apart (click >= 8.2).


def test_cli_predicts_a_folder_and_reports_the_failures(files, folder, tmp_path):
    out = tmp_path / "predictions.csv"
    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(folder),
            "--model",
            str(files["checkpoint"]),
            "--out",
            str(out),
            "--threads",
            "1",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    assert result.stdout == (
        f"{out}: 3 file(s): 2 read, 1 unreadable; 1 face(s); 1 image(s)/frame(s) without a face\n"
    )
    assert "WARNING: " in result.stderr and "corrupt.jpg: not an image format" in result.stderr
    with out.open(newline="") as handle:
        records = list(csv.DictReader(handle))
    assert [Path(r["file"]).name for r in records] == ["blank.png", "head.png", "corrupt.jpg"]
    assert [r["error"] == "" for r in records] == [False, True, False]


def test_cli_fails_when_nothing_can_be_read(files, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    out = tmp_path / "out.jsonl"
    args = ["predict", str(bad), "--model", str(files["checkpoint"]), "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--threads", "1", "--no-progress"])
    assert result.exit_code == 1, result.output
    assert result.stderr.endswith("none of the 1 file(s) could be read\n")
    assert json.loads(out.read_text())["error"].startswith(str(bad))


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["--model", "missing.pt"], 1, "model file missing.pt is not found; pass a lightfer"),
        (["--out", "rows.xlsx"], 2, "cannot tell the format of rows.xlsx"),
        (["--format", "parquet"], 2, "'parquet' is not one of csv, jsonl"),
    ],
)
def test_cli_refuses_bad_arguments(files, tmp_path, monkeypatch, args, code, message):
    image = _write_image(tmp_path / "x.png", np.zeros((32, 32, 3), np.uint8))
    monkeypatch.chdir(tmp_path)
    defaults = {"--model": str(files["checkpoint"]), "--out": "rows.csv"}
    options = dict(zip(args[::2], args[1::2], strict=True))
    argv = [part for item in {**defaults, **options}.items() for part in item]
    result = CliRunner().invoke(app, ["predict", str(image), *argv, "--threads", "1"])
    assert result.exit_code == code, result.output
    assert message in " ".join(result.stderr.split())
    assert not (tmp_path / "rows.csv").exists()


def test_cli_without_inputs_fails_and_help_lists_the_options(files, tmp_path):
    result = CliRunner().invoke(
        app, ["predict", str(tmp_path), "--model", str(files["checkpoint"])]
    )
    assert result.exit_code == 1, result.output
    assert result.stderr == f"no image or video file found in {tmp_path}\n"
    help_text = CliRunner().invoke(app, ["predict", "--help"]).output
    for option in (
        "--model",
        "--out",
        "--format",
        "--frame-stride",
        "--draw",
        "--batch-size",
        "--device",
        "--threads",
        "--no-progress",
    ):
        assert option in help_text
