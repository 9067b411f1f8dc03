"""FER+ adapter: the row-order join of the two CSVs, Microsoft's majority rule, both layouts."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightfer.data.ferplus import (
    FER2013_LABELS,
    FERPLUS_LABELS,
    NON_EMOTION_REASONS,
    VOTE_COLUMNS,
    check_ferplus_layout,
    ferplus_majority,
    scan_ferplus,
)
from lightfer.errors import DatasetError
from lightfer.labels import CLASSES
from tests.data.fixtures import (
    FerRow,
    build_fer2013_csvs,
    build_ferplus_folders,
    fer_pixel_value,
    round_trip,
)

# Vote order: neutral, happiness, surprise, sadness, anger, disgust, fear, contempt, unknown, NF.
ROWS = [
    FerRow("Training", "fer0000000", (0, 10, 0, 0, 0, 0, 0, 0, 0, 0), emotion=3),
    FerRow("Training", "fer0000001", (4, 1, 1, 1, 1, 1, 1, 0, 0, 0), emotion=6),
    FerRow("Training", "", (0, 0, 0, 0, 0, 0, 0, 0, 0, 10)),  # no face: names shift from here
    FerRow("Training", "fer0000002", (0, 0, 0, 0, 8, 0, 2, 0, 0, 0), emotion=0),
    FerRow("Training", "fer0000003", (0, 0, 0, 0, 0, 0, 0, 8, 2, 0)),
    FerRow("Training", "fer0000003", (0, 0, 0, 9, 0, 0, 1, 0, 0, 0), emotion=4),  # same name
    FerRow("Training", "fer0000005", (5, 5, 0, 0, 0, 0, 0, 0, 0, 0)),
    FerRow("Training", "fer0000006", (2, 0, 0, 0, 0, 0, 0, 0, 8, 0)),
    FerRow("PublicTest", "fer0000007", (0, 0, 9, 0, 0, 0, 1, 0, 0, 0), emotion=5),
    FerRow("PublicTest", "", (0, 0, 0, 0, 0, 0, 0, 0, 0, 10)),
    FerRow("PublicTest", "fer0000008", (0, 0, 0, 0, 0, 3, 7, 0, 0, 0), emotion=2),
    FerRow("PrivateTest", "fer0000009", (1, 0, 0, 0, 0, 7, 0, 0, 0, 2), emotion=1),
    FerRow("PrivateTest", "fer0000010", (0, 0, 0, 0, 0, 0, 0, 0, 1, 9)),
    FerRow("PrivateTest", "fer0000010", (8, 0, 0, 0, 0, 0, 0, 0, 2, 0), emotion=6),  # same name
    FerRow("PrivateTest", "fer0000011", (0, 6, 0, 0, 0, 0, 0, 0, 0, 3), emotion=6),  # 9 votes
]
# Kept data rows -> (split, canonical label).
KEPT = {
    0: ("train", "happiness"),
    1: ("train", "neutral"),
    3: ("train", "anger"),
    5: ("train", "sadness"),
    8: ("val", "surprise"),
    10: ("val", "fear"),
    11: ("test", "disgust"),
    13: ("test", "neutral"),
    14: ("test", "happiness"),
}


def _canonical_votes(votes: tuple[int, ...]) -> list[int]:
    by_name = dict(zip(VOTE_COLUMNS, votes, strict=False))
    return [
        by_name[c]
        for c in ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger")
    ]


def test_every_code_maps_to_the_documented_canonical_index() -> None:
    assert {k: CLASSES.index(v) for k, v in FERPLUS_LABELS.items()} == {
        "neutral": 0,
        "happiness": 1,
        "sadness": 2,
        "surprise": 3,
        "fear": 4,
        "disgust": 5,
        "anger": 6,
    }
    assert set(FERPLUS_LABELS) | set(NON_EMOTION_REASONS) == set(VOTE_COLUMNS)
    # fer2013.csv: 0=Angry, 1=Disgust, 2=Fear, 3=Happy, 4=Sad, 5=Surprise, 6=Neutral.
    assert {k: CLASSES.index(v) for k, v in FER2013_LABELS.items()} == {
        0: 6,
        1: 5,
        2: 4,
        3: 1,
        4: 2,
        5: 3,
        6: 0,
    }


@pytest.mark.parametrize(
    ("votes", "winner"),
    [
        ((0, 10, 0, 0, 0, 0, 0, 0, 0, 0), "happiness"),
        ((4, 1, 1, 1, 1, 1, 1, 0, 0, 0), "neutral"),  # 4 of 10, but 4 of 4 after single votes go
        ((5, 5, 0, 0, 0, 0, 0, 0, 0, 0), None),  # a tie is no majority
        ((3, 0, 0, 5, 0, 0, 0, 0, 2, 0), None),  # 5 is not more than half of 10
        ((6, 0, 1, 2, 0, 0, 0, 0, 1, 0), "neutral"),  # 6 of 8 once the single votes go
        ((0, 0, 0, 0, 2, 1, 0, 7, 0, 0), "contempt"),
        ((1, 0, 0, 0, 0, 0, 0, 0, 1, 8), "NF"),
        ((1, 1, 1, 1, 1, 1, 1, 1, 1, 1), None),  # nothing left after removing single votes
    ],
)
def test_majority_rule_matches_microsofts(votes, winner) -> None:
    assert ferplus_majority(votes) == winner


def test_csv_join_is_by_row_order_not_by_name(tmp_path: Path, caplog) -> None:
    root = build_fer2013_csvs(tmp_path / "fer", ROWS)
    images = tmp_path / "images"
    with caplog.at_level(logging.INFO, logger="lightfer.data.ferplus"):
        table, summary = scan_ferplus(root, image_dir=images)
    assert "found the csv layout" in caplog.text
    manifest = round_trip(table, summary, images, tmp_path)
    assert summary["layout"] == "csv" and summary["image_root"] == "image_dir"
    rows = table.to_pylist()
    assert [r["sample_id"] for r in rows] == [f"row{i:05d}-{ROWS[i].name}" for i in KEPT]
    for index, row in zip(KEPT, rows, strict=True):
        split, label = KEPT[index]
        assert row["split"] == split and row["label"] == CLASSES.index(label)
        assert row["source_label"] == label
        assert row["path"] == f"{split}/{index:05d}.png"
        assert row["votes"] == _canonical_votes(ROWS[index].votes), row["sample_id"]
        assert row["box"] == [0, 0, 48, 48]
        pixels = np.asarray(Image.open(images / row["path"]))
        assert pixels.shape == (48, 48) and (pixels == fer_pixel_value(index)).all()
    # Row 3 is named fer0000002: a join by name would have given it row 2's non-face votes.
    assert rows[2]["votes"] == [0, 0, 0, 0, 2, 0, 8]
    # Both rows named fer0000003 and both named fer0000010 keep their own votes.
    assert rows[3]["sample_id"] == "row00005-fer0000003" and rows[3]["label"] == 2
    assert rows[7]["sample_id"] == "row00013-fer0000010" and rows[7]["votes"][0] == 8
    np.testing.assert_allclose(manifest.column("true_dist")[1], [0.4] + [0.1] * 6, rtol=1e-6)
    np.testing.assert_allclose(manifest.column("true_dist")[8], [0, 1, 0, 0, 0, 0, 0])
    assert sorted(p.relative_to(images).as_posix() for p in images.rglob("*.png")) == sorted(
        r["path"] for r in rows
    )
    assert summary["images_written"] == 9
    assert summary["by_split"] == {"train": 4, "val": 2, "test": 3}
    assert summary["label_counts"]["test"]["neutral"] == 1
    assert summary["skipped"]["by_reason"] == {
        "contempt": 1,
        "no_majority": 1,
        "not_a_face": 3,
        "unknown": 1,
    }
    examples = summary["skipped"]["examples"]["not_a_face"]
    assert examples[0] == "fer2013new.csv data row 2 (empty name)"
    assert examples[2] == "fer2013new.csv data row 12 fer0000010: majority NF"
    assert summary["fer2013_agreement"] == {"compared": 9, "agree": 8, "fraction": 0.8889}


def test_csvs_that_cannot_be_joined_by_row_are_refused(tmp_path: Path) -> None:
    root = build_fer2013_csvs(tmp_path / "fer", ROWS)
    lines = (root / "fer2013.csv").read_text().splitlines()
    (root / "fer2013.csv").write_text("\n".join(lines[:-1]) + "\n")
    with pytest.raises(DatasetError, match=r"has 14 data rows but .*fer2013new.csv has 15"):
        scan_ferplus(root, image_dir=tmp_path / "images")

    root = build_fer2013_csvs(tmp_path / "fer2", ROWS)
    fer = (root / "fer2013.csv").read_text().splitlines()
    fer[9] = fer[9].replace(",PublicTest", ",Training")  # data row 8
    (root / "fer2013.csv").write_text("\n".join(fer) + "\n")
    with pytest.raises(DatasetError, match="differ in 1 rows, first at data row 8"):
        scan_ferplus(root, image_dir=tmp_path / "images")
    assert not (tmp_path / "images").exists()


def test_csv_layout_checks_headers_and_needs_an_image_dir(tmp_path: Path) -> None:
    root = build_fer2013_csvs(tmp_path / "fer", ROWS)
    with pytest.raises(ValueError, match="pass image_dir"):
        scan_ferplus(root)
    text = (root / "fer2013new.csv").read_text().replace("Usage,Image name,", "Usage,", 1)
    (root / "fer2013new.csv").write_text(text)  # the 2016 header, without `Image name`
    with pytest.raises(DatasetError, match=r"fer2013new.csv has columns .*expected exactly Usage"):
        check_ferplus_layout(root)


FOLDERS = {
    "FER2013Train": [
        ("fer0000000.png", (0, 10, 0, 0, 0, 0, 0, 0, 0, 0)),
        ("fer0000001.png", (4, 1, 1, 1, 1, 1, 1, 0, 0, 0)),
        ("fer0000002.png", (0, 0, 0, 0, 10, 0, 0, 0, 0, 0)),
        ("fer0000000.png", (0, 10, 0, 0, 0, 0, 0, 0, 0, 0)),
    ],
    "FER2013Valid": [
        ("fer0028709.png", (0, 0, 9, 0, 0, 0, 1, 0, 0, 0)),
        ("fer0028710.png", (0, 0, 0, 0, 0, 0, 0, 10, 0, 0)),
    ],
    # The first three lines of the shipped data/FER2013Test/label.csv.
    "FER2013Test": [
        ("fer0032220.png", (0, 0, 0, 0, 2, 1, 0, 7, 0, 0)),
        ("fer0032222.png", (3, 0, 0, 5, 0, 0, 0, 0, 2, 0)),
        ("fer0032223.png", (6, 0, 1, 2, 0, 0, 0, 0, 1, 0)),
    ],
}


def test_generated_folders_with_label_csv(tmp_path: Path, caplog) -> None:
    root = build_ferplus_folders(
        tmp_path / "FERPlus",
        FOLDERS,
        absent_images=["fer0000002.png"],
        extra_lines={"FER2013Valid": ['fer0028711.png,"(0, 0, 48, 48)",1,2,3']},
    )
    with caplog.at_level(logging.INFO, logger="lightfer.data.ferplus"):
        check_ferplus_layout(root)
        table, summary = scan_ferplus(root, image_dir=tmp_path / "unused")
    assert "found the folders layout" in caplog.text
    round_trip(table, summary, root, tmp_path)
    assert not (tmp_path / "unused").exists()
    assert summary["layout"] == "folders" and summary["image_root"] == "root"
    rows = table.to_pylist()
    assert [(r["sample_id"], r["path"], r["split"], r["label"]) for r in rows] == [
        ("FER2013Train/fer0000000", "FER2013Train/fer0000000.png", "train", 1),
        ("FER2013Train/fer0000001", "FER2013Train/fer0000001.png", "train", 0),
        ("FER2013Valid/fer0028709", "FER2013Valid/fer0028709.png", "val", 3),
        ("FER2013Test/fer0032223", "FER2013Test/fer0032223.png", "test", 0),
    ]
    assert rows[3]["votes"] == [6, 0, 2, 1, 0, 0, 0] and rows[3]["box"] == [0, 0, 48, 48]
    assert summary["skipped"]["by_reason"] == {
        "contempt": 2,
        "duplicate": 1,
        "malformed_row": 1,
        "missing_file": 1,
        "no_majority": 1,
    }


def test_both_layouts_present_reads_the_folders(tmp_path: Path) -> None:
    root = build_fer2013_csvs(tmp_path / "fer", ROWS)
    build_ferplus_folders(root, FOLDERS)
    _, summary = scan_ferplus(root, image_dir=tmp_path / "images")
    assert summary["layout"] == "folders" and summary["samples"] == 5


def test_wrong_roots_say_what_each_layout_lacks(tmp_path: Path) -> None:
    repo = tmp_path / "FERPlus"
    build_ferplus_folders(repo / "data", FOLDERS)
    (repo / "fer2013new.csv").write_text("Usage,Image name\n")
    with pytest.raises(DatasetError) as info:
        check_ferplus_layout(repo)
    message = str(info.value)
    assert f"FER+ root {repo}: expected either (a) {repo}/fer2013.csv and" in message
    assert "(missing: fer2013.csv)" in message
    assert "(b) " in message and "FER2013Valid/label.csv" in message
    assert "found: data/, fer2013new.csv" in message
    assert f"did you mean {repo / 'data'}? it holds FER2013Train/label.csv" in message
    with pytest.raises(DatasetError, match="nothing \\(it does not exist\\)"):
        scan_ferplus(tmp_path / "nope", image_dir=tmp_path / "images")
