"""AffectNet adapter: the CSV release (boxes, landmark strings) and the npy release, as
AffectNet-7 with validation as the test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lightfer.data.affectnet import (
    AFFECTNET_LABELS,
    SKIPPED_CODES,
    check_affectnet_layout,
    scan_affectnet,
)
from lightfer.errors import DatasetError
from lightfer.labels import CLASSES
from tests.data.fixtures import (
    AffectNpy,
    AffectRow,
    build_affectnet_csv,
    build_affectnet_npy,
    landmark_string,
    round_trip,
)

POINTS = np.stack([100 + np.arange(68), 200 + np.arange(68)], axis=1).astype(float)
GOOD = landmark_string(POINTS)
TRAINING = [
    AffectRow("689/a.jpg", 1, landmarks=GOOD),
    AffectRow("689/b.jpg", 0, box=(0.0, 0.0, 20.0, 30.0), landmarks=GOOD),
    AffectRow("12/c.jpg", 6),  # empty landmark string
    AffectRow("12/d.jpg", 7, landmarks=GOOD),
    AffectRow("12/e.jpg", 8, landmarks=GOOD),
    AffectRow("12/f.jpg", 9, landmarks=GOOD),
    AffectRow("12/g.jpg", 10, box=(-1.0, -1.0, -1.0, -1.0)),
    AffectRow("12/h.jpg", 2, box=(5.0, 5.0, -1.0, 40.0), landmarks=GOOD),
    AffectRow("12/i.jpg", 3, landmarks=GOOD, image=False),
    AffectRow("12/j.jpg", 4, landmarks=landmark_string(POINTS[:67])),
    AffectRow("12/k.jpg", 5, landmarks="1.0;x" + GOOD[3:]),
    AffectRow("12/l.jpg", 11, landmarks=GOOD),
]
VALIDATION = [AffectRow(f"1/v{code}.jpg", code, landmarks=GOOD) for code in range(8)]


def test_every_code_maps_to_the_documented_canonical_index() -> None:
    assert {k: CLASSES.index(v) for k, v in AFFECTNET_LABELS.items()} == {
        0: 0,
        1: 1,
        2: 2,
        3: 3,
        4: 4,
        5: 5,
        6: 6,
    }
    assert [CLASSES[k] for k in range(7)] == [AFFECTNET_LABELS[k] for k in range(7)]
    assert SKIPPED_CODES == {7: "contempt", 8: "none", 9: "uncertain", 10: "no_face"}


@pytest.mark.parametrize(
    ("csv_folder", "image_folder"),
    [
        ("Manually_Annotated_file_lists", "Manually_Annotated_Images"),
        (".", "Manually_Annotated/Manually_Annotated_Images"),
    ],
)
def test_csv_release(tmp_path: Path, csv_folder: str, image_folder: str) -> None:
    root = build_affectnet_csv(
        tmp_path / "AffectNet",
        {"training.csv": TRAINING, "validation.csv": VALIDATION},
        csv_folder=csv_folder,
        image_folder=image_folder,
    )
    table, summary = scan_affectnet(root)
    manifest = round_trip(table, summary, root, tmp_path)
    assert manifest.face_source == "landmarks"
    assert summary["layout"] == "csv" and summary["image_folder"] == image_folder
    rows = {r["sample_id"]: r for r in table.to_pylist()}
    assert list(rows) == ["689/a.jpg", "689/b.jpg", "12/c.jpg", "12/j.jpg", "12/k.jpg"] + [
        f"1/v{code}.jpg" for code in range(7)
    ]
    a = rows["689/a.jpg"]
    assert (a["split"], a["path"], a["label"], a["source_label"]) == (
        "train",
        f"{image_folder}/689/a.jpg",
        1,
        "1",
    )
    assert a["box"] == [10, 12, 60, 72] and rows["689/b.jpg"]["box"] == [0, 0, 20, 30]
    assert a["landmarks"][:4] == [100, 200, 101, 201] and a["landmarks"][-1] == 267
    for sample_id in ("12/c.jpg", "12/j.jpg", "12/k.jpg"):
        assert np.isnan(rows[sample_id]["landmarks"]).all()
    for code in range(7):
        row = rows[f"1/v{code}.jpg"]
        assert row["split"] == "test" and row["label"] == code
    assert summary["by_split"] == {"train": 5, "test": 7}
    assert summary["label_counts"]["test"] == dict.fromkeys(CLASSES, 1)
    assert summary["skipped"]["by_reason"] == {
        "bad_box": 1,
        "contempt": 2,
        "missing_file": 1,
        "no_face": 1,
        "none": 1,
        "uncertain": 1,
        "unknown_code": 1,
    }
    assert summary["skipped"]["examples"]["missing_file"] == [
        f"{csv_folder}/training.csv:10 12/i.jpg: no {image_folder}/12/i.jpg"
    ]
    assert summary["landmarks_unparsable"]["total"] == 3
    assert summary["landmarks_unparsable"]["examples"]["unparsable"][1].endswith("134 values")


def test_csv_release_errors_name_the_files_and_folders(tmp_path: Path) -> None:
    root = build_affectnet_csv(
        tmp_path / "a", {"training.csv": TRAINING, "validation.csv": VALIDATION}
    )
    (root / "Manually_Annotated_Images").rename(root / "images")
    with pytest.raises(DatasetError) as info:
        check_affectnet_layout(root)
    message = str(info.value)
    assert "the image folder of the CSV release" in message
    assert f"one of {root}/Manually_Annotated_Images/, {root}/Manually_Annotated/Manu" in message
    assert "found: Manually_Annotated_file_lists/, images/" in message

    root = build_affectnet_csv(
        tmp_path / "b", {"training.csv": TRAINING, "validation.csv": VALIDATION}
    )
    path = root / "Manually_Annotated_file_lists/validation.csv"
    path.write_text(path.read_text().replace(",expression,", ",emotion,", 1))
    with pytest.raises(DatasetError, match=r"validation.csv lacks columns \['expression'\]"):
        scan_affectnet(root)


def _npy_root(root: Path, with_landmarks: bool = True) -> Path:
    lnd = POINTS if with_landmarks else None
    root = build_affectnet_npy(
        root,
        {
            "train_set": [
                AffectNpy("0", np.array("1"), lnd),  # a 0-d string array
                AffectNpy("1", np.array(6), None if lnd is None else lnd.reshape(-1)),
                AffectNpy("2", np.array("7"), lnd),
                AffectNpy("3", np.array(0)),
                AffectNpy("4", np.array("3"), lnd, image=False),
                AffectNpy("5", np.array("2"), lnd),
                AffectNpy("6", np.array(10), lnd),
                AffectNpy("7", np.array(5), None if lnd is None else lnd[:60]),
            ],
            "val_set": [AffectNpy("10", np.array("2"), lnd), AffectNpy("11", np.array(4.0), lnd)],
        },
    )
    (root / "train_set/annotations/5_exp.npy").write_bytes(b"not a npy file")
    return root


def test_npy_release(tmp_path: Path) -> None:
    root = _npy_root(tmp_path / "AffectNet")
    table, summary = scan_affectnet(root)
    manifest = round_trip(table, summary, root, tmp_path)
    assert summary["layout"] == "npy" and manifest.face_source == "landmarks"
    assert "box" not in table.column_names
    rows = [
        (r["sample_id"], r["split"], r["path"], r["label"], r["source_label"])
        for r in table.to_pylist()
    ]
    assert rows == [
        ("train_set/0", "train", "train_set/images/0.jpg", 1, "1"),
        ("train_set/1", "train", "train_set/images/1.jpg", 6, "6"),
        ("train_set/3", "train", "train_set/images/3.jpg", 0, "0"),
        ("train_set/7", "train", "train_set/images/7.jpg", 5, "5"),
        ("val_set/10", "test", "val_set/images/10.jpg", 2, "2"),
        ("val_set/11", "test", "val_set/images/11.jpg", 4, "4"),
    ]
    landmarks = manifest.column("landmarks")
    np.testing.assert_array_equal(landmarks[0], POINTS.reshape(-1))
    np.testing.assert_array_equal(landmarks[1], POINTS.reshape(-1))
    assert np.isnan(landmarks[2]).all() and np.isnan(landmarks[3]).all()
    assert summary["landmarks_unparsable"]["by_reason"] == {"no_lnd_file": 1, "unparsable": 1}
    assert summary["skipped"]["by_reason"] == {
        "bad_annotation": 1,
        "contempt": 1,
        "missing_file": 1,
        "no_face": 1,
    }


def test_npy_release_without_landmark_files_is_aligned_faces(tmp_path: Path) -> None:
    table, summary = scan_affectnet(_npy_root(tmp_path / "AffectNet", with_landmarks=False))
    assert "landmarks" not in table.column_names
    assert summary["face_source"] == "aligned" and summary["samples"] == 6
    assert summary["landmarks_unparsable"]["total"] == 0


def test_wrong_roots_say_what_each_release_needs(tmp_path: Path) -> None:
    root = _npy_root(tmp_path / "AffectNet")
    with pytest.raises(DatasetError) as info:
        check_affectnet_layout(tmp_path)
    message = str(info.value)
    assert "expected either (a) training.csv and validation.csv in " in message
    assert f"(b) {tmp_path}/train_set/images/, {tmp_path}/train_set/annotations/" in message
    assert f"found: AffectNet/; did you mean {root}? it holds train_set/annotations" in message
    (root / "val_set/annotations").rename(root / "val_set/labels")
    with pytest.raises(DatasetError, match=r"\(missing: val_set/annotations/\)"):
        scan_affectnet(root)
