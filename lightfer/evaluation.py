"""Evaluation metrics: classification accuracy and confusion matrices, and LDL metrics.

Every metric function returns a plain dict of JSON-able values (floats, ints, lists, None)
with stable snake_case keys, ready for `lightfer.io.write_json` and `dvc metrics`.

The LDL metrics compare predicted distributions with the true ones where a dataset has
them (FER+ vote distributions): KL(true || pred), Chebyshev distance, cosine similarity and
intersection, as in Geng's LDL survey, each averaged over samples, plus the accuracy
against the true majority class.

`evaluate_checkpoint` scores a trained model on a dataset's test split, and `seed_table`
aggregates runs over seeds into the paper's Table 2 shape (min / median / max), which
`lightfer.tables.table2` renders.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from lightfer import catalog
from lightfer.io import atomic_path
from lightfer.labels import CLASSES
from lightfer.splits import Splits
from lightfer.training.data import make_loader
from lightfer.training.loop import evaluate
from lightfer.training.run import dataset_of, device, load_trained

__all__ = [
    "TABLE2_METRICS",
    "classification_metrics",
    "confusion_matrix",
    "evaluate_checkpoint",
    "ldl_metrics",
    "model_runs",
    "seed_table",
    "spread",
    "write_confusion_matrix_png",
]

logger = logging.getLogger(__name__)

# Probabilities are clipped to this before a logarithm, so a zero prediction gives a large,
# finite KL instead of inf.
_EPS = 1e-12


def _predictions(scores: np.ndarray) -> np.ndarray:
    scores = np.asarray(scores)
    return scores.argmax(1) if scores.ndim == 2 else scores.astype(np.int64)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts `(C, C)`: row = true class, column = predicted class."""
    labels, predictions = np.asarray(labels, np.int64), np.asarray(predictions, np.int64)
    if labels.shape != predictions.shape:
        raise ValueError(f"{len(labels)} labels but {len(predictions)} predictions")
    flat = np.bincount(labels * num_classes + predictions, minlength=num_classes**2)
    return flat.reshape(num_classes, num_classes)


def classification_metrics(
    scores: np.ndarray, labels: np.ndarray, classes: Sequence[str] = CLASSES
) -> dict[str, object]:
    """Accuracy, per-class and mean class accuracy, and the confusion matrix.

    Args:
        scores: `(N, C)` probabilities or logits (the argmax is the prediction), or `(N,)`
            predicted class indices.
        labels: `(N,)` true class indices.
        classes: class names in index order.

    Returns:
        `accuracy`, `mean_class_accuracy` (over the classes that occur in `labels`),
        `per_class_accuracy` ({class: accuracy or None when the class does not occur}),
        `confusion_matrix` (counts, rows true, columns predicted), `confusion_matrix_normalized`
        (rows divided by their sums; rows of absent classes are zeros), `classes` and
        `num_samples`.
    """
    predictions = _predictions(scores)
    counts = confusion_matrix(labels, predictions, len(classes))
    support = counts.sum(1)
    present = support > 0
    recall = np.divide(np.diag(counts), support, out=np.zeros(len(classes)), where=present)
    normalized = np.divide(
        counts, support[:, None], out=np.zeros(counts.shape), where=present[:, None]
    )
    return {
        "accuracy": float(np.trace(counts) / max(counts.sum(), 1)),
        "mean_class_accuracy": float(recall[present].mean()) if present.any() else 0.0,
        "per_class_accuracy": {
            name: float(recall[i]) if present[i] else None for i, name in enumerate(classes)
        },
        "confusion_matrix": counts.tolist(),
        "confusion_matrix_normalized": normalized.tolist(),
        "classes": list(classes),
        "num_samples": int(counts.sum()),
    }


def ldl_metrics(predicted: np.ndarray, true: np.ndarray) -> dict[str, float]:
    """Distances between predicted and true label distributions, averaged over samples.

    Args:
        predicted: `(N, C)` predicted distributions (softmax outputs).
        true: `(N, C)` true distributions (e.g. normalised crowd votes).

    Returns:
        `kl_divergence` (KL(true || predicted), >= 0 and 0 when they are equal; a predicted
        probability is clipped to 1e-12 where the true one is positive), `chebyshev`
        (max_j |true_j - pred_j|), `cosine` (similarity), `intersection` (sum_j min), and
        `true_majority_accuracy` (argmax of the prediction equals argmax of the true
        distribution; a tie in the true distribution counts its first class).

    Raises:
        ValueError: the arrays are not both `(N, C)` with N > 0.
    """
    p, q = np.asarray(predicted, np.float64), np.asarray(true, np.float64)
    if p.shape != q.shape or p.ndim != 2 or len(p) == 0:
        raise ValueError(f"predicted {p.shape} and true {q.shape} must both be (N, C), N > 0")
    ratio = np.log(np.where(q > 0, q, 1.0) / np.maximum(p, _EPS))
    kl = np.where(q > 0, q * ratio, 0.0).sum(1)
    norms = np.linalg.norm(p, axis=1) * np.linalg.norm(q, axis=1)
    cosine = (p * q).sum(1) / np.maximum(norms, _EPS)
    return {
        "kl_divergence": float(kl.mean()),
        "chebyshev": float(np.abs(p - q).max(1).mean()),
        "cosine": float(cosine.mean()),
        "intersection": float(np.minimum(p, q).sum(1).mean()),
        "true_majority_accuracy": float(np.mean(p.argmax(1) == q.argmax(1))),
    }


