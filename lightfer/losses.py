"""Training losses: hard and soft-label cross-entropy, composed into named regimes.

A *regime* is a weighted sum of loss terms, each a callable `(logits, batch) -> Tensor`
that reads what it needs from the batch (hard labels, soft labels, dataset row indices).
The training loop only ever calls a `Regime`, so a new term (e.g. the AU-neighbour KL term
of the `ldl_au` regime, which looks neighbours up by `batch.rows`) is added here and to
`REGIMES` without touching the loop.

The regimes of METHOD.md:

- `sll`: cross-entropy against the one-hot labels (eq. 1), `HardCrossEntropy`;
- `ldl`: cross-entropy against the LDG's soft labels `d = softmax(v_LDG(x))` (eq. 2),
  `SoftLabelCrossEntropy`.

Difference from the official EfficientFace code: upstream computes
`torch.mean(-q * torch.log(softmax(logits)))`, a mean over the B x C elements, i.e. the
true soft cross-entropy divided by the number of classes C (1/7 for seven emotions), and
`log(softmax)` overflows to `inf` when a probability underflows to 0. `soft_cross_entropy`
is the true cross-entropy `-(q * log p).sum(1).mean()`, computed with `log_softmax`, which
stays finite. With a plain SGD-type optimiser the 1/C factor acts as a 7x smaller learning
rate; with RAdam/Adam it is almost invisible (the update is normalised by the gradient
scale), so upstream's learning rates carry over.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from lightfer.errors import LightferError

__all__ = [
    "REGIMES",
    "HardCrossEntropy",
    "LossBatch",
    "LossTerm",
    "Regime",
    "SoftLabelCrossEntropy",
    "UnknownRegimeError",
    "build_regime",
    "soft_cross_entropy",
]

logger = logging.getLogger(__name__)

_REDUCTIONS = ("mean", "sum", "none")


class UnknownRegimeError(LightferError):
    """A training regime name is not one of `REGIMES`."""


class LossBatch(Protocol):
    """What a loss term may read from a training batch (`lightfer.training.data.Batch`)."""

    labels: Tensor
    rows: Tensor
    soft: Tensor | None


class LossTerm(Protocol):
    """One term of a regime: `(logits, batch) -> scalar loss`.

    `name` labels the term in logs and metrics; `requires` names the optional batch fields
    the term reads (e.g. `{"soft"}`), so a caller knows what data to load.
    """

    name: str
    requires: frozenset[str]

    def __call__(self, logits: Tensor, batch: LossBatch) -> Tensor: ...


def soft_cross_entropy(logits: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy between target distributions and the softmax of `logits`.

    Computes `-(target * log_softmax(logits)).sum(1)`, finite even where a predicted
    probability underflows to 0 (unlike `log(softmax(logits))`). This is the true
    cross-entropy, `C` times the official EfficientFace loss (see the module docstring).

    Args:
        logits: `(N, C)` unnormalised scores.
        target: `(N, C)` distributions (non-negative rows summing to 1).
        reduction: "mean" over the batch, "sum", or "none" for the `(N,)` per-sample losses.

    Returns:
        The reduced loss.

    Raises:
        ValueError: the shapes differ or `reduction` is not one of mean, sum, none.
    """
    if logits.shape != target.shape or logits.ndim != 2:
        raise ValueError(
            f"logits {tuple(logits.shape)} and target {tuple(target.shape)} must both be (N, C)"
        )
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction {reduction!r} is not one of {', '.join(_REDUCTIONS)}")
    per_sample = -(target.to(logits.dtype) * F.log_softmax(logits, dim=1)).sum(1)
    if reduction == "mean":
        return per_sample.mean()
    if reduction == "sum":
        return per_sample.sum()
    return per_sample


@dataclass(frozen=True)
class HardCrossEntropy:
    """Cross-entropy against the hard (one-hot) labels, METHOD.md eq. 1."""

    name: ClassVar[str] = "hard_ce"
    requires: ClassVar[frozenset[str]] = frozenset()

    def __call__(self, logits: Tensor, batch: LossBatch) -> Tensor:
        """Mean cross-entropy of `logits` against `batch.labels`."""
        return F.cross_entropy(logits, batch.labels)


@dataclass(frozen=True)
class SoftLabelCrossEntropy:
    """Cross-entropy against the batch's soft labels (the LDG's distributions), eq. 2."""

    name: ClassVar[str] = "soft_ce"
    requires: ClassVar[frozenset[str]] = frozenset({"soft"})

    def __call__(self, logits: Tensor, batch: LossBatch) -> Tensor:
        """Mean `soft_cross_entropy` of `logits` against `batch.soft`.

        Raises:
            ValueError: the batch carries no soft labels.
        """
        if batch.soft is None:
            raise ValueError(
                "the soft-label cross-entropy needs soft labels, but the batch has none; "
                "build the dataset with soft_labels=... (the LDG's distributions)"
            )
        return soft_cross_entropy(logits, batch.soft)


@dataclass(frozen=True)
class Regime:
    """A training objective: the weighted sum of loss terms.

    Attributes:
        name: the regime's name, e.g. "sll".
        terms: `(weight, term)` pairs.
    """

    name: str
    terms: Sequence[tuple[float, LossTerm]]

    @property
    def requires(self) -> frozenset[str]:
        """The optional batch fields any term reads (e.g. `{"soft"}` for `ldl`)."""
        return frozenset().union(*(term.requires for _, term in self.terms))

    def parts(self, logits: Tensor, batch: LossBatch) -> dict[str, Tensor]:
        """Each weighted term, keyed by the term's name (their sum is the loss)."""
        return {term.name: weight * term(logits, batch) for weight, term in self.terms}

    def __call__(self, logits: Tensor, batch: LossBatch) -> Tensor:
        """The total loss of `logits` on `batch`."""
        return torch.stack(list(self.parts(logits, batch).values())).sum()


REGIMES: dict[str, Callable[[], Regime]] = {
    "sll": lambda: Regime("sll", [(1.0, HardCrossEntropy())]),
    "ldl": lambda: Regime("ldl", [(1.0, SoftLabelCrossEntropy())]),
}


def build_regime(name: str) -> Regime:
    """Build a registered training regime.

    Args:
        name: one of `REGIMES` ("sll", "ldl").

    Returns:
        The regime.

    Raises:
        UnknownRegimeError: `name` is not registered (the message lists the valid names).
    """
    try:
        factory = REGIMES[name]
    except KeyError:
        raise UnknownRegimeError(
            f"unknown training regime {name!r}; valid regimes: {', '.join(sorted(REGIMES))}"
        ) from None
    return factory()
