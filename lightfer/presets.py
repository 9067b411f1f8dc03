"""Per-dataset presets: the paper's settings, deep-merged into a params file.

A preset (`presets/<name>.yaml` beside `params.yaml`) holds only the keys it sets. Applying
it merges it into the params file mapping by mapping (a preset's mapping updates the file's,
anything else replaces the file's value), validates the result with the params schema and
only then replaces the file, atomically. PyYAML, which writes the file, does not keep
comments: the rewritten file holds every key and value in the original order, without the
comments.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightfer.errors import ParamsError
from lightfer.io import atomic_path
from lightfer.params import dotted_get, validate_params

PRESETS_DIR = "presets"


class _Unset:
    def __repr__(self) -> str:
        return "(not set)"


UNSET: Any = _Unset()
"""The `before` of a `Change` whose key the params file did not have."""


@dataclass(frozen=True)
class Change:
    """One key a preset sets to a new value: its dotted path, old and new values."""

    key: str
    before: Any
    after: Any

    def __str__(self) -> str:
        return f"{self.key}: {_show(self.before)} -> {_show(self.after)}"


@dataclass(frozen=True)
class PresetResult:
    """What applying a preset did (or, when not written, would do) to a params file."""

    changes: list[Change]
    unchanged: int  # keys the preset sets that already had its value
    written: bool
    had_comments: bool  # the file held comments, which a rewrite drops


class _Dumper(yaml.SafeDumper):
    """Block-style mappings; lists of scalars on one line, as params.yaml writes them."""

    def represent_list(self, data: list[Any]) -> yaml.Node:
        flat = all(not isinstance(item, dict | list) for item in data)
        return self.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


_Dumper.add_representer(list, _Dumper.represent_list)


def _show(value: Any) -> str:
    if value is UNSET:
        return repr(value)
    return (
        yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix("\n...")
    )


def presets_dir_of(params_file: str | os.PathLike[str]) -> Path:
    """Where presets live by default: `presets/` beside the params file (the project root)."""
    return Path(params_file).parent / PRESETS_DIR


def available_presets(directory: str | os.PathLike[str]) -> list[str]:
    """The names of the presets (`<name>.yaml`) in `directory`, sorted."""
    return sorted(p.stem for p in Path(directory).glob("*.yaml"))


def _read_mapping(path: Path, what: str) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ParamsError(f"{what} {path} is not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ParamsError(
            f"{what} {path} must hold a mapping of sections, got {type(raw).__name__}"
        )
    return raw


def load_preset(directory: str | os.PathLike[str], name: str) -> dict[str, Any]:
    """The mapping of preset `name`; an unknown name lists the available ones."""
    path = Path(directory) / f"{name}.yaml"
    if not path.is_file():
        names = available_presets(directory)
        where = f"{directory}" if Path(directory).is_dir() else f"{directory} (no such folder)"
        raise ParamsError(f"no preset {name!r} in {where}; available: {', '.join(names) or 'none'}")
    return _read_mapping(path, "preset")


def merge(base: Mapping[str, Any], update: Mapping[str, Any]) -> dict[str, Any]:
    """`base` updated by `update`, mapping by mapping; neither argument is modified."""
    merged = copy.deepcopy(dict(base))
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def _leaves(mapping: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Dotted key path -> value of every non-mapping value."""
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(_leaves(value, f"{path}."))
        else:
            out[path] = value
    return out


def apply_preset(
    params_file: str | os.PathLike[str],
    name: str,
    *,
    presets_dir: str | os.PathLike[str] | None = None,
    write: bool = True,
) -> PresetResult:
    """Merge preset `name` into `params_file` and, if `write`, replace the file atomically.

    Args:
        params_file: the params file to update (it is read whole, then rewritten).
        name: the preset, `<presets_dir>/<name>.yaml`.
        presets_dir: where presets live; default `presets_dir_of(params_file)`.
        write: False only reports what would change.

    Returns:
        The keys whose value changes, in the preset's order, and whether the file was
        written (not when nothing changes).

    Raises:
        ParamsError: the preset or the params file is missing or not YAML, or the merged
            params break the schema (nothing is written then).
    """
    path = Path(params_file)
    if not path.is_file():
        raise ParamsError(f"{path} does not exist; run from the project root or pass --file")
    directory = Path(presets_dir) if presets_dir is not None else presets_dir_of(path)
    preset = load_preset(directory, name)
    text = path.read_text()
    before = _read_mapping(path, "params file")
    after = merge(before, preset)
    validate_params(after, source=f"{path} with preset {name}", base_dir=path.parent)
    changes, unchanged = [], 0
    for key, value in _leaves(preset).items():
        old = dotted_get(before, key, UNSET)
        if old is not UNSET and old == value:
            unchanged += 1
        else:
            changes.append(Change(key, old, value))
    written = write and bool(changes)
    if written:
        with atomic_path(path) as tmp:
            tmp.write_text(yaml.dump(after, Dumper=_Dumper, sort_keys=False, width=100))
    return PresetResult(changes, unchanged, written, had_comments=_has_comments(text))


def _has_comments(text: str) -> bool:
    """Whether a YAML text holds a comment (a line starting with `#`, or ` #` after a value)."""
    return any(line.lstrip().startswith("#") or " #" in line for line in text.splitlines())
