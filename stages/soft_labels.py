"""soft-labels: the frozen LDG's softmax for every face (eq. 2), cached to Parquet."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from lightfer.errors import StageOutputError
from lightfer.io import atomic_path, write_json
from lightfer.labels import NUM_CLASSES
from lightfer.manifest import fixed_list
from lightfer.params import Params
from lightfer.training.data import make_loader
from lightfer.training.soft_labels import predict_soft_labels
from stages.common import StageSpec, stage_main
from stages.training import dataset_of, device, load_splits, load_trained

logger = logging.getLogger("lightfer.stages.soft_labels")

_META_LDG = b"lightfer.ldg_sha256"


def soft_labels_path(root: Path, dataset: str) -> Path:
    return root / "data" / dataset / "soft_labels.parquet"


def ldg_path(root: Path, dataset: str) -> Path:
    return root / "models" / dataset / "ldg.pt"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_soft_labels(root: Path, dataset: str, num_rows: int) -> np.ndarray:
    """The cached soft labels, refused unless they come from the dataset's current LDG.

    Raises:
        StageOutputError: the file is missing, or another LDG than `models/<dataset>/ldg.pt`
            made it, or it does not cover the face cache.
    """
    path, ldg = soft_labels_path(root, dataset), ldg_path(root, dataset)
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
    soft = np.full((num_rows, NUM_CLASSES), np.nan, dtype=np.float32)
    rows = table.column("row").to_numpy()
    if len(rows) and rows.max() >= num_rows:
        raise StageOutputError(f"{path} names rows beyond the face cache; re-run soft-labels")
    probs = np.asarray(table.column("probs").combine_chunks().flatten()).reshape(-1, NUM_CLASSES)
    soft[rows] = probs
    return soft


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Label every usable face with the LDG; report how confident it is on train vs held-out."""
    splits = load_splits(params, root, dataset)
    model, checkpoint = load_trained(ldg_path(root, dataset))
    rows = np.concatenate([splits.train, splits.val, splits.test])
    loader = make_loader(
        dataset_of(splits, rows, checkpoint.image_size or params.align.crop_size),
        batch_size=256, train=False,
    )  # fmt: skip
    soft = predict_soft_labels(
        model, loader, device(), num_rows=len(splits.crops),
        temperature=params.soft_labels.temperature,
    )  # fmt: skip
    rows = np.sort(rows)
    table = pa.table(
        {"row": pa.array(rows, pa.int64()), "probs": fixed_list(soft[rows], pa.float32())}
    ).replace_schema_metadata({_META_LDG: file_sha256(ldg_path(root, dataset)).encode()})
    with atomic_path(soft_labels_path(root, dataset)) as tmp:
        pq.write_table(table, tmp)
    top = soft.max(axis=1)
    held_out = np.concatenate([splits.val, splits.test])
    summary = {
        "rows": len(rows),
        "temperature": params.soft_labels.temperature,
        "mean_top_probability_train": float(np.mean(top[splits.train])),
        "mean_top_probability_held_out": float(np.mean(top[held_out])) if len(held_out) else None,
    }
    write_json(root / "reports" / dataset / "soft_labels.json", summary)
    logger.info("soft labels for %s: %s", dataset, summary)
    return summary


STAGE = StageSpec(
    name="soft-labels",
    deps=("stages/soft_labels.py", "stages/training.py", "lightfer/training",
          "lightfer/models", "data/{dataset}/faces", "data/{dataset}/prepared",
          "models/{dataset}/ldg.pt"),
    outs=("data/{dataset}/soft_labels.parquet", "reports/{dataset}/soft_labels.json"),
    params=("base.seed", "train.val_fraction", "soft_labels"),
    run=run,
)  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(stage_main(STAGE))
