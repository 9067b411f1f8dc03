"""How close each training target is to the truth, measured offline (no training).

The `ldl_au` loss (`lightfer.losses.AUNeighbourKL` with `au_loss.source: ldg`) is, per
training image `i` with LDG soft label `d_i` and prediction `p_i = f(x_i)`,

    L_i = CE(p_i, d_i) + lambda * (1/K) * sum_j a_ij * KL(q_j || p_i),

averaged over the batch, where `j` runs over the K neighbours of `i` in the graph, `a_ij`
are the edge weights and `q_j` the neighbours' soft labels, held fixed. Because
`KL(q || p) = CE(p, q) - H(q)` and `H(q_j)` does not depend on `p_i`, the gradient with
respect to the logits `z_i` is

    dL_i/dz_i = (p_i - d_i) + lambda * (1/K) * sum_j a_ij (p_i - q_j)
              = (1 + lambda s_i) * (p_i - t_i),

    s_i   = (1/K) * sum_j a_ij                      (the K-scaled weight sum),
    qbar_i = sum_j a_ij q_j / sum_j a_ij            (the neighbours' weighted mean),
    t_i   = (d_i + lambda s_i qbar_i) / (1 + lambda s_i)   (the mixed target),

which is the gradient of `(1 + lambda s_i) * CE(p_i, t_i)`. So `ldl_au` with fixed
neighbour targets trains toward `t_i`, with image `i` weighted by `1 + lambda s_i`. Two
details of the code set the numbers. The weight sum is divided by K, not by
`sum_j a_ij`, so `s_i <= 1` and the neighbours' share of the target is
`lambda s_i / (1 + lambda s_i)`, not `lambda / (1 + lambda)`: with the automatic kernel
width the median edge weighs exp(-1), and at a mean weight of 0.37 (the synthetic graph's,
knn.json's `mean_weight`) lambda = 1 gives the neighbours about 27% of the target. Rows
without neighbours (outside the graph; a missing neighbour, -1, has weight 0 in the code)
have `s_i = 0` and keep `t_i = d_i`. The loss value differs from
`(1 + lambda s_i) CE(p_i, t_i)` by the constant `lambda (1/K) sum_j a_ij H(q_j)`.
`tests/au/test_target_quality.py` checks the gradient identity against `lightfer.losses`.

The identity holds for every source (`q_j` is detached in all three), but only with the
`ldg` source are the `q_j` the fixed soft labels scored here; with `bank` (the model's own
latest predictions, the soft labels only until a neighbour's first visit) and `batch` (the
current model on the neighbours' images) the targets move with training. Replacing `d_i`
by the one-hot label gives the target of hard labels plus the AU term.

`target_quality` scores these targets against the synthetic dataset's true label
distributions (`Splits.true_dist`): mean KL(true || target) in nats, a target probability
entering as `log(target + 1e-6)` (`KL_FLOOR`, so one-hot targets give a finite number,
at most `-log(1e-6)` = 13.8 per unit of true mass on a class the target rules out), and
the accuracy of the target's argmax against the true distribution's (ties: the first
class, as `lightfer.evaluation.ldl_metrics`). If a mixed target is not closer to the truth
than the soft labels, the AU term cannot help by the mechanism the method claims.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from lightfer.au.analysis import kl_divergence
from lightfer.knn import NeighbourGraph

__all__ = ["KL_FLOOR", "mixed_target", "neighbour_mean", "target_quality"]

# Added to a target's probabilities inside the log of KL(true || target).
KL_FLOOR = 1e-6


def _neighbour_table(graph: NeighbourGraph, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Neighbour rows (-1: none) and weights (0: none) of dataset `rows`.

    Rows outside the graph get no neighbours, as the training code's dense table
    (`lightfer.training.neighbours.dense_neighbour_table`) gives them.
    """
    size = int(max(graph.rows.max(initial=-1), rows.max(initial=-1))) + 1
    position = np.full(size, -1, dtype=np.int64)
    position[graph.rows] = np.arange(len(graph))
    at = position[rows]
    inside = at >= 0
    indices = np.full((len(rows), graph.k), -1, dtype=np.int64)
    weights = np.zeros((len(rows), graph.k), dtype=np.float64)
    indices[inside] = graph.indices[at[inside]]
    weights[inside] = graph.weights[at[inside]]
    return indices, np.where(indices >= 0, weights, 0.0)


