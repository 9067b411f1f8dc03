"""The headline metrics in one small file, each with the tolerance it is reproduced within.

`results/summary.json` is the one file the report stage declares as DVC `metrics`, so that
`dvc exp show` and `dvc metrics diff` show the results at a glance. Per dataset it holds
`test_samples`, then per model group of `evaluate.json`'s table (`ldg`, `ef-sll`, `ef-ldl`,
`ef-ldl_au`) the median over seeds of `accuracy`, `mean_class_accuracy` and, where the
dataset has true distributions, `kl_divergence`; and, for a dataset in the AU-noise study,
`accuracy_vs_ldl`: each study row's median accuracy minus plain LDL's (fractions, as in
`evaluate.json`). Every number is `{"value": v, "tolerance": t}`:

- accuracies: `max(max - min over seeds, 2 * sqrt(p (1 - p) / n))`, the seed spread or
  twice the binomial standard error of a proportion `p` on the `n` test images, whichever
  is larger (for the mean class accuracy this standard error is a lower bound: each class
  has fewer than `n` images);
- KL divergence: the seed spread, at least `KL_TOLERANCE_FLOOR`;
- an effect (a difference of two medians): the root-sum-square of the two tolerances.

`lightfer results check` (lightfer.results_check) holds a new run to the committed file's
tolerances.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from lightfer.io import write_json

__all__ = [
    "KL_TOLERANCE_FLOOR",
    "MODEL_METRICS",
    "difference_tolerance",
    "headline",
    "metric_tolerance",
    "sampling_error",
    "write_summary",
]

# The metrics of each model group, in evaluate.json's units (fractions; KL in nats).
MODEL_METRICS = ("accuracy", "mean_class_accuracy", "kl_divergence")
KL_METRIC = "kl_divergence"
# The smallest KL tolerance: two seeds can agree closely by chance.
KL_TOLERANCE_FLOOR = 0.02
# lightfer.study labels the study's row without the AU term (the main DAG's ldl runs) so.
_PLAIN_LDL = "none (ldl)"
# Decimals kept: well below any tolerance, and short diffs.
_DIGITS = 5


def sampling_error(p: float, n: int) -> float:
    """The standard error of a proportion `p` measured on `n` test images."""
    if n <= 0:
        raise ValueError(f"the standard error needs test images; got n = {n}")
    return math.sqrt(max(p * (1.0 - p), 0.0) / n)


def metric_tolerance(metric: str, spread: Mapping[str, float], test_samples: int) -> float:
    """How far a metric may move between runs of the same code and params.

    Args:
        metric: an entry of `MODEL_METRICS`.
        spread: its `min`, `median` and `max` over seeds (lightfer.evaluation.spread).
        test_samples: the number of test images it was measured on.
    """
    seed_range = spread["max"] - spread["min"]
    if metric == KL_METRIC:
        return max(seed_range, KL_TOLERANCE_FLOOR)
    return max(seed_range, 2.0 * sampling_error(spread["median"], test_samples))


def difference_tolerance(first: float, second: float) -> float:
    """The tolerance of a difference of two numbers: the root-sum-square of theirs."""
    return math.hypot(first, second)


def _entry(value: float, tolerance: float) -> dict[str, float]:
    return {"value": round(value, _DIGITS), "tolerance": round(tolerance, _DIGITS)}


def _models(table: Mapping[str, Mapping[str, Any]], n: int) -> dict[str, dict[str, Any]]:
    return {
        group: {
            metric: _entry(row[metric]["median"], metric_tolerance(metric, row[metric], n))
            for metric in MODEL_METRICS
            if metric in row
        }
        for group, row in table.items()
    }


def _row_key(row: Mapping[str, Any]) -> str:
    """`geometry` (the configured AU backend), `oracle-noise0.5` (a study level)."""
    return row["aux"] if row["noise"] is None else f"{row['aux']}-noise{row['noise']:g}"


def _effects(rows: list[Mapping[str, Any]], n: int) -> dict[str, dict[str, float]]:
    plain = [row for row in rows if row["aux"] == _PLAIN_LDL]
    if len(plain) != 1:
        raise ValueError(f"study.json must hold one {_PLAIN_LDL!r} row; found {len(plain)}")
    base = plain[0]["accuracy"]
    base_tolerance = metric_tolerance("accuracy", base, n)
    return {
        _row_key(row): _entry(
            row["accuracy"]["median"] - base["median"],
            difference_tolerance(metric_tolerance("accuracy", row["accuracy"], n), base_tolerance),
        )
        for row in rows
        if row is not plain[0]
    }


def headline(
    evaluations: Mapping[str, Mapping[str, Any]],
    studies: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, Any]]:
    """The summary: per dataset, its models' median metrics and study effects, with tolerances.

    Args:
        evaluations: each dataset's `evaluate.json` (`table`, `test_samples`).
        studies: each study dataset's `study.json` (`rows`); others may be absent.
    """
    summary: dict[str, dict[str, Any]] = {}
    for dataset, evaluation in evaluations.items():
        n = int(evaluation["test_samples"])
        entry: dict[str, Any] = {"test_samples": n, "models": _models(evaluation["table"], n)}
        if dataset in studies:
            entry["accuracy_vs_ldl"] = _effects(studies[dataset]["rows"], n)
        summary[dataset] = entry
    return summary


def write_summary(
    path: Path,
    evaluations: Mapping[str, Mapping[str, Any]],
    studies: Mapping[str, Mapping[str, Any]],
) -> dict[str, dict[str, Any]]:
    """Write `headline(evaluations, studies)` to `path` atomically, and return it."""
    summary = headline(evaluations, studies)
    write_json(path, summary)
    return summary
