"""Plumbing shared by the RAF-DB, FER+, CAER-S and AffectNet adapters.

Row collection with skip accounting (every unusable row is counted under a reason and named
in up to `MAX_EXAMPLES` examples), the summary every adapter returns, fast file-existence
lookups, label-file reading that names the file and line of what it cannot read, and the
messages that say what a dataset root should hold. Each adapter's module docstring
describes its on-disk format.
"""

from __future__ import annotations

import codecs
import io
import logging
import os
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from lightfer.errors import DatasetError
from lightfer.labels import CLASSES, NUM_CLASSES
from lightfer.manifest import OPTIONAL, SPLITS, fixed_list

MAX_EXAMPLES = 20
_LISTED = 12


class Tally:
    """Counts of events by reason, with the first `MAX_EXAMPLES` examples of each."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.examples: dict[str, list[str]] = {}

    def add(self, reason: str, example: str) -> None:
        """Count one event under `reason`, keeping `example` if fewer are kept so far."""
        self.add_many(reason, 1, [example])

    def add_many(self, reason: str, count: int, examples: Sequence[str]) -> None:
        """Count `count` events under `reason` at once, keeping their first examples."""
        if count:
            self.counts[reason] += count
            kept = self.examples.setdefault(reason, [])
            kept.extend(examples[: MAX_EXAMPLES - len(kept)])

    def total(self) -> int:
        """The number of events counted under every reason."""
        return sum(self.counts.values())

    def report(self) -> dict[str, Any]:
        """Counts and examples by reason (reasons sorted), for a summary."""
        reasons = sorted(self.counts)
        return {
            "total": self.total(),
            "by_reason": {r: self.counts[r] for r in reasons},
            "examples": {r: self.examples[r] for r in reasons},
        }

    def log(self, logger: logging.Logger, what: str) -> None:
        """Warn once per reason with its count and a few examples."""
        for reason in sorted(self.counts):
            logger.warning(
                "%s: %d %s (%s), e.g. %s",
                what,
                self.counts[reason],
                "row" if self.counts[reason] == 1 else "rows",
                reason,
                "; ".join(self.examples[reason][:3]),
            )


class ManifestBuilder:
    """Collect manifest rows one at a time and skipped rows by reason.

    `optional` names the optional manifest columns every added row carries (see
    `lightfer.manifest.OPTIONAL`); a repeated sample_id is skipped as `duplicate`.
    """

    def __init__(self, dataset: str, logger: logging.Logger, optional: Sequence[str] = ()) -> None:
        unknown = set(optional) - set(OPTIONAL)
        if unknown:
            raise ValueError(f"not optional manifest columns: {sorted(unknown)}")
        self.dataset = dataset
        self.logger = logger
        self.skipped = Tally()
        self._rows: dict[str, list] = {k: [] for k in ("sample_id", "split", "path", "label")}
        self._rows["source_label"] = []
        self._optional: dict[str, list] = {name: [] for name in optional}
        self._seen: set[str] = set()

    def add(
        self,
        sample_id: str,
        split: str,
        path: str,
        label: str,
        source_label: str,
        **optional: Sequence[float],
    ) -> None:
        """Add one row; `label` is a canonical emotion name, `optional` the declared columns."""
        if set(optional) != set(self._optional):
            raise ValueError(
                f"row {sample_id}: got columns {sorted(optional)}, "
                f"declared {sorted(self._optional)}"
            )
        if sample_id in self._seen:
            self.skip("duplicate", f"{sample_id} ({path})")
            return
        self._seen.add(sample_id)
        for key, value in (
            ("sample_id", sample_id),
            ("split", split),
            ("path", path),
            ("label", CLASSES.index(label)),
            ("source_label", source_label),
        ):
            self._rows[key].append(value)
        for name, values in optional.items():
            self._optional[name].append(values)

    def skip(self, reason: str, example: str) -> None:
        """Leave a row out, counted under `reason` and named by `example`."""
        self.skipped.add(reason, example)
        self.logger.debug("%s: skipping %s (%s)", self.dataset, example, reason)

    def finish(self, **extra: Any) -> tuple[pa.Table, dict[str, Any]]:
        """The manifest table and its summary (`extra` adds dataset-specific entries).

        Raises:
            DatasetError: no row is usable; the message gives the skip counts.
        """
        self.skipped.log(self.logger, f"{self.dataset}: skipped")
        if not self._rows["sample_id"]:
            raise DatasetError(
                f"{self.dataset}: no usable sample; skipped {dict(self.skipped.counts)}, e.g. "
                + "; ".join(ex for v in self.skipped.examples.values() for ex in v[:2])
            )
        columns: dict[str, pa.Array] = {
            "sample_id": pa.array(self._rows["sample_id"], pa.string()),
            "split": pa.array(self._rows["split"], pa.string()),
            "path": pa.array(self._rows["path"], pa.string()),
            "label": pa.array(self._rows["label"], pa.int8()),
            "source_label": pa.array(self._rows["source_label"], pa.string()),
        }
        for name, values in self._optional.items():
            dtype = OPTIONAL[name].value_type
            columns[name] = fixed_list(np.asarray(values, dtype=dtype.to_pandas_dtype()), dtype)
        table = pa.table(columns)
        return table, summarise(self.dataset, table, self.skipped, **extra)


def summarise(dataset: str, table: pa.Table, skipped: Tally, **extra: Any) -> dict[str, Any]:
    """The summary every adapter returns.

    Keys: `dataset`, the `extra` entries, `samples`, `by_split` (rows per split),
    `label_counts` (rows per split and canonical class), `skipped` (`total`, `by_reason`,
    `examples` with up to 20 named rows per reason).
    """
    splits = np.asarray(table.column("split").to_pylist(), dtype=object)
    labels = table.column("label").to_numpy()
    present = [s for s in SPLITS if (splits == s).any()]
    return {
        "dataset": dataset,
        **extra,
        "samples": table.num_rows,
        "by_split": {s: int((splits == s).sum()) for s in present},
        "label_counts": {
            s: {c: int(((splits == s) & (labels == k)).sum()) for k, c in enumerate(CLASSES)}
            for s in present
        },
        "skipped": skipped.report(),
    }


def canonical_order(codes: Sequence[Hashable], label_map: Mapping[Hashable, str]) -> np.ndarray:
    """Index array that picks, for each canonical class, its position in `codes`.

    `codes` is a dataset's own order of codes; `label_map` maps the codes that have a
    canonical emotion to it. `values[canonical_order(...)]` reorders a per-code vector.
    """
    position = {label_map[code]: i for i, code in enumerate(codes) if code in label_map}
    absent = [c for c in CLASSES if c not in position]
    if absent or len(position) != NUM_CLASSES:
        raise ValueError(f"codes {list(codes)} do not cover the classes {absent}")
    return np.array([position[c] for c in CLASSES])


class FileIndex:
    """Whether `root/<relative path>` is a file, from one directory listing per folder."""

    def __init__(self, root: Path) -> None:
        self._root = root
        self._listings: dict[str, frozenset[str]] = {}

    def __contains__(self, relative: str) -> bool:
        folder, _, name = relative.rpartition("/")
        listing = self._listings.get(folder)
        if listing is None:
            listing = self._listings[folder] = _files_in(self._root / folder)
        return name in listing


def _files_in(folder: Path) -> frozenset[str]:
    try:
        with os.scandir(folder) as entries:
            return frozenset(e.name for e in entries if e.is_file())
    except (FileNotFoundError, NotADirectoryError):
        return frozenset()


def describe_dir(path: Path) -> str:
    """What a folder holds, briefly: `a/, b.txt, ... (+N more)`, or why it holds nothing."""
    if not path.exists():
        return "nothing (it does not exist)"
    if not path.is_dir():
        return "a file, not a folder"
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in path.iterdir())
    if not names:
        return "an empty folder"
    more = f" (+{len(names) - _LISTED} more)" if len(names) > _LISTED else ""
    return ", ".join(names[:_LISTED]) + more


def missing(root: Path, files: Iterable[str] = (), folders: Iterable[str] = ()) -> list[str]:
    """The relative `files` that are not files and `folders` that are not folders under root."""
    absent = [f for f in files if not (root / f).is_file()]
    return absent + [f"{d}/" for d in folders if not (root / d).is_dir()]


def nested_hint(root: Path, relative: str) -> str:
    """A `; did you mean ...` hint when a folder just below `root` holds `relative`."""
    if not root.is_dir():
        return ""
    hits = sorted(p for p in root.iterdir() if p.is_dir() and (p / relative).exists())
    return f"; did you mean {hits[0]}? it holds {relative}" if hits else ""


def layout_error(dataset: str, root: Path, expected: str, hint: str = "") -> DatasetError:
    """A `DatasetError` saying what `root` should hold and what it holds."""
    return DatasetError(
        f"{dataset} root {root}: expected {expected}; found: {describe_dir(root)}{hint}"
    )


def parse_int(text: object) -> int | None:
    """`text` as an integer code (`"3"`, `3`, `3.0`), or None when it is not one."""
    try:
        value = float(str(text).strip())
    except ValueError:
        return None
    return int(value) if value.is_integer() else None


# Byte-order marks and the encoding they announce; UTF-32's are checked before UTF-16's,
# which they start with. Without one, text must be UTF-8.
_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
    (codecs.BOM_UTF8, "utf-8-sig"),
)
_HEADER_BYTES = 1 << 16


def _decode(data: bytes, path: Path, *, final: bool = True) -> str:
    """`data` as text: UTF-8, or the UTF-16/32 a byte-order mark announces (what Windows
    editors save as "Unicode"), which decodes unambiguously. `final=False` leaves a
    character cut at the end of `data` out (for the start of a file).

    Raises:
        DatasetError: the bytes are not text in that encoding (the file, line and byte named).
    """
    encoding = next((name for bom, name in _BOMS if data.startswith(bom)), "utf-8")
    try:
        text = codecs.getincrementaldecoder(encoding)().decode(data, final=final)
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise DatasetError(
            f"{path}:{line}: not {encoding.removesuffix('-sig')} text (byte "
            f"{data[exc.start]:#04x} at offset {exc.start}); save the file as UTF-8"
        ) from None
    if "\x00" in text:  # valid UTF-8, but what UTF-16 without a byte-order mark looks like
        line = text[: text.index("\x00")].count("\n") + 1
        raise DatasetError(
            f"{path}:{line}: not utf-8 text (it holds NUL characters: UTF-16 without a "
            f"byte-order mark?); save the file as UTF-8"
        )
    return text


def read_text(path: Path) -> str:
    """A label file's text (see `_decode` for the encodings accepted).

    Raises:
        DatasetError: the file cannot be read or decoded (naming it, and the line).
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DatasetError(f"{path}: cannot be read ({exc.strerror or exc})") from None
    return _decode(data, path)


