"""Compare the training loader's images/s with what one training step consumes.

Builds a synthetic face cache in a temporary folder, then measures (1) one epoch of the
training loader alone (read, augment, normalise, batch) and (2) `train_one_epoch` on the
same batches held in memory (forward, backward, optimiser step), and prints both rates and
their ratio. The loader must deliver at least 3x what the step consumes.

Usage::

    .venv/bin/python scripts/bench_loader.py [--model efficientface] [--image-size 64]
        [--batch-size 64] [--workers 0] [--threads 1] [--crop pad] [--device cpu]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from lightfer.faces.cache import CACHE_FILE
from lightfer.losses import build_regime
from lightfer.models import create_model
from lightfer.training.config import AugmentConfig
from lightfer.training.data import FaceDataset, make_loader
from lightfer.training.loop import train_one_epoch


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="efficientface", help="default: %(default)s")
    parser.add_argument("--image-size", type=int, default=64, help="default: %(default)s")
    parser.add_argument("--batch-size", type=int, default=64, help="default: %(default)s")
    parser.add_argument("--images", type=int, default=2048, help="default: %(default)s")
    parser.add_argument("--steps", type=int, default=8, help="timed steps (default: %(default)s)")
    parser.add_argument("--workers", type=int, default=0, help="default: %(default)s")
    parser.add_argument("--threads", type=int, default=1, help="default: %(default)s")
    parser.add_argument("--crop", default="pad", choices=["pad", "resized", "none"])
    parser.add_argument("--device", default="cpu", help="default: %(default)s")
    return parser.parse_args(argv)


def _write_cache(directory: Path, n: int, side: int) -> None:
    crops = np.lib.format.open_memmap(
        directory / CACHE_FILE, mode="w+", dtype=np.uint8, shape=(n, side, side, 3)
    )
    crops[:] = np.random.default_rng(0).integers(0, 256, crops.shape, dtype=np.uint8)
    crops.flush()


def main(argv: list[str] | None = None) -> None:
    """Print loader and training-step images/s."""
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        _write_cache(Path(tmp), args.images, args.image_size)
        crops = np.load(Path(tmp) / CACHE_FILE, mmap_mode="r")
        labels = np.arange(len(crops)) % 7
        dataset = FaceDataset(
            crops, np.arange(len(crops)), labels, mean=(0.5,) * 3, std=(0.25,) * 3,
            image_size=args.image_size, augment=AugmentConfig(crop=args.crop),
        )  # fmt: skip
        loader = make_loader(
            dataset, batch_size=args.batch_size, train=True, num_workers=args.workers
        )
        next(iter(loader))  # start the workers
        start = time.perf_counter()
        batches = list(loader)
        load_rate = len(batches) * args.batch_size / (time.perf_counter() - start)

        model = create_model(args.model).to(device)
        optimizer = torch.optim.RAdam(model.parameters(), lr=1e-3)
        regime = build_regime("sll")
        warm = batches[:2]
        train_one_epoch(model, regime, optimizer, warm, device, epoch=0, progress=False)
        timed = batches[: args.steps]
        step = train_one_epoch(model, regime, optimizer, timed, device, epoch=1, progress=False)
    step_rate = step["images_per_s"]
    setting = f"{args.threads} thread(s), {args.workers} worker(s), crop={args.crop}, {device}"
    print(
        f"{args.model} at {args.image_size}x{args.image_size}, batch {args.batch_size}, {setting}"
    )
    print(f"loader:        {load_rate:9.0f} images/s")
    print(f"training step: {step_rate:9.0f} images/s")
    print(f"ratio:         {load_rate / step_rate:9.1f}x (target >= 3x)")


if __name__ == "__main__":
    main()
