"""What the training stages share: the splits of a dataset and one resumable training run.

Not a stage itself. A run trains in `.runs/<stage run>/<fingerprint>/`, outside DVC's
outputs (DVC deletes a stage's outputs before running it, which would defeat resuming);
the fingerprint covers the run's params and dependency contents, so a run killed half-way
resumes when started again with the same inputs, and starts afresh when they changed.
Only when training ends are the selected checkpoint and the metrics copied to the
declared outputs.

The training stages also run data-parallel under `torchrun --nproc_per_node=N -m
stages.train_ef ...` (see `lightfer.training.distributed`): `batch_size` stays the global
batch, and rank 0 writes every file.
"""

from __future__ import annotations

import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightfer.errors import StageOutputError
from lightfer.faces.cache import load_face_cache
from lightfer.io import atomic_path, write_json
from lightfer.labels import CLASSES
from lightfer.losses import Regime
from lightfer.manifest import read_manifest
from lightfer.models import create_model
from lightfer.models.checkpoint import Checkpoint, load_checkpoint
from lightfer.params import ModelTraining, Params
from lightfer.training.data import (
    FaceDataset,
    channel_stats,
    holdout_validation,
    make_loader,
    usable_rows,
)
from lightfer.training.device_options import resolve_device_options
from lightfer.training.distributed import SINGLE, Distributed
from lightfer.training.loop import ModelInfo, fit
from lightfer.training.neighbours import NeighbourImages
from lightfer.training.soft_labels import OnlineSoftLabels
from stages.align import faces_dir
from stages.common import StageRun
from stages.fingerprint import stage_fingerprint
from stages.prepare import MANIFEST, prepared_dir

logger = logging.getLogger("lightfer.stages.training")

RUNS_DIR = ".runs"


@dataclass(frozen=True)
class Splits:
    """A dataset's face cache split for training, with the training split's statistics."""

    crops: np.ndarray
    labels: np.ndarray
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    true_dist: np.ndarray | None


def load_splits(params: Params, root: Path, dataset: str) -> Splits:
    """Usable rows per split; validation is the dataset's own or held out from train.

    The held-out validation split depends on `base.seed` only, so the LDG and every
    EfficientFace run of a dataset select their epoch on the same images; it is drawn by
    subject where the manifest knows subjects, so no identity is on both sides.
    """
    crops, table = load_face_cache(faces_dir(root, dataset))
    manifest = read_manifest(prepared_dir(root, dataset) / MANIFEST)
    labels = np.asarray(table.column("label").to_numpy(), dtype=np.int64)
    present = set(table.column("split").to_pylist())
    train = usable_rows(table, "train")
    val = usable_rows(table, "val") if "val" in present else np.empty(0, dtype=np.int64)
    if len(val) == 0 and params.train.val_fraction > 0:
        has_subjects = "subject" in manifest.table.column_names
        groups = manifest.column("subject")[train] if has_subjects else None
        train, val = holdout_validation(
            train, labels[train], fraction=params.train.val_fraction, seed=params.base.seed,
            groups=groups,
        )  # fmt: skip
    mean, std = channel_stats(crops, train, seed=params.base.seed)
    has_dist = "true_dist" in manifest.table.column_names
    logger.info("%s: %d train, %d val, %d test faces", dataset, len(train), len(val),
                len(usable_rows(table, "test")))  # fmt: skip
    return Splits(
        crops=crops,
        labels=labels,
        train=train,
        val=val,
        test=usable_rows(table, "test"),
        mean=mean,
        std=std,
        true_dist=manifest.column("true_dist") if has_dist else None,
    )


def device() -> torch.device:
    """The GPU when there is one, else the CPU."""
    return Distributed.from_environment().device()


def load_trained(path: Path) -> tuple[torch.nn.Module, Checkpoint]:
    """A model trained by this project, with its checkpoint (class order checked)."""
    checkpoint = load_checkpoint(path)
    if checkpoint.arch is None:
        raise StageOutputError(f"{path} is not a lightfer checkpoint; re-run its training stage")
    return create_model(checkpoint.arch, pretrained=path, classes=CLASSES), checkpoint


