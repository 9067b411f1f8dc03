"""The face cache on real photos: batched MTCNN equals one image at a time, and resumes.

The manifest mixes what AffectNet and CAER-S bring: rows with landmarks (warped without
detection), rows without (MTCNN), images of several sizes, photos without a face (a cat,
noise, a blank frame) and a file that does not decode. MTCNN runs on the CPU here; the
same batched code path runs on a GPU.
"""

from __future__ import annotations

import logging
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image
from skimage import data

from lightfer.errors import DatasetError
from lightfer.faces.align import AlignSpec
from lightfer.faces.cache import CACHE_FILE, PROGRESS_FILE, TABLE_FILE, build_face_cache
from lightfer.faces.detect import DetectSpec, FaceDetector
from lightfer.manifest import Manifest, fixed_list, read_manifest, write_manifest

SPEC = AlignSpec(crop_size=48)
BATCH = 2


def _photos() -> dict[str, np.ndarray | bytes]:
    """Images by file name; four 256 px squares, so batches of `BATCH` fill up."""
    astronaut = data.astronaut()
    small = cv2.resize(astronaut, (256, 256), interpolation=cv2.INTER_AREA)
    rng = np.random.default_rng(0)
    return {
        "astronaut.png": small,
        "mirrored.png": np.ascontiguousarray(small[:, ::-1]),
        "shifted.png": np.roll(small, (12, -20), axis=(0, 1)),
        "noise.png": rng.integers(0, 256, small.shape, dtype=np.uint8),
        "landmarks.png": small,
        "crop.png": astronaut[:300, 60:460],
        "cat.png": data.chelsea(),
        "blank.png": np.full((200, 300, 3), 128, np.uint8),
        "broken.png": b"\x89PNG broken",
        "landmarks_mirrored.png": np.ascontiguousarray(small[:, ::-1]),
    }


def _landmarks(eyes: tuple[float, float], eye_y: float, mouth_y: float) -> np.ndarray:
    """68 iBUG points: eyes and mouth corners where given, the rest between them."""
    points = np.full((68, 2), [(eyes[0] + eyes[1]) / 2, (eye_y + mouth_y) / 2], np.float32)
    points[36:42], points[42:48] = (eyes[0], eye_y), (eyes[1], eye_y)
    points[48], points[54] = (eyes[0] + 3, mouth_y), (eyes[1] - 3, mouth_y)
    return points.reshape(-1)


@pytest.fixture(scope="module")
def manifest(tmp_path_factory) -> Manifest:
    directory = tmp_path_factory.mktemp("photos")
    photos = _photos()
    for name, pixels in photos.items():
        if isinstance(pixels, bytes):
            (directory / name).write_bytes(pixels)
        else:
            Image.fromarray(pixels).save(directory / name)
    landmarks = np.full((len(photos), 136), np.nan, np.float32)
    names = list(photos)
    landmarks[names.index("landmarks.png")] = _landmarks((102, 124), 52, 72)
    landmarks[names.index("landmarks_mirrored.png")] = _landmarks((132, 154), 52, 72)
    table = pa.table(
        {
            "sample_id": names,
            "split": ["train"] * len(names),
            "path": names,
            "label": pa.array(np.zeros(len(names)), pa.int8()),
            "source_label": ["0"] * len(names),
            "landmarks": fixed_list(landmarks, pa.float32()),
        }
    )
    path = directory / "manifest.parquet"
    write_manifest(path, table, image_root=directory, face_source="landmarks")
    return read_manifest(path)


@pytest.fixture
def passes(monkeypatch) -> list[list[tuple[int, ...]]]:
    """The image shapes of every `detect_batch` call, recorded as the calls happen."""
    calls: list[list[tuple[int, ...]]] = []
    detect_batch = FaceDetector.detect_batch

    def recorded(self, images):
        calls.append([image.shape for image in images])
        return detect_batch(self, images)

    monkeypatch.setattr(FaceDetector, "detect_batch", recorded)
    return calls


def _build(manifest: Manifest, out_dir: Path, **kwargs) -> dict[str, object]:
    out_dir.mkdir()
    return build_face_cache(manifest, SPEC, out_dir, detect=DetectSpec(), threads=1, **kwargs)


def _rows(out_dir: Path) -> dict[str, dict]:
    return {row["sample_id"]: row for row in pq.read_table(out_dir / TABLE_FILE).to_pylist()}


@pytest.fixture(scope="module")
def one_by_one(manifest, tmp_path_factory) -> Path:
    out_dir = tmp_path_factory.mktemp("single") / "faces"
    _build(manifest, out_dir, detect_batch_size=1, device="cpu")
    return out_dir


