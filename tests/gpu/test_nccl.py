"""NCCL data-parallel training on two GPUs keeps the ranks' weights and batch norm equal."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

from lightfer.faces.cache import load_face_cache
from lightfer.labels import CLASSES
from lightfer.losses import build_regime
from lightfer.models import create_model
from lightfer.splits import usable_rows
from lightfer.training.config import TrainConfig
from lightfer.training.data import FaceDataset, make_loader
from lightfer.training.distributed import Distributed
from lightfer.training.loop import ModelInfo, fit
from tests.training.cache import write_face_cache

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        not torch.cuda.is_available() or torch.cuda.device_count() < 2,
        reason="NCCL data parallelism needs 2 GPUs",
    ),
]

MEAN, STD = (0.3, 0.3, 0.3), (0.2, 0.2, 0.2)
CONFIG = TrainConfig(epochs=1, batch_size=16, optimizer="sgd", lr=0.05, schedule="constant")


def _rank(rank: int, port: int, cache_dir, out_dir, weights) -> None:
    distributed = Distributed(rank=rank, world_size=2, local_rank=rank)
    device = distributed.device()
    torch.cuda.set_device(device)
    torch.distributed.init_process_group(
        "nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2
    )
    try:
        crops, table = load_face_cache(cache_dir)
        labels = table.column("label").to_numpy()
        dataset = FaceDataset(
            crops, usable_rows(table, "train"), labels, mean=MEAN, std=STD, image_size=64
        )
        loader = make_loader(
            dataset,
            batch_size=CONFIG.batch_size,
            train=True,
            seed=CONFIG.seed,
            pin_memory=True,
            rank=rank,
            world_size=2,
        )
        torch.manual_seed(0)
        model = create_model("efficientface")
        summary = fit(
            model,
            build_regime("sll"),
            train_loader=loader,
            val_loader=None,
            config=CONFIG,
            info=ModelInfo("efficientface", CLASSES, 64, MEAN, STD),
            out_dir=out_dir,
            device=device,
            progress=False,
            distributed=distributed,
        )
        state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
        torch.save({"state": state, "summary": summary}, weights[rank])
    finally:
        distributed.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_two_nccl_ranks_end_with_the_same_weights_and_statistics(tmp_path):
    cache_dir = write_face_cache(tmp_path, n_train=64, n_test=8)
    weights = [tmp_path / "rank0.pt", tmp_path / "rank1.pt"]
    mp.spawn(_rank, args=(_free_port(), cache_dir, tmp_path / "run", weights), nprocs=2)
    ranks = [torch.load(path, weights_only=True) for path in weights]
    assert ranks[0]["summary"]["epochs_completed"] == 1
    states = [rank["state"] for rank in ranks]
    assert states[0].keys() == states[1].keys()
    for key, value in states[0].items():
        # Running means and variances agree only if batch norm is synchronised: each rank
        # sees its own half of every batch.
        torch.testing.assert_close(states[1][key], value, rtol=1e-5, atol=1e-6, msg=key)
