"""Fingerprints of a resumable run: what it computes from, so a killed run resumes only
into the run it was.

A run's fingerprint hashes three things:

- its settings: the params values it uses, as canonical JSON;
- its inputs: the files and folders it reads. A small file is hashed by content; a large
  one by its size and modification time (nanoseconds), which changes whenever the file
  is rewritten and costs nothing to read, so a multi-gigabyte face cache is not re-read
  just to name a folder;
- the lightfer code version: the hash of the package's `.py` files.

The same settings, inputs and code give the same fingerprint (the run resumes); a change
to any of them gives another (the run starts afresh). This is a resume key, not DVC's
record of what is up to date: DVC decides whether a stage runs at all.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["code_version", "input_digest", "run_fingerprint"]

# Files up to this size are hashed by content; larger ones by size and mtime.
SMALL_FILE_BYTES = 1 << 20
_PACKAGE = Path(__file__).resolve().parent


def _skipped(relative: Path) -> bool:
    """Build and interrupted-write leftovers, which say nothing about an input's content."""
    hidden_tmp = relative.name.startswith(".") and ".tmp-" in relative.name
    return hidden_tmp or relative.suffix == ".pyc" or "__pycache__" in relative.parts


def _file_digest(path: Path) -> str:
    stat = path.stat()
    if stat.st_size <= SMALL_FILE_BYTES:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    return f"size={stat.st_size},mtime_ns={stat.st_mtime_ns}"


def input_digest(path: Path) -> str:
    """A digest of one input: a file (see the module docstring), a folder's relative names
    and file digests, or `missing`."""
    if path.is_file():
        return _file_digest(path)
    if not path.is_dir():
        return "missing"
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        relative = file.relative_to(path)
        if not _skipped(relative):
            digest.update(f"{relative.as_posix()}\0{_file_digest(file)}\n".encode())
    return digest.hexdigest()


@functools.cache
def code_version() -> str:
    """The hash of the lightfer package's `.py` files (names and contents)."""
    digest = hashlib.sha256()
    for file in sorted(_PACKAGE.rglob("*.py")):
        relative = file.relative_to(_PACKAGE)
        if not _skipped(relative):
            digest.update(relative.as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()


def run_fingerprint(settings: Mapping[str, Any], inputs: Iterable[Path]) -> str:
    """The fingerprint of a run with these settings and inputs (see the module docstring).

    Args:
        settings: the params values the run uses; JSON-able (paths are written as strings).
        inputs: the files and folders the run reads, in a fixed order.

    Returns:
        A 16-character hex digest, short enough to name a folder.
    """
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for path in inputs:
        digest.update(f"\n{Path(path).name}:{input_digest(Path(path))}".encode())
    digest.update(f"\ncode:{code_version()}".encode())
    return digest.hexdigest()[:16]
