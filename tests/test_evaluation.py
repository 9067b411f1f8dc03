"""Classification and LDL metrics against direct numpy computations; the confusion PNG."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from lightfer.evaluation import (
    classification_metrics,
    confusion_matrix,
    ldl_metrics,
    model_runs,
    seed_table,
    write_confusion_matrix_png,
)
from lightfer.labels import CLASSES
from lightfer.tables import table2

C = 7


def _distributions(kind: str) -> np.ndarray:
    if kind == "one_hot":
        return np.eye(C)[[0, 3, 6]]
    if kind == "uniform":
        return np.full((3, C), 1.0 / C)
    return np.array([[0.45, 0.45, 0.1, 0, 0, 0, 0], [0.2, 0, 0, 0.3, 0, 0.5, 0]])


def test_classification_metrics_match_numpy():
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3, 3, 3])
    preds = np.array([0, 1, 0, 1, 1, 0, 3, 2, 3, 3])
    scores = np.eye(C)[preds] * 0.9 + 0.01
    metrics = classification_metrics(scores, labels)
    counts = np.zeros((C, C), int)
    for t, p in zip(labels, preds, strict=True):
        counts[t, p] += 1
    assert np.array_equal(confusion_matrix(labels, preds, C), counts)
    assert metrics["confusion_matrix"] == counts.tolist()
    assert metrics["accuracy"] == pytest.approx(np.mean(labels == preds))
    recalls = {c: np.mean(preds[labels == c] == c) for c in (0, 1, 2, 3)}
    assert metrics["per_class_accuracy"]["neutral"] == pytest.approx(recalls[0])
    assert metrics["per_class_accuracy"]["sadness"] == pytest.approx(0.0)
    assert metrics["per_class_accuracy"]["anger"] is None  # absent class
    assert metrics["mean_class_accuracy"] == pytest.approx(np.mean(list(recalls.values())))
    rows = np.array(metrics["confusion_matrix_normalized"])
    assert np.allclose(rows[:4].sum(1), 1) and np.allclose(rows[4:], 0)
    assert metrics == classification_metrics(preds, labels)  # indices work too
    assert json.loads(json.dumps(metrics)) == metrics


@pytest.mark.parametrize("kind", ["one_hot", "uniform", "ambiguous"])
def test_ldl_metrics_of_a_perfect_prediction(kind):
    true = _distributions(kind)
    metrics = ldl_metrics(true, true)
    assert metrics["kl_divergence"] == 0.0
    assert metrics["chebyshev"] == 0.0
    assert metrics["cosine"] == pytest.approx(1.0)
    assert metrics["intersection"] == pytest.approx(1.0)
    assert metrics["true_majority_accuracy"] == 1.0


@pytest.mark.parametrize("kind", ["one_hot", "uniform", "ambiguous"])
def test_ldl_metrics_match_numpy(kind):
    true = _distributions(kind)
    rng = np.random.default_rng(0)
    logits = rng.normal(size=true.shape)
    pred = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    metrics = ldl_metrics(pred, true)
    kl = [
        sum(t * np.log(t / p) for t, p in zip(ts, ps, strict=True) if t > 0)
        for ts, ps in zip(true, pred, strict=True)
    ]
    assert metrics["kl_divergence"] == pytest.approx(np.mean(kl))
    assert metrics["kl_divergence"] > 0
    assert metrics["chebyshev"] == pytest.approx(np.mean(np.max(np.abs(pred - true), 1)))
    cos = np.sum(pred * true, 1) / (np.linalg.norm(pred, axis=1) * np.linalg.norm(true, axis=1))
    assert metrics["cosine"] == pytest.approx(np.mean(cos))
    assert metrics["intersection"] == pytest.approx(np.mean(np.minimum(pred, true).sum(1)))
    majority = np.mean(pred.argmax(1) == true.argmax(1))
    assert metrics["true_majority_accuracy"] == pytest.approx(majority)


def test_kl_stays_finite_when_a_prediction_is_zero_and_shapes_are_checked():
    true = np.array([[0.5, 0.5, 0, 0, 0, 0, 0]])
    pred = np.array([[1.0, 0, 0, 0, 0, 0, 0]])
    assert np.isfinite(ldl_metrics(pred, true)["kl_divergence"])
    with pytest.raises(ValueError, match=r"must both be \(N, C\)"):
        ldl_metrics(pred, true[:, :3])


def test_confusion_matrix_png(tmp_path):
    counts = np.diag([5, 4, 3, 2, 1, 1, 0]) + 1
    path = write_confusion_matrix_png(tmp_path / "cm.png", counts, CLASSES, title="test")
    with Image.open(path) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 300
    assert [p.name for p in tmp_path.iterdir()] == ["cm.png"]


def test_seed_table_spreads_each_metric_over_a_groups_runs():
    groups = model_runs(["sll"], [0, 1, 2])
    assert groups == {"ldg": ["ldg"], "ef-sll": ["ef-sll-seed0", "ef-sll-seed1", "ef-sll-seed2"]}
    per_run = {"ldg": {"accuracy": 0.6}} | {
        run: {"accuracy": acc, "kl_divergence": 0.5}
        for run, acc in zip(groups["ef-sll"], (0.4, 0.5, 0.45), strict=True)
    }
    table = seed_table(groups, per_run)
    assert table["ef-sll"] == {
        "accuracy": {"min": 0.4, "median": 0.45, "max": 0.5},
        "kl_divergence": {"min": 0.5, "median": 0.5, "max": 0.5},
        "runs": 3,
    }
    markdown = table2("synthetic", {"test_samples": 20, "table": table})
    assert "runs: LDG 1, EF SLL 3" in markdown
    assert "| LDG | 1 | 60.00 / 60.00 / 60.00 | – | – | +15.00 |" in markdown
    assert "| EF SLL | 3 | 40.00 / 45.00 / 50.00 | – | 0.500 / 0.500 / 0.500 | – |" in markdown