def read_csv_strings(
    path: Path, *, on_bad_line: Callable[[list[str]], None] | None = None
) -> pd.DataFrame:
    """A CSV file as a table of stripped strings (absent cells are `""`).

    Args:
        path: the file (encodings as `read_text`).
        on_bad_line: called with the fields of each row that has more fields than the
            header, which is then left out; None refuses such a file instead (for files
            joined by row order, where dropping a row would shift every later one).

    Raises:
        DatasetError: the file cannot be read, decoded or parsed (pandas' message names the
            line).
    """
    text = io.StringIO(read_text(path))
    options: dict[str, object] = {"dtype": str, "keep_default_na": False, "skipinitialspace": True}
    if on_bad_line is not None:

        def skip(fields: list[str]) -> None:
            on_bad_line(fields)

        options.update(engine="python", on_bad_lines=skip)
    try:
        frame = pd.read_csv(text, **options)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DatasetError(
            f"{path}: not a well-formed CSV file ({' '.join(str(exc).split())})"
        ) from None
    frame.columns = frame.columns.str.strip()
    return frame.fillna("")


def read_header(path: Path) -> list[str]:
    """The comma-separated column names on the first line of a CSV file, stripped."""
    with open(path, "rb") as handle:
        head = handle.read(_HEADER_BYTES)
    lines = _decode(head, path, final=False).splitlines()
    return [name.strip() for name in (lines[0] if lines else "").split(",")]
