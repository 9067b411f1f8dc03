"""Training losses: hard and soft-label cross-entropy, composed into named regimes.

A *regime* is a weighted sum of loss terms, each a callable `(logits, batch) -> Tensor`
that reads what it needs from the batch (hard labels, soft labels, dataset row indices).
The training loop only ever calls a `Regime`, so a new term (e.g. the AU-neighbour KL term
of the `ldl_au` regime, which looks neighbours up by `batch.rows`) is added here and to
`REGIMES` without touching the loop.

The regimes of docs/method.md, section 3:

- `sll`: cross-entropy against the one-hot labels (eq. 1), `HardCrossEntropy`;
- `ldl`: cross-entropy against the LDG's soft labels `d = softmax(v_LDG(x))` (eq. 2),
  `SoftLabelCrossEntropy`;
- `ldl_au`: `ldl` plus lambda times the AU-neighbour term (eqs. 3-5), `AUNeighbourKL`,
  built with `ldl_au_regime` since it needs the neighbour graph.

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
from typing import Any, ClassVar, Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from lightfer.errors import LightferError

__all__ = [
    "REGIMES",
    "AUNeighbourKL",
    "HardCrossEntropy",
    "LossBatch",
    "LossTerm",
    "Regime",
    "SoftLabelCrossEntropy",
    "UnknownRegimeError",
    "build_regime",
    "ldl_au_regime",
    "soft_cross_entropy",
    "with_au_term",
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
    neighbour_logits: Tensor | None


class LossTerm(Protocol):
    """One term of a regime: `(logits, batch) -> scalar loss`.

    `name` labels the term in logs and metrics; `requires` names the optional batch fields
    the term reads (e.g. `{"soft"}`), so a caller knows what data to load.
    """

    name: str
    requires: frozenset[str]

    def __call__(self, logits: Tensor, batch: LossBatch) -> Tensor: ...


class StatefulTerm(Protocol):
    """A term that keeps state across batches (saved with the training state for resume)."""

    def state_dict(self) -> dict[str, Tensor]: ...

    def load_state_dict(self, state: dict[str, Tensor]) -> None: ...


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
    """Cross-entropy against the hard (one-hot) labels, docs/method.md, eq. 1."""

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


def _own_values(values: Tensor) -> Tensor:
    """A single process's gather: its own values."""
    return values


