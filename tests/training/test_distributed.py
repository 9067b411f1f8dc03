"""Data-parallel training with 2 gloo processes equals one process training the same batches."""

from __future__ import annotations

import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from lightfer.faces.cache import load_face_cache
from lightfer.labels import CLASSES
from lightfer.losses import AUNeighbourKL, build_regime, ldl_au_regime
from lightfer.splits import usable_rows
from lightfer.training.config import AugmentConfig, TrainConfig
from lightfer.training.data import FaceDataset, make_loader
from lightfer.training.distributed import Distributed
from lightfer.training.loop import BEST_FILE, HISTORY_FILE, STATE_FILE, ModelInfo, fit
from tests.training.cache import random_soft_labels_and_graph, write_face_cache
from tests.training.crashing import CrashingLoader

pytestmark = pytest.mark.slow  # every test starts worker processes
MEAN, STD = (0.3, 0.3, 0.3), (0.2, 0.2, 0.2)
CONFIG = TrainConfig(
    epochs=2,
    batch_size=8,
    optimizer="sgd",
    lr=0.05,
    schedule="step",
    step_every=1,
    augment=AugmentConfig(crop="pad", padding=2, flip=True),
)


def _model() -> nn.Module:
    """Small and without batch norm, whose per-rank statistics would differ on the CPU."""
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, len(CLASSES)),
    )


def _train(cache_dir, out_dir, distributed: Distributed) -> dict[str, torch.Tensor]:
    torch.set_num_threads(1)
    crops, table = load_face_cache(cache_dir)
    labels = table.column("label").to_numpy()
    dataset = FaceDataset(
        crops,
        usable_rows(table, "train"),
        labels,
        mean=MEAN,
        std=STD,
        image_size=32,
        augment=CONFIG.augment,
    )
    loader = make_loader(
        dataset,
        batch_size=CONFIG.batch_size,
        train=True,
        seed=CONFIG.seed,
        rank=distributed.rank,
        world_size=distributed.world_size,
    )
    val = FaceDataset(crops, usable_rows(table, "test"), labels, mean=MEAN, std=STD, image_size=32)
    model = _model()
    fit(
        model,
        build_regime("sll"),
        train_loader=loader,
        val_loader=make_loader(val, batch_size=8, train=False),
        config=CONFIG,
        info=ModelInfo("tiny", CLASSES, 32, MEAN, STD),
        out_dir=out_dir,
        device=torch.device("cpu"),
        progress=False,
        distributed=distributed,
    )
    return {k: v.clone() for k, v in model.state_dict().items()}


def _rank(rank: int, port: int, cache_dir, out_dirs, weights) -> None:
    distributed = Distributed(rank=rank, world_size=2, local_rank=rank)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        torch.save(_train(cache_dir, out_dirs[rank], distributed), weights[rank])
    finally:
        distributed.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return write_face_cache(tmp_path_factory.mktemp("cache"))


def test_two_gloo_ranks_train_the_weights_of_one_process(cache_dir, tmp_path):
    single = _train(cache_dir, tmp_path / "single", Distributed())
    out_dirs = [tmp_path / "rank0", tmp_path / "rank1"]
    weights = [tmp_path / "weights0.pt", tmp_path / "weights1.pt"]
    mp.spawn(_rank, args=(_free_port(), cache_dir, out_dirs, weights), nprocs=2)
    ranks = [torch.load(path, weights_only=True) for path in weights]
    for name, value in single.items():
        assert torch.equal(ranks[0][name], ranks[1][name]), f"ranks disagree on {name}"
        # Same global batches and augmentations; only the float summation order differs.
        torch.testing.assert_close(ranks[0][name], value, rtol=1e-4, atol=1e-5)
    assert {p.name for p in out_dirs[0].iterdir()} == {BEST_FILE, HISTORY_FILE, STATE_FILE}
    assert not out_dirs[1].exists() or not any(out_dirs[1].iterdir()), "rank 1 wrote files"
    single_history = (tmp_path / "single" / HISTORY_FILE).read_text().splitlines()
    ddp_history = (out_dirs[0] / HISTORY_FILE).read_text().splitlines()
    assert ddp_history[0] == single_history[0]
    for ours, theirs in zip(ddp_history[1:], single_history[1:], strict=True):
        np.testing.assert_allclose(
            [float(v) for v in ours.split(",")],
            [float(v) for v in theirs.split(",")],
            rtol=1e-3,
        )


