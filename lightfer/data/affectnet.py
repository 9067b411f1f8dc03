"""Adapter for AffectNet (manually annotated part), as AffectNet-7, in either release.

Two layouts are accepted:

- `csv`, the original release:
  `<root>/Manually_Annotated_file_lists/training.csv` and `validation.csv` (or both directly
  in `<root>`), columns `subDirectory_filePath, face_x, face_y, face_width, face_height,
  facial_landmarks, expression, valence, arousal`; images at
  `<root>/Manually_Annotated_Images/<subDirectory_filePath>` (also accepted:
  `Manually_Annotated/Manually_Annotated_Images/`). `facial_landmarks` is one string of 68
  `x;y` pairs, `x0;y0;x1;y1;...`.
- `npy`, the newer release: `<root>/train_set|val_set/images/<id>.jpg` with
  `annotations/<id>_exp.npy` (the code, possibly a 0-d string array) and, when present,
  `annotations/<id>_lnd.npy` (68 points).

Expression codes: 0 Neutral, 1 Happy, 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger,
7 Contempt, 8 None, 9 Uncertain, 10 No-Face. AffectNet-7 keeps 0..6. The official test set
is not public, so the validation set (500 images a class) is the `test` split.

The training set is heavily imbalanced (happiness about 35 times fear); this adapter lists
it as it is: class-balanced resampling or weighting belongs to training.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from lightfer.data._layout import (
    FileIndex,
    ManifestBuilder,
    Tally,
    layout_error,
    missing,
    nested_hint,
    parse_int,
    read_csv_strings,
    read_header,
)
from lightfer.errors import DatasetError
from lightfer.manifest import NUM_LANDMARKS

logger = logging.getLogger(__name__)

# AffectNet expression code -> canonical emotion (the release's README: "0 Neutral, 1 Happy,
# 2 Sad, 3 Surprise, 4 Fear, 5 Disgust, 6 Anger"; the same codes in both releases).
AFFECTNET_LABELS: dict[int, str] = {
    0: "neutral",
    1: "happiness",
    2: "sadness",
    3: "surprise",
    4: "fear",
    5: "disgust",
    6: "anger",
}
# Codes outside AffectNet-7 -> skip reason (the same README: 7 Contempt, 8 None,
# 9 Uncertain, 10 No-Face).
SKIPPED_CODES: dict[int, str] = {7: "contempt", 8: "none", 9: "uncertain", 10: "no_face"}

CSV_COLUMNS: tuple[str, ...] = (
    "subDirectory_filePath",
    "face_x",
    "face_y",
    "face_width",
    "face_height",
    "facial_landmarks",
    "expression",
    "valence",
    "arousal",
)
# Manifest split -> CSV file name; folders searched for them, in order.
CSV_FILES: dict[str, str] = {"train": "training.csv", "test": "validation.csv"}
CSV_FOLDERS: tuple[str, ...] = ("Manually_Annotated_file_lists", ".")
# Image folders searched, in order, for the CSV release.
IMAGE_FOLDERS: tuple[str, ...] = (
    "Manually_Annotated_Images",
    "Manually_Annotated/Manually_Annotated_Images",
)
# Manifest split -> folder of the npy release.
NPY_SPLITS: dict[str, str] = {"train": "train_set", "test": "val_set"}

_NPY_FOLDERS = tuple(f"{s}/{sub}" for s in NPY_SPLITS.values() for sub in ("images", "annotations"))


def _find_csv_folder(root: Path) -> str | None:
    return next((f for f in CSV_FOLDERS if not missing(root / f, files=CSV_FILES.values())), None)


def _detect_layout(root: Path) -> tuple[str, str, str]:
    """(`csv`, CSV folder, image folder) or (`npy`, "", "")."""
    csv_folder = _find_csv_folder(root)
    if csv_folder is not None:
        image_folder = next((f for f in IMAGE_FOLDERS if (root / f).is_dir()), None)
        if image_folder is None:
            raise layout_error(
                "AffectNet",
                root,
                f"the image folder of the CSV release next to {root / csv_folder}: one of "
                + ", ".join(f"{root / f}/" for f in IMAGE_FOLDERS),
            )
        return "csv", csv_folder, image_folder
    absent = missing(root, folders=_NPY_FOLDERS)
    if not absent:
        return "npy", "", ""
    csv_names = " and ".join(CSV_FILES.values())
    raise layout_error(
        "AffectNet",
        root,
        f"either (a) {csv_names} in {root / CSV_FOLDERS[0]}/ or {root}/, with images in "
        f"{root / IMAGE_FOLDERS[0]}/, or (b) {', '.join(f'{root / f}/' for f in _NPY_FOLDERS)} "
        f"(missing: {', '.join(absent)})",
        nested_hint(root, CSV_FOLDERS[0]) or nested_hint(root, _NPY_FOLDERS[1]),
    )


def _checked_layout(root: Path) -> tuple[str, str, str]:
    layout, csv_folder, image_folder = _detect_layout(root)
    if layout == "csv":
        for name in CSV_FILES.values():
            path = root / csv_folder / name
            header = read_header(path)
            absent = [c for c in CSV_COLUMNS if c not in header]
            if absent:
                raise DatasetError(f"AffectNet file {path} lacks columns {absent}; it has {header}")
    logger.info("AffectNet root %s: found the %s layout", root, layout)
    return layout, csv_folder, image_folder


def check_affectnet_layout(root: Path) -> None:
    """Check that `root` holds one AffectNet release, and log which (reads 2 CSV headers).

    Raises:
        DatasetError: neither release is complete (the message names the file and folder
            names tried), or a CSV lacks one of the expected columns.
    """
    _checked_layout(root)


def scan_affectnet(root: Path) -> tuple[pa.Table, dict[str, Any]]:
    """List AffectNet-7's images as a manifest table (validation -> `test`).

    The image root is the dataset root `root`. `source_label` is the expression code.

    - `csv`: `path` is `<image folder>/<subDirectory_filePath>`, `sample_id` the
      `subDirectory_filePath`; `box` is `face_x, face_y, face_x + face_width,
      face_y + face_height`; `landmarks` the 68 points of `facial_landmarks` (NaN, and
      counted in the summary's `landmarks_unparsable`, where the string is not 136 numbers).
      Valence and arousal are not kept.
    - `npy`: `path` is `<train_set|val_set>/images/<id>.jpg`, `sample_id`
      `<train_set|val_set>/<id>`; `landmarks` from `<id>_lnd.npy` when the release has such
      files (NaN and counted where one is missing or not 68 points); no box (the images are
      face crops).

    Skipped rows (reason): a CSV row with more fields than the header (`malformed_row`),
    codes 7..10 (`contempt`, `none`, `uncertain`, `no_face`), other codes (`unknown_code`),
    an empty path (`empty_name`), a non-positive or non-numeric box (`bad_box`), an image
    not on disk (`missing_file`), an unreadable `_exp.npy` (`bad_annotation`), a repeated
    sample (`duplicate`).

    Returns:
        The table and a summary with `layout`, `image_root` (`"root"`), `image_folder` (CSV
        release), `face_source` (`"landmarks"`, or `"aligned"` for an npy release without
        landmark files), `landmarks_unparsable`, and the per-split, per-class and skip
        counts of `_layout.summarise`.

    Raises:
        DatasetError: the layout is wrong, or no row is usable.
    """
    layout, csv_folder, image_folder = _checked_layout(root)
    bad_landmarks = Tally()
    if layout == "csv":
        builder = ManifestBuilder("AffectNet", logger, ("box", "landmarks"))
        for split, name in CSV_FILES.items():
            _scan_csv(root, f"{csv_folder}/{name}", image_folder, split, builder, bad_landmarks)
        extra = {"image_folder": image_folder, "face_source": "landmarks"}
    else:
        has_landmarks = any(
            p.name.endswith("_lnd.npy")
            for folder in NPY_SPLITS.values()
            for p in (root / folder / "annotations").iterdir()
        )
        builder = ManifestBuilder("AffectNet", logger, ("landmarks",) if has_landmarks else ())
        for split, folder in NPY_SPLITS.items():
            _scan_npy(root, folder, split, builder, bad_landmarks if has_landmarks else None)
        extra = {"face_source": "landmarks" if has_landmarks else "aligned"}
    bad_landmarks.log(logger, "AffectNet: NaN landmarks kept for")
    return builder.finish(
        layout=layout, image_root="root", **extra, landmarks_unparsable=bad_landmarks.report()
    )


def _code_label(builder: ManifestBuilder, code: int | None, where: str) -> str | None:
    """The canonical label of an expression code, or None after skipping the row."""
    if code in AFFECTNET_LABELS:
        return AFFECTNET_LABELS[code]
    builder.skip(SKIPPED_CODES.get(code, "unknown_code"), f"{where}: expression {code}")
    return None


def _landmarks(values: np.ndarray, where: str, bad: Tally) -> np.ndarray:
    """The 68 points flattened to 136 values, or NaN (counted in `bad`) when not 68 points."""
    points = values.reshape(-1, 2) if values.size % 2 == 0 else values
    if points.shape != (NUM_LANDMARKS, 2) or not np.isfinite(points).all():
        bad.add("unparsable", f"{where}: {values.size} values")
        return np.full(2 * NUM_LANDMARKS, np.nan)
    return points.reshape(-1)


def _parse_landmarks(text: str) -> np.ndarray:
    """`x0;y0;x1;y1;...` as floats (as the release writes them), or an empty array
    when a value is not a number."""
    try:
        return np.array([float(v) for v in text.split(";")])
    except ValueError:
        return np.array([])


def _scan_csv(
    root: Path,
    csv_path: str,
    image_folder: str,
    split: str,
    builder: ManifestBuilder,
    bad_landmarks: Tally,
) -> None:
    def extra_fields(fields: list[str]) -> None:
        builder.skip(
            "malformed_row",
            f"{csv_path}: {len(fields)} fields, not {len(CSV_COLUMNS)}: {','.join(fields)[:120]}",
        )

    frame = read_csv_strings(root / csv_path, on_bad_line=extra_fields)
    boxes = frame[list(CSV_COLUMNS[1:5])].apply(pd.to_numeric, errors="coerce").to_numpy()
    images = FileIndex(root)
    rows = zip(
        frame["subDirectory_filePath"],
        frame["expression"],
        boxes,
        frame["facial_landmarks"],
        strict=True,
    )
    for number, (name, expression, (x, y, w, h), landmarks) in enumerate(rows, start=2):
        name = name.strip()
        where = f"{csv_path}:{number} {name}"
        code = parse_int(expression)
        label = _code_label(builder, code, where)
        if label is None:
            continue
        path = f"{image_folder}/{name}"
        if not name:
            builder.skip("empty_name", where)
        elif not (np.isfinite([x, y, w, h]).all() and w > 0 and h > 0):
            builder.skip("bad_box", f"{where}: box {[x, y, w, h]}")
        elif path not in images:
            builder.skip("missing_file", f"{where}: no {path}")
        else:
            points = _landmarks(_parse_landmarks(landmarks), where, bad_landmarks)
            builder.add(
                name, split, path, label, str(code), box=[x, y, x + w, y + h], landmarks=points
            )


def _scan_npy(
    root: Path, folder: str, split: str, builder: ManifestBuilder, bad_landmarks: Tally | None
) -> None:
    annotations = root / folder / "annotations"
    names = {p.name for p in annotations.iterdir()}
    images = FileIndex(root)
    for exp_name in sorted(n for n in names if n.endswith("_exp.npy")):
        image_id = exp_name[: -len("_exp.npy")]
        where = f"{folder}/annotations/{exp_name}"
        try:
            code: int | None = int(np.load(annotations / exp_name))
        except (OSError, ValueError, TypeError):
            builder.skip("bad_annotation", where)
            continue
        label = _code_label(builder, code, where)
        path = f"{folder}/images/{image_id}.jpg"
        if label is None:
            continue
        if path not in images:
            builder.skip("missing_file", f"{where}: no {path}")
            continue
        optional = {}
        if bad_landmarks is not None:
            optional["landmarks"] = _npy_landmarks(annotations, image_id, names, bad_landmarks)
        builder.add(f"{folder}/{image_id}", split, path, label, str(code), **optional)


def _npy_landmarks(annotations: Path, image_id: str, names: set[str], bad: Tally) -> np.ndarray:
    name = f"{image_id}_lnd.npy"
    where = f"{annotations.parent.name}/annotations/{name}"
    if name not in names:
        bad.add("no_lnd_file", f"{where}: no such file")
        return np.full(2 * NUM_LANDMARKS, np.nan)
    try:
        values = np.asarray(np.load(annotations / name), dtype=np.float64).reshape(-1)
    except (OSError, ValueError, TypeError):
        values = np.array([])
    return _landmarks(values, where, bad)