def write_confusion_matrix_png(
    path: str | Path,
    counts: np.ndarray | Sequence[Sequence[int]],
    classes: Sequence[str] = CLASSES,
    *,
    title: str | None = None,
) -> Path:
    """Draw a row-normalised confusion matrix with class names on the axes, as a PNG.

    Each cell shows the share of the true class (row) predicted as the column's class, as
    in the paper's Fig. 8. The file is written atomically with matplotlib's Agg renderer
    (no display and no global backend change).

    Args:
        path: the PNG file.
        counts: `(C, C)` counts, rows true, columns predicted.
        classes: class names in index order.
        title: figure title.

    Returns:
        The path written.
    """
    counts = np.asarray(counts, dtype=np.float64)
    support = counts.sum(1, keepdims=True)
    shares = np.divide(counts, support, out=np.zeros_like(counts), where=support > 0)
    figure = Figure(figsize=(1.0 + 0.9 * len(classes), 0.9 * len(classes)), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    image = axes.imshow(shares, cmap="Blues", vmin=0.0, vmax=1.0)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
    ticks = range(len(classes))
    axes.set_xticks(ticks, [c.capitalize() for c in classes], rotation=45, ha="right")
    axes.set_yticks(ticks, [c.capitalize() for c in classes])
    axes.set_xlabel("Predicted")
    axes.set_ylabel("True")
    for (i, j), share in np.ndenumerate(shares):
        colour = "white" if share > 0.5 else "black"
        axes.text(j, i, f"{share:.2f}", ha="center", va="center", color=colour, fontsize=8)
    if title:
        axes.set_title(title)
    figure.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


# The metrics aggregated over seeds in Table 2.
TABLE2_METRICS = ("accuracy", "mean_class_accuracy", "kl_divergence", "true_majority_accuracy")


def evaluate_checkpoint(model_path: Path, splits: Splits, *, image_size: int) -> dict[str, Any]:
    """A trained model's classification (and, with true distributions, LDL) test metrics.

    Args:
        model_path: a checkpoint written by a training stage.
        splits: the dataset's splits; its test rows are scored.
        image_size: the input size when the checkpoint records none.
    """
    model, checkpoint = load_trained(model_path)
    on_gpu = device().type == "cuda"  # uint8 batches, normalised on the GPU: the same values
    rows = dataset_of(splits, splits.test, checkpoint.image_size or image_size, on_device=on_gpu)
    loader = make_loader(rows, batch_size=256, train=False, pin_memory=on_gpu)
    result = evaluate(model, loader, device())
    metrics = classification_metrics(result["probs"], result["labels"], CLASSES)
    if splits.true_dist is not None:
        metrics.update(ldl_metrics(result["probs"], splits.true_dist[result["rows"]]))
    return metrics


def model_runs(regimes: Sequence[str], seeds: Sequence[int]) -> dict[str, list[str]]:
    """Model runs grouped as the paper's Table 2 rows: the LDG, then EF per regime."""
    groups = {catalog.LDG_RUN: [catalog.LDG_RUN]}
    for regime in regimes:
        groups[f"ef-{regime}"] = [catalog.ef_run_name(regime, seed) for seed in seeds]
    return groups


def spread(values: Sequence[float]) -> dict[str, float]:
    """Min, median and max of one metric over runs (the paper's Table 2 cells)."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def seed_table(
    groups: Mapping[str, Sequence[str]], per_run: Mapping[str, Mapping[str, Any]]
) -> dict[str, dict[str, Any]]:
    """Per group, the `spread` of each `TABLE2_METRICS` entry its runs have, and `runs`."""
    table = {}
    for group, runs in groups.items():
        present = [key for key in TABLE2_METRICS if key in per_run[runs[0]]]
        row: dict[str, Any] = {key: spread([per_run[r][key] for r in runs]) for key in present}
        table[group] = row | {"runs": len(runs)}
    return table
