"""Soft cross-entropy, the loss terms and the regime registry."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from lightfer.errors import LightferError
from lightfer.losses import (
    AUNeighbourKL,
    HardCrossEntropy,
    Regime,
    SoftLabelCrossEntropy,
    UnknownRegimeError,
    build_regime,
    ldl_au_regime,
    soft_cross_entropy,
)

C = 7


@dataclass
class _Batch:
    labels: Tensor
    rows: Tensor
    soft: Tensor | None = None
    neighbour_logits: Tensor | None = None


def _targets(kind: str) -> Tensor:
    if kind == "one_hot":
        return F.one_hot(torch.tensor([0, 3, 6]), C).float()
    if kind == "uniform":
        return torch.full((3, C), 1.0 / C)
    ambiguous = torch.tensor([[0.45, 0.45, 0.1, 0, 0, 0, 0], [0.2, 0, 0, 0.3, 0, 0.5, 0]])
    return ambiguous


@pytest.mark.parametrize("kind", ["one_hot", "uniform", "ambiguous"])
def test_soft_cross_entropy_is_true_cross_entropy(kind):
    target = _targets(kind)
    assert torch.allclose(target.sum(1), torch.ones(len(target)))
    logits = torch.randn(len(target), C, generator=torch.Generator().manual_seed(0))
    expected = -(target * torch.log(torch.softmax(logits, 1))).sum(1).mean()
    assert torch.allclose(soft_cross_entropy(logits, target), expected, atol=1e-6)
    # Upstream's loss averages over the B x C elements: 1/C of ours.
    upstream = torch.mean(-target * torch.log(torch.softmax(logits, 1)))
    assert torch.allclose(soft_cross_entropy(logits, target) / C, upstream, atol=1e-6)


@pytest.mark.parametrize("kind", ["one_hot", "uniform", "ambiguous"])
def test_cross_entropy_minus_entropy_is_a_non_negative_kl(kind):
    target = _targets(kind)
    entropy = -(target * torch.log(target.clamp_min(1e-30))).sum(1)
    logits = torch.randn(len(target), C)
    kl = soft_cross_entropy(logits, target, reduction="none") - entropy
    assert (kl >= -1e-6).all()
    # The prediction equal to the target gives KL = 0.
    exact = torch.log(target.clamp_min(1e-30))
    assert torch.allclose(soft_cross_entropy(exact, target, "none"), entropy, atol=1e-5)


def test_one_hot_soft_cross_entropy_equals_hard_cross_entropy():
    labels = torch.tensor([1, 4, 2, 0])
    logits = torch.randn(4, C)
    hard = F.cross_entropy(logits, labels)
    assert torch.allclose(soft_cross_entropy(logits, F.one_hot(labels, C).float()), hard)


def test_soft_cross_entropy_stays_finite_when_a_probability_underflows():
    logits = torch.tensor([[0.0, -1e4, 0.0, 0.0, 0.0, 0.0, 0.0]], requires_grad=True)
    target = torch.tensor([[0.5, 0.5, 0, 0, 0, 0, 0]])
    naive = -(target * torch.log(torch.softmax(logits, 1))).sum()
    assert not torch.isfinite(naive)
    loss = soft_cross_entropy(logits, target)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert loss.item() == pytest.approx(0.5 * (1e4 + math.log(6)) + 0.5 * math.log(6), rel=1e-5)


def test_reductions_and_shape_errors():
    logits, target = torch.randn(5, C), torch.full((5, C), 1.0 / C)
    per_sample = soft_cross_entropy(logits, target, reduction="none")
    assert per_sample.shape == (5,)
    assert torch.allclose(soft_cross_entropy(logits, target, "sum"), per_sample.sum())
    with pytest.raises(ValueError, match="reduction 'max' is not one of mean, sum, none"):
        soft_cross_entropy(logits, target, reduction="max")
    with pytest.raises(ValueError, match=r"must both be \(N, C\)"):
        soft_cross_entropy(logits, target[:, :3])


def test_regimes_compose_weighted_terms():
    labels = torch.tensor([0, 1, 2])
    soft = torch.softmax(torch.randn(3, C), 1)
    batch = _Batch(labels=labels, rows=torch.arange(3), soft=soft)
    logits = torch.randn(3, C)
    sll, ldl = build_regime("sll"), build_regime("ldl")
    assert torch.allclose(sll(logits, batch), F.cross_entropy(logits, labels))
    assert torch.allclose(ldl(logits, batch), soft_cross_entropy(logits, soft))
    assert sll.requires == frozenset() and ldl.requires == {"soft"}
    mixed = Regime("mixed", [(1.0, HardCrossEntropy()), (0.5, SoftLabelCrossEntropy())])
    parts = mixed.parts(logits, batch)
    assert set(parts) == {"hard_ce", "soft_ce"}
    expected = F.cross_entropy(logits, labels) + 0.5 * soft_cross_entropy(logits, soft)
    assert torch.allclose(mixed(logits, batch), expected)


def test_soft_term_without_soft_labels_says_what_to_do():
    batch = _Batch(labels=torch.tensor([0]), rows=torch.tensor([0]))
    with pytest.raises(ValueError, match=r"soft_labels=\.\.\."):
        build_regime("ldl")(torch.randn(1, C), batch)


def test_unknown_regime_lists_the_valid_names():
    with pytest.raises(UnknownRegimeError, match="'ldl_xx'; valid regimes: ldl, sll") as info:
        build_regime("ldl_xx")
    assert isinstance(info.value, LightferError)


def _graph() -> tuple[Tensor, Tensor, Tensor]:
    """5 cache rows, K=2: row 4 has no neighbours; row 3 only one."""
    neighbours = torch.tensor([[1, 2], [0, 2], [0, 1], [0, -1], [-1, -1]])
    weights = torch.tensor([[0.9, 0.5], [0.9, 0.2], [0.5, 0.2], [0.7, 0.0], [0.0, 0.0]])
    init = torch.softmax(torch.randn(5, C, generator=torch.Generator().manual_seed(1)), 1)
    return neighbours, weights, init


def _direct(logits: Tensor, rows: Tensor, neighbours, weights, targets) -> float:
    """sum_j a_ij KL(q_j || p_i) / K, averaged over the batch, written out term by term."""
    p = torch.softmax(logits.detach().double(), 1)
    total = 0.0
    for b, row in enumerate(rows.tolist()):
        for j, neighbour in enumerate(neighbours[row].tolist()):
            if neighbour < 0:
                continue
            q = targets[neighbour].double()
            kl = float((q * (q.log() - p[b].log())).sum())
            total += float(weights[row, j]) * kl / neighbours.shape[1]
    return total / len(rows)


@pytest.mark.parametrize("source", ["bank", "ldg"])
def test_au_term_equals_the_direct_weighted_kl(source):
    neighbours, weights, init = _graph()
    term = AUNeighbourKL(neighbours, weights, source=source, init=init)
    rows = torch.tensor([0, 3, 4])
    logits = torch.randn(3, C, generator=torch.Generator().manual_seed(2), requires_grad=True)
    value = term(logits, _Batch(torch.zeros(3, dtype=torch.long), rows))
    assert value.item() == pytest.approx(_direct(logits, rows, neighbours, weights, init), 1e-5)
    value.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[2].abs().sum() == 0  # no neighbours


def test_au_term_bank_takes_each_batch_prediction_and_resumes_from_its_state():
    neighbours, weights, init = _graph()
    term = AUNeighbourKL(neighbours, weights, source="bank", init=init)
    logits = torch.randn(2, C, generator=torch.Generator().manual_seed(3))
    term(logits, _Batch(torch.zeros(2, dtype=torch.long), torch.tensor([1, 2])))
    bank = term.state_dict()["bank"]
    assert torch.allclose(bank[1:3], torch.softmax(logits, 1))
    assert torch.equal(bank[0], init[0])  # rows not in the batch keep their value
    # The next batch is pulled toward the updated predictions, not the initial ones.
    probe = torch.zeros(1, C)
    after = term(probe, _Batch(torch.zeros(1, dtype=torch.long), torch.tensor([0])))
    assert after.item() == pytest.approx(
        _direct(probe, torch.tensor([0]), neighbours, weights, bank), 1e-5
    )
    restored = AUNeighbourKL(neighbours, weights, source="bank", init=init)
    restored.load_state_dict(term.state_dict())
    assert torch.equal(restored.state_dict()["bank"], term.state_dict()["bank"])
    regime = ldl_au_regime(0.5, restored)
    assert set(regime.state_dict()) == {"au_kl"} and regime.requires == {"soft"}


def test_au_term_batch_source_uses_the_neighbours_forwarded_logits():
    neighbours, weights, _ = _graph()
    term = AUNeighbourKL(neighbours, weights, source="batch")
    rows = torch.tensor([0, 1])
    neighbour_logits = torch.randn(4, C, generator=torch.Generator().manual_seed(4))
    logits = torch.randn(2, C, generator=torch.Generator().manual_seed(5))
    value = term(logits, _Batch(torch.zeros(2, dtype=torch.long), rows, None, neighbour_logits))
    expected = 0.0
    for b, row in enumerate(rows.tolist()):  # each sample's own neighbours' forwarded outputs
        targets = torch.zeros(5, C)
        targets[neighbours[row]] = torch.softmax(neighbour_logits[2 * b : 2 * b + 2], 1)
        expected += _direct(logits[b : b + 1], rows[b : b + 1], neighbours, weights, targets) / 2
    assert value.item() == pytest.approx(expected, 1e-5)
    with pytest.raises(ValueError, match="neighbours' images"):
        term(logits, _Batch(torch.zeros(2, dtype=torch.long), rows))


def test_au_term_is_finite_when_a_prediction_underflows():
    neighbours, weights, init = _graph()
    term = AUNeighbourKL(neighbours, weights, source="ldg", init=init)
    logits = torch.tensor([[1000.0, -1000.0, 0, 0, 0, 0, 0]], requires_grad=True)
    value = term(logits, _Batch(torch.zeros(1, dtype=torch.long), torch.tensor([0])))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(logits.grad).all()


def test_ldl_au_is_not_built_without_a_graph():
    with pytest.raises(UnknownRegimeError, match="ldl_au_regime"):
        build_regime("ldl_au")
