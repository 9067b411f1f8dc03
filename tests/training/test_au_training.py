"""Training with the AU-neighbour term: the memory bank resumes exactly; neighbour images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lightfer.faces.cache import load_face_cache
from lightfer.labels import CLASSES
from lightfer.losses import AUNeighbourKL, ldl_au_regime
from lightfer.splits import usable_rows
from lightfer.training.config import AugmentConfig, TrainConfig
from lightfer.training.data import BatchRequest, FaceDataset, make_loader
from lightfer.training.loop import STATE_FILE, ModelInfo, fit, load_training_state
from lightfer.training.neighbours import NeighbourImages
from tests.training.cache import random_soft_labels_and_graph, write_face_cache
from tests.training.crashing import Crash, CrashingLoader

MEAN, STD = (0.3, 0.3, 0.3), (0.2, 0.2, 0.2)
CONFIG = TrainConfig(
    epochs=2,
    batch_size=8,
    lr=0.01,
    schedule="constant",
    augment=AugmentConfig(crop="pad", padding=2),
)
INFO = ModelInfo("tiny", CLASSES, 32, MEAN, STD)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    crops, table = load_face_cache(write_face_cache(tmp_path_factory.mktemp("cache")))
    labels = table.column("label").to_numpy()
    train = usable_rows(table, "train")
    soft, table_rows, table_weights = random_soft_labels_and_graph(len(crops), train)
    return crops, labels, train, soft, table_rows, table_weights


def _dataset(setup, augment=CONFIG.augment):
    crops, labels, train, soft, _, _ = setup
    return FaceDataset(
        crops, train, labels, mean=MEAN, std=STD, image_size=32, soft=soft, augment=augment
    )


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, len(CLASSES)),
    )


def _fit(setup, out_dir, *, crash_in_epoch=None):
    _, _, _, soft, table_rows, table_weights = setup
    term = AUNeighbourKL(table_rows, table_weights, source="bank", init=torch.from_numpy(soft))
    loader = make_loader(_dataset(setup), batch_size=8, train=True, seed=CONFIG.seed)
    if crash_in_epoch is not None:
        loader = CrashingLoader(loader, crash_in_epoch)
    model = _model()
    fit(
        model,
        ldl_au_regime(1.0, term),
        train_loader=loader,
        val_loader=None,
        config=CONFIG,
        info=INFO,
        out_dir=out_dir,
        device=torch.device("cpu"),
        progress=False,
    )
    return model, term


def test_a_crashed_ldl_au_run_resumes_with_its_memory_bank(setup, tmp_path):
    whole, whole_term = _fit(setup, tmp_path / "whole")
    with pytest.raises(Crash):
        _fit(setup, tmp_path / "resumed", crash_in_epoch=2)
    saved = load_training_state(tmp_path / "resumed" / STATE_FILE)
    assert saved["epoch"] == 1 and "bank" in saved["regime"]["au_kl"]
    resumed, resumed_term = _fit(setup, tmp_path / "resumed")
    assert torch.equal(whole_term.state_dict()["bank"], resumed_term.state_dict()["bank"])
    for (name, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert (tmp_path / "whole" / "metrics.csv").read_bytes() == (
        tmp_path / "resumed" / "metrics.csv"
    ).read_bytes()


def test_neighbour_images_are_the_neighbours_unaugmented_crops(setup):
    _, _, train, _, table_rows, _ = setup
    plain = _dataset(setup, augment=None)
    loader = NeighbourImages(
        make_loader(_dataset(setup), batch_size=4, train=True), plain, table_rows
    )
    loader.sampler.set_epoch(1)
    batch = next(iter(loader))
    assert batch.neighbour_images.shape == (4 * 3, 3, 32, 32)
    expected_rows = table_rows[batch.rows].ravel().numpy()
    position = {row: i for i, row in enumerate(train)}
    expected = plain[BatchRequest(np.array([position[r] for r in expected_rows]), 0)].images
    assert torch.equal(batch.neighbour_images, expected)
    with pytest.raises(ValueError, match="unaugmented"):
        NeighbourImages(loader.loader, _dataset(setup), table_rows)
