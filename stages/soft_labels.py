"""soft-labels: the frozen LDG's softmax for every face (eq. 2), cached to Parquet."""

from __future__ import annotations

import hashlib
import logging
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from lightfer.errors import StageOutputError
from lightfer.io import atomic_path, write_json
from lightfer.labels import NUM_CLASSES
from lightfer.losses import build_regime
from lightfer.manifest import fixed_list
from lightfer.params import Params
from lightfer.training.data import make_loader
from lightfer.training.soft_labels import predict_soft_labels
from stages.common import StageSpec, stage_main
from stages.training import (
    Splits,
    dataset_of,
    device,
    fit_model,
    load_splits,
    load_trained,
    run_dir_of,
)

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


def _predict(
    params: Params, model: torch.nn.Module, splits: Splits, rows: np.ndarray, image_size: int
) -> np.ndarray:
    loader = make_loader(dataset_of(splits, rows, image_size), batch_size=256, train=False)
    return predict_soft_labels(
        model, loader, device(), num_rows=len(splits.crops),
        temperature=params.soft_labels.temperature,
    )  # fmt: skip


def _cross_fit(params: Params, root: Path, dataset: str, splits: Splits) -> np.ndarray:
    """Soft labels of the training rows, each from an LDG trained without its fold.

    An LDG scores the images it was trained on over-confidently, pulling their soft labels
    toward the (noisy) one-hot labels; cross-fitting gives every training image a soft
    label from a model that never saw it. The folds' LDGs train like `train.ldg` and select
    their epoch on the same validation split; their state resumes from `.runs/`.
    """
    folds = params.soft_labels.folds
    order = np.random.default_rng(params.base.seed).permutation(splits.train)
    run_dir = run_dir_of(params, root, STAGE.expand(dataset=dataset))
    soft = np.full((len(splits.crops), NUM_CLASSES), np.nan, dtype=np.float32)
    for fold, held in enumerate(np.array_split(order, folds)):
        summary = fit_model(
            params, run_dir=run_dir / f"fold{fold}", dataset=dataset,
            model_cfg=params.train.ldg, regime=build_regime("sll"), seed=params.base.seed,
            splits=replace(splits, train=np.setdiff1d(splits.train, held)), soft=None,
        )  # fmt: skip
        logger.info("fold %d of %d: LDG val accuracy %s", fold + 1, folds, summary["val_accuracy"])
        model, _ = load_trained(run_dir / f"fold{fold}" / "best.pt")
        soft[held] = _predict(params, model, splits, np.sort(held), params.align.crop_size)[held]
    shutil.rmtree(run_dir.parent)
    return soft


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Label every usable face with the LDG; report how confident it is on train vs held-out.

    With `soft_labels.folds` > 1 the training rows are labelled by cross-fitted LDGs and
    the validation and test rows by the dataset's LDG; with 1 (the paper's way) the
    dataset's LDG labels every row.
    """
    splits = load_splits(params, root, dataset)
    model, checkpoint = load_trained(ldg_path(root, dataset))
    held_out = np.concatenate([splits.val, splits.test])
    image_size = checkpoint.image_size or params.align.crop_size
    if params.soft_labels.folds > 1:
        soft = _predict(params, model, splits, held_out, image_size)
        soft[splits.train] = _cross_fit(params, root, dataset, splits)[splits.train]
    else:
        soft = _predict(params, model, splits, np.concatenate([splits.train, held_out]), image_size)
    rows = np.sort(np.concatenate([splits.train, held_out]))
    table = pa.table(
        {"row": pa.array(rows, pa.int64()), "probs": fixed_list(soft[rows], pa.float32())}
    ).replace_schema_metadata({_META_LDG: file_sha256(ldg_path(root, dataset)).encode()})
    with atomic_path(soft_labels_path(root, dataset)) as tmp:
        pq.write_table(table, tmp)
    top = soft.max(axis=1)
    summary = {
        "rows": len(rows),
        "folds": params.soft_labels.folds,
        "temperature": params.soft_labels.temperature,
        "mean_top_probability_train": float(np.mean(top[splits.train])),
        "mean_top_probability_held_out": float(np.mean(top[held_out])) if len(held_out) else None,
    }
    write_json(root / "reports" / dataset / "soft_labels.json", summary)
    logger.info("soft labels for %s: %s", dataset, summary)
    return summary


STAGE = StageSpec(
    name="soft-labels",
    deps=("stages/soft_labels.py", "stages/training.py", "stages/fingerprint.py",
          "lightfer/training", "lightfer/losses.py", "lightfer/models", "data/{dataset}/faces",
          "data/{dataset}/prepared", "models/{dataset}/ldg.pt"),
    outs=("data/{dataset}/soft_labels.parquet", "reports/{dataset}/soft_labels.json"),
    params=("base.seed", "align.crop_size", "train.val_fraction", "train.ldg", "soft_labels"),
    run=run,
)  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(stage_main(STAGE))
