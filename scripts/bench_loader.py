"""Images/s of one loader worker at each preset's settings, and the workers a GPU step needs.

For every preset (`presets/<name>.yaml`: `align.crop_size` and, of `train.ldg.train` and
`train.ef.train`, the augmentation and batch size) this builds a synthetic face cache of
that crop size in a temporary folder and measures the face-cache loaders the stages build:

* `ldg train`, `ef train`: the training loader (read, augment, normalise, batch);
* `ldg eval`, `ef eval`: the validation/test loaders of training (no augmentation, the
  model's batch size);
* `soft labels`: the soft-labels (and evaluate) stage's loader (no augmentation, batch 256).

Each loader is measured twice: on the CPU path (the worker augments and normalises, the
default) and on the device path (`FaceDataset(on_device=True)`: the worker reads uint8
crops and draws the augmentation, the device applies it; its own cost is not measured here).

A loader's per-sample work runs in one process per worker, so the rate of one worker is
measured in this process (num_workers=0, `--threads` intra-op threads, as a worker has):
the loaders run interleaved in shuffled rounds after a warm-up and the median round counts
(`lightfer.bench.measure_throughput`); the spread over rounds shows how noisy the machine
is. With `--workers K` each loader also runs through a `DataLoader` with K worker
processes (which adds handing each batch to the main process), and its rate divided by K
is a second per-worker figure. `workers` is ceil(target / the lower per-worker figure):
the worker processes a training step consuming `--target` images/s needs.

Usage::

    .venv/bin/python scripts/bench_loader.py [--presets rafdb ferplus caers affectnet]
        [--paths cpu device] [--target 5000] [--threads 1] [--rounds 3]
        [--block-seconds 1.0] [--workers 1]
"""

from __future__ import annotations

import argparse
import itertools
import math
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import yaml

from lightfer.bench import measure_throughput
from lightfer.faces.cache import CACHE_FILE
from lightfer.training.config import AugmentConfig, TrainConfig
from lightfer.training.data import FaceDataset, make_loader

PROJECT_ROOT = Path(__file__).resolve().parents[1]
PATHS = ("cpu", "device")
SOFT_LABEL_BATCH = 256  # stages/soft_labels.py and stages/evaluate.py
MEAN, STD = (0.5, 0.4, 0.35), (0.25, 0.22, 0.2)


class Loader(NamedTuple):
    """One loader setting: crop side, augmentation (None: evaluation) and batch size."""

    side: int
    augment: AugmentConfig | None
    batch_size: int

    def describe(self) -> str:
        if self.augment is None:
            return "none"
        crop = f"pad {self.augment.padding}" if self.augment.crop == "pad" else self.augment.crop
        return crop + (" + flip" if self.augment.flip else "")


class Variant(NamedTuple):
    """A loader setting on the CPU path or on the device path."""

    loader: Loader
    on_device: bool


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    names = sorted(p.stem for p in (PROJECT_ROOT / "presets").glob("*.yaml"))
    parser.add_argument("--presets", nargs="+", default=names, choices=names)
    parser.add_argument("--paths", nargs="+", default=["cpu", "device"], choices=PATHS)
    parser.add_argument("--target", type=int, default=5000, help="step images/s (%(default)s)")
    parser.add_argument("--threads", type=int, default=1, help="default: %(default)s")
    parser.add_argument("--rounds", type=int, default=3, help="default: %(default)s")
    parser.add_argument("--block-seconds", type=float, default=1.0, help="default: %(default)s")
    parser.add_argument(
        "--workers", type=int, default=1, help="DataLoader worker processes; 0: skip"
    )
    parser.add_argument(
        "--worker-images", type=int, default=2048, help="images timed per loader with workers"
    )
    parser.add_argument("--cache-images", type=int, default=512, help="default: %(default)s")
    return parser.parse_args(argv)


def preset_loaders(name: str) -> dict[str, Loader]:
    """The loaders the stages build under preset `name`, by role.

    Only the keys that decide loading are read from the preset; each model's `train`
    mapping is validated with the params schema's `TrainConfig`.
    """
    preset = yaml.safe_load((PROJECT_ROOT / "presets" / f"{name}.yaml").read_text())
    side = int(preset["align"]["crop_size"])
    loaders = {}
    for model in ("ldg", "ef"):
        config = TrainConfig.model_validate(preset["train"][model]["train"])
        loaders[f"{model} train"] = Loader(side, config.augment, config.batch_size)
        loaders[f"{model} eval"] = Loader(side, None, config.batch_size)
    loaders["soft labels"] = Loader(side, None, SOFT_LABEL_BATCH)
    return loaders


