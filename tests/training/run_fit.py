"""Run `fit` on a tiny face cache in a fresh process; optionally SIGKILL itself mid-epoch.

Usage: python -m tests.training.run_fit CACHE_DIR OUT_DIR [--kill-at EPOCH BATCH]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
from pathlib import Path

import torch

from lightfer.faces.cache import load_face_cache
from lightfer.labels import CLASSES
from lightfer.losses import build_regime
from lightfer.models import create_model
from lightfer.splits import channel_stats, holdout_validation, usable_rows
from lightfer.training.config import AugmentConfig, TrainConfig
from lightfer.training.data import FaceDataset, make_loader
from lightfer.training.loop import ModelInfo, fit

CONFIG = TrainConfig(
    epochs=4,
    batch_size=8,
    optimizer="radam",
    lr=3e-3,
    schedule="onecycle",
    balanced=True,
    augment=AugmentConfig(crop="resized"),
    early_stopping_patience=10,
    seed=7,
    num_workers=0,
)
IMAGE_SIZE = 32


class _KillingLoader:
    """Pass batches through, but SIGKILL the process at batch `batch` of epoch `epoch`."""

    def __init__(self, loader, epoch: int, batch: int) -> None:
        self.loader, self.sampler, self.epoch, self.batch = loader, loader.sampler, epoch, batch

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for index, batch in enumerate(self.loader):
            if self.sampler.epoch == self.epoch and index == self.batch:
                os.kill(os.getpid(), signal.SIGKILL)
            yield batch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("cache", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--kill-at", type=int, nargs=2, metavar=("EPOCH", "BATCH"))
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    crops, table = load_face_cache(args.cache)
    labels = table.column("label").to_numpy()
    train_rows, val_rows = holdout_validation(
        usable_rows(table, "train"), labels[usable_rows(table, "train")], fraction=0.2, seed=7
    )
    mean, std = channel_stats(crops, train_rows)

    def dataset(rows, augment=None):
        return FaceDataset(
            crops, rows, labels, mean=mean, std=std, image_size=IMAGE_SIZE, augment=augment
        )

    train = make_loader(
        dataset(train_rows, CONFIG.augment),
        batch_size=CONFIG.batch_size,
        train=True,
        seed=CONFIG.seed,
        balanced=CONFIG.balanced,
    )
    if args.kill_at:
        train = _KillingLoader(train, *args.kill_at)
    evaluation = {
        name: make_loader(dataset(rows), batch_size=16, train=False)
        for name, rows in (("val", val_rows), ("test", usable_rows(table, "test")))
    }
    torch.manual_seed(CONFIG.seed)
    model = create_model("efficientface")
    info = ModelInfo("efficientface", CLASSES, IMAGE_SIZE, mean, std, dataset="tiny")
    summary = fit(
        model,
        build_regime("sll"),
        train_loader=train,
        val_loader=evaluation["val"],
        test_loader=evaluation["test"],
        config=CONFIG,
        info=info,
        out_dir=args.out,
        device=torch.device("cpu"),
        progress=False,
    )
    (args.out / "summary.json").write_text(json.dumps(summary, sort_keys=True))


if __name__ == "__main__":
    main()
