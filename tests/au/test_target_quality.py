"""Mixed AU-neighbour targets: the formula, its equivalence to the ldl_au loss, and quality."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightfer.au.analysis import kl_divergence
from lightfer.au.target_quality import KL_FLOOR, mixed_target, neighbour_mean, target_quality
from lightfer.knn import NeighbourGraph
from lightfer.losses import AUNeighbourKL, ldl_au_regime, soft_cross_entropy
from lightfer.training.data import Batch
from lightfer.training.neighbours import dense_neighbour_table

C = 3
# Dataset rows 0-4 are in the graph (K = 2); row 5 is a training row without an AU vector.
INDICES = np.array([[1, 2], [0, 3], [3, 4], [2, 1], [3, 0]])
WEIGHTS = np.array([[0.9, 0.2], [0.5, 0.5], [1.0, 0.1], [0.3, 0.7], [0.6, 0.05]])
SOFT = np.array(
    [
        [0.7, 0.2, 0.1],
        [0.1, 0.8, 0.1],
        [0.3, 0.3, 0.4],
        [0.05, 0.15, 0.8],
        [0.5, 0.45, 0.05],
        [0.2, 0.2, 0.6],
    ]
)


def _graph(rows: np.ndarray, indices: np.ndarray, weights: np.ndarray) -> NeighbourGraph:
    return NeighbourGraph(
        rows=rows,
        indices=indices,
        distances=-np.log(np.asarray(weights)),
        weights=weights,
        sigma=1.0,
        kernel="exp",
        k=indices.shape[1],
    )


SMALL = _graph(np.arange(5), INDICES, WEIGHTS)


def test_the_mixed_target_is_the_formula():
    rows = np.arange(6)
    q_bar, s = neighbour_mean(SMALL, SOFT, rows)
    lam = 1.5
    target = mixed_target(SOFT[rows], q_bar, s, lam)
    for i in range(5):
        a, j = WEIGHTS[i], INDICES[i]
        mean = (a[0] * SOFT[j[0]] + a[1] * SOFT[j[1]]) / a.sum()
        assert s[i] == pytest.approx(a.sum() / 2)
        assert q_bar[i] == pytest.approx(mean)
        expected = (SOFT[i] + lam * a.sum() / 2 * mean) / (1 + lam * a.sum() / 2)
        assert target[i] == pytest.approx(expected)
    # Row 5 has no neighbours: no mean, no pull, its own soft label.
    assert s[5] == 0 and np.isnan(q_bar[5]).all()
    assert target[5] == pytest.approx(SOFT[5])
    assert target.sum(1) == pytest.approx(np.ones(6))


@pytest.mark.parametrize("source", ["ldg", "bank"])
@pytest.mark.parametrize("lam", [0.5, 2.0])
def test_ldl_au_has_the_gradient_of_the_weighted_cross_entropy_to_the_mixed_target(source, lam):
    # The loss as training builds it (lightfer.training.run._au_regime). The bank starts
    # from the soft labels, so its first batch is the ldg source's.
    neighbours, weights = dense_neighbour_table(len(SOFT), SMALL.rows, SMALL.indices, SMALL.weights)
    soft = torch.from_numpy(SOFT).float()
    regime = ldl_au_regime(lam, AUNeighbourKL(neighbours, weights, source=source, init=soft))
    rows = np.array([4, 0, 5, 2, 1, 3])
    batch = Batch(
        images=torch.zeros(len(rows), 3, 1, 1),
        labels=torch.from_numpy(SOFT[rows].argmax(1)),
        rows=torch.from_numpy(rows),
        soft=soft[rows],
    )
    start = torch.randn(len(rows), C, generator=torch.Generator().manual_seed(0)) * 2
    logits = start.clone().requires_grad_(True)
    loss = regime(logits, batch)
    loss.backward()

    q_bar, s = neighbour_mean(SMALL, SOFT, rows)
    target = torch.from_numpy(mixed_target(SOFT[rows], q_bar, s, lam)).float()
    scale = torch.from_numpy(1 + lam * s).float()
    same = start.clone().requires_grad_(True)
    equivalent = (scale * soft_cross_entropy(same, target, reduction="none")).mean()
    equivalent.backward()

    # float32 rounding only (about 2e-8 here; the gradients are about 0.15).
    assert (logits.grad - same.grad).abs().max() < 1e-7
    # The values differ by the neighbours' entropy, a constant.
    entropy = -(SOFT * np.log(SOFT)).sum(1)
    index, weight = dense_neighbour_table(len(SOFT), SMALL.rows, INDICES, WEIGHTS)
    constant = lam * np.mean(
        (weight.numpy()[rows] * entropy[index.numpy()[rows].clip(0)]).sum(1) / 2
    )
    assert float((loss - equivalent).detach()) == pytest.approx(-constant, abs=1e-5)


def test_lambda_zero_scores_the_soft_labels():
    truth = np.array([[0.6, 0.3, 0.1]] * 6)
    quality = target_quality(truth, SOFT, SMALL, rows=np.arange(6), lambdas=[0.0, 1.0])
    assert quality["mixed"][0] == {"lambda": 0.0, **quality["soft"]}
    expected = kl_divergence(truth, SOFT, floor=KL_FLOOR).mean()
    assert quality["soft"]["kl"] == pytest.approx(expected)
    assert quality["soft"]["accuracy"] == pytest.approx(np.mean(SOFT.argmax(1) == 0))
    assert (quality["rows"], quality["with_neighbours"]) == (6, 5)
    assert quality["neighbour_mean"]["n"] == 5
    assert quality["mean_s"] == pytest.approx(WEIGHTS.sum(1).sum() / 2 / 6)
    assert quality["kl_floor"] == KL_FLOOR and "hard" not in quality


def _clustered(rng: np.random.Generator, groups: int = 12, per: int = 6):
    """Groups of faces sharing a true distribution: half with clean soft labels (the truth),
    half with noisy ones; returns the truth, soft labels, one-hot labels and both halves."""
    truth_of = rng.dirichlet(np.full(5, 0.6), groups)
    group = np.repeat(np.arange(groups), per)
    truth = truth_of[group]
    clean = np.arange(len(group)) % per < per // 2
    noise = rng.dirichlet(np.full(5, 0.6), len(group))
    soft = np.where(clean[:, None], truth, 0.4 * truth + 0.6 * noise)
    labels = np.array([rng.choice(5, p=p) for p in truth])
    return truth, soft, np.eye(5)[labels], group, np.flatnonzero(clean), np.flatnonzero(~clean)


def _graph_over(rows: np.ndarray, neighbours: np.ndarray, rng: np.random.Generator):
    return _graph(rows, neighbours, rng.uniform(0.3, 1.0, neighbours.shape))


LAMBDAS = [0.0, 0.5, 1.0, 2.0, 4.0, 8.0]


def test_truthful_neighbours_pull_the_target_toward_the_truth():
    rng = np.random.default_rng(0)
    truth, soft, hard, group, clean, noisy = _clustered(rng)
    # Each noisy face's neighbours: three clean faces of its group (soft label = truth).
    neighbours = np.stack([clean[group[clean] == group[i]][:3] for i in noisy])
    graph = _graph_over(noisy, neighbours, rng)
    quality = target_quality(truth, soft, graph, rows=noisy, lambdas=LAMBDAS, hard=hard)
    kl = [entry["kl"] for entry in quality["mixed"]]
    assert np.all(np.diff(kl) < 0)
    assert quality["neighbour_mean"]["kl"] == pytest.approx(0.0, abs=1e-4)
    assert quality["neighbour_mean"]["accuracy"] == 1.0
    assert quality["mixed"][-1]["accuracy"] >= quality["soft"]["accuracy"]
    hard_kl = [entry["kl"] for entry in quality["hard_mixed"]]
    assert hard_kl[0] == quality["hard"]["kl"] < -np.log(KL_FLOOR)  # finite for one-hot
    assert np.all(np.diff(hard_kl) < 0)


def test_random_neighbours_push_the_target_away():
    rng = np.random.default_rng(1)
    truth, soft, _, group, _, _ = _clustered(rng)
    # Each face's neighbours: three faces of other groups.
    everyone = np.arange(len(group))
    neighbours = np.stack(
        [rng.choice(everyone[group != group[i]], 3, replace=False) for i in everyone]
    )
    graph = _graph_over(everyone, neighbours, rng)
    quality = target_quality(truth, soft, graph, rows=everyone, lambdas=LAMBDAS)
    kl = [entry["kl"] for entry in quality["mixed"]]
    assert quality["neighbour_mean"]["kl"] > quality["soft"]["kl"]
    assert kl[-1] > kl[0]
    assert quality["mixed"][-1]["accuracy"] < quality["soft"]["accuracy"]


def test_a_nan_neighbour_counts_as_uniform_as_in_the_loss():
    soft = SOFT.copy()
    soft[3] = np.nan  # row 1's second neighbour
    q_bar, _ = neighbour_mean(SMALL, soft, np.array([1]))
    assert q_bar[0] == pytest.approx(0.5 * SOFT[0] + 0.5 * np.full(C, 1 / C))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"soft": SOFT[:5]}, "soft must have the shape"),
        ({"rows": np.array([], dtype=np.int64)}, "non-empty"),
        ({"rows": np.array([6])}, r"\[0, 6\)"),
        ({"hard": np.eye(C)}, "hard must have the shape"),
        ({"soft": np.where(np.arange(6)[:, None] == 2, np.nan, SOFT)}, "NaN"),
        ({"lambdas": [-1.0]}, "lambda must be >= 0"),
    ],
)
def test_bad_inputs_are_explained(change, message):
    args = {"soft": SOFT, "rows": np.arange(6), "lambdas": [1.0], **change}
    truth = np.full((6, C), 1 / C)
    with pytest.raises(ValueError, match=message):
        target_quality(
            truth,
            args["soft"],
            SMALL,
            rows=args["rows"],
            lambdas=args["lambdas"],
            hard=args.get("hard"),
        )
