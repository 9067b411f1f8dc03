"""`lightfer results check`: data outputs byte-identical, metrics within the committed
tolerances (lightfer.results_check, lightfer.results_cli)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from lightfer.results_check import MetricCheck, compare_data_stages, compare_metrics
from lightfer.results_cli import results_app


def _lock(faces_md5: str = "346c.dir") -> dict[str, Any]:
    def outs(*pairs: tuple[str, str]) -> dict[str, Any]:
        return {"outs": [{"path": p, "hash": "md5", "md5": m} for p, m in pairs]}

    return {
        "schema": "2.0",
        "stages": {
            "prepare@synthetic": outs(("data/synthetic/prepared", "61b8.dir")),
            "align@synthetic": outs(("data/synthetic/faces", faces_md5)),
            "aux-labels@synthetic": outs(("data/synthetic/aux.parquet", "f3ed")),
            "train-ldg@synthetic": outs(("models/synthetic/ldg.pt", "aaaa")),
        },
    }


def _summary(accuracy: float = 0.53667) -> dict[str, Any]:
    return {
        "synthetic": {
            "test_samples": 600,
            "models": {
                "ef-ldl": {
                    "accuracy": {"value": accuracy, "tolerance": 0.04071},
                    "kl_divergence": {"value": 0.82905, "tolerance": 0.02726},
                }
            },
            "accuracy_vs_ldl": {"geometry": {"value": -0.01167, "tolerance": 0.05762}},
        }
    }


def test_identical_data_stages_pass_and_training_stages_are_not_compared() -> None:
    current = _lock()
    current["stages"]["train-ldg@synthetic"]["outs"][0]["md5"] = "bbbb"
    assert compare_data_stages(_lock(), current) == (3, [])


def test_a_data_output_that_is_not_byte_identical_is_named() -> None:
    _, failures = compare_data_stages(_lock(), _lock(faces_md5="9999.dir"))
    assert failures == [
        "align@synthetic: output data/synthetic/faces is not byte-identical "
        "(md5 346c.dir committed, 9999.dir now)"
    ]


def test_a_data_stage_missing_from_the_working_lock_fails() -> None:
    current = _lock()
    del current["stages"]["prepare@synthetic"]
    _, failures = compare_data_stages(_lock(), current)
    assert failures == ["prepare@synthetic: not in the working dvc.lock (run `make repro`)"]


def test_a_metric_within_its_tolerance_passes() -> None:
    checks = compare_metrics(_summary(), _summary(accuracy=0.53667 + 0.04))
    assert [c.name for c in checks] == [
        "synthetic.models.ef-ldl.accuracy",
        "synthetic.models.ef-ldl.kl_divergence",
        "synthetic.accuracy_vs_ldl.geometry",
    ]
    assert not any(c.moved for c in checks)
    assert checks[0].difference == pytest.approx(0.04)


def test_a_difference_equal_to_the_tolerance_is_within_it() -> None:
    assert not MetricCheck("m", committed=0.5, now=0.54071, tolerance=0.04071).moved


def test_a_metric_beyond_its_tolerance_fails_naming_it_and_by_how_much() -> None:
    moved = [c for c in compare_metrics(_summary(), _summary(accuracy=0.48667)) if c.moved]
    assert [c.failure() for c in moved] == [
        "synthetic.models.ef-ldl.accuracy: moved -0.05000 (committed 0.53667, now 0.48667), "
        "0.00929 beyond the tolerance 0.04071"
    ]


def test_a_metric_missing_from_the_working_summary_fails() -> None:
    current = _summary()
    del current["synthetic"]["accuracy_vs_ldl"]
    (missing,) = [c for c in compare_metrics(_summary(), current) if c.moved]
    assert missing.now is None
    assert "synthetic.accuracy_vs_ldl.geometry: missing" in missing.failure()


def _git(root: Path, *args: str) -> None:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.com"]
    subprocess.run(["git", *identity, *args], cwd=root, check=True, capture_output=True)


def _write(root: Path, lock: dict[str, Any], summary: dict[str, Any] | None) -> None:
    (root / "dvc.lock").write_text(yaml.safe_dump(lock))
    if summary is not None:
        (root / "results").mkdir(exist_ok=True)
        (root / "results" / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A git repository whose HEAD holds a dvc.lock and a results/summary.json."""
    _git(tmp_path, "init", "-q")
    _write(tmp_path, _lock(), _summary())
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "results")
    return tmp_path


def _check(root: Path, *args: str) -> Any:
    return CliRunner().invoke(results_app, ["check", "--root", str(root), *args])


def test_cli_passes_on_the_committed_results(project: Path) -> None:
    result = _check(project)
    assert result.exit_code == 0, result.output
    assert "synthetic.models.ef-ldl.accuracy" in result.output
    assert "OK: the results are HEAD's" in result.output


def test_cli_fails_on_a_moved_metric_and_a_changed_data_output(project: Path) -> None:
    _write(project, _lock(faces_md5="9999.dir"), _summary(accuracy=0.6))
    result = _check(project, "--against", "HEAD")
    assert result.exit_code == 1
    failures = [line for line in result.output.splitlines() if line.startswith("FAILED")]
    assert len(failures) == 2
    assert "align@synthetic: output data/synthetic/faces" in failures[0]
    assert "synthetic.models.ef-ldl.accuracy: moved +0.06333" in failures[1]
    assert "MOVED" in result.output


def test_cli_names_a_summary_missing_from_the_revision(tmp_path: Path) -> None:
    _git(tmp_path, "init", "-q")
    _write(tmp_path, _lock(), None)
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "lock only")
    _write(tmp_path, _lock(), _summary())
    result = _check(tmp_path)
    assert result.exit_code == 1
    (line,) = result.output.splitlines()
    assert "results/summary.json is not readable in HEAD" in line


def test_cli_names_a_summary_missing_from_the_working_tree(project: Path) -> None:
    (project / "results" / "summary.json").unlink()
    result = _check(project)
    assert result.exit_code == 1
    assert "summary.json does not exist in the working tree; run `make repro`" in result.output