def test_batched_detection_gives_the_crops_and_records_of_one_by_one(
    manifest, one_by_one, tmp_path, passes
):
    summary = _build(manifest, tmp_path / "faces", detect_batch_size=BATCH, device="cpu")

    # Batches hold images of one size, at most BATCH of them; unreadable files never get in.
    assert sorted(len(shapes) for shapes in passes) == [1, 1, 1, 2, 2]
    assert all(len(set(shapes)) == 1 for shapes in passes)
    assert summary["by_method"] == {"landmarks": 2, "mtcnn": 4}
    assert summary["by_status"] == {"no_face": 3, "ok": 6, "unreadable": 1}
    batched, single = _rows(tmp_path / "faces"), _rows(one_by_one)
    assert [batched[name]["status"] for name in ("noise.png", "cat.png", "blank.png")] == [
        "no_face"
    ] * 3
    for name, row in batched.items():
        alone = single[name]
        for key in ("status", "reason", "method", "n_faces", "row"):
            assert row[key] == alone[key], (name, key)
        for key, atol in (("score", 1e-5), ("box", 1e-2), ("matrix", 1e-4)):
            np.testing.assert_allclose(
                np.array(row[key], float), np.array(alone[key], float), atol=atol, err_msg=name
            )
    crops = np.load(tmp_path / "faces" / CACHE_FILE)
    reference = np.load(one_by_one / CACHE_FILE)
    assert np.abs(crops.astype(int) - reference).max() <= 2  # from sub-1e-3 px matrices
    warped = [i for i, row in enumerate(single.values()) if row["method"] != "mtcnn"]
    np.testing.assert_array_equal(crops[warped], reference[warped])


class _Interrupted(Exception):
    pass


def test_an_interrupted_build_resumes_with_the_unfinished_batches_only(
    manifest, tmp_path, monkeypatch, caplog
):
    whole = tmp_path / "whole"
    _build(manifest, whole, detect_batch_size=BATCH, device="cpu")
    work_dir = tmp_path / "work"
    detect_batch, calls = FaceDetector.detect_batch, []

    def interrupted_after_two_batches(self, images):
        if len(calls) == 2:
            raise _Interrupted
        calls.append(len(images))
        return detect_batch(self, images)

    monkeypatch.setattr(FaceDetector, "detect_batch", interrupted_after_two_batches)
    checkpointed = {"work_dir": work_dir, "checkpoint_seconds": 0.0}
    with pytest.raises(_Interrupted):
        _build(manifest, tmp_path / "first", detect_batch_size=BATCH, **checkpointed)
    assert (work_dir / PROGRESS_FILE).is_file() and calls == [2, 2]

    monkeypatch.setattr(FaceDetector, "detect_batch", detect_batch)
    calls.clear()
    done: list[int] = []
    with caplog.at_level(logging.INFO, logger="lightfer.faces.cache"):
        _build(
            manifest,
            tmp_path / "resumed",
            detect_batch_size=BATCH,
            progress=done.append,
            **checkpointed,
        )
    assert "6 of 10 images already done" in caplog.text  # 2 by landmarks, 4 by MTCNN
    assert "MTCNN searched 3 images" in caplog.text
    assert done[0] == 6 and sum(done) == len(manifest)
    for name in (CACHE_FILE, TABLE_FILE):
        assert (tmp_path / "resumed" / name).read_bytes() == (whole / name).read_bytes()
    assert not (work_dir / CACHE_FILE).exists(), "the cache moved out of the work directory"


def test_state_that_does_not_fit_is_not_resumed(manifest, tmp_path, caplog):
    work_dir = tmp_path / "work"
    _build(manifest, tmp_path / "a", work_dir=work_dir, checkpoint_seconds=0.0)
    np.lib.format.open_memmap(work_dir / CACHE_FILE, mode="w+", dtype=np.uint8, shape=(2, 8, 8, 3))
    with caplog.at_level(logging.INFO, logger="lightfer.faces.cache"):
        _build(manifest, tmp_path / "b", work_dir=work_dir, checkpoint_seconds=0.0)
    assert "does not fit this manifest; starting afresh" in caplog.text
    assert "MTCNN searched 7 images" in caplog.text
    assert (tmp_path / "b" / CACHE_FILE).read_bytes() == (tmp_path / "a" / CACHE_FILE).read_bytes()


@pytest.mark.gpu
def test_batches_on_the_gpu_find_the_faces_of_the_cpu(manifest, one_by_one, tmp_path):
    """cuDNN (TF32 by default) moves the arithmetic, so the bound is a pixel, not 1e-2."""
    _build(manifest, tmp_path / "faces", detect_batch_size=BATCH, device="cuda")
    gpu, cpu = _rows(tmp_path / "faces"), _rows(one_by_one)
    for name, row in gpu.items():
        for key in ("status", "method", "n_faces"):
            assert row[key] == cpu[name][key], (name, key)
        np.testing.assert_allclose(
            np.array(row["box"], float), np.array(cpu[name]["box"], float), atol=1.0, err_msg=name
        )


def test_a_cache_of_no_usable_face_is_refused_with_the_counts(tmp_path):
    for name, pixels in {"blank.png": np.full((64, 64, 3), 128, np.uint8)}.items():
        Image.fromarray(pixels).save(tmp_path / name)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG broken")
    names = ["blank.png", "broken.png"]
    table = pa.table(
        {
            "sample_id": names,
            "split": ["train"] * 2,
            "path": names,
            "label": pa.array([0, 1], pa.int8()),
            "source_label": ["0", "1"],
        }
    )
    write_manifest(tmp_path / "manifest.parquet", table, image_root=tmp_path, face_source="detect")
    out_dir = tmp_path / "faces"
    with pytest.raises(DatasetError, match=r"no usable face among the 2 images under .*\{"):
        _build(read_manifest(tmp_path / "manifest.parquet"), out_dir, detect_batch_size=2)
    assert not (out_dir / TABLE_FILE).exists()
