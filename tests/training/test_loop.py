"""The training loop: one step per batch, evaluation, fit's files, early stopping, resume."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from pydantic import BaseModel, ValidationError

from lightfer.errors import CheckpointError
from lightfer.faces.cache import load_face_cache
from lightfer.labels import CLASSES
from lightfer.losses import build_regime
from lightfer.models import create_model
from lightfer.models.checkpoint import load_checkpoint
from lightfer.splits import usable_rows
from lightfer.training.config import TrainConfig
from lightfer.training.data import FaceDataset, make_loader
from lightfer.training.loop import (
    BEST_FILE,
    HISTORY_FILE,
    STATE_FILE,
    ModelInfo,
    build_optimizer,
    build_schedule,
    evaluate,
    fit,
    load_training_state,
    train_one_epoch,
)
from tests.conftest import PROJECT_ROOT
from tests.training import run_fit
from tests.training.cache import write_face_cache

CPU = torch.device("cpu")
MEAN, STD = (0.3, 0.3, 0.3), (0.2, 0.2, 0.2)
INFO = ModelInfo("resnet18", CLASSES, 32, MEAN, STD, dataset="tiny")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return load_face_cache(write_face_cache(tmp_path_factory.mktemp("cache")))


def _loader(cache, split, *, train, batch_size=8, seed=0):
    crops, table = cache
    labels = table.column("label").to_numpy()
    dataset = FaceDataset(
        crops, usable_rows(table, split), labels, mean=MEAN, std=STD, image_size=32
    )
    return make_loader(dataset, batch_size=batch_size, train=train, seed=seed)


def _model(seed=0):
    torch.manual_seed(seed)
    return create_model("resnet18")


def test_config_forbids_unknown_keys_and_names_no_dvc_ignored_key():
    with pytest.raises(ValidationError, match="extra_forbidden"):
        TrainConfig(epoch=3)
    with pytest.raises(ValidationError, match="optimizer"):
        TrainConfig(optimizer="adamw")

    def names(model: type[BaseModel]):
        for name, info in model.model_fields.items():
            assert info.description, f"{name} has no description"
            yield name
            if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
                yield from names(info.annotation)

    assert not {"size", "nfiles"} & set(names(TrainConfig))


def test_exactly_one_optimizer_step_per_batch_and_loss_falls(cache):
    model, loader = _model(), _loader(cache, "train", train=True)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    steps = []
    optimizer.register_step_post_hook(lambda *_: steps.append(1))
    loader.sampler.set_epoch(1)
    regime = build_regime("sll")
    first = train_one_epoch(model, regime, optimizer, loader, CPU, epoch=1, progress=False)
    assert len(steps) == len(loader) == first["batches"] == 41 // 8
    assert {"loss", "loss_hard_ce", "accuracy", "lr", "images_per_s"} <= set(first)
    batch = next(iter(loader))
    model.train()
    before = regime(model(batch.images), batch).item()
    for _ in range(3):
        optimizer.zero_grad()
        regime(model(batch.images), batch).backward()
        optimizer.step()
    assert regime(model(batch.images), batch).item() < before


def test_evaluate_returns_probabilities_in_eval_mode(cache):
    model, loader = _model(), _loader(cache, "test", train=False, batch_size=5)
    result = evaluate(model, loader, CPU)
    assert not model.training
    assert result["probs"].shape == (14, 7) and np.allclose(result["probs"].sum(1), 1, atol=1e-5)
    assert np.array_equal(result["rows"], usable_rows(cache[1], "test"))
    expected = np.mean(result["probs"].argmax(1) == result["labels"])
    assert result["accuracy"] == pytest.approx(expected)


def _epoch_lrs(config, epochs):
    optimizer = build_optimizer(torch.nn.Linear(2, 2), config)
    schedule = build_schedule(optimizer, config, steps_per_epoch=1)
    lrs = []
    for _ in range(epochs):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step_epoch(0.5)
    return lrs


def test_step_schedule_decays_tenfold_every_k_epochs_and_optimizers_follow_config():
    lrs = _epoch_lrs(TrainConfig(optimizer="sgd", schedule="step", step_every=2), 5)
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5])
    plateau = _epoch_lrs(TrainConfig(schedule="plateau", plateau_patience=1), 4)
    assert plateau[-1] < plateau[0]  # a constant accuracy is a plateau
    sgd = build_optimizer(torch.nn.Linear(2, 2), TrainConfig(optimizer="sgd", weight_decay=1e-4))
    assert isinstance(sgd, torch.optim.SGD)
    assert sgd.defaults["momentum"] == 0.9 and sgd.defaults["weight_decay"] == 1e-4
    radam = build_optimizer(torch.nn.Linear(2, 2), TrainConfig())
    assert isinstance(radam, torch.optim.RAdam) and radam.defaults["betas"] == (0.9, 0.999)


def _fit(cache, out_dir, config, *, resume=True, val=True):
    return fit(
        _model(),
        build_regime("sll"),
        train_loader=_loader(cache, "train", train=True, seed=config.seed),
        val_loader=_loader(cache, "test", train=False) if val else None,
        test_loader=_loader(cache, "test", train=False),
        config=config,
        info=INFO,
        out_dir=out_dir,
        device=CPU,
        resume=resume,
        progress=False,
    )


def test_fit_writes_checkpoints_metrics_and_a_summary(cache, tmp_path):
    config = TrainConfig(epochs=2, batch_size=8, schedule="step", num_workers=0)
    summary = _fit(cache, tmp_path, config)
    assert set(summary) == {
        "selected_epoch",
        "selected_by",
        "epochs_completed",
        "stopped_early",
        "val_accuracy",
        "val_loss",
        "test_accuracy",
        "test_loss",
        "comparability_only_best_test_accuracy",
        "comparability_only_best_test_epoch",
        "device",
    }
    assert summary["selected_by"] == "val_accuracy" and summary["epochs_completed"] == 2
    assert summary["device"] == (
        "cpu, amp off, grad-scaler off, channels-last on, sync-batchnorm off, pin-memory off, "
        "augment-on-device off"
    )
    with open(tmp_path / HISTORY_FILE) as handle:
        rows = list(csv.DictReader(handle))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert {"lr", "train_loss", "train_accuracy", "val_accuracy", "test_accuracy"} <= set(rows[0])
    best = load_checkpoint(tmp_path / BEST_FILE)
    assert best.arch == "resnet18" and best.epoch == summary["selected_epoch"]
    assert best.mean == MEAN and best.image_size == 32 and best.classes == CLASSES
    state = load_training_state(tmp_path / STATE_FILE)
    assert state["epoch"] == 2 and len(state["history"]) == 2
    assert {"model", "optimizer", "lr_scheduler", "early_stopping", "config"} <= set(state)
    # A finished run resumes to the same summary without training again.
    mtime = os.stat(tmp_path / STATE_FILE).st_mtime_ns
    assert _fit(cache, tmp_path, config) == summary
    assert os.stat(tmp_path / STATE_FILE).st_mtime_ns == mtime


def test_a_step_cap_shortens_every_epoch_and_the_one_cycle_schedule(cache, tmp_path):
    config = TrainConfig(epochs=2, batch_size=8, schedule="onecycle", max_steps_per_epoch=2)
    fit(
        _model(),
        build_regime("sll"),
        train_loader=_loader(cache, "train", train=True),
        val_loader=None,
        config=config,
        info=INFO,
        out_dir=tmp_path,
        device=CPU,
        progress=False,
    )
    state = load_training_state(tmp_path / STATE_FILE)
    # OneCycleLR raises when stepped past its total: the total is 2 epochs x 2 capped steps.
    assert state["lr_scheduler"]["total_steps"] == 4 == state["lr_scheduler"]["last_epoch"]


def test_early_stopping_ends_the_run(cache, tmp_path):
    config = TrainConfig(
        epochs=6,
        batch_size=8,
        lr=1e-9,
        schedule="constant",
        early_stopping_patience=1,
        early_stopping_min_delta=0.5,
        num_workers=0,
    )
    summary = _fit(cache, tmp_path, config)
    assert summary["stopped_early"] and summary["epochs_completed"] == 2


def test_resume_with_another_config_is_refused_and_names_the_change(cache, tmp_path):
    config = TrainConfig(epochs=1, batch_size=8, schedule="step", num_workers=0)
    _fit(cache, tmp_path, config)
    with pytest.raises(CheckpointError, match=r"config changed \(lr: 0.001 -> 0.01\)"):
        _fit(cache, tmp_path, config.model_copy(update={"lr": 1e-2}))
    with pytest.raises(ValueError, match="give a val_loader"):
        _fit(cache, tmp_path / "x", TrainConfig(num_workers=0), val=False)


def test_no_validation_keeps_the_last_epoch(cache, tmp_path):
    config = TrainConfig(epochs=2, batch_size=8, schedule="constant", num_workers=0)
    summary = _fit(cache, tmp_path, config, val=False)
    assert summary["selected_by"] == "last_epoch" and summary["selected_epoch"] == 2


def _run(cache_dir, out_dir, *extra):
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, "-m", "tests.training.run_fit", str(cache_dir), str(out_dir)]
    return subprocess.run([*command, *extra], cwd=PROJECT_ROOT, env=env, capture_output=True)


@pytest.mark.slow
def test_run_killed_mid_epoch_resumes_to_bit_identical_weights_and_metrics(tmp_path):
    cache_dir = tmp_path / "cache"
    cache_dir.mkdir()
    write_face_cache(cache_dir)
    deterministic = torch.are_deterministic_algorithms_enabled()
    try:
        run_fit.main([str(cache_dir), str(tmp_path / "whole")])  # the uninterrupted run
    finally:
        torch.use_deterministic_algorithms(deterministic)
    killed = _run(cache_dir, tmp_path / "resumed", "--kill-at", "3", "1")
    assert killed.returncode == -9, killed.stderr.decode()
    assert load_training_state(tmp_path / "resumed" / STATE_FILE)["epoch"] == 2
    resumed = _run(cache_dir, tmp_path / "resumed")
    assert resumed.returncode == 0, resumed.stderr.decode()
    for name in (HISTORY_FILE, "summary.json"):
        assert (tmp_path / "whole" / name).read_bytes() == (
            tmp_path / "resumed" / name
        ).read_bytes()
    a, b = (load_training_state(tmp_path / d / STATE_FILE) for d in ("whole", "resumed"))
    assert a["epoch"] == b["epoch"] == 4
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    best_a, best_b = (load_checkpoint(tmp_path / d / BEST_FILE) for d in ("whole", "resumed"))
    assert all(torch.equal(best_a.state_dict[k], best_b.state_dict[k]) for k in best_a.state_dict)