def _dataset(crops: np.ndarray, variant: Variant, length: int) -> FaceDataset:
    """`length` positions cycling over the cache's rows, so epochs outlast a small cache."""
    rows = np.arange(length) % len(crops)
    return FaceDataset(
        crops,
        rows,
        np.arange(len(crops)) % 7,
        mean=MEAN,
        std=STD,
        image_size=variant.loader.side,
        augment=variant.loader.augment,
        on_device=variant.on_device,
    )


def _in_process(crops: np.ndarray, variant: Variant) -> Callable[[], object]:
    """One call loads the next batch of an endless epoch, as a worker does."""
    batch_size = variant.loader.batch_size
    dataset = _dataset(crops, variant, 64 * batch_size)
    train = variant.loader.augment is not None
    sampler = make_loader(dataset, batch_size=batch_size, train=train).sampler
    requests = itertools.cycle(list(sampler))
    return lambda: dataset[next(requests)]


def _with_workers(crops: np.ndarray, variant: Variant, workers: int, images: int) -> float:
    """Images/s of a `DataLoader` with `workers` processes, once its prefetch queue is drained."""
    batch_size = variant.loader.batch_size
    queued = 4 * workers  # make_loader's prefetch_factor
    timed = max(4, math.ceil(images / batch_size))
    dataset = _dataset(crops, variant, (queued + timed + 1) * batch_size)
    train = variant.loader.augment is not None
    loader = make_loader(dataset, batch_size=batch_size, train=train, num_workers=workers)
    batches = iter(loader)
    for _ in range(queued + 1):
        next(batches)
    start = time.perf_counter()
    for _ in range(timed):
        next(batches)
    return timed * batch_size / (time.perf_counter() - start)


def _write_cache(directory: Path, n: int, side: int) -> np.ndarray:
    crops = np.lib.format.open_memmap(
        directory / f"{side}-{CACHE_FILE}", mode="w+", dtype=np.uint8, shape=(n, side, side, 3)
    )
    crops[:] = np.random.default_rng(0).integers(0, 256, crops.shape, dtype=np.uint8)
    crops.flush()
    return np.load(directory / f"{side}-{CACHE_FILE}", mmap_mode="r")


def main(argv: list[str] | None = None) -> None:
    """Print, per preset, each loader's per-worker images/s and the workers needed."""
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    presets = {name: preset_loaders(name) for name in args.presets}
    loaders = {loader for roles in presets.values() for loader in roles.values()}
    variants = [
        Variant(loader, path == "device")
        for loader in sorted(loaders, key=str)
        for path in args.paths
    ]
    with tempfile.TemporaryDirectory() as tmp:
        caches = {
            side: _write_cache(Path(tmp), args.cache_images, side)
            for side in {loader.side for loader in loaders}
        }
        calls = {str(v): _in_process(caches[v.loader.side], v) for v in variants}
        blocks = measure_throughput(
            calls, repeats=args.rounds, block_seconds=args.block_seconds, warmup_calls=2
        )
        with_workers = {
            v: _with_workers(caches[v.loader.side], v, args.workers, args.worker_images)
            / args.workers
            for v in (variants if args.workers > 0 else [])
        }
    print(
        f"Per-worker images/s: in-process median (min-max over {args.rounds} rounds, "
        f"{args.threads} thread(s))"
        + (f"; through a DataLoader with {args.workers} worker(s)" if args.workers else "")
        + f". workers: ceil({args.target} / the lower figure)."
    )
    header = ["loader", "augment", "batch"]
    for path in args.paths:
        header += [f"{path}: in-process", "DataLoader", "workers"]
    for name, roles in presets.items():
        print(f"\n{name} (crop {next(iter(roles.values())).side} px)")
        print(_row(header))
        for role, loader in roles.items():
            cells = [role, loader.describe(), str(loader.batch_size)]
            for path in args.paths:
                variant = Variant(loader, path == "device")
                rates = [rate * loader.batch_size for rate in blocks[str(variant)]]
                median, worker = statistics.median(rates), with_workers.get(variant)
                lowest = median if worker is None else min(median, worker)
                cells += [
                    f"{median:.0f} ({min(rates):.0f}-{max(rates):.0f})",
                    "-" if worker is None else f"{worker:.0f}",
                    str(math.ceil(args.target / lowest)),
                ]
            print(_row(cells))


def _row(cells: list[str]) -> str:
    widths = [12, 16, 5] + [24, 10, 7] * ((len(cells) - 3) // 3)
    return "  " + " ".join(
        cell.ljust(width) if i < 2 else cell.rjust(width)
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
    )


if __name__ == "__main__":
    main()
