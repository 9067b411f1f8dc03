"""Adapter for FER+ (FERPlus): FER2013's 48x48 grey faces relabelled by 10 crowd votes each.

Two layouts are accepted:

- `csv`: `<root>/fer2013.csv` (Kaggle: `emotion,pixels,Usage`, 2304 grey values a row) and
  `<root>/fer2013new.csv` (`Usage,Image name,neutral,happiness,surprise,sadness,anger,
  disgust,fear,contempt,unknown,NF`). The two are joined **by row order, never by name**:
  names stop matching row numbers after each empty-name row (173 non-faces) and four names
  are duplicated. The pixels are written as PNG files under the caller's `image_dir`.
- `folders`: the images written by FERPlus' `generate_training_data.py`, with the repo's
  `label.csv` copied next to them: `<root>/FER2013Train|FER2013Valid|FER2013Test/` holding
  `fer0000000.png ...` and a header-less `label.csv` of lines
  `fer0000000.png,"(0, 0, 48, 48)",4,0,0,1,3,2,0,0,0,0` (name, box, 10 votes in the
  fer2013new order). Its votes differ slightly from fer2013new.csv for 1,601 images.

Hard labels follow Microsoft's `majority` rule (FERPlus `src/ferplus.py`, which also labels
the validation and test sets): single votes are removed, the top class wins if it holds
more than half of the remaining votes; samples won by contempt, unknown or NF, or with no
majority, are left out (the official 8-class test set keeps contempt: 3,137 images from
label.csv; this 7-class manifest drops its 15 contempt images).
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from PIL import Image

from lightfer.data._layout import (
    FileIndex,
    ManifestBuilder,
    canonical_order,
    layout_error,
    missing,
    nested_hint,
    parse_int,
    read_csv_strings,
    read_header,
    read_text,
)
from lightfer.errors import DatasetError

logger = logging.getLogger(__name__)

FER2013_CSV = "fer2013.csv"
FERPLUS_CSV = "fer2013new.csv"
LABEL_FILE = "label.csv"
FER2013_COLUMNS: tuple[str, ...] = ("emotion", "pixels", "Usage")
# The 10 vote columns, in the order of fer2013new.csv and of label.csv.
VOTE_COLUMNS: tuple[str, ...] = (
    "neutral",
    "happiness",
    "surprise",
    "sadness",
    "anger",
    "disgust",
    "fear",
    "contempt",
    "unknown",
    "NF",
)
FERPLUS_COLUMNS: tuple[str, ...] = ("Usage", "Image name", *VOTE_COLUMNS)
IMAGE_SIZE = 48

# FER+ vote column -> canonical emotion (the fer2013new.csv header).
# contempt, unknown and NF have no canonical class; samples they win are skipped.
FERPLUS_LABELS: dict[str, str] = {
    "neutral": "neutral",
    "happiness": "happiness",
    "surprise": "surprise",
    "sadness": "sadness",
    "anger": "anger",
    "disgust": "disgust",
    "fear": "fear",
}
# Majority winner without a canonical class -> skip reason.
NON_EMOTION_REASONS: dict[str, str] = {
    "contempt": "contempt",
    "unknown": "unknown",
    "NF": "not_a_face",
}
# FER2013 emotion code (fer2013.csv `emotion`) -> canonical emotion:
# "0=Angry, 1=Disgust, 2=Fear, 3=Happy, 4=Sad, 5=Surprise, 6=Neutral". Used only to report
# how often the original label agrees with the FER+ majority, a check of the row-order join.
FER2013_LABELS: dict[int, str] = {
    0: "anger",
    1: "disgust",
    2: "fear",
    3: "happiness",
    4: "sadness",
    5: "surprise",
    6: "neutral",
}
USAGE_SPLITS: dict[str, str] = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
FOLDER_SPLITS: dict[str, str] = {
    "FER2013Train": "train",
    "FER2013Valid": "val",
    "FER2013Test": "test",
}

_TO_CANONICAL = canonical_order(VOTE_COLUMNS, FERPLUS_LABELS)
_CSV_FILES = (FER2013_CSV, FERPLUS_CSV)
_FOLDER_FILES = tuple(f"{folder}/{LABEL_FILE}" for folder in FOLDER_SPLITS)


def ferplus_majority(votes: Sequence[float]) -> str | None:
    """The vote column that wins by Microsoft's `majority` rule, or None without a majority.

    Counts of one vote or fewer are removed first; the largest remaining count wins if it is
    more than half of the remaining votes (FERPlus `src/ferplus.py`, `_process_data`).
    """
    kept = np.where(np.asarray(votes, dtype=np.float64) <= 1.0, 0.0, votes)
    top = int(np.argmax(kept))
    return VOTE_COLUMNS[top] if kept[top] > 0.5 * kept.sum() else None


def _detect_layout(root: Path) -> str:
    csv_absent = missing(root, files=_CSV_FILES)
    folders_absent = missing(root, files=_FOLDER_FILES)
    if not folders_absent:
        if not csv_absent:
            logger.info("FER+ root %s holds both layouts; reading the folders' label.csv", root)
        return "folders"
    if not csv_absent:
        return "csv"
    hint = nested_hint(root, FERPLUS_CSV) or nested_hint(root, _FOLDER_FILES[0])
    raise layout_error(
        "FER+",
        root,
        f"either (a) {root / FER2013_CSV} and {root / FERPLUS_CSV} (missing: "
        f"{', '.join(csv_absent)}) or (b) {', '.join(str(root / f) for f in _FOLDER_FILES)} "
        f"with the generated PNGs beside them (missing: {', '.join(folders_absent)})",
        hint,
    )


def check_ferplus_layout(root: Path) -> None:
    """Check that `root` holds one of the two FER+ layouts, and log which (reads 2 headers).

    Raises:
        DatasetError: neither layout is complete (the message names what each lacks), or a
            CSV header is not the expected one.
    """
    _checked_layout(root)


def _checked_layout(root: Path) -> str:
    layout = _detect_layout(root)
    if layout == "csv":
        for name, expected in ((FER2013_CSV, FER2013_COLUMNS), (FERPLUS_CSV, FERPLUS_COLUMNS)):
            header = read_header(root / name)
            if header != list(expected):
                raise DatasetError(
                    f"FER+ file {root / name} has columns {header}; expected "
                    f"exactly {','.join(expected)}"
                )
    logger.info("FER+ root %s: found the %s layout", root, layout)
    return layout


def scan_ferplus(root: Path, image_dir: Path | None = None) -> tuple[pa.Table, dict[str, Any]]:
    """List FER+ faces with their votes as a manifest table, writing PNGs for the CSV layout.

    The image root depends on the layout, and the summary's `image_root` says which:

    - `csv` layout: `image_dir` (required). Each kept row's pixels are written to
      `image_dir/<split>/<row>.png` (`row` = 0-based data row of both CSVs, 5 digits), and
      `path` is `<split>/<row>.png`. `sample_id` is `row<row>-<Image name>` (e.g.
      `row00012-fer0000011`): unique, and it keeps the official name, which is neither unique
      nor the row number.
    - `folders` layout: the dataset root `root` (`image_dir` is not used); `path` is
      `FER2013Train/fer0000000.png` and `sample_id` the same without `.png`.

    Columns: `source_label` is the winning FER+ vote column (e.g. `happiness`); `votes` the
    raw counts of the 7 canonical emotions; `true_dist` those 7 counts renormalised (raw,
    before the single-vote removal of the hard-label rule; contempt, unknown and NF votes
    are left out of the distribution, not spread over the others); `box` the face box,
    `0, 0, 48, 48` (the whole image).

    Skipped rows (reason): empty `Image name` (`not_a_face`, the maintainers' "no face
    images"), majority won by `contempt`, `unknown` or NF (`not_a_face`), no majority
    (`no_majority`), unparsable votes, box or pixels (`malformed_row`, `bad_pixels`), vote
    counts that are not whole numbers (`non_integer_votes` in fer2013new.csv, `malformed_row`
    in label.csv: never rounded, which could invent a majority), an
    unknown `Usage` (`unknown_split`), a label.csv image not on disk (`missing_file`), a
    repeated name within a folder (`duplicate`).

    Returns:
        The table and a summary with `layout`, `image_root` (`"image_dir"` or `"root"`),
        `face_source` (`"aligned"`), `label_rule`, for the CSV layout `images_written` and
        `fer2013_agreement` (how often FER2013's own label equals the FER+ majority), and
        the per-split, per-class and skip counts of `_layout.summarise`.

    Raises:
        DatasetError: the layout is wrong, the two CSVs differ in row count or `Usage`
            (they cannot be joined by row order), or no row is usable.
        ValueError: the CSV layout was found and `image_dir` is None.
    """
    builder = ManifestBuilder("FER+", logger, ("true_dist", "votes", "box"))
    if _checked_layout(root) == "folders":
        _scan_folders(root, builder)
        return builder.finish(
            layout="folders", image_root="root", face_source="aligned", label_rule="majority"
        )
    if image_dir is None:
        raise ValueError(f"FER+ root {root} holds the CSV layout: pass image_dir for its PNGs")
    written, agreement = _scan_csv(root, image_dir, builder)
    return builder.finish(
        layout="csv",
        image_root="image_dir",
        face_source="aligned",
        label_rule="majority",
        images_written=written,
        fer2013_agreement=agreement,
    )


def _add_voted(
    builder: ManifestBuilder,
    sample_id: str,
    split: str,
    path: str,
    votes: np.ndarray,
    box: Sequence[float],
    where: str,
) -> str | None:
    """Add a sample by the majority rule, or skip it; return the canonical label or None."""
    winner = ferplus_majority(votes)
    if winner is None:
        builder.skip("no_majority", f"{where}: votes {votes.tolist()}")
        return None
    if winner in NON_EMOTION_REASONS:
        builder.skip(NON_EMOTION_REASONS[winner], f"{where}: majority {winner}")
        return None
    emotions = votes[_TO_CANONICAL]
    builder.add(
        sample_id,
        split,
        path,
        FERPLUS_LABELS[winner],
        winner,
        votes=emotions,
        true_dist=emotions / emotions.sum(),
        box=box,
    )
    return FERPLUS_LABELS[winner]


def _scan_folders(root: Path, builder: ManifestBuilder) -> None:
    images = FileIndex(root)
    for folder, split in FOLDER_SPLITS.items():
        lines = io.StringIO(read_text(root / folder / LABEL_FILE), newline="")
        for number, row in enumerate(csv.reader(lines), start=1):
            if not row:
                continue
            where = f"{folder}/{LABEL_FILE}:{number}"
            parsed = _parse_label_row(row)
            if parsed is None:
                builder.skip("malformed_row", f"{where} {','.join(row)!r}")
                continue
            name, box, votes = parsed
            path = f"{folder}/{name}"
            if path not in images:
                builder.skip("missing_file", f"{where}: no {path}")
                continue
            sample_id = f"{folder}/{name.rsplit('.', 1)[0]}"
            _add_voted(builder, sample_id, split, path, votes, box, f"{where} {name}")


def _parse_label_row(row: list[str]) -> tuple[str, list[float], np.ndarray] | None:
    """`name, "(x0, y0, x1, y1)", 10 votes` parsed, or None when malformed."""
    if len(row) != 2 + len(VOTE_COLUMNS) or not row[0].strip():
        return None
    try:
        box = [float(v) for v in row[1].strip().strip("()").split(",")]
        votes = np.array([int(v) for v in row[2:]], dtype=np.int64)
    except ValueError:
        return None
    if len(box) != 4 or (votes < 0).any():
        return None
    return row[0].strip(), box, votes


def _read_csvs(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both CSVs as strings, after checking that they can be joined by row order."""
    fer, plus = read_csv_strings(root / FER2013_CSV), read_csv_strings(root / FERPLUS_CSV)
    if len(fer) != len(plus):
        raise DatasetError(
            f"FER+: {root / FER2013_CSV} has {len(fer)} data rows but {root / FERPLUS_CSV} has "
            f"{len(plus)}; they are joined by row order (names are not row numbers), so both "
            "must be the complete files (35,887 rows each)"
        )
    usage_fer, usage_plus = fer["Usage"].str.strip(), plus["Usage"].str.strip()
    differ = np.flatnonzero((usage_fer != usage_plus).to_numpy())
    if differ.size:
        first = int(differ[0])
        raise DatasetError(
            f"FER+: the Usage columns of {FER2013_CSV} and {FERPLUS_CSV} differ in "
            f"{differ.size} rows, first at data row {first} ({usage_fer[first]!r} vs "
            f"{usage_plus[first]!r}); the files are not row-aligned, so they cannot be joined"
        )
    return fer, plus


def _scan_csv(root: Path, image_dir: Path, builder: ManifestBuilder) -> tuple[int, dict]:
    """Join the CSVs by row, add the samples and write their PNGs; return the PNG count and
    the FER2013-label agreement."""
    fer, plus = _read_csvs(root)
    votes = plus[list(VOTE_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy()
    written = compared = agree = 0
    rows = zip(fer["pixels"], fer["emotion"], plus["Usage"], plus["Image name"], votes, strict=True)
    for row, (pixels, emotion, usage, name, counts) in enumerate(rows):
        name = name.strip()
        where = f"{FERPLUS_CSV} data row {row} {name or '(empty name)'}"
        split = USAGE_SPLITS.get(usage.strip())
        if not name:
            builder.skip("not_a_face", where)
            continue
        if split is None:
            builder.skip("unknown_split", f"{where}: Usage {usage!r}")
            continue
        if not np.isfinite(counts).all() or (counts < 0).any():
            builder.skip("malformed_row", f"{where}: votes {counts.tolist()}")
            continue
        if (counts != np.round(counts)).any():  # truncating could invent a majority
            builder.skip("non_integer_votes", f"{where}: votes {counts.tolist()}")
            continue
        image = _pixels(pixels)
        if image is None:
            builder.skip("bad_pixels", f"{FER2013_CSV} data row {row}")
            continue
        path = f"{split}/{row:05d}.png"
        label = _add_voted(
            builder,
            f"row{row:05d}-{name}",
            split,
            path,
            counts.astype(np.int64),
            [0.0, 0.0, IMAGE_SIZE, IMAGE_SIZE],
            where,
        )
        if label is None:
            continue
        (image_dir / split).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(image_dir / path, compress_level=1)
        written += 1
        original = FER2013_LABELS.get(parse_int(emotion))
        if original is not None:
            compared += 1
            agree += int(original == label)
    agreement = {
        "compared": compared,
        "agree": agree,
        "fraction": round(agree / compared, 4) if compared else None,
    }
    return written, agreement


def _pixels(text: str) -> np.ndarray | None:
    """A 48x48 uint8 image from 2304 space-separated values, or None when malformed."""
    try:
        values = np.array(text.split(), dtype=np.int64)
    except ValueError:
        return None
    if values.size != IMAGE_SIZE * IMAGE_SIZE or values.min() < 0 or values.max() > 255:
        return None
    return values.astype(np.uint8).reshape(IMAGE_SIZE, IMAGE_SIZE)
