"""Soft labels: the label distributions a frozen label distribution generator (LDG) predicts.

Upstream EfficientFace runs its LDG online on every augmented training batch; by default
here the distributions are predicted once, on the unaugmented crops, and stored per
sample (`write_soft_labels`, `read_soft_labels`), which costs one LDG pass instead of one
per epoch. `OnlineSoftLabels` offers upstream's way, so the two can be compared.

The store is a Parquet table of `sample_id`, `row` (the face-cache row it was written
from) and `probs`, with the sha256 of the LDG file that made it; the reader joins it to
the face cache by sample_id (`lightfer.sample_ids`) and refuses another LDG's labels.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch import nn

from lightfer.errors import StageOutputError
from lightfer.io import write_parquet
from lightfer.manifest import fixed_list
from lightfer.sample_ids import align_to_cache
from lightfer.training.data import Batch, LoaderWrapper
from lightfer.training.loop import evaluate

__all__ = [
    "OnlineSoftLabels",
    "file_sha256",
    "predict_soft_labels",
    "read_soft_labels",
    "write_soft_labels",
]

logger = logging.getLogger(__name__)

_META_LDG = b"lightfer.ldg_sha256"


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes (hex)."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def write_soft_labels(
    path: Path, soft: np.ndarray, sample_ids: Sequence[str], *, rows: np.ndarray, ldg: Path
) -> None:
    """Write the soft labels of the face-cache `rows` (atomically), keyed by sample_id.

    Args:
        path: the Parquet file to write.
        soft: `(N, C)` distributions, one per face-cache row.
        sample_ids: the face cache's sample_id per row.
        rows: the cache rows to store.
        ldg: the LDG file that made them (its sha256 goes into the file's metadata).
    """
    rows = np.asarray(rows, dtype=np.int64)
    table = pa.table(
        {
            "sample_id": pa.array([str(sample_ids[row]) for row in rows], pa.string()),
            "row": pa.array(rows, pa.int64()),
            "probs": fixed_list(np.asarray(soft[rows], dtype=np.float32), pa.float32()),
        }
    ).replace_schema_metadata({_META_LDG: file_sha256(ldg).encode()})
    write_parquet(path, table)


def read_soft_labels(
    path: Path,
    *,
    ldg: Path,
    sample_ids: Sequence[str],
    cache: Path,
    required: np.ndarray | None = None,
) -> np.ndarray:
    """The stored soft labels in face-cache order, refused unless `ldg` made them.

    Args:
        path: the file `write_soft_labels` wrote.
        ldg: the LDG file the labels must come from.
        sample_ids: the face cache's sample_id per row (the order of the result).
        cache: the face cache's folder (for messages).
        required: the cache rows the file must cover (None: every row).

    Returns:
        `(len(sample_ids), C)` float32; NaN for cache rows the file does not hold.

    Raises:
        StageOutputError: the file is missing, has no sample_id column, was made by another
            LDG, or holds other samples than the face cache (see `align_to_cache`).
    """
    if not path.is_file():
        raise StageOutputError(f"{path} does not exist; run the soft-labels stage first")
    table = pq.read_table(path)
    made_by = (table.schema.metadata or {}).get(_META_LDG, b"").decode()
    current = file_sha256(ldg)
    if made_by != current:
        raise StageOutputError(
            f"{path} was made by the LDG with sha256 {made_by[:12] or '(none recorded)'}, "
            f"but {ldg} is {current[:12]}; re-run the soft-labels stage"
        )
    if "sample_id" not in table.column_names:
        raise StageOutputError(f"{path} has no sample_id column; re-run the soft-labels stage")
    positions = align_to_cache(
        table.column("sample_id").to_pylist(),
        sample_ids,
        table=path,
        cache=cache,
        required=required,
    )
    probs = np.asarray(table.column("probs").combine_chunks().flatten(), dtype=np.float32)
    probs = probs.reshape(table.num_rows, -1)
    soft = np.full((len(positions), probs.shape[1]), np.nan, dtype=np.float32)
    held = positions >= 0
    soft[held] = probs[positions[held]]
    return soft


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
        "distributions for %d of %d rows (temperature %g), top-1 accuracy %.4f on them",
        len(result["rows"]),
        num_rows,
        temperature,
        result["accuracy"],
    )
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
                # `to` also finishes a uint8 batch whose augmentation runs on the device.
                logits = self.teacher(batch.to(self.device).images)
            soft = torch.softmax(logits.float() / self.temperature, dim=1).cpu()
            yield batch._replace(soft=soft)
