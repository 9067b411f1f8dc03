"""Are the working tree's results the committed ones? Checked the DVC way, across machines.

Two comparisons with a git revision (`HEAD` by default), each a pure function over dicts:

- `compare_data_stages`: the data stages (`DATA_STAGES`: rendering, alignment and
  auxiliary labels involve no training) must give byte-identical outputs, so each of their
  outs' md5 in the working `dvc.lock` must equal the revision's;
- `compare_metrics`: the trained models' headline metrics (`results/summary.json`, see
  lightfer.summary) must lie within the tolerances recorded in the revision's summary: a
  run on another machine (another BLAS, another GPU) trains slightly different models.

`check_results` reads the two sides (the revision's through `git show`) and runs both.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lightfer import catalog
from lightfer.errors import LightferError

__all__ = [
    "DATA_STAGES",
    "CheckOutcome",
    "MetricCheck",
    "ResultsCheckError",
    "check_results",
    "compare_data_stages",
    "compare_metrics",
]

# The stages (names before `@`) whose outputs must be byte-identical on any machine.
DATA_STAGES = ("prepare", "aux-labels", "align")
LOCK_FILE = "dvc.lock"
# Summary values are rounded to 1e-5; a difference equal to the tolerance is within it.
_ROUNDING = 1e-9


class ResultsCheckError(LightferError):
    """A file the check needs is missing or unreadable, in the working tree or the revision."""


@dataclass(frozen=True)
class MetricCheck:
    """One headline metric: the committed value and tolerance, and the working tree's value
    (None when the working summary lacks it)."""

    name: str
    committed: float
    now: float | None
    tolerance: float

    @property
    def difference(self) -> float | None:
        return None if self.now is None else self.now - self.committed

    @property
    def moved(self) -> bool:
        return self.difference is None or abs(self.difference) > self.tolerance + _ROUNDING

    def failure(self) -> str:
        """The line naming the metric and by how much it moved beyond its tolerance."""
        if self.difference is None:
            return f"{self.name}: missing from the working summary (committed {self.committed:.5f})"
        return (
            f"{self.name}: moved {self.difference:+.5f} (committed {self.committed:.5f}, "
            f"now {self.now:.5f}), {abs(self.difference) - self.tolerance:.5f} beyond the "
            f"tolerance {self.tolerance:.5f}"
        )


@dataclass(frozen=True)
class CheckOutcome:
    """What `check_results` found: the data outputs compared, the metric checks, and one
    line per failure (empty when the results are the committed ones)."""

    data_outputs: int
    metrics: list[MetricCheck]
    failures: list[str]


def _data_outs(lock: Mapping[str, Any]) -> dict[str, dict[str, str | None]]:
    """{stage: {out path: md5}} for the data stages of a parsed dvc.lock."""
    return {
        stage: {out["path"]: out.get("md5") for out in entry.get("outs", [])}
        for stage, entry in (lock.get("stages") or {}).items()
        if stage.split("@")[0] in DATA_STAGES
    }


def compare_data_stages(
    committed: Mapping[str, Any], current: Mapping[str, Any]
) -> tuple[int, list[str]]:
    """Compare the data stages' outs of two parsed dvc.lock files.

    Every data-stage out of `committed` must be in `current` with the same md5; data
    stages only `current` has (a dataset added since) are not compared.

    Returns:
        The number of outputs compared, and one failure line per difference naming the stage
        and the output.
    """
    now = _data_outs(current)
    compared, failures = 0, []
    for stage, outs in _data_outs(committed).items():
        if stage not in now:
            failures.append(f"{stage}: not in the working dvc.lock (run `make repro`)")
            continue
        for path, md5 in outs.items():
            compared += 1
            if path not in now[stage]:
                failures.append(f"{stage}: output {path} is not in the working dvc.lock")
            elif now[stage][path] != md5:
                failures.append(
                    f"{stage}: output {path} is not byte-identical "
                    f"(md5 {md5} committed, {now[stage][path]} now)"
                )
    return compared, failures


def _leaves(summary: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Mapping]]:
    """(dotted name, {"value", "tolerance"}) for every metric of a summary."""
    for key, item in summary.items():
        name = f"{prefix}{key}"
        if isinstance(item, Mapping) and {"value", "tolerance"} <= item.keys():
            yield name, item
        elif isinstance(item, Mapping):
            yield from _leaves(item, f"{name}.")


def compare_metrics(committed: Mapping[str, Any], current: Mapping[str, Any]) -> list[MetricCheck]:
    """Each metric of the committed summary beside the working one, within the committed
    tolerance. Metrics only `current` has are not compared."""
    now = dict(_leaves(current))
    return [
        MetricCheck(
            name=name,
            committed=float(entry["value"]),
            now=float(now[name]["value"]) if name in now else None,
            tolerance=float(entry["tolerance"]),
        )
        for name, entry in _leaves(committed)
    ]


def _git_show(root: Path, rev: str, path: str, remedy: str) -> str:
    done = subprocess.run(
        ["git", "show", f"{rev}:./{path}"], cwd=root, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        reason = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "git failed"
        raise ResultsCheckError(f"{path} is not readable in {rev} ({reason}); {remedy}")
    return done.stdout


def _read_working(path: Path, remedy: str) -> str:
    if not path.is_file():
        raise ResultsCheckError(f"{path} does not exist in the working tree; {remedy}")
    return path.read_text()


def _parse(text: str, name: str, side: str) -> dict[str, Any]:
    """dvc.lock is YAML; the summary is JSON, read as JSON (PyYAML reads `1e-05` as a string)."""
    try:
        parsed = json.loads(text) if name.endswith(".json") else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        raise ResultsCheckError(f"{name} in {side} is not valid: {exc}") from None
    if not isinstance(parsed, dict):
        raise ResultsCheckError(f"{name} in {side} is not a mapping")
    return parsed


def check_results(root: Path, rev: str = "HEAD") -> CheckOutcome:
    """Compare the working tree at `root` with the git revision `rev` (see the module doc).

    Raises:
        ResultsCheckError: dvc.lock or results/summary.json is missing in either side.
    """
    run = "run `make repro` first"
    commit = f"commit the results of `make repro` to compare with {rev}"
    summary = catalog.summary_path(root).relative_to(root).as_posix()
    sides = {
        name: (
            _parse(_read_working(root / name, run), name, "the working tree"),
            _parse(_git_show(root, rev, name, commit), name, rev),
        )
        for name in (LOCK_FILE, summary)
    }
    (lock_now, lock_then), (summary_now, summary_then) = sides[LOCK_FILE], sides[summary]
    data_outputs, failures = compare_data_stages(lock_then, lock_now)
    metrics = compare_metrics(summary_then, summary_now)
    failures += [metric.failure() for metric in metrics if metric.moved]
    return CheckOutcome(data_outputs=data_outputs, metrics=metrics, failures=failures)