class AUNeighbourKL:
    """The AU-neighbour term: `mean_i (1/K) sum_j a_ij KL(f(x_j) || f(x_i))` (eqs. 4-5).

    Images close in the auxiliary (AU) space should have similar emotion distributions, so
    each training image's prediction `f(x_i)` is pulled toward its K neighbours' `f(x_j)`,
    weighted by `a_ij` (the graph's kernel weights, in [0, 1]). Normalisation: the sum over
    neighbours is divided by K (not by `sum_j a_ij`, which would inflate the pull of far,
    low-weight neighbours) and averaged over the batch, so the term is on the scale of one
    KL divergence and lambda is comparable across K; rows without neighbours add 0. Only
    `f(x_i)` receives gradients: `f(x_j)` is a fixed target, as the KL's first argument.

    Sources of `f(x_j)`:

    - `bank`: a memory bank holding every training row's latest prediction (detached),
      updated with each batch's softmax after the loss is computed; it starts from `init`
      (the LDG's soft labels), so the first epoch pulls toward the LDG's view. It is part
      of the training state (`state_dict`), so a resumed run continues exactly. Under DDP
      every rank applies every rank's updates (`share_updates`), so the banks stay
      identical and the one rank 0 saves is every rank's.
    - `ldg`: the neighbours' fixed LDG soft labels `init`.
    - `batch`: the model's predictions on the neighbours' own images, forwarded without
      gradient beside the batch (`batch.neighbour_logits`, `(B*K, C)`; see
      `NeighbourImages`): current, at K extra forwards per sample.

    Args:
        neighbours: `(N, K)` int64 neighbour cache rows of every cache row, -1 for none.
        weights: `(N, K)` float32 `a_ij`, 0 where there is no neighbour.
        source: "bank", "ldg" or "batch".
        init: `(N, C)` initial bank / LDG soft labels (rows outside the graph may be NaN).
    """

    name: ClassVar[str] = "au_kl"

    def __init__(
        self,
        neighbours: Tensor,
        weights: Tensor,
        *,
        source: Literal["bank", "ldg", "batch"] = "bank",
        init: Tensor | None = None,
    ) -> None:
        if neighbours.shape != weights.shape or neighbours.ndim != 2:
            raise ValueError(
                f"neighbours {tuple(neighbours.shape)} and weights {tuple(weights.shape)} must "
                f"both be (N, K)"
            )
        if source not in ("bank", "ldg", "batch"):
            raise ValueError(f"source {source!r} is not one of bank, ldg, batch")
        if source != "batch" and init is None:
            raise ValueError(f"source {source!r} needs init, the LDG's soft labels")
        self.source = source
        self.requires = frozenset({"neighbour_logits"} if source == "batch" else ())
        self.neighbours = neighbours.long()
        self.weights = torch.where(self.neighbours >= 0, weights.float(), 0.0)
        self.k = neighbours.shape[1]
        self.gather: Callable[[Tensor], Tensor] = _own_values
        self.targets: Tensor | None = None
        if init is not None:
            uniform = torch.full_like(init, 1.0 / init.shape[1], dtype=torch.float32)
            self.targets = torch.where(init.isnan(), uniform, init.float()).clone()

    def _to(self, device: torch.device) -> None:
        if self.neighbours.device != device:
            self.neighbours, self.weights = self.neighbours.to(device), self.weights.to(device)
            if self.targets is not None:
                self.targets = self.targets.to(device)

    def __call__(self, logits: Tensor, batch: LossBatch) -> Tensor:
        """The term on one batch (and, with a bank, the bank's update)."""
        self._to(logits.device)
        rows = batch.rows
        neighbours, weights = self.neighbours[rows], self.weights[rows]
        log_p = F.log_softmax(logits.float(), dim=1)
        if self.source == "batch":
            if batch.neighbour_logits is None:
                raise ValueError("source 'batch' needs the neighbours' images in the batch")
            q = torch.softmax(batch.neighbour_logits.float().detach(), 1)
            q = q.view(len(rows), self.k, -1)
        else:
            q = self.targets[neighbours.clamp(min=0)]
        kl = (torch.xlogy(q, q) - q * log_p[:, None, :]).sum(-1)
        term = ((weights * kl).sum(1) / self.k).mean()
        if self.source == "bank":
            self.targets[self.gather(rows)] = self.gather(log_p.detach().exp())
        return term

    def share_updates(self, gather: Callable[[Tensor], Tensor]) -> None:
        """Apply every rank's bank updates: `gather` concatenates all ranks' tensors
        (`Distributed.gather`), in the same order on every rank."""
        self.gather = gather

    def state_dict(self) -> dict[str, Tensor]:
        """The bank (empty for the other sources, which keep no state)."""
        return {"bank": self.targets.cpu()} if self.source == "bank" else {}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Restore the bank saved by `state_dict`."""
        if self.source == "bank":
            self.targets = state["bank"].to(self.neighbours.device).float()


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

    def state_dict(self) -> dict[str, Any]:
        """The state of the terms that keep one across batches (e.g. a memory bank)."""
        return {
            term.name: term.state_dict() for _, term in self.terms if hasattr(term, "state_dict")
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `state_dict` returned."""
        for _, term in self.terms:
            if term.name in state:
                term.load_state_dict(state[term.name])

    def share_updates(self, gather: Callable[[Tensor], Tensor]) -> None:
        """Let stateful terms apply every DDP rank's updates (`Distributed.gather`)."""
        for _, term in self.terms:
            if hasattr(term, "share_updates"):
                term.share_updates(gather)


REGIMES: dict[str, Callable[[], Regime]] = {
    "sll": lambda: Regime("sll", [(1.0, HardCrossEntropy())]),
    "ldl": lambda: Regime("ldl", [(1.0, SoftLabelCrossEntropy())]),
}


def with_au_term(base: Regime, weight: float, term: AUNeighbourKL) -> Regime:
    """`<base>_au`: `base`'s terms plus `weight` (lambda) times the AU-neighbour `term`."""
    return Regime(f"{base.name}_au", [*base.terms, (weight, term)])


def ldl_au_regime(weight: float, term: AUNeighbourKL) -> Regime:
    """`ldl_au`: the LDG soft-label cross-entropy plus `weight` (lambda) times `term`."""
    return with_au_term(REGIMES["ldl"](), weight, term)


def build_regime(name: str) -> Regime:
    """Build a registered training regime.

    Args:
        name: one of `REGIMES` ("sll", "ldl").

    Returns:
        The regime.

    Raises:
        UnknownRegimeError: `name` is not registered (the message lists the valid names).
    """
    if name == "ldl_au":
        raise UnknownRegimeError(
            "regime 'ldl_au' needs the AU neighbour graph: build it with ldl_au_regime()"
        )
    try:
        factory = REGIMES[name]
    except KeyError:
        raise UnknownRegimeError(
            f"unknown training regime {name!r}; valid regimes: {', '.join(sorted(REGIMES))}"
        ) from None
    return factory()
