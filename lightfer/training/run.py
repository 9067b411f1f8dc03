"""The pipeline's training runs: the LDG, its soft labels and EfficientFace, resumably.

A run trains in `.runs/<stage run>/<fingerprint>/` (`lightfer.catalog.run_state_dir`),
outside DVC's outputs (DVC deletes a stage's outputs before running it, which would defeat
resuming). The fingerprint (`lightfer.fingerprint`) covers the params values the run
uses, the files it reads and the lightfer code, so a run killed half-way resumes when
started again with the same ones, and starts afresh when they changed. Only when training
ends are the selected checkpoint and the metrics copied to the declared outputs.

Training also runs data-parallel under `torchrun --nproc_per_node=N -m stages.train_ef ...`
(see `lightfer.training.distributed`): `batch_size` stays the global batch, and rank 0
writes every file.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lightfer import catalog
from lightfer.errors import StageOutputError
from lightfer.fingerprint import run_fingerprint
from lightfer.io import atomic_path, write_json
from lightfer.knn import NeighbourGraph
from lightfer.labels import CLASSES, NUM_CLASSES
from lightfer.losses import AUNeighbourKL, Regime, build_regime, ldl_au_regime
from lightfer.models import create_model
from lightfer.models.checkpoint import Checkpoint, load_checkpoint
from lightfer.params import ModelTraining, Params
from lightfer.splits import Splits
from lightfer.training.data import FaceDataset, make_loader
from lightfer.training.device_options import resolve_device_options
from lightfer.training.distributed import SINGLE, Distributed
from lightfer.training.loop import ModelInfo, fit
from lightfer.training.neighbours import NeighbourImages, dense_neighbour_table
from lightfer.training.soft_labels import (
    OnlineSoftLabels,
    predict_soft_labels,
    read_soft_labels,
    write_soft_labels,
)

__all__ = [
    "AU_REGIME",
    "cached_soft_labels",
    "dataset_of",
    "device",
    "fit_model",
    "label_with_ldg",
    "load_trained",
    "params_values",
    "predict_distributions",
    "train_efficientface",
    "train_ldg",
    "train_model",
]

logger = logging.getLogger(__name__)

# The regime with the AU-neighbour term: a stage of its own (train-ef-au), not a value of
# `train.regimes`, since it depends on the neighbour graph and the `au_loss` params.
AU_REGIME = "ldl_au"
# The params every training run reads through its splits and inputs.
_SPLIT_KEYS = ("base.seed", "train.val_fraction", "align.crop_size")


def params_values(params: Params, *keys: str) -> dict[str, Any]:
    """The values of dotted params keys (`"train.ef"`, `"align.crop_size"`), as JSON."""
    raw = params.model_dump(mode="json")
    values = {}
    for key in keys:
        node: Any = raw
        for part in key.split("."):
            node = node[part]
        values[key] = node
    return values


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
        splits.crops,
        rows,
        splits.labels,
        mean=splits.mean,
        std=splits.std,
        image_size=image_size,
        **kwargs,
    )


def fit_model(
    *,
    run_dir: Path,
    dataset: str,
    model_cfg: ModelTraining,
    regime: Regime,
    seed: int,
    splits: Splits,
    image_size: int,
    soft: np.ndarray | None,
    temperature: float = 1.0,
    teacher: torch.nn.Module | None = None,
    neighbours: torch.Tensor | None = None,
    distributed: Distributed = SINGLE,
) -> dict[str, Any]:
    """Train one model on `splits.train` in `run_dir` (resuming what is there).

    `run_dir/best.pt` is the model of the epoch chosen on validation. With a `teacher`
    (an LDG), training batches get their soft labels from it online, at `temperature`;
    with `neighbours` (`(N, K)` cache rows), they carry their neighbours' images (the AU
    term's `batch` source). `distributed` is this process's rank when several train
    together (its process group started).
    """
    config = model_cfg.train.model_copy(update={"seed": seed})
    options = resolve_device_options(config, device(), distributed=distributed.enabled)
    torch.manual_seed(seed)
    model = create_model(model_cfg.arch, pretrained=model_cfg.pretrained, classes=CLASSES)
    on_device = options.augment_on_device
    train_set = dataset_of(
        splits, splits.train, image_size, soft=soft, augment=config.augment, on_device=on_device
    )
    train_loader: Any = make_loader(
        train_set,
        batch_size=config.batch_size,
        train=True,
        seed=config.seed,
        balanced=config.balanced,
        num_workers=config.num_workers,
        pin_memory=options.pin_memory,
        rank=distributed.rank,
        world_size=distributed.world_size,
    )
    if teacher is not None:
        train_loader = OnlineSoftLabels(train_loader, teacher, device(), temperature=temperature)
    if neighbours is not None:
        plain = dataset_of(splits, splits.train, image_size)
        train_loader = NeighbourImages(train_loader, plain, neighbours)
    loaders: dict[str, Any] = {"val_loader": None, "test_loader": None}
    for split, rows in (("val", splits.val), ("test", splits.test)):
        if len(rows):
            evaluation = dataset_of(splits, rows, image_size, soft=soft, on_device=on_device)
            loaders[f"{split}_loader"] = make_loader(
                evaluation,
                batch_size=config.batch_size,
                train=False,
                pin_memory=options.pin_memory,
            )
    info = ModelInfo(
        arch=model_cfg.arch,
        classes=CLASSES,
        image_size=image_size,
        mean=splits.mean,
        std=splits.std,
        dataset=dataset,
    )
    return fit(
        model,
        regime,
        train_loader=train_loader,
        config=config,
        info=info,
        out_dir=run_dir,
        device=device(),
        distributed=distributed,
        **loaders,
    )


def train_model(
    root: Path,
    *,
    stage_run: str,
    settings: Mapping[str, Any],
    inputs: Sequence[Path],
    model_path: Path,
    logs: tuple[Path, Path],
    **fit_args: Any,
) -> dict[str, Any]:
    """Train one model resumably (see `fit_model`); write `model_path` and its logs.

    Args:
        root: the project root (`.runs/` lives there).
        stage_run: the stage run's name, e.g. `train-ef@synthetic-sll-0`.
        settings: the params values the run uses (its fingerprint's settings).
        inputs: the files it reads (its fingerprint's inputs).
        model_path: where the selected checkpoint goes.
        logs: where the per-epoch history (CSV) and the summary (JSON) go.
        **fit_args: `fit_model`'s arguments, but `run_dir` and `distributed`.

    Under `torchrun` the processes train together and rank 0 writes the outputs.
    """
    fingerprint = run_fingerprint({"stage_run": stage_run, **settings}, inputs)
    run_dir = catalog.run_state_dir(root, stage_run, fingerprint)
    distributed = Distributed.from_environment()
    started = distributed.start(device())
    try:
        summary = fit_model(run_dir=run_dir, distributed=distributed, **fit_args)
    finally:
        if started:
            distributed.stop()
    if not distributed.is_main:
        return summary
    history, metrics = logs
    with atomic_path(model_path) as tmp:
        shutil.copyfile(run_dir / "best.pt", tmp)
    with atomic_path(history) as tmp:
        shutil.copyfile(run_dir / "metrics.csv", tmp)
    write_json(metrics, summary)
    shutil.rmtree(run_dir.parent)
    return summary


def _split_inputs(root: Path, dataset: str) -> list[Path]:
    return [catalog.faces_dir(root, dataset), catalog.manifest_path(root, dataset)]


def train_ldg(params: Params, root: Path, *, dataset: str, splits: Splits) -> dict[str, Any]:
    """Train the dataset's LDG on hard labels; write `ldg.pt` and its logs."""
    return train_model(
        root,
        stage_run=catalog.stage_run_name("train-ldg", dataset),
        settings=params_values(params, *_SPLIT_KEYS, "train.ldg"),
        inputs=_split_inputs(root, dataset),
        model_path=catalog.ldg_path(root, dataset),
        logs=catalog.training_log_paths(root, dataset, catalog.LDG_RUN),
        dataset=dataset,
        model_cfg=params.train.ldg,
        regime=build_regime("sll"),
        seed=params.base.seed,
        splits=splits,
        image_size=params.align.crop_size,
        soft=None,
    )


def cached_soft_labels(root: Path, dataset: str, splits: Splits) -> np.ndarray:
    """The dataset's stored soft labels in face-cache order (every usable face covered)."""
    return read_soft_labels(
        catalog.soft_labels_path(root, dataset),
        ldg=catalog.ldg_path(root, dataset),
        sample_ids=splits.sample_ids,
        cache=splits.cache,
        required=splits.usable,
    )


def train_efficientface(
    params: Params,
    root: Path,
    *,
    stage_run: str,
    dataset: str,
    regime: str,
    seed: int,
    splits: Splits,
    model_path: Path,
    logs: tuple[Path, Path],
    graph: NeighbourGraph | None = None,
    settings: Mapping[str, Any] | None = None,
    inputs: Sequence[Path] = (),
) -> dict[str, Any]:
    """Train one EfficientFace in `regime` (sll, ldl, or ldl_au over `graph`).

    Soft labels come from the stored LDG labels, or (`soft_labels.mode: online`) from the
    LDG scoring every batch. `settings` and `inputs` add what the caller's run also
    depends on (a graph file, the study's noise) to the run's fingerprint.
    """
    keys = [*_SPLIT_KEYS, "train.ef"]
    run_inputs = [*_split_inputs(root, dataset), *inputs]
    fit_args: dict[str, Any] = {"soft": None}
    if regime == AU_REGIME:
        if graph is None:
            raise StageOutputError(f"{stage_run}: the {AU_REGIME} regime needs a neighbour graph")
        keys.append("au_loss")
        loss = _au_regime(params, root, dataset, splits, graph, fit_args)
    else:
        loss = build_regime(regime)
    if "soft" in loss.requires:
        keys.append("soft_labels")
        run_inputs += [catalog.soft_labels_path(root, dataset), catalog.ldg_path(root, dataset)]
        if params.soft_labels.mode == "online":
            fit_args["teacher"] = load_trained(catalog.ldg_path(root, dataset))[0]
        else:
            fit_args["soft"] = cached_soft_labels(root, dataset, splits)
    return train_model(
        root,
        stage_run=stage_run,
        settings={**params_values(params, *keys), "regime": regime, **(settings or {})},
        inputs=run_inputs,
        model_path=model_path,
        logs=logs,
        dataset=dataset,
        model_cfg=params.train.ef,
        regime=loss,
        seed=seed,
        splits=splits,
        image_size=params.align.crop_size,
        temperature=params.soft_labels.temperature,
        **fit_args,
    )


def _au_regime(
    params: Params,
    root: Path,
    dataset: str,
    splits: Splits,
    graph: NeighbourGraph,
    fit_args: dict[str, Any],
) -> Regime:
    """The ldl_au loss over `graph`; sets the neighbour images `fit_args` needs."""
    neighbours, weights = dense_neighbour_table(
        len(splits.crops), graph.rows, graph.indices, graph.weights
    )
    source = params.au_loss.source
    init = None
    if source != "batch":  # the bank starts from, and `ldg` is, the cached LDG soft labels
        init = torch.from_numpy(cached_soft_labels(root, dataset, splits))
    else:
        fit_args["neighbours"] = neighbours
    term = AUNeighbourKL(neighbours, weights, source=source, init=init)
    return ldl_au_regime(params.au_loss.weight, term)


def predict_distributions(
    model: torch.nn.Module,
    splits: Splits,
    rows: np.ndarray,
    image_size: int,
    temperature: float = 1.0,
) -> np.ndarray:
    """`model`'s softmax at `temperature` for `rows`, in an `(N, C)` array by cache row
    (the other rows are not written)."""
    on_gpu = device().type == "cuda"  # uint8 batches, normalised on the GPU: the same values
    rows_set = dataset_of(splits, rows, image_size, on_device=on_gpu)
    loader = make_loader(rows_set, batch_size=256, train=False, pin_memory=on_gpu)
    return predict_soft_labels(
        model, loader, device(), num_rows=len(splits.crops), temperature=temperature
    )


def _cross_fit(params: Params, root: Path, dataset: str, splits: Splits) -> np.ndarray:
    """Soft labels of the training rows, each from an LDG trained without its fold.

    An LDG scores the images it was trained on over-confidently, pulling their soft labels
    toward the (noisy) one-hot labels; cross-fitting gives every training image a soft
    label from a model that never saw it. The folds' LDGs train like `train.ldg` and select
    their epoch on the same validation split; their state resumes from `.runs/`.
    """
    folds = params.soft_labels.folds
    settings = params_values(params, *_SPLIT_KEYS, "train.ldg", "soft_labels")
    inputs = [*_split_inputs(root, dataset), catalog.ldg_path(root, dataset)]
    stage_run = catalog.stage_run_name("soft-labels", dataset)
    run_dir = catalog.run_state_dir(root, stage_run, run_fingerprint(settings, inputs))
    order = np.random.default_rng(params.base.seed).permutation(splits.train)
    soft = np.full((len(splits.crops), NUM_CLASSES), np.nan, dtype=np.float32)
    for fold, held in enumerate(np.array_split(order, folds)):
        summary = fit_model(
            run_dir=run_dir / f"fold{fold}",
            dataset=dataset,
            model_cfg=params.train.ldg,
            regime=build_regime("sll"),
            seed=params.base.seed,
            splits=replace(splits, train=np.setdiff1d(splits.train, held)),
            image_size=params.align.crop_size,
            soft=None,
        )
        logger.info("fold %d of %d: LDG val accuracy %s", fold + 1, folds, summary["val_accuracy"])
        model, _ = load_trained(run_dir / f"fold{fold}" / "best.pt")
        predicted = predict_distributions(
            model, splits, np.sort(held), params.align.crop_size, params.soft_labels.temperature
        )
        soft[held] = predicted[held]
    shutil.rmtree(run_dir.parent)
    return soft


def label_with_ldg(params: Params, root: Path, *, dataset: str, splits: Splits) -> dict[str, Any]:
    """Label every usable face with the dataset's LDG; store them and report confidence.

    With `soft_labels.folds` > 1 the training rows are labelled by cross-fitted LDGs and
    the validation and test rows by the dataset's LDG; with 1 (the paper's way) the
    dataset's LDG labels every row. Writes the soft-label store; returns the summary.
    """
    ldg = catalog.ldg_path(root, dataset)
    model, checkpoint = load_trained(ldg)
    held_out = np.concatenate([splits.val, splits.test])
    image_size = checkpoint.image_size or params.align.crop_size
    temperature = params.soft_labels.temperature
    if params.soft_labels.folds > 1:
        soft = predict_distributions(model, splits, held_out, image_size, temperature)
        soft[splits.train] = _cross_fit(params, root, dataset, splits)[splits.train]
    else:
        every = np.concatenate([splits.train, held_out])
        soft = predict_distributions(model, splits, every, image_size, temperature)
    rows = np.sort(np.concatenate([splits.train, held_out]))
    write_soft_labels(
        catalog.soft_labels_path(root, dataset), soft, splits.sample_ids, rows=rows, ldg=ldg
    )
    top = soft.max(axis=1)
    return {
        "rows": len(rows),
        "folds": params.soft_labels.folds,
        "temperature": temperature,
        "mean_top_probability_train": float(np.mean(top[splits.train])),
        "mean_top_probability_held_out": float(np.mean(top[held_out])) if len(held_out) else None,
    }
