"""Pointing params.yaml at a dataset root is the only change needed to run it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skimage_data

from lightfer.faces.cache import load_face_cache
from lightfer.labels import CLASSES
from lightfer.manifest import read_manifest
from lightfer.params import load_params
from stages import align, prepare
from tests.conftest import tiny_params
from tests.data.fixtures import FerRow, build_fer2013_csvs, build_rafdb


def _run(tmp_path: Path, write_params, name: str, dataset: dict) -> tuple[dict, dict, Path]:
    raw = tiny_params(**{name: dataset})
    params = load_params(write_params(raw))
    project = tmp_path / "project"
    return (
        prepare.run(params, project, dataset=name),
        align.run(params, project, dataset=name),
        project,
    )


def test_rafdb(tmp_path: Path, write_params):
    root = build_rafdb(
        tmp_path / "raf",
        [("train_00001.jpg", 4), ("train_00002.jpg", 7), ("test_0001.jpg", 1)],
        absent_images=["train_00002.jpg"],
    )
    prepared, faces, project = _run(
        tmp_path, write_params, "raf", {"kind": "rafdb", "root": str(root)}
    )
    manifest = read_manifest(project / "data/raf/prepared/manifest.parquet")
    assert manifest.face_source == "aligned"
    assert list(manifest.column("label")) == [CLASSES.index("happiness"), CLASSES.index("surprise")]
    assert prepared["skipped"]["by_reason"] == {"missing_file": 1}
    assert faces["by_method"] == {"passthrough": 2}


def test_ferplus_csv_pixels_become_project_images(tmp_path: Path, write_params):
    votes = (0, 8, 0, 0, 0, 0, 0, 0, 2, 0)  # neutral, happiness, ... unknown, NF
    rows = [FerRow("Training", "fer0000000.png", votes), FerRow("PrivateTest", "", votes)]
    rows += [FerRow("PrivateTest", "fer0000001.png", (9, 1, 0, 0, 0, 0, 0, 0, 0, 0))]
    root = build_fer2013_csvs(tmp_path / "ferplus", rows)
    prepared, faces, project = _run(
        tmp_path, write_params, "fer", {"kind": "ferplus", "root": str(root)}
    )
    manifest = read_manifest(project / "data/fer/prepared/manifest.parquet")
    assert manifest.image_root == project / "data/fer/prepared/images"
    assert all(manifest.image_path(i).is_file() for i in range(len(manifest)))
    assert prepared["by_split"] == {"test": 1, "train": 1}
    assert faces["ok"] == 2
    crops, _ = load_face_cache(project / "data/fer/faces")
    side = tiny_params()["align"]["crop_size"]
    assert crops.shape[1:] == (side, side, 3)


@pytest.mark.slow
def test_caers_frames_go_through_mtcnn(tmp_path: Path, write_params):
    """Whole frames: faces are detected; a frame without a face and a corrupt file are
    recorded with their status, and the rest are aligned."""
    face = skimage_data.astronaut()
    frame = np.zeros((400, 640, 3), np.uint8)
    frame[40:360, 100:500] = face[20:340, 40:440]  # the astronaut, off-centre in a frame
    root = tmp_path / "caers"
    for split in ("train", "test"):
        for name in ("Happy", "Neutral"):
            (root / split / name).mkdir(parents=True)
    Image.fromarray(frame).save(root / "train/Happy/0001.png")
    Image.fromarray(frame).save(root / "test/Happy/0001.png")
    Image.fromarray(np.full((200, 300, 3), 90, np.uint8)).save(root / "train/Neutral/0001.png")
    (root / "test/Neutral/0001.png").write_bytes(b"\x89PNG broken")

    _, faces, project = _run(tmp_path, write_params, "caer", {"kind": "caers", "root": str(root)})
    assert faces["by_status"] == {"no_face": 1, "ok": 2, "unreadable": 1}
    assert faces["by_method"] == {"mtcnn": 2}
    _, table = load_face_cache(project / "data/caer/faces")
    rows = {row["sample_id"]: row for row in table.to_pylist()}
    found = [row for row in rows.values() if row["method"] == "mtcnn"]
    assert all(row["n_faces"] == 1 and row["score"] > 0.99 for row in found)
