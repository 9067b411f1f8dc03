"""The `mlcr` auxiliary space: 12 AU probabilities from an MLCR output table.

MLCR (Niu, Han, Shan, Chen, "Multi-label Co-regularization for Semi-supervised Facial Action
Unit Recognition", NeurIPS 2019, https://github.com/nxsEdson/MLCR) publishes only an
EmotioNet-trained model (Python 2.7, PyTorch 0.4, CUDA-only code, weights on Google Drive),
so it is run outside this project and its outputs are imported here: per image, the sigmoid
of each of the two views' 12 logits (averaged, or one view), i.e. probabilities in 0..1.

Accepted table (CSV, one row per image, extra columns ignored):

- a key column, the first of these present:
  - `sample_id`: the manifest's sample id, matched exactly;
  - `image`, `file` or `path`: an image path; its extension is dropped and the sample id
    must equal the remaining path or one of its trailing parts (`/data/raf/train_0001.jpg`
    matches the sample ids `train_0001`, `raf/train_0001`, ...). A trailing part shared by
    two rows cannot be matched and raises an error when a sample asks for it.
- one column per AU of `au_names`, named `AU01` or `AU1` (any case, extra suffixes not
  accepted), holding probabilities in 0..1.

Caveat: the MLCR repository never names its 12 outputs. `EMOTIONET_12` is the EmotioNet
list of the paper (AU 1, 2, 4, 5, 6, 9, 12, 17, 20, 25, 26, 43), whose order is *not
verified*: only the per-AU loss weights (`loss/loss_BCE.py`, largest at positions 4, 6, 9,
i.e. AU6, AU12, AU25, the most frequent EmotioNet AUs) weakly support it. Check it against
Table 1 of arXiv:1910.11012 before giving the dimensions meaning; the kNN graph itself does
not depend on the names.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from lightfer.au import OK, AuxVectors
from lightfer.errors import AuxLabelError

logger = logging.getLogger(__name__)

EMOTIONET_12: tuple[str, ...] = (
    "AU01",
    "AU02",
    "AU04",
    "AU05",
    "AU06",
    "AU09",
    "AU12",
    "AU17",
    "AU20",
    "AU25",
    "AU26",
    "AU43",
)
KEY_COLUMNS: tuple[str, ...] = ("sample_id", "image", "file", "path")
_AU_COLUMN = re.compile(r"^au0*(\d+)$", re.IGNORECASE)
_AMBIGUOUS = -1


def _au_key(name: str) -> int | None:
    match = _AU_COLUMN.match(name.strip())
    return int(match.group(1)) if match else None


def _path_keys(value: str) -> list[str]:
    """The path without its extension, and each of its trailing parts."""
    path = PurePosixPath(value.replace("\\", "/"))
    parts = path.with_suffix("").parts if path.suffix else path.parts
    parts = tuple(part for part in parts if part not in ("/", ""))
    return ["/".join(parts[i:]) for i in range(len(parts))]


def _index(keys: pd.Series, key_column: str, csv_path: Path) -> dict[str, int]:
    """Map each lookup key to its table row (`_AMBIGUOUS` where several rows share it)."""
    index: dict[str, int] = {}
    for row, value in enumerate(keys.astype(str)):
        if key_column == "sample_id":
            if value in index:
                raise AuxLabelError(
                    f"{csv_path}: sample_id {value!r} appears twice (data rows {index[value] + 1} "
                    f"and {row + 1}); keep one prediction per image"
                )
            index[value] = row
            continue
        for key in _path_keys(value):
            index[key] = _AMBIGUOUS if key in index and index[key] != row else row
    return index


def mlcr_aux(
    sample_ids: Sequence[str], csv_path: Path, *, au_names: Sequence[str] = EMOTIONET_12
) -> AuxVectors:
    """Import MLCR AU probabilities for the given samples (table format: module docstring).

    Args:
        sample_ids: one per manifest row.
        csv_path: the MLCR output table.
        au_names: the AU columns to read, in output order (default: `EMOTIONET_12`).

    Returns:
        `AuxVectors` named by `au_names`, status `OK` or `not_in_csv`.

    Raises:
        AuxLabelError: unreadable file, no key column, a missing AU column, a repeated
            sample id, a value outside 0..1 or not a number (the message names the data row
            and column), or a sample whose path key matches several rows.
    """
    csv_path = Path(csv_path)
    try:
        table = pd.read_csv(csv_path, skipinitialspace=True, dtype={c: str for c in KEY_COLUMNS})
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise AuxLabelError(f"{csv_path}: cannot read the MLCR table ({exc})") from exc
    table.columns = [str(column).strip() for column in table.columns]
    key_column = next((c for c in KEY_COLUMNS if c in table.columns), None)
    if key_column is None:
        raise AuxLabelError(
            f"{csv_path}: no key column; expected one of {', '.join(KEY_COLUMNS)} among "
            f"{list(table.columns)}"
        )
    by_number = {_au_key(c): c for c in table.columns if _au_key(c) is not None}
    columns = []
    for name in au_names:
        number = _au_key(name)
        if number is None:
            raise ValueError(f"au_names must look like AU01 or AU1, got {name!r}")
        if number not in by_number:
            raise AuxLabelError(
                f"{csv_path}: no column for {name} (accepted spellings: AU{number} or "
                f"AU{number:02d}); found AU columns {sorted(by_number.values())}"
            )
        columns.append(by_number[number])

    probabilities = table[columns].apply(pd.to_numeric, errors="coerce").to_numpy(np.float64)
    bad = ~np.isfinite(probabilities) | (probabilities < 0) | (probabilities > 1)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raw = table[columns[col]].iloc[row]
        shown = "an empty cell" if pd.isna(raw) else repr(raw) if isinstance(raw, str) else raw
        raise AuxLabelError(
            f"{csv_path}: data row {row + 1} ({key_column} {table[key_column].iloc[row]!r}), "
            f"column {columns[col]}: {shown} is not a probability in 0..1 ({int(bad.sum())} "
            "such values); MLCR outputs are sigmoids of logits, export those, not raw logits"
        )

    index = _index(table[key_column], key_column, csv_path)
    values = np.full((len(sample_ids), len(columns)), np.nan)
    status = np.full(len(sample_ids), "not_in_csv", dtype=object)
    for i, sample_id in enumerate(sample_ids):
        row = index.get(str(sample_id))
        if row is None:
            continue
        if row == _AMBIGUOUS:
            raise AuxLabelError(
                f"{csv_path}: sample {sample_id!r} matches several {key_column} values; "
                "write full sample ids in a sample_id column instead"
            )
        values[i], status[i] = probabilities[row], OK
    result = AuxVectors("mlcr", tuple(au_names), values, status)
    logger.info("MLCR AUs from %s: %s", csv_path, result.counts())
    return result
