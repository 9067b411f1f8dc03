"""Fingerprints of a stage run that cover exactly what DVC's stage hashes cover.

A run's fingerprint is the hash of its name, the values of the param keys it declares and
the contents of every dependency it declares (code and data). Prefect tasks use it as
their cache key, so a Prefect run reuses a result only when `dvc repro` would also skip
the stage; training stages use it to name their resumable state, so a killed run resumes
only into the run it was.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from lightfer.params import Params
from stages.common import StageRun

_IGNORED_DIRS = {"__pycache__"}


def _lookup(raw: dict[str, Any], dotted: str) -> Any:
    node: Any = raw
    for part in dotted.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def _is_ignored(path: Path) -> bool:
    hidden_tmp = path.name.startswith(".") and ".tmp-" in path.name
    return hidden_tmp or path.suffix == ".pyc" or bool(_IGNORED_DIRS & set(path.parts))


def hash_path(path: Path) -> str:
    """SHA-256 of a file's bytes, or of a directory's relative names and file contents."""
    digest = hashlib.sha256()
    if path.is_file():
        digest.update(path.read_bytes())
    elif path.is_dir():
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            relative = file.relative_to(path)
            if _is_ignored(relative):
                continue
            digest.update(relative.as_posix().encode() + b"\0")
            digest.update(hashlib.sha256(file.read_bytes()).digest())
    else:
        return "missing"
    return digest.hexdigest()


def stage_fingerprint(run: StageRun, root: Path, params: Params) -> str:
    """The fingerprint of one stage run (see the module docstring)."""
    raw = params.model_dump(mode="json")
    digest = hashlib.sha256(run.name.encode())
    for key in run.params:
        digest.update(f"{key}={json.dumps(_lookup(raw, key), sort_keys=True)}".encode())
    for dep in run.deps:
        digest.update(f"{dep}:{hash_path(root / dep)}".encode())
    return digest.hexdigest()
