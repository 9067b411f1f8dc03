"""RAF-DB adapter on tiny roots in the official layout, quirks and broken roots included."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from lightfer.data.rafdb import RAFDB_LABELS, check_rafdb_layout, scan_rafdb
from lightfer.errors import DatasetError
from lightfer.labels import CLASSES
from tests.data.fixtures import build_rafdb, round_trip

# Canonical indices: neutral 0, happiness 1, sadness 2, surprise 3, fear 4, disgust 5, anger 6.
EXPECTED_INDEX = {1: 3, 2: 4, 3: 5, 4: 1, 5: 2, 6: 6, 7: 0}

GOOD = [(f"train_{k * 2 + i:05d}.jpg", k) for k in range(1, 8) for i in range(2)]
GOOD += [(f"test_{k:04d}.jpg", k) for k in range(1, 8)]
QUIRKS = [("train_00099.jpg", 4), ("train_00100.jpg", 8), ("val_00001.jpg", 3)]


def test_every_code_maps_to_the_documented_canonical_index() -> None:
    assert {code: CLASSES.index(name) for code, name in RAFDB_LABELS.items()} == EXPECTED_INDEX


def _root(tmp_path: Path, **kwargs) -> Path:
    return build_rafdb(
        tmp_path / "raf-basic",
        GOOD + QUIRKS + [GOOD[0]],
        absent_images=["train_00099.jpg"],
        extra_lines=["train_00101.jpg", "", "train_00102.jpg x"],
        **kwargs,
    )


def test_scan_lists_aligned_images_and_counts_every_skipped_line(tmp_path: Path, caplog) -> None:
    root = _root(tmp_path)
    with caplog.at_level(logging.WARNING, logger="lightfer.data.rafdb"):
        table, summary = scan_rafdb(root)
    manifest = round_trip(table, summary, root, tmp_path)
    assert len(manifest) == 21
    assert "true_dist" not in table.column_names and "box" not in table.column_names
    rows = {r["sample_id"]: r for r in table.to_pylist()}
    assert rows["train_00003"] == {
        "sample_id": "train_00003",
        "split": "train",
        "path": "Image/aligned/train_00003_aligned.jpg",
        "label": EXPECTED_INDEX[1],
        "source_label": "1",
    }
    assert rows["test_0007"]["split"] == "test" and rows["test_0007"]["label"] == 0
    for sample_id, row in rows.items():
        assert row["label"] == EXPECTED_INDEX[int(row["source_label"])], sample_id
    assert summary["by_split"] == {"train": 14, "test": 7}
    assert summary["label_counts"]["train"] == dict.fromkeys(CLASSES, 2)
    assert summary["label_counts"]["test"] == dict.fromkeys(CLASSES, 1)
    assert summary["image_root"] == "root" and summary["face_source"] == "aligned"
    skipped = summary["skipped"]
    assert skipped["by_reason"] == {
        "duplicate": 1,
        "malformed_line": 1,
        "missing_file": 1,
        "unknown_label": 2,
        "unknown_split": 1,
    }
    assert skipped["total"] == 6
    assert "Image/aligned/train_00099_aligned.jpg" in skipped["examples"]["missing_file"][0]
    assert any("'train_00100.jpg 8'" in e for e in skipped["examples"]["unknown_label"])
    assert any("missing_file" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("where", ["EmoLabel", "."])
def test_distribution_file_becomes_a_canonical_true_dist(tmp_path: Path, where: str) -> None:
    # 1..7 order: Surprise, Fear, Disgust, Happiness, Sadness, Anger, Neutral.
    distribution = {name: [0.0] * 7 for name, _ in GOOD}
    for name, code in GOOD:
        distribution[name][code - 1] = 3.0
        distribution[name][6] = 1.0 if code != 7 else 3.0  # unnormalised, some neutral mass
    del distribution["test_0002.jpg"]
    distribution["test_0003.jpg"] = [1.0, 2.0]
    distribution["test_0004.jpg"] = [0, 0, 0, 0, 2, 0, 0]  # Happiness labelled, Sadness voted
    root = _root(tmp_path, distribution=distribution, distribution_dir=where)
    table, summary = scan_rafdb(root)
    round_trip(table, summary, root, tmp_path)
    dist = dict(
        zip(
            table.column("sample_id").to_pylist(),
            np.asarray(table.column("true_dist").to_pylist()),
            strict=True,
        )
    )
    np.testing.assert_allclose(dist["train_00003"], [0.25, 0, 0, 0.75, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(dist["train_00009"], [0.25, 0.75, 0, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(dist["train_00015"], [1, 0, 0, 0, 0, 0, 0], atol=1e-6)
    np.testing.assert_allclose(dist["test_0002"], np.eye(7)[EXPECTED_INDEX[2]])
    np.testing.assert_allclose(dist["test_0004"], np.eye(7)[EXPECTED_INDEX[5]])
    info = summary["true_dist"]
    assert info["file"] == f"{'EmoLabel/' if where == 'EmoLabel' else ''}distribution_basic.txt"
    assert info["one_hot_fallback"]["by_reason"] == {"bad_distribution": 1, "no_distribution": 1}
    assert info["argmax_disagrees_with_label"] == 1


def test_check_accepts_the_official_layout(tmp_path: Path) -> None:
    check_rafdb_layout(_root(tmp_path))


def test_wrong_roots_are_refused_with_what_was_expected_and_found(tmp_path: Path) -> None:
    root = _root(tmp_path / "download")
    parent = root.parent
    with pytest.raises(DatasetError) as info:
        check_rafdb_layout(parent)
    message = str(info.value)
    assert f"expected {parent}/EmoLabel/list_patition_label.txt (the official spelling)" in message
    assert "found: raf-basic/" in message and f"did you mean {root}?" in message

    (root / "EmoLabel/list_patition_label.txt").rename(root / "EmoLabel/list_partition_label.txt")
    with pytest.raises(DatasetError, match="spelt 'patition', rename it"):
        scan_rafdb(root)

    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DatasetError, match=r"missing: EmoLabel/list_patition_label.txt, Image/al"):
        check_rafdb_layout(empty)
    with pytest.raises(DatasetError, match="nothing \\(it does not exist\\)"):
        check_rafdb_layout(tmp_path / "nope")


def test_a_label_file_without_a_usable_line_is_an_error(tmp_path: Path) -> None:
    root = build_rafdb(tmp_path, [("train_00001.jpg", 0), ("train_00002.jpg", 9)])
    with pytest.raises(DatasetError, match=r"RAF-DB: no usable sample.*unknown_label"):
        scan_rafdb(root)


def test_a_label_file_saved_as_utf16_with_a_bom_is_read_as_is(tmp_path):
    root = build_rafdb(tmp_path / "raf", [("train_00001.jpg", 4), ("test_0001.jpg", 7)])
    labels = root / "EmoLabel/list_patition_label.txt"
    labels.write_bytes(labels.read_text().encode("utf-16"))  # what Notepad calls "Unicode"
    table, summary = scan_rafdb(root)
    assert table.column("sample_id").to_pylist() == ["train_00001", "test_0001"]
    assert summary["skipped"]["total"] == 0