def neighbour_mean(
    graph: NeighbourGraph, dist: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The neighbours' weighted mean distribution `qbar` and scaled weight sum `s` of `rows`.

    Args:
        graph: the AU neighbour graph (its `indices` are dataset rows).
        dist: `(n_rows, C)` the distribution of every dataset row (e.g. the soft labels);
            a NaN row, if a neighbour has one, counts as uniform, as `AUNeighbourKL` does.
        rows: `(B,)` dataset rows.

    Returns:
        `(qbar, s)`: `(B, C)` `sum_j a_ij q_j / sum_j a_ij` (NaN where the weights sum to 0:
        no neighbours) and `(B,)` `s_i = (1/K) sum_j a_ij` (0 there).
    """
    rows = np.asarray(rows, dtype=np.int64)
    dist = np.asarray(dist, dtype=np.float64)
    indices, weights = _neighbour_table(graph, rows)
    q = dist[indices.clip(min=0)]
    q = np.where(np.isnan(q).any(-1, keepdims=True), 1.0 / dist.shape[1], q)
    total = weights.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        qbar = np.einsum("bk,bkc->bc", weights, q) / total[:, None]
    qbar[total <= 0] = np.nan
    return qbar, total / graph.k


def mixed_target(d: np.ndarray, q_bar: np.ndarray, s: np.ndarray, lam: float) -> np.ndarray:
    """`t = (d + lam s qbar) / (1 + lam s)`, the target `ldl_au` trains toward; `d` where s = 0.

    Args:
        d: `(B, C)` the image's own target (soft labels, or one-hot hard labels).
        q_bar: `(B, C)` the neighbours' mean (`neighbour_mean`; NaN rows allowed where s = 0).
        s: `(B,)` the K-scaled weight sums.
        lam: the AU term's weight lambda, >= 0.
    """
    if lam < 0:
        raise ValueError(f"lambda must be >= 0, got {lam}")
    pull = (lam * np.asarray(s, dtype=np.float64))[:, None]
    neighbours = np.where(pull > 0, np.nan_to_num(q_bar), 0.0)
    return (np.asarray(d, dtype=np.float64) + pull * neighbours) / (1.0 + pull)


def _score(true: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Mean KL(true || target) and argmax agreement over rows."""
    return {
        "kl": float(kl_divergence(true, target, floor=KL_FLOOR).mean()),
        "accuracy": float(np.mean(target.argmax(1) == true.argmax(1))),
        "n": len(true),
    }


def _full_length(array: np.ndarray | None, name: str, shape: tuple[int, int]) -> np.ndarray:
    values = np.asarray(array, dtype=np.float64)
    if values.shape != shape:
        raise ValueError(f"{name} must have the shape of true_dist {shape}, got {values.shape}")
    return values


def target_quality(
    true_dist: np.ndarray,
    soft: np.ndarray,
    graph: NeighbourGraph,
    *,
    rows: np.ndarray,
    lambdas: Sequence[float],
    hard: np.ndarray | None = None,
) -> dict[str, Any]:
    """How close each candidate training target of `rows` is to the true distributions.

    Args:
        true_dist: `(n_rows, C)` true distribution of every dataset row (`Splits.true_dist`).
        soft: `(n_rows, C)` LDG soft labels of every dataset row (the neighbours' too).
        graph: the AU neighbour graph.
        rows: the training rows to score (dataset rows).
        lambdas: the AU term's weights to score mixed targets at.
        hard: `(n_rows, C)` one-hot hard labels, to also score hard labels and hard labels
            mixed with the neighbours (the hard-label plus AU-term target).

    Returns:
        JSON-ready: `rows`, `with_neighbours` (rows with a positive weight sum), `mean_s`,
        `kl_floor`, and per target a `{"kl", "accuracy", "n"}` score: `soft`,
        `neighbour_mean` (over the rows with neighbours only), `mixed` (a list, one per
        lambda, each with its `lambda`), and with `hard`, `hard` and `hard_mixed`.

    Raises:
        ValueError: shapes differ, `rows` is empty or out of range, or the scored rows'
            true distributions or soft labels hold NaN.
    """
    true_dist = np.asarray(true_dist, dtype=np.float64)
    if true_dist.ndim != 2:
        raise ValueError(f"true_dist must be (n_rows, C), got shape {true_dist.shape}")
    soft = _full_length(soft, "soft", true_dist.shape)
    rows = np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1 or rows.size == 0:
        raise ValueError("rows must be a non-empty 1-D array of dataset rows")
    if rows.min() < 0 or rows.max() >= len(true_dist):
        raise ValueError(f"rows must be dataset rows in [0, {len(true_dist)})")
    true, own = true_dist[rows], soft[rows]
    if np.isnan(true).any() or np.isnan(own).any():
        raise ValueError("the scored rows' true distributions and soft labels must not be NaN")
    q_bar, s = neighbour_mean(graph, soft, rows)
    linked = s > 0
    result: dict[str, Any] = {
        "rows": int(rows.size),
        "with_neighbours": int(linked.sum()),
        "mean_s": float(s.mean()),
        "kl_floor": KL_FLOOR,
        "soft": _score(true, own),
        "neighbour_mean": _score(true[linked], q_bar[linked]) if linked.any() else None,
        "mixed": [
            {"lambda": float(lam), **_score(true, mixed_target(own, q_bar, s, lam))}
            for lam in lambdas
        ],
    }
    if hard is not None:
        one_hot = _full_length(hard, "hard", true_dist.shape)[rows]
        result["hard"] = _score(true, one_hot)
        result["hard_mixed"] = [
            {"lambda": float(lam), **_score(true, mixed_target(one_hot, q_bar, s, lam))}
            for lam in lambdas
        ]
    return result