def test_a_loader_split_over_other_ranks_is_refused(cache_dir, tmp_path):
    crops, table = load_face_cache(cache_dir)
    labels = table.column("label").to_numpy()
    dataset = FaceDataset(
        crops, usable_rows(table, "train"), labels, mean=MEAN, std=STD, image_size=32
    )
    loader = make_loader(dataset, batch_size=8, train=True, rank=0, world_size=2)
    with pytest.raises(ValueError, match="split over 2 ranks but training runs on 1"):
        fit(
            _model(),
            build_regime("sll"),
            train_loader=loader,
            val_loader=None,
            config=CONFIG,
            info=ModelInfo("tiny", CLASSES, 32, MEAN, STD),
            out_dir=tmp_path,
            device=torch.device("cpu"),
            progress=False,
        )


def _train_au(cache_dir, out_dir, distributed: Distributed, crash: bool = False) -> dict:
    """Train ldl_au with the memory bank; return the weights and the bank."""
    torch.set_num_threads(1)
    crops, table = load_face_cache(cache_dir)
    labels = table.column("label").to_numpy()
    train = usable_rows(table, "train")
    soft_labels, neighbours, weights = random_soft_labels_and_graph(len(crops), train)
    soft = torch.from_numpy(soft_labels)
    term = AUNeighbourKL(neighbours, weights, init=soft)
    dataset = FaceDataset(
        crops,
        train,
        labels,
        mean=MEAN,
        std=STD,
        image_size=32,
        soft=soft.numpy(),
        augment=CONFIG.augment,
    )
    loader = make_loader(
        dataset,
        batch_size=CONFIG.batch_size,
        train=True,
        seed=CONFIG.seed,
        rank=distributed.rank,
        world_size=distributed.world_size,
    )
    model = _model()
    fit(
        model,
        ldl_au_regime(1.0, term),
        train_loader=CrashingLoader(loader, epoch=2, batch=1) if crash else loader,
        val_loader=None,
        config=CONFIG,
        info=ModelInfo("tiny", CLASSES, 32, MEAN, STD),
        out_dir=out_dir,
        device=torch.device("cpu"),
        progress=False,
        distributed=distributed,
    )
    return {"bank": term.state_dict()["bank"], "init": soft, **model.state_dict()}


def _au_rank(rank: int, port: int, cache_dir, out_dir, results, crash: bool) -> None:
    distributed = Distributed(rank=rank, world_size=2, local_rank=rank)
    torch.distributed.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        torch.save(_train_au(cache_dir, out_dir, distributed, crash), results[rank])
    finally:
        distributed.stop()


def _spawn_au(cache_dir, out_dir, results, crash: bool = False) -> list[dict]:
    mp.spawn(_au_rank, args=(_free_port(), cache_dir, out_dir, results, crash), nprocs=2)
    return [torch.load(path, weights_only=True) for path in results]


def test_ranks_keep_one_memory_bank_through_a_kill_and_resume(cache_dir, tmp_path):
    single = _train_au(cache_dir, tmp_path / "single", Distributed())
    results = [tmp_path / "rank0.pt", tmp_path / "rank1.pt"]
    whole = _spawn_au(cache_dir, tmp_path / "whole", results)
    assert (whole[0]["bank"] != whole[0]["init"]).any(1).sum() > 20, "the bank was not updated"
    assert torch.equal(whole[0]["bank"], whole[1]["bank"]), "the ranks' banks drifted apart"
    # Every rank applied every rank's updates: the bank of one process training alone.
    torch.testing.assert_close(whole[0]["bank"], single["bank"], rtol=1e-4, atol=1e-5)

    with pytest.raises(mp.ProcessRaisedException, match="Crash"):
        _spawn_au(cache_dir, tmp_path / "resumed", results, crash=True)
    resumed = _spawn_au(cache_dir, tmp_path / "resumed", results)
    for key, value in whole[0].items():
        assert torch.equal(resumed[0][key], value), key
        assert torch.equal(resumed[1][key], value), key
