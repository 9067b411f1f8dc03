"""The training loop: one epoch, evaluation, and `fit` with per-epoch checkpoints and resume.

Structure after torchvision's `references/classification/train.py`: `train_one_epoch` and
`evaluate` are plain functions of a model, a loader and a device; `fit` adds the epochs,
the learning-rate schedule, early stopping, selection and checkpoints.

Files `fit` writes in its output directory (every one atomically, every epoch):

- `last.pt` (`STATE_FILE`): the whole training state after the last completed epoch, the
  commit point of resume (layout in `save_training_state`);
- `best.pt` (`BEST_FILE`): the selected model (best validation accuracy so far) as a
  project checkpoint (`lightfer.models.checkpoint.save_checkpoint`), without optimiser state;
- `metrics.csv` (`HISTORY_FILE`): one row per completed epoch, for `dvc plots`.

Exact resume: the epoch order and augmentation depend only on `(seed, epoch)` (see
`lightfer.training.data`), the global torch seed is reset from `(seed, epoch)` before each
epoch, and `last.pt` holds the model, optimiser, scheduler, AMP scaler, early-stopping state
and metric history. A run killed at any point and started again with `resume=True` repeats
the unfinished epoch and ends with the weights and metrics of an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import pickle
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler, OneCycleLR, ReduceLROnPlateau, StepLR
from tqdm import tqdm

from lightfer.errors import CheckpointError
from lightfer.io import atomic_path
from lightfer.losses import Regime
from lightfer.models.checkpoint import save_checkpoint
from lightfer.seeds import derive_seed
from lightfer.training.config import TrainConfig
from lightfer.training.data import Batch
from lightfer.training.device_options import (
    FULL_PRECISION,
    DeviceOptions,
    resolve_device_options,
)
from lightfer.training.distributed import SINGLE, Distributed

__all__ = [
    "BEST_FILE",
    "HISTORY_FILE",
    "STATE_FILE",
    "EarlyStopping",
    "ModelInfo",
    "Schedule",
    "TrainConfig",
    "build_optimizer",
    "build_schedule",
    "evaluate",
    "fit",
    "forward_batch",
    "load_training_state",
    "select_epoch",
    "train_one_epoch",
]

logger = logging.getLogger(__name__)

STATE_FILE = "last.pt"
BEST_FILE = "best.pt"
HISTORY_FILE = "metrics.csv"
STATE_FORMAT = "lightfer.training_state"
STATE_VERSION = 1
# Config fields that do not change what is computed, so a run may resume with other values.
_RESUMABLE_CHANGES = frozenset({"num_workers", "pin_memory"})
_REFRESH_EVERY = 10  # batches between progress-bar updates (each costs a device sync)


@dataclass(frozen=True)
class ModelInfo:
    """What `best.pt` records besides the weights (see `save_checkpoint`)."""

    arch: str
    classes: Sequence[str]
    image_size: int
    mean: Sequence[float]
    std: Sequence[float]
    dataset: str | None = None


@dataclass(frozen=True)
class Schedule:
    """A learning-rate scheduler and when `fit` steps it.

    Attributes:
        scheduler: the scheduler, None for a constant learning rate.
        per_batch: stepped after every optimiser step (1-cycle), else once per epoch.
        on_metric: stepped with the epoch's validation accuracy (`ReduceLROnPlateau`).
    """

    scheduler: LRScheduler | None
    per_batch: bool = False
    on_metric: bool = False

    def step_epoch(self, val_accuracy: float | None) -> None:
        """Step an epoch-level scheduler at the end of an epoch."""
        if self.scheduler is None or self.per_batch:
            return
        if self.on_metric:
            self.scheduler.step(val_accuracy)
        else:
            self.scheduler.step()


def build_optimizer(model: nn.Module, config: TrainConfig) -> Optimizer:
    """The optimiser `config.optimizer` over the model's parameters.

    Adam and SGD use PyTorch's fused kernels (one kernel for every parameter on the CPU as
    on a GPU): EfficientFace has about 400 small tensors, and the per-tensor loop cost a
    quarter of each 48-pixel training step here (14 ms of 119 ms; fused: 4 ms). RAdam has
    no fused kernel and uses the multi-tensor (foreach) one.
    """
    params = model.parameters()
    if config.optimizer == "sgd":
        return torch.optim.SGD(
            params,
            lr=config.lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
            fused=True,
        )
    fast = {"foreach": True} if config.optimizer == "radam" else {"fused": True}
    kind = torch.optim.RAdam if config.optimizer == "radam" else torch.optim.Adam
    return kind(
        params,
        lr=config.lr,
        betas=(config.beta1, config.beta2),
        eps=config.eps,
        weight_decay=config.weight_decay,
        **fast,
    )


def build_schedule(optimizer: Optimizer, config: TrainConfig, steps_per_epoch: int) -> Schedule:
    """The learning-rate schedule `config.schedule` for `steps_per_epoch` batches an epoch."""
    if config.schedule == "onecycle":
        total = config.epochs * max(steps_per_epoch, 1)
        return Schedule(OneCycleLR(optimizer, max_lr=config.lr, total_steps=total), per_batch=True)
    if config.schedule == "plateau":
        plateau = ReduceLROnPlateau(
            optimizer, mode="max", factor=config.plateau_factor, patience=config.plateau_patience
        )
        return Schedule(plateau, on_metric=True)
    if config.schedule == "step":
        return Schedule(StepLR(optimizer, step_size=config.step_every, gamma=config.step_gamma))
    return Schedule(None)


@dataclass
class EarlyStopping:
    """Stop when the validation accuracy has not improved for `patience` epochs.

    Attributes:
        patience: epochs without improvement tolerated (0: never stop).
        min_delta: gain over the best value that counts as an improvement.
        best: best value seen.
        bad_epochs: consecutive epochs without improvement.
    """

    patience: int
    min_delta: float = 0.0
    best: float = -math.inf
    bad_epochs: int = 0

    def step(self, value: float) -> None:
        """Record one epoch's validation accuracy."""
        if value > self.best + self.min_delta:
            self.best, self.bad_epochs = value, 0
        else:
            self.bad_epochs += 1

    @property
    def should_stop(self) -> bool:
        """Whether training should stop now."""
        return self.patience > 0 and self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, float | int]:
        """The counters, for the training state."""
        return {"best": self.best, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the counters written by `state_dict`."""
        self.best, self.bad_epochs = float(state["best"]), int(state["bad_epochs"])


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a (Distributed)DataParallel wrapper, else `model`."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, nn.Module) else model


def forward_batch(model: nn.Module, batch: Batch) -> tuple[Tensor, Batch]:
    """The model's logits on a training batch, and the batch with its neighbours' logits.

    Under the AU term's `batch` source the batch carries its neighbours' images. Their
    predictions `f(x_j)` are detached targets, so they go forward without gradient (no
    backward through K images per sample), first and apart, so the batch's BatchNorm
    statistics are its own as under every other regime.
    """
    if batch.neighbour_images is not None:
        with torch.no_grad():
            batch = batch._replace(neighbour_logits=model(batch.neighbour_images))
    return model(batch.images), batch


def train_one_epoch(
    model: nn.Module,
    regime: Regime,
    optimizer: Optimizer,
    loader: Iterable[Batch],
    device: torch.device,
    *,
    epoch: int,
    scheduler: LRScheduler | None = None,
    scaler: torch.amp.GradScaler | None = None,
    options: DeviceOptions = FULL_PRECISION,
    max_steps: int = 0,
    grad_clip_norm: float = 0.0,
    progress: bool = True,
    distributed: Distributed = SINGLE,
) -> dict[str, float]:
    """Train `model` for one pass over `loader`, with exactly one optimiser step per batch.

    `options` decide the memory format of the batches and the autocast dtype (see
    `lightfer.training.device_options`); one code path serves every choice, on any device:
    a disabled scaler passes the loss and the step through unchanged.

    Args:
        model: the model (in any mode; it is set to training mode).
        regime: the loss.
        optimizer: the optimiser.
        loader: yields `Batch`es.
        device: where to compute.
        epoch: the epoch number, for the progress bar.
        scheduler: stepped after every optimiser step (a per-batch schedule such as
            1-cycle); epoch-level schedulers are stepped by the caller.
        scaler: the gradient scaler (`options.grad_scaler`); None: no loss scaling.
        options: channels-last batches and autocast (the model must already be prepared
            with the same options).
        max_steps: stop after this many batches (0: the whole loader).
        grad_clip_norm: clip the gradient norm to this value (0: off).
        progress: show a tqdm bar on stderr with loss, accuracy and images/s.
        distributed: this process's rank; the returned figures cover every rank's samples
            (the progress bar shows rank 0's).

    Returns:
        Mean `loss`, each regime term's mean (`loss_<term>`), `accuracy` against the hard
        labels, `lr` at the start of the epoch, `images_per_s` and `batches`.
    """
    model.train()
    scaler = scaler if scaler is not None else torch.amp.GradScaler(device.type, enabled=False)
    lr = float(optimizer.param_groups[0]["lr"])
    sums: dict[str, Tensor] = {}
    correct = torch.zeros((), dtype=torch.int64, device=device)
    seen = batches = 0
    start = time.perf_counter()
    bar = tqdm(loader, desc=f"train {epoch}", file=sys.stderr, leave=False, disable=not progress)
    for batch in bar:
        if max_steps and batches == max_steps:
            break
        batch = batch.to(device, channels_last=options.channels_last)
        with options.autocast(device):
            logits, batch = forward_batch(model, batch)
            parts = regime.parts(logits, batch)
            loss = torch.stack(list(parts.values())).sum()
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if grad_clip_norm > 0:
            scaler.unscale_(optimizer)
            nn.utils.clip_grad_norm_(model.parameters(), grad_clip_norm)
        scaler.step(optimizer)
        scaler.update()
        if scheduler is not None:
            scheduler.step()
        n = len(batch.labels)
        for name, value in {"loss": loss, **{f"loss_{k}": v for k, v in parts.items()}}.items():
            sums[name] = sums.get(name, 0.0) + value.detach().float() * n
        correct += (logits.argmax(1) == batch.labels).sum()
        seen += n
        batches += 1
        if progress and batches % _REFRESH_EVERY == 0:
            rate = seen / (time.perf_counter() - start)
            bar.set_postfix(
                loss=f"{sums['loss'].item() / seen:.4f}",
                acc=f"{correct.item() / seen:.3f}",
                img_s=f"{rate:.0f}",
            )
    elapsed = time.perf_counter() - start
    if seen == 0:
        raise ValueError(f"the training loader yielded no batch in epoch {epoch}")
    # One all-reduce of every sum (exact in float64) gives all ranks the same epoch figures.
    counts = torch.tensor([seen], dtype=torch.float64, device=device)
    totals = [value.double().reshape(1) for value in (*sums.values(), correct)]
    *term_sums, correct_total, seen_total = distributed.sum(torch.cat([*totals, counts])).tolist()
    seen = int(seen_total)
    metrics = {name: total / seen for name, total in zip(sums, term_sums, strict=True)}
    metrics.update(
        accuracy=int(correct_total) / seen, lr=lr, images_per_s=seen / elapsed, batches=batches
    )
    return metrics


def evaluate(
    model: nn.Module,
    loader: Iterable[Batch],
    device: torch.device,
    *,
    temperature: float = 1.0,
    options: DeviceOptions | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Predict every batch of `loader` in eval mode, without gradients.

    Args:
        model: the model (it is set to eval mode).
        loader: yields `Batch`es (unaugmented, each sample once).
        device: where to compute.
        options: memory format and autocast of the batches; None: full precision in
            channels-last memory (training's default, faster on the CPU too).
        temperature: `probs` is `softmax(logits / temperature)` (the loss and accuracy use
            the logits as they are).
        progress: show a tqdm bar on stderr.

    Returns:
        `probs` (N, C) float32 softmax outputs, `labels` and `rows` (N,) int64, and the
        mean hard-label cross-entropy `loss` and top-1 `accuracy` as floats.
    """
    model.eval()
    if options is None:
        options = DeviceOptions(channels_last=True)
    probs, labels, rows, losses = [], [], [], []
    with torch.inference_mode():
        for batch in tqdm(loader, desc="eval", file=sys.stderr, leave=False, disable=not progress):
            batch = batch.to(device, channels_last=options.channels_last)
            with options.autocast(device):
                logits = model(batch.images).float()
            losses.append(F.cross_entropy(logits, batch.labels, reduction="sum"))
            probs.append(torch.softmax(logits / temperature, 1).cpu())
            labels.append(batch.labels.cpu())
            rows.append(batch.rows.cpu())
    if not probs:
        raise ValueError("the evaluation loader yielded no batch")
    out_probs = torch.cat(probs).numpy()
    out_labels = torch.cat(labels).numpy()
    return {
        "probs": out_probs,
        "labels": out_labels,
        "rows": torch.cat(rows).numpy(),
        "loss": float(torch.stack(losses).sum().item()) / len(out_labels),
        "accuracy": float(np.mean(out_probs.argmax(1) == out_labels)),
    }


def select_epoch(history: Sequence[dict[str, Any]]) -> int:
    """The epoch to keep: the first with the best `val_accuracy`, else the last epoch."""
    if not history:
        raise ValueError("no epoch has completed yet")
    if "val_accuracy" not in history[0]:
        return int(history[-1]["epoch"])
    best = max(history, key=lambda row: row["val_accuracy"])  # max keeps the first maximum
    return int(best["epoch"])


def _summary(history: Sequence[dict[str, Any]], stopped_early: bool) -> dict[str, Any]:
    selected = select_epoch(history)
    row = history[selected - int(history[0]["epoch"])]
    summary: dict[str, Any] = {
        "selected_epoch": selected,
        "selected_by": "val_accuracy" if "val_accuracy" in row else "last_epoch",
        "epochs_completed": int(history[-1]["epoch"]),
        "stopped_early": stopped_early,
    }
    for key in ("val_accuracy", "val_loss", "test_accuracy", "test_loss"):
        if key in row:
            summary[key] = row[key]
    if "test_accuracy" in row:
        best_test = max(history, key=lambda r: r["test_accuracy"])
        # Selected on the test set itself, as upstream's logs do: comparable, not a result.
        summary["comparability_only_best_test_accuracy"] = best_test["test_accuracy"]
        summary["comparability_only_best_test_epoch"] = int(best_test["epoch"])
    return summary


def _write_history(path: Path, history: Sequence[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(key for row in history for key in row))
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in history:
        writer.writerow({k: repr(v) if isinstance(v, float) else v for k, v in row.items()})
    with atomic_path(path) as tmp:
        tmp.write_text(buffer.getvalue())


@dataclass
class _State:
    """What `last.pt` holds besides the modules' own state."""

    epoch: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)
    stopped_early: bool = False


def save_training_state(
    path: Path,
    *,
    model: nn.Module,
    optimizer: Optimizer,
    schedule: Schedule,
    scaler: torch.amp.GradScaler,
    early_stopping: EarlyStopping,
    state: _State,
    config: TrainConfig,
    info: ModelInfo,
    regime: Regime,
) -> None:
    """Write `last.pt` atomically: everything `fit` needs to continue after `state.epoch`.

    Layout (all `torch.load(weights_only=True)`-safe): `format` ("lightfer.training_state"),
    `version`, `epoch` (last completed, 1-based), `config` (TrainConfig as a dict), `info`
    (ModelInfo as a dict), `model` (state_dict of the unwrapped model), `optimizer`,
    `lr_scheduler` (None for a constant rate), `scaler` (None when AMP is off),
    `early_stopping`, `history` (the metric rows so far), `stopped_early` and `regime` (the
    loss terms' own state, e.g. the AU term's memory bank).
    """
    payload = {
        "format": STATE_FORMAT,
        "version": STATE_VERSION,
        "epoch": state.epoch,
        "config": config.model_dump(mode="json"),
        "info": asdict(info),
        "model": _unwrap(model).state_dict(),
        "optimizer": optimizer.state_dict(),
        "lr_scheduler": None if schedule.scheduler is None else schedule.scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "early_stopping": early_stopping.state_dict(),
        "history": state.history,
        "stopped_early": state.stopped_early,
        "regime": regime.state_dict(),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_training_state(path: Path) -> dict[str, Any]:
    """Read a `last.pt` written by `fit` (on the CPU).

    Raises:
        CheckpointError: the file is unreadable or not a lightfer training state.
    """
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, ValueError, OSError, pickle.UnpicklingError) as err:
        raise CheckpointError(
            f"training state {path} is unreadable ({type(err).__name__}: {err}); delete it to "
            f"start the run afresh, or pass resume=False"
        ) from err
    if not isinstance(raw, dict) or raw.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a lightfer training state; move it out of the way")
    if raw.get("version") != STATE_VERSION:
        raise CheckpointError(
            f"training state {path} has version {raw.get('version')!r}, this lightfer reads "
            f"{STATE_VERSION}; finish the run with the lightfer that started it or start afresh"
        )
    return raw


def _check_same_config(path: Path, saved: dict[str, Any], config: TrainConfig) -> None:
    current = config.model_dump(mode="json")
    changed = sorted(
        key
        for key in current.keys() | saved.keys()
        if key not in _RESUMABLE_CHANGES and current.get(key) != saved.get(key)
    )
    if changed:
        detail = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise CheckpointError(
            f"cannot resume from {path}: the training config changed ({detail}); restore the "
            f"old values, or delete {path.parent} (or pass resume=False) to start afresh"
        )


def fit(
    model: nn.Module,
    regime: Regime,
    *,
    train_loader: Any,
    val_loader: Iterable[Batch] | None,
    test_loader: Iterable[Batch] | None = None,
    config: TrainConfig,
    info: ModelInfo,
    out_dir: Path,
    device: torch.device,
    resume: bool = True,
    progress: bool = True,
    distributed: Distributed = SINGLE,
) -> dict[str, Any]:
    """Train for `config.epochs` epochs, checkpointing every epoch; resume if a state exists.

    Each epoch: reset the torch seed from `(config.seed, epoch)`, `set_epoch` the training
    sampler, train, evaluate on validation (and test), step the schedule, then write
    `best.pt` if this epoch is the new selection, `metrics.csv`, and finally `last.pt`.
    Training stops early when `config.early_stopping_patience` epochs pass without a
    validation gain. The model is selected by validation accuracy; its test accuracy is the
    reported one. The best test accuracy over epochs is returned under `comparability_only_`
    keys: it is chosen on the test set (as upstream's logs are) and is not a fair result.

    Args:
        model: the model to train, on the CPU or already on `device`.
        regime: the loss.
        train_loader: from `make_loader(..., train=True)`; its `sampler` has `set_epoch`.
        val_loader: validation batches; None selects the last epoch (with a warning).
        test_loader: test batches, evaluated every epoch, or None.
        config: the training settings (`config.seed` must equal the loader's seed).
        info: recorded in `best.pt`.
        out_dir: where `last.pt`, `best.pt` and `metrics.csv` go (created if missing).
        device: where to train.
        resume: continue from `out_dir/last.pt` if it exists; else start afresh.
        progress: show tqdm bars on stderr (rank 0 only).
        distributed: this process's rank when several train together (see
            `lightfer.training.distributed`): the model is wrapped in DDP, `train_loader`
            must be built with the same rank and world size, every rank evaluates the
            whole validation and test sets (so all take the same decisions without
            communicating), and only rank 0 writes files. The process group must be started.

    Returns:
        The summary: `selected_epoch`, `selected_by`, `epochs_completed`, `stopped_early`,
        `val_accuracy`/`val_loss` and `test_accuracy`/`test_loss` at the selected epoch,
        `comparability_only_best_test_accuracy`/`_epoch`, and `device`: where and how it
        trained (the resolved device options, e.g. "cuda, amp bfloat16, channels-last on").

    Raises:
        CheckpointError: `last.pt` is unreadable or was written with another config.
        ValueError: the plateau schedule is asked for without a validation loader, or the
            training loader's seed differs from `config.seed`.
    """
    if config.schedule == "plateau" and val_loader is None:
        raise ValueError("schedule 'plateau' steps on validation accuracy; give a val_loader")
    loader_seed = getattr(train_loader.sampler, "seed", config.seed)
    if loader_seed != config.seed:
        raise ValueError(
            f"the training loader is seeded with {loader_seed} but config.seed is "
            f"{config.seed}; build it with make_loader(..., seed=config.seed)"
        )
    loader_ranks = getattr(train_loader.sampler, "world_size", 1)
    if loader_ranks != distributed.world_size:
        raise ValueError(
            f"the training loader is split over {loader_ranks} ranks but training runs on "
            f"{distributed.world_size}; build it with make_loader(..., rank=, world_size=)"
        )
    progress = progress and distributed.is_main
    if val_loader is None:
        logger.warning("no validation split: the last epoch is kept, not the best one")
    out_dir.mkdir(parents=True, exist_ok=True)
    state_path = out_dir / STATE_FILE
    options = resolve_device_options(config, device, distributed=distributed.enabled)
    model = options.prepare(model, device)
    optimizer = build_optimizer(model, config)
    steps = len(train_loader)
    if config.max_steps_per_epoch:
        steps = min(steps, config.max_steps_per_epoch)
    schedule = build_schedule(optimizer, config, steps)
    scaler = torch.amp.GradScaler(device.type, enabled=options.grad_scaler)
    regime.share_updates(distributed.gather)
    stopping = EarlyStopping(config.early_stopping_patience, config.early_stopping_min_delta)
    state = _State()
    if resume and state_path.exists():
        saved = load_training_state(state_path)
        _check_same_config(state_path, saved["config"], config)
        _unwrap(model).load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        if schedule.scheduler is not None:
            schedule.scheduler.load_state_dict(saved["lr_scheduler"])
        if saved["scaler"] is not None:
            scaler.load_state_dict(saved["scaler"])
        stopping.load_state_dict(saved["early_stopping"])
        regime.load_state_dict(saved.get("regime", {}))
        state = _State(saved["epoch"], list(saved["history"]), bool(saved["stopped_early"]))
        logger.info("resuming %s after epoch %d", state_path, state.epoch)
    elif state_path.exists():
        logger.warning("not resuming: %s will be overwritten", state_path)
    model = distributed.wrap(model, device)
    per_batch = schedule.scheduler if schedule.per_batch else None
    while state.epoch < config.epochs and not state.stopped_early:
        epoch = state.epoch + 1
        torch.manual_seed(derive_seed(config.seed, epoch, 0x5EED))
        train_loader.sampler.set_epoch(epoch)
        train = train_one_epoch(
            model,
            regime,
            optimizer,
            train_loader,
            device,
            epoch=epoch,
            scheduler=per_batch,
            scaler=scaler,
            options=options,
            max_steps=config.max_steps_per_epoch,
            grad_clip_norm=config.grad_clip_norm,
            progress=progress,
            distributed=distributed,
        )
        row: dict[str, Any] = {"epoch": epoch, "lr": train.pop("lr")}
        speed, _ = train.pop("images_per_s"), train.pop("batches")
        row.update({f"train_{k}": v for k, v in train.items()})
        for split, loader in (("val", val_loader), ("test", test_loader)):
            if loader is not None:
                result = evaluate(
                    _unwrap(model), loader, device, options=options, progress=progress
                )
                row.update(
                    {f"{split}_loss": result["loss"], f"{split}_accuracy": result["accuracy"]}
                )
        schedule.step_epoch(row.get("val_accuracy"))
        if "val_accuracy" in row:
            stopping.step(row["val_accuracy"])
        state = _State(epoch, [*state.history, row], stopping.should_stop)
        if distributed.is_main:
            _save_epoch(
                out_dir,
                model=model,
                state=state,
                info=info,
                speed=speed,
                optimizer=optimizer,
                schedule=schedule,
                scaler=scaler,
                early_stopping=stopping,
                config=config,
                regime=regime,
            )
        distributed.barrier()  # no rank runs ahead of the commit point
    if not state.history:
        raise ValueError(f"config.epochs is {config.epochs}: nothing was trained")
    return {**_summary(state.history, state.stopped_early), "device": _describe(device, options)}


def _describe(device: torch.device, options: DeviceOptions) -> str:
    """One line saying where and how a run trained, e.g. `cpu, amp off, channels-last off`."""
    choices = options.describe()
    flags = ", ".join(
        f"{name.replace('_', '-')} {'on' if value else 'off'}"
        for name, value in choices.items()
        if isinstance(value, bool)
    )
    return f"{device.type}, amp {choices['amp']}, {flags}"


def _save_epoch(
    out_dir: Path,
    *,
    model: nn.Module,
    state: _State,
    info: ModelInfo,
    speed: float,
    **training: Any,
) -> None:
    """Log the epoch just ended and write its files: `best.pt` (if selected), `metrics.csv`,
    then `last.pt` (the commit point of resume; `training` is `save_training_state`'s rest)."""
    row, epoch = state.history[-1], state.epoch
    logger.info(
        "epoch %d: train loss %.4f acc %.4f (%.0f img/s), val acc %s, test acc %s",
        epoch,
        row["train_loss"],
        row["train_accuracy"],
        speed,
        row.get("val_accuracy"),
        row.get("test_accuracy"),
    )
    if select_epoch(state.history) == epoch:
        save_checkpoint(
            out_dir / BEST_FILE,
            _unwrap(model),
            arch=info.arch,
            classes=info.classes,
            image_size=info.image_size,
            mean=info.mean,
            std=info.std,
            dataset=info.dataset,
            epoch=epoch,
        )
    _write_history(out_dir / HISTORY_FILE, state.history)
    save_training_state(out_dir / STATE_FILE, model=model, state=state, info=info, **training)
    if state.stopped_early:
        logger.info("early stopping after epoch %d", epoch)
