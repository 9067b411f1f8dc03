"""The headline summary: tolerance arithmetic, shape and size (lightfer.summary)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from lightfer.evaluation import spread
from lightfer.summary import (
    KL_TOLERANCE_FLOOR,
    difference_tolerance,
    headline,
    metric_tolerance,
    sampling_error,
    write_summary,
)

N = 600


def _row(accuracy: list[float], kl: list[float] | None = None) -> dict[str, Any]:
    row: dict[str, Any] = {"accuracy": spread(accuracy), "mean_class_accuracy": spread(accuracy)}
    if kl is not None:
        row["kl_divergence"] = spread(kl)
    return row | {"runs": len(accuracy)}


def _inputs() -> tuple[dict[str, Any], dict[str, Any]]:
    table = {
        "ldg": _row([0.60], [0.70]),
        "ef-sll": _row([0.42, 0.50], [1.0, 1.1]),
        "ef-ldl": _row([0.53, 0.54], [0.82, 0.83]),
        "ef-ldl_au": _row([0.52, 0.53], [0.83, 0.84]),
    }
    study = [
        {"aux": "none (ldl)", "noise": None} | _row([0.53, 0.54]),
        {"aux": "geometry", "noise": None} | _row([0.52, 0.53]),
        {"aux": "oracle", "noise": 0.5} | _row([0.50, 0.60]),
    ]
    return {"synthetic": {"test_samples": N, "table": table}}, {"synthetic": {"rows": study}}


def test_sampling_error_is_the_binomial_standard_error() -> None:
    assert sampling_error(0.5, 100) == pytest.approx(0.05)
    with pytest.raises(ValueError, match="test images"):
        sampling_error(0.5, 0)


def test_accuracy_tolerance_is_the_larger_of_seed_range_and_two_standard_errors() -> None:
    two_se = 2 * math.sqrt(0.5 * 0.5 / N)  # 0.0408
    assert metric_tolerance("accuracy", spread([0.49, 0.5, 0.51]), N) == pytest.approx(two_se)
    assert metric_tolerance("accuracy", spread([0.4, 0.5, 0.6]), N) == pytest.approx(0.2)


def test_kl_tolerance_is_the_seed_range_with_a_floor() -> None:
    assert metric_tolerance("kl_divergence", spread([0.8]), N) == KL_TOLERANCE_FLOOR
    assert metric_tolerance("kl_divergence", spread([0.8, 0.9]), N) == pytest.approx(0.1)


def test_an_effect_tolerance_is_the_root_sum_square() -> None:
    assert difference_tolerance(0.03, 0.04) == pytest.approx(0.05)


def test_headline_shape_values_and_effects() -> None:
    summary = headline(*_inputs())
    synthetic = summary["synthetic"]
    assert synthetic["test_samples"] == N
    assert set(synthetic["models"]) == {"ldg", "ef-sll", "ef-ldl", "ef-ldl_au"}
    assert synthetic["models"]["ef-sll"]["accuracy"] == {"value": 0.46, "tolerance": 0.08}
    assert synthetic["models"]["ldg"]["kl_divergence"]["tolerance"] == KL_TOLERANCE_FLOOR
    effects = synthetic["accuracy_vs_ldl"]
    assert set(effects) == {"geometry", "oracle-noise0.5"}
    assert effects["geometry"]["value"] == pytest.approx(-0.01)
    ldl = metric_tolerance("accuracy", spread([0.53, 0.54]), N)
    assert effects["oracle-noise0.5"]["tolerance"] == pytest.approx(math.hypot(0.1, ldl), abs=1e-5)


def test_kl_is_left_out_where_the_dataset_has_no_true_distribution() -> None:
    evaluations = {"raf": {"test_samples": 3068, "table": {"ldg": _row([0.8])}}}
    assert set(headline(evaluations, {})["raf"]["models"]["ldg"]) == {
        "accuracy",
        "mean_class_accuracy",
    }


def test_a_study_without_its_plain_ldl_row_is_an_error() -> None:
    evaluations, studies = _inputs()
    studies["synthetic"]["rows"] = studies["synthetic"]["rows"][1:]
    with pytest.raises(ValueError, match="none \\(ldl\\)"):
        headline(evaluations, studies)


def test_write_summary_writes_a_small_json(tmp_path: Path) -> None:
    path = tmp_path / "results" / "summary.json"
    path.parent.mkdir()
    written = write_summary(path, *_inputs())
    assert json.loads(path.read_text()) == written
    numbers = path.read_text().count('"value"') + path.read_text().count('"tolerance"')
    assert numbers < 60
