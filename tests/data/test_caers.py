"""CAER-S adapter: class folders of whole frames, flagged for face detection."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from lightfer.data.caers import CAERS_LABELS, check_caers_layout, scan_caers
from lightfer.errors import DatasetError
from lightfer.labels import CLASSES
from tests.data.fixtures import build_caers, round_trip, write_image


def test_every_folder_maps_to_the_documented_canonical_index() -> None:
    assert {k: CLASSES.index(v) for k, v in CAERS_LABELS.items()} == {
        "Anger": 6,
        "Disgust": 5,
        "Fear": 4,
        "Happy": 1,
        "Neutral": 0,
        "Sad": 2,
        "Surprise": 3,
    }


def test_scan_lists_frames_by_class_and_asks_for_detection(tmp_path: Path) -> None:
    root = build_caers(tmp_path / "CAER-S")
    (root / "train/Happy/Thumbs.db").write_bytes(b"\0")
    table, summary = scan_caers(root)
    manifest = round_trip(table, summary, root, tmp_path)
    assert manifest.face_source == "detect" and summary["face_source"] == "detect"
    assert table.column_names == ["sample_id", "split", "path", "label", "source_label"]
    assert len(manifest) == 28
    row = next(r for r in table.to_pylist() if r["path"] == "test/Sad/0011.png")
    assert row == {
        "sample_id": "test/Sad/0011.png",
        "split": "test",
        "path": "test/Sad/0011.png",
        "label": 2,
        "source_label": "Sad",
    }
    for r in table.to_pylist():
        assert r["label"] == CLASSES.index(CAERS_LABELS[r["source_label"]])
    assert summary["by_split"] == {"train": 14, "test": 14}
    assert summary["label_counts"]["train"] == dict.fromkeys(CLASSES, 2)
    assert summary["skipped"]["by_reason"] == {"not_an_image": 1}
    assert summary["skipped"]["examples"]["not_an_image"] == ["train/Happy/Thumbs.db"]
    assert summary["missing_class_folders"] == {}


def test_a_missing_class_folder_is_reported_not_fatal(tmp_path: Path, caplog) -> None:
    root = build_caers(tmp_path, classes=("Anger", "Happy"), per_class=1)
    with caplog.at_level(logging.WARNING, logger="lightfer.data.caers"):
        _, summary = scan_caers(root)
    assert summary["missing_class_folders"]["test"] == [
        "Disgust",
        "Fear",
        "Neutral",
        "Sad",
        "Surprise",
    ]
    assert "has no class folder Disgust, Fear" in caplog.text


def test_unknown_class_folders_are_named(tmp_path: Path) -> None:
    root = build_caers(tmp_path, per_class=1)
    write_image(root / "test/Angry/0001.png")
    write_image(root / "test/contempt/0002.png")
    with pytest.raises(DatasetError) as info:
        check_caers_layout(root)
    message = str(info.value)
    assert f"{root / 'test'} has class folders ['Angry', 'contempt']" in message
    assert "expected only Anger, Disgust, Fear, Happy, Neutral, Sad, Surprise" in message


def test_wrong_roots_say_what_was_expected(tmp_path: Path) -> None:
    build_caers(tmp_path / "CAER-S", per_class=1)
    with pytest.raises(DatasetError) as info:
        scan_caers(tmp_path)
    message = str(info.value)
    assert f"CAER-S root {tmp_path}: expected split folders {tmp_path}/train/, " in message
    assert "(missing: train/, test/); found: CAER-S/" in message
    assert f"did you mean {tmp_path / 'CAER-S'}?" in message
    partial = build_caers(tmp_path / "partial", splits=("train",), per_class=1)
    with pytest.raises(DatasetError, match=r"\(missing: test/\)"):
        check_caers_layout(partial)
