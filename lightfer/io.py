"""Atomic writes: an interrupted stage never leaves a half-written output behind.

Every output is written under a hidden temporary name in the destination's own directory
(so the final rename stays on one file system) and renamed into place only when complete.
A killed process therefore leaves at most a `.<name>.tmp-*` file, which no stage declares
and DVC never caches; `remove_stale_temporaries` tidies those up on the next run. While a
write is open, SIGTERM (what `kill`, DVC, Prefect and container runtimes send) unwinds the
main thread like Ctrl-C does, so the temporary is removed then too; only SIGKILL leaves one.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from lightfer.errors import OutputPathError

logger = logging.getLogger(__name__)

_TMP_MARK = ".tmp-"


def _temporary_sibling(path: Path) -> Path:
    return path.with_name(f".{path.name}{_TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _fsync_tree(path: Path) -> None:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    for file in files:
        with open(file, "rb") as handle:
            os.fsync(handle.fileno())


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Make SIGTERM raise `SystemExit(143)` in the main thread for the duration, if nothing
    else handles it, so that `finally` blocks and `except BaseException` cleanups run."""
    install = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    )
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if install else None
    try:
        yield
    finally:
        if install:
            signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write `path` (a file or a directory) and commit it on success.

    The caller writes a file or creates a directory at the yielded path. When the block ends
    without an exception the result replaces `path` in one rename (a directory replaces the
    old one through a rename-aside); on an exception the temporary is removed and `path` is
    left as it was.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_sibling(final)
    with _sigterm_unwinds():
        try:
            yield tmp
            if not tmp.exists():
                raise FileNotFoundError(f"atomic write of {final}: nothing was written at {tmp}")
            _fsync_tree(tmp)
            if tmp.is_dir() and final.exists():
                aside = _temporary_sibling(final)
                os.replace(final, aside)
                os.replace(tmp, final)
                _remove(aside)
            else:
                os.replace(tmp, final)
        except BaseException:
            _remove(tmp)
            raise


def check_output_file(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any work, a file output that could not be written at the end.

    Raises:
        OutputPathError: `path` is a directory, a folder on its way is a file, or the
            nearest existing folder does not take a new file.
    """
    path = Path(path)
    if path.is_dir():
        raise OutputPathError(f"output {path} is a directory; name a file to write")
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise OutputPathError(f"cannot write {path}: {folder} is a file, not a folder")
    try:  # a real probe: access() says yes to root even on read-only file systems
        with tempfile.TemporaryFile(dir=folder, prefix=f".{path.name}{_TMP_MARK}probe-"):
            pass
    except OSError as exc:
        raise OutputPathError(
            f"cannot write {path}: the folder {folder} is not writable ({exc.strerror or exc})"
        ) from None
    return path


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def remove_stale_temporaries(directory: str | os.PathLike[str]) -> int:
    """Delete temporaries a killed run left in `directory`; returns how many were removed."""
    root = Path(directory)
    if not root.is_dir():
        return 0
    stale = [p for p in root.iterdir() if p.name.startswith(".") and _TMP_MARK in p.name]
    for path in stale:
        logger.info("removing %s, left by an interrupted run", path)
        _remove(path)
    return len(stale)


def write_json(path: str | os.PathLike[str], data: Any) -> None:
    """Write `data` as indented, key-sorted JSON (stable bytes for DVC's metrics diff)."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True, allow_nan=False) + "\n")


def write_parquet(path: str | os.PathLike[str], table: pa.Table) -> None:
    """Write a pyarrow table to Parquet atomically."""
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