def dataset_of(splits: Splits, rows: np.ndarray, image_size: int, **kwargs: Any) -> FaceDataset:
    """A `FaceDataset` over `rows` of the cache, normalised with the training statistics."""
    return FaceDataset(
        splits.crops, rows, splits.labels, mean=splits.mean, std=splits.std,
        image_size=image_size, **kwargs,
    )  # fmt: skip


def run_dir_of(params: Params, root: Path, run: StageRun) -> Path:
    """Where a stage run keeps its resumable state (see the module docstring)."""
    return root / RUNS_DIR / run.name / stage_fingerprint(run, root, params)[:16]


def fit_model(
    params: Params,
    *,
    run_dir: Path,
    dataset: str,
    model_cfg: ModelTraining,
    regime: Regime,
    seed: int,
    splits: Splits,
    soft: np.ndarray | None,
    teacher: torch.nn.Module | None = None,
    neighbours: torch.Tensor | None = None,
    distributed: Distributed = SINGLE,
) -> dict[str, Any]:
    """Train one model on `splits.train` in `run_dir` (resuming what is there).

    `run_dir/best.pt` is the model of the epoch chosen on validation. With a `teacher`
    (an LDG), training batches get their soft labels from it online; with `neighbours`
    (`(N, K)` cache rows), they carry their neighbours' images (the AU term's `batch`
    source). `distributed` is this process's rank when several train together (its process
    group started).
    """
    config = model_cfg.train.model_copy(update={"seed": seed})
    pin_memory = resolve_device_options(
        config, device(), distributed=distributed.enabled
    ).pin_memory
    image_size = params.align.crop_size
    torch.manual_seed(seed)
    model = create_model(model_cfg.arch, pretrained=model_cfg.pretrained, classes=CLASSES)
    train_set = dataset_of(splits, splits.train, image_size, soft=soft, augment=config.augment)
    loaders = {
        "train_loader": make_loader(
            train_set, batch_size=config.batch_size, train=True, seed=config.seed,
            balanced=config.balanced, num_workers=config.num_workers, pin_memory=pin_memory,
            rank=distributed.rank, world_size=distributed.world_size,
        ),
        "val_loader": None,
        "test_loader": None,
    }  # fmt: skip
    if teacher is not None:
        loaders["train_loader"] = OnlineSoftLabels(
            loaders["train_loader"], teacher, device(), temperature=params.soft_labels.temperature
        )
    if neighbours is not None:
        plain = dataset_of(splits, splits.train, image_size)
        loaders["train_loader"] = NeighbourImages(loaders["train_loader"], plain, neighbours)
    for split, rows in (("val", splits.val), ("test", splits.test)):
        if len(rows):
            evaluation = dataset_of(splits, rows, image_size, soft=soft)
            loaders[f"{split}_loader"] = make_loader(
                evaluation, batch_size=config.batch_size, train=False, pin_memory=pin_memory
            )
    info = ModelInfo(
        arch=model_cfg.arch, classes=CLASSES, image_size=image_size, mean=splits.mean,
        std=splits.std, dataset=dataset,
    )  # fmt: skip
    return fit(model, regime, config=config, info=info, out_dir=run_dir, device=device(),
               distributed=distributed, **loaders)  # fmt: skip


def train_model(
    params: Params,
    root: Path,
    *,
    run: StageRun,
    model_path: Path,
    report_stem: Path,
    **fit_args: Any,
) -> dict[str, Any]:
    """Train one model (see `fit_model`); write `model_path` and `<report_stem>.{json,csv}`.

    Under `torchrun` the processes train together and rank 0 writes the outputs.
    """
    run_dir = run_dir_of(params, root, run)
    distributed = Distributed.from_environment()
    started = distributed.start(device())
    try:
        summary = fit_model(params, run_dir=run_dir, distributed=distributed, **fit_args)
    finally:
        if started:
            distributed.stop()
    if not distributed.is_main:
        return summary
    with atomic_path(model_path) as tmp:
        shutil.copyfile(run_dir / "best.pt", tmp)
    # Not `with_suffix`: a stem may hold dots of its own (the study's `noise0.5-seed0`).
    with atomic_path(report_stem.parent / f"{report_stem.name}.csv") as tmp:
        shutil.copyfile(run_dir / "metrics.csv", tmp)
    write_json(report_stem.parent / f"{report_stem.name}.json", summary)
    shutil.rmtree(run_dir.parent)
    return summary
