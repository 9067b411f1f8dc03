"""The prepare and align stage functions on tiny datasets, bad input included."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from lightfer.errors import DatasetError
from lightfer.faces.align import anchor_points, template_points
from lightfer.faces.cache import load_face_cache
from lightfer.labels import CLASSES
from lightfer.manifest import read_manifest
from lightfer.params import load_params
from stages import align, prepare
from tests.conftest import PROJECT_ROOT, tiny_params

OFFICIAL_FOLDERS = {str(k): name for k, name in enumerate(CLASSES)}


@pytest.fixture(scope="module")
def synthetic_run(tmp_path_factory):
    """prepare + align on the tiny synthetic dataset, in a fresh project directory."""
    import yaml

    root = tmp_path_factory.mktemp("project")
    (root / "params.yaml").write_text(yaml.safe_dump(tiny_params()))
    params = load_params(root / "params.yaml")
    summary = prepare.run(params, root, dataset="synthetic")
    faces = align.run(params, root, dataset="synthetic")
    return root, params, summary, faces


def test_prepare_writes_the_manifest_images_sheet_and_ceiling(synthetic_run):
    root, _, summary, _ = synthetic_run
    manifest = read_manifest(root / "data/synthetic/prepared/manifest.parquet")
    assert len(manifest) == 60
    assert all(manifest.image_path(i).is_file() for i in range(len(manifest)))
    sheet = Image.open(root / "reports/synthetic/contact_sheet.png")
    assert sheet.height == 7 * 96
    metrics = json.loads((root / "reports/synthetic/prepare.json").read_text())
    assert metrics == summary
    assert 0.5 < metrics["ceiling_test"]["expected_oracle_accuracy"] < 1
    assert metrics["votes_per_image"] == 10
    assert metrics["by_split"] == {"test": 20, "train": 40}


def test_align_caches_every_face_on_the_template(synthetic_run):
    root, params, _, faces = synthetic_run
    crops, table = load_face_cache(root / "data/synthetic/faces")
    size = params.align.crop_size
    assert crops.shape == (60, size, size, 3)
    assert faces["ok"] == 60 and faces["by_method"] == {"landmarks": 60}
    landmarks = np.asarray(table.column("landmarks_aligned").combine_chunks().flatten())
    residual = [
        np.linalg.norm(
            anchor_points(points, use_mouth=True) - template_points(params.align, 4), axis=1
        )
        for points in landmarks.reshape(-1, 68, 2)
    ]
    assert np.mean(residual) < 2.0  # pixels, in a 64-pixel crop
    assert crops.reshape(60, -1).std(1).min() > 5, "a crop is blank"


def test_prepare_is_deterministic(synthetic_run, tmp_path: Path):
    root, params, _, _ = synthetic_run
    prepare.run(params, tmp_path, dataset="synthetic")
    for name in ("data/synthetic/prepared/manifest.parquet", "reports/synthetic/prepare.json"):
        assert (tmp_path / name).read_bytes() == (root / name).read_bytes()


def _caers_frames(root: Path) -> Path:
    """Eight CAER-S-like frames of two sizes: the astronaut's head moved about, or no face."""
    head = cv2.resize(skimage_data.astronaut()[:320, 80:400], (150, 150))
    rng = np.random.default_rng(0)
    folders = ("train/Happy", "train/Neutral", "test/Happy", "test/Sad")
    for index in range(8):
        frame = np.zeros((240, 320, 3) if index % 2 else (200, 280, 3), np.uint8)
        if index == 6:
            frame[:] = rng.integers(0, 256, frame.shape, dtype=np.uint8)
        elif index != 7:
            y, x = rng.integers(0, 50), rng.integers(0, 130)
            frame[y : y + 150, x : x + 150] = head
        folder = root / folders[index // 2]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(frame).save(folder / f"{index:04d}.png")
    return root


def _run_align(project: Path, record: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, "-m", "tests.stages.run_align", "caer", str(record), *extra]
    return subprocess.run(command, cwd=project, env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_align_killed_part_way_resumes_without_redoing_finished_images(
    tmp_path: Path, write_params
):
    raw = tiny_params(caer={"kind": "caers", "root": str(_caers_frames(tmp_path / "caers"))})
    raw["align"]["detect_batch_size"] = 2
    params = load_params(write_params(raw))
    whole, resumed = tmp_path / "whole", tmp_path / "resumed"
    prepare.run(params, whole, dataset="caer")
    shutil.copytree(whole, resumed)
    shutil.copy(tmp_path / "params.yaml", resumed / "params.yaml")
    summary = align.run(params, whole, dataset="caer")  # uninterrupted, in this process
    assert summary["by_status"] == {"no_face": 2, "ok": 6}

    record = tmp_path / "batches.json"
    killed = _run_align(resumed, record, "--kill-before", "2")
    assert killed.returncode == -9, killed.stderr
    assert json.loads(record.read_text()) == [2, 2]
    assert len(list(resumed.glob(".runs/align@caer/*/progress.parquet"))) == 1
    finished = _run_align(resumed, record)
    assert finished.returncode == 0, finished.stderr
    assert json.loads(record.read_text()) == [2, 2], "only the four unfinished images"
    assert "4 of 8 images already done" in finished.stderr
    outputs = (
        "data/caer/faces/faces.npy",
        "data/caer/faces/faces.parquet",
        "reports/caer/align.json",
    )
    for name in outputs:
        assert (resumed / name).read_bytes() == (whole / name).read_bytes(), name
    assert not any((resumed / ".runs").iterdir()), "a finished run leaves no resumable state"


def _imagefolder(root: Path) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for folder in OFFICIAL_FOLDERS:
            target = root / split / folder
            target.mkdir(parents=True)
            for i in range(2):
                pixels = rng.integers(0, 255, (100, 100, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(target / f"{i}.jpg")
    (root / "train" / "3" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "train" / "3" / "notes.txt").write_text("not an image")
    return root


def _imagefolder_params(tmp_path: Path, write_params, data_root: Path):
    raw = tiny_params(
        official={"kind": "imagefolder", "root": str(data_root), "classes": OFFICIAL_FOLDERS}
    )
    return load_params(write_params(raw))


def test_imagefolder_maps_classes_and_accounts_for_every_file(tmp_path: Path, write_params):
    data_root = _imagefolder(tmp_path / "faces")
    params = _imagefolder_params(tmp_path, write_params, data_root)
    project = tmp_path / "project"
    summary = prepare.run(params, project, dataset="official")
    assert summary["by_split"] == {"test": 14, "train": 15}
    assert summary["ignored_files"] == 1 and summary["ignored_examples"] == ["train/3/notes.txt"]
    manifest = read_manifest(project / "data/official/prepared/manifest.parquet")
    labels = dict(zip(manifest.column("path"), manifest.column("label"), strict=True))
    assert labels["train/0/0.jpg"] == CLASSES.index("neutral")
    assert labels["test/6/1.jpg"] == CLASSES.index("anger")
    assert manifest.image_root == data_root

    faces = align.run(params, project, dataset="official")
    assert faces["total"] == 29 and faces["ok"] == 28 and faces["skipped"] == 1
    assert faces["by_method"] == {"passthrough": 28}
    _, table = load_face_cache(project / "data/official/faces")
    broken = next(row for row in table.to_pylist() if row["status"] != "ok")
    assert broken["sample_id"] == "train/3/broken.jpg"
    assert "broken.jpg" in broken["reason"]


def test_an_unmapped_class_folder_is_refused(tmp_path: Path, write_params):
    data_root = _imagefolder(tmp_path / "faces")
    (data_root / "test" / "7").mkdir()
    params = _imagefolder_params(tmp_path, write_params, data_root)
    with pytest.raises(DatasetError, match=r"class folders \['7'\] that the class map"):
        prepare.run(params, tmp_path / "project", dataset="official")
    assert not (tmp_path / "project" / "data" / "official" / "prepared").exists()


def test_the_stage_command_fails_fast_on_a_params_typo(tmp_path, write_params, caplog):
    raw = tiny_params()
    raw["base"]["sed"] = 1
    path = write_params(raw)
    with caplog.at_level(logging.ERROR):
        assert prepare.main(["--dataset", "synthetic", "--params", str(path)]) == 1
    assert "base.sed: unknown key; did you mean 'seed'?" in caplog.text
    assert not (tmp_path / "data").exists()


def test_the_stage_command_names_an_unknown_dataset(write_params, caplog):
    path = write_params(tiny_params())
    with caplog.at_level(logging.ERROR):
        assert prepare.main(["--dataset", "rafdb", "--params", str(path)]) == 1
    assert "dataset 'rafdb' is not configured in" in caplog.text
    assert "; configured: synthetic" in caplog.text
