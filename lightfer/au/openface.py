"""The `openface` auxiliary space: OpenFace 2's 17 AU intensities, per image.

OpenFace 2 (Baltrusaitis et al., FG 2018, https://github.com/TadasBaltrusaitis/OpenFace) is
a C++ program that users install themselves; nothing here downloads or builds it. For a
folder of unrelated images the right tool is `FaceLandmarkImg`, not `FeatureExtraction`:
the latter treats a folder as one video of one person (landmark tracking across frames and
person-specific calibration of the AU outputs). `FaceLandmarkImg` always uses the static AU
models and writes one `<out_dir>/<image stem>.csv` per image, one row per detected face,
with columns ``face, confidence, ..., AU01_r, ..., AU45_r, AU01_c, ..., AU45_c``.

What its outputs mean (from `exe/FaceLandmarkImg/FaceLandmarkImg.cpp` and
`RecorderOpenFace.cpp` in OpenFace 2.2):

- the CSV is opened on the first face written, so an image without a face gets no CSV at
  all, only `<stem>_of_details.txt`: a missing CSV next to that file is `openface_no_face`,
  a missing CSV without it is `openface_missing_csv` (the image was never processed);
- a header-only or empty CSV is also `openface_no_face`;
- sequence-mode CSVs (`FeatureExtraction`) have a `success` column: 0 is `openface_failed`;
- every face row has a landmark `confidence` in [0, 1]; OpenFace itself calls a fit
  successful when it exceeds `OPENFACE_SUCCESS_CONFIDENCE` (0.725, `validation_boundary` in
  `LandmarkDetectorParameters.cpp`) and writes that as `success` in sequence-mode CSVs only,
  so image-mode rows are filtered by confidence here (`min_confidence`, by default the same
  threshold): a face below it is `openface_low_confidence`;
- header style depends on the build: older builds separate columns with ``", "`` (names
  read `` AU01_r``), newer ones with ``","``; both are read.

Column layout: `face, confidence` (image mode) or `frame, face_id, timestamp, confidence,
success` (sequence mode), then the blocks that were switched on, then `AUxx_r` and `AUxx_c`
sorted by name (`RecorderCSV.cpp`).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from lightfer.au import OK, AuxVectors
from lightfer.errors import AuxLabelError
from lightfer.labels import AU_NAMES

logger = logging.getLogger(__name__)

BINARY = "FaceLandmarkImg"
OPENFACE_NAMES: tuple[str, ...] = tuple(f"{name}_r" for name in AU_NAMES)
# OpenFace 2's own landmark-fit success threshold (CE-CLM's `validation_boundary`).
OPENFACE_SUCCESS_CONFIDENCE = 0.725
_TAIL_CHARS = 2000


def read_openface_csv(path: Path | str) -> pd.DataFrame:
    """Read one OpenFace CSV, with column names stripped of the spaces some builds write.

    Args:
        path: an OpenFace output CSV (image or sequence mode).

    Returns:
        The table; it may have no rows (a header without faces).

    Raises:
        AuxLabelError: the file cannot be read or parsed, or has no `AUxx_r` column (it was
            made without `-aus`, or is not an OpenFace CSV).
    """
    path = Path(path)
    try:
        table = pd.read_csv(path, skipinitialspace=True)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise AuxLabelError(f"{path}: cannot read it as an OpenFace CSV ({exc})") from exc
    table.columns = [str(column).strip() for column in table.columns]
    if not any(column.startswith("AU") and column.endswith("_r") for column in table.columns):
        raise AuxLabelError(
            f"{path}: no AU intensity columns (AUxx_r) among {list(table.columns)[:8]}...; "
            "run OpenFace with -aus (or with no output flags at all)"
        )
    return table


def openface_command(binary: Path | str, image_dir: Path, out_dir: Path) -> list[str]:
    """The command line that runs `FaceLandmarkImg` on a folder, AU outputs only.

    `FaceLandmarkImg` always uses the static AU models (`-au_static` is implied), and `-aus`
    alone switches off the other outputs (landmarks, pose, gaze, HOG, aligned faces).
    """
    return [str(binary), "-fdir", str(image_dir), "-out_dir", str(out_dir), "-aus"]


def find_openface(binary: str | Path | None = None) -> Path | None:
    """The `FaceLandmarkImg` executable: `binary` if it exists, else the one on PATH, else None.

    Args:
        binary: a configured path (e.g. from params.yaml), or None.
    """
    if binary is not None and Path(binary).is_file():
        return Path(binary)
    if binary is not None:
        logger.warning("OpenFace binary %s does not exist; looking for %s on PATH", binary, BINARY)
    found = shutil.which(BINARY)
    return Path(found) if found else None


def _check_unique_stems(image_paths: Sequence[Path]) -> None:
    first: dict[str, Path] = {}
    for path in image_paths:
        stem = Path(path).stem
        if stem in first and Path(first[stem]) != Path(path):
            raise AuxLabelError(
                f"{first[stem]} and {path} share the file stem {stem!r}, so their OpenFace "
                f"outputs would both be {stem}.csv; use run_openface, which gives every image "
                "a unique name, or process the folders separately"
            )
        first.setdefault(stem, Path(path))


def _face_row(csv: Path, min_confidence: float) -> tuple[str, np.ndarray | None]:
    """Status and 17 intensities of the most confident face in one CSV."""
    if csv.stat().st_size == 0:
        return "openface_no_face", None
    table = read_openface_csv(csv)
    missing = [name for name in OPENFACE_NAMES if name not in table.columns]
    if missing:
        raise AuxLabelError(
            f"{csv}: missing AU intensity columns {missing}; expected OpenFace 2's 17 "
            f"{OPENFACE_NAMES[0]}..{OPENFACE_NAMES[-1]}"
        )
    if table.empty:
        return "openface_no_face", None
    if "success" in table.columns:
        table = table[pd.to_numeric(table["success"], errors="coerce") != 0]
        if table.empty:
            return "openface_failed", None
    if "confidence" in table.columns:
        confidence = pd.to_numeric(table["confidence"], errors="coerce").fillna(-np.inf)
        best = table.loc[confidence.idxmax()]
        if confidence.max() < min_confidence:
            return "openface_low_confidence", None
    else:
        best = table.iloc[0]
    values = pd.to_numeric(best[list(OPENFACE_NAMES)], errors="coerce").to_numpy(np.float64)
    if not np.isfinite(values).all():
        raise AuxLabelError(
            f"{csv}: non-numeric AU intensities in the chosen face's row; is the file complete?"
        )
    return OK, values


def openface_aux(
    image_paths: Sequence[Path | str],
    *,
    csv_dir: Path,
    min_confidence: float = OPENFACE_SUCCESS_CONFIDENCE,
) -> AuxVectors:
    """Import `FaceLandmarkImg` CSVs: 17 AU intensities per image, in `AU_NAMES` order.

    Args:
        image_paths: one image per manifest row; row i's CSV is `<csv_dir>/<stem>.csv`.
        csv_dir: the `-out_dir` OpenFace wrote to.
        min_confidence: faces whose landmark `confidence` is below this are not used
            (`openface_low_confidence`); the default is OpenFace's own success threshold,
            0 keeps every face.

    Returns:
        `AuxVectors` named `AU01_r`..`AU45_r`. With several faces in one image the one with
        the highest `confidence` is used. Status per row: `OK`, `openface_missing_csv`,
        `openface_no_face`, `openface_failed` or `openface_low_confidence`.

    Raises:
        AuxLabelError: `csv_dir` is not a folder, two images share a stem (their CSVs would
            collide), a CSV is unreadable or lacks AU columns, or no row is usable (the
            message counts the statuses).
    """
    paths = [Path(path) for path in image_paths]
    _check_unique_stems(paths)
    csv_dir = Path(csv_dir)
    if not csv_dir.is_dir():
        raise AuxLabelError(
            f"OpenFace CSV folder {csv_dir} does not exist or is not a folder; it should hold "
            "one <image stem>.csv per image (FaceLandmarkImg's -out_dir)"
        )
    values = np.full((len(paths), len(OPENFACE_NAMES)), np.nan)
    status = np.full(len(paths), OK, dtype=object)
    for row, image in enumerate(paths):
        csv = csv_dir / f"{image.stem}.csv"
        if csv.is_file():
            status[row], found = _face_row(csv, min_confidence)
            if found is not None:
                values[row] = found
        elif (csv_dir / f"{image.stem}_of_details.txt").is_file():
            status[row] = "openface_no_face"
        else:
            status[row] = "openface_missing_csv"
    result = AuxVectors("openface", OPENFACE_NAMES, values, status)
    logger.info("OpenFace AUs from %s: %s", csv_dir, result.counts())
    if paths and not (status == OK).any():
        raise AuxLabelError(
            f"no usable OpenFace face for any of the {len(paths)} images in {csv_dir} "
            f"({result.counts()}; minimum confidence {min_confidence}); e.g. {paths[0].stem}.csv"
        )
    return result


def _tail(text: str | bytes | None) -> str:
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    return (text or "").strip()[-_TAIL_CHARS:]


def run_openface(
    binary: Path | str,
    image_paths: Sequence[Path | str],
    work_dir: Path,
    *,
    timeout_s: float | None = None,
    min_confidence: float = OPENFACE_SUCCESS_CONFIDENCE,
) -> AuxVectors:
    """Run `FaceLandmarkImg` on the given images and import its CSVs.

    The images are linked (or copied where links are not possible) into `work_dir/in` as
    `<row:06d><suffix>`, so every stem is unique even when two folders hold the same file
    name, and OpenFace writes to `work_dir/out`. Both folders are emptied first. Rows whose
    image does not exist get status `openface_missing_image` and are not passed on.

    OpenFace stops at the first image OpenCV cannot decode (exit status 1), so check images
    beforehand (the face cache's status does) rather than passing broken files.

    Args:
        binary: the `FaceLandmarkImg` executable (see `find_openface`).
        image_paths: one image per manifest row.
        work_dir: a scratch folder for the links and OpenFace's outputs.
        timeout_s: kill OpenFace after this many seconds; None waits.
        min_confidence: as in `openface_aux`.

    Returns:
        `openface_aux` of the outputs, in the order of `image_paths`.

    Raises:
        AuxLabelError: the binary does not exist, cannot be started, fails or times out
            (the message has the command line and the end of its output).
    """
    binary = Path(binary)
    if not binary.is_file():
        raise AuxLabelError(
            f"OpenFace binary {binary} does not exist; install OpenFace 2 "
            "(https://github.com/TadasBaltrusaitis/OpenFace/wiki) and give the path to its "
            f"{BINARY}, or put it on PATH"
        )
    work_dir = Path(work_dir)
    in_dir, out_dir = work_dir / "in", work_dir / "out"
    for folder in (in_dir, out_dir):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    sources = [Path(path) for path in image_paths]
    linked: list[Path] = []
    present = np.zeros(len(sources), dtype=bool)
    for row, source in enumerate(sources):
        target = in_dir / f"{row:06d}{source.suffix}"
        linked.append(target)
        if not source.is_file():
            continue
        present[row] = True
        try:
            os.symlink(source.resolve(), target)
        except OSError:
            shutil.copy2(source, target)
    if present.any():
        command = openface_command(binary, in_dir, out_dir)
        logger.info("running %s on %d images", " ".join(command), int(present.sum()))
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise AuxLabelError(
                f"{' '.join(command)} did not finish within {timeout_s} s; output ends with:\n"
                f"{_tail(exc.stdout)}\n{_tail(exc.stderr)}"
            ) from exc
        except OSError as exc:
            raise AuxLabelError(f"cannot start {' '.join(command)}: {exc}") from exc
        if done.returncode != 0:
            raise AuxLabelError(
                f"{' '.join(command)} failed with exit status {done.returncode}; "
                f"stderr ends with:\n{_tail(done.stderr)}\nstdout ends with:\n{_tail(done.stdout)}"
            )
    result = openface_aux(linked, csv_dir=out_dir, min_confidence=min_confidence)
    status = result.status.copy()
    status[~present] = "openface_missing_image"
    return AuxVectors("openface", result.names, result.values, status)
