"""Soft labels: the label distributions a frozen label distribution generator (LDG) predicts.

Upstream EfficientFace runs its LDG online on every augmented training batch; by default
here the distributions are predicted once, on the unaugmented crops, and stored per cache
row, which costs one LDG pass instead of one per epoch. `OnlineSoftLabels` offers
upstream's way, so the two can be compared.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from lightfer.training.data import Batch, LoaderWrapper
from lightfer.training.loop import evaluate

__all__ = ["OnlineSoftLabels", "predict_soft_labels"]

logger = logging.getLogger(__name__)


def predict_soft_labels(
    model: nn.Module,
    loader: Iterable[Batch],
    device: torch.device,
    *,
    num_rows: int,
    temperature: float = 1.0,
    progress: bool = False,
) -> np.ndarray:
    """Predict `softmax(logits / temperature)` for every cache row `loader` serves.

    Args:
        model: the frozen LDG (it is set to eval mode; its weights are not changed).
        loader: an evaluation loader (`make_loader(..., train=False)`) over the rows to label.
        device: where to compute.
        num_rows: rows of the face cache; the result has one distribution per row.
        temperature: softmax temperature (1: upstream's plain softmax; > 1 flattens).
        progress: show a tqdm bar on stderr.

    Returns:
        `(num_rows, C)` float32 distributions; rows the loader did not serve are NaN, so
        training on them fails loudly instead of silently.

    Raises:
        ValueError: `temperature` is not positive.
    """
    if temperature <= 0:
        raise ValueError(f"temperature {temperature} must be positive (1 for a plain softmax)")
    result = evaluate(model, loader, device, temperature=temperature, progress=progress)
    soft = np.full((num_rows, result["probs"].shape[1]), np.nan, dtype=np.float32)
    soft[result["rows"]] = result["probs"]
    logger.info(
        "soft labels for %d of %d rows (temperature %g), LDG accuracy %.4f on them",
        len(result["rows"]), num_rows, temperature, result["accuracy"],
    )  # fmt: skip
    return soft


class OnlineSoftLabels(LoaderWrapper):
    """A training loader whose batches carry the frozen LDG's soft labels, computed on the fly.

    This is the official EfficientFace code's way: the LDG scores the very augmented images
    the student sees, every step (costing one LDG forward per batch), where the project's
    default caches one soft label per image.

    Args:
        loader: a training loader yielding `Batch`es.
        teacher: the frozen LDG (set to eval mode; never updated).
        device: where the LDG runs.
        temperature: softmax temperature.
    """

    def __init__(
        self, loader: Any, teacher: nn.Module, device: torch.device, *, temperature: float = 1.0
    ) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature {temperature} must be positive (1 for a plain softmax)")
        super().__init__(loader)
        self.teacher = teacher.to(device).eval()
        self.device = device
        self.temperature = temperature

    def __iter__(self) -> Iterator[Batch]:
        for batch in self.loader:
            with torch.inference_mode():
                logits = self.teacher(batch.images.to(self.device))
            soft = torch.softmax(logits.float() / self.temperature, dim=1).cpu()
            yield batch._replace(soft=soft)
