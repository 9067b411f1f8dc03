"""Measure MTCNN images/s on 512x512 face images: one by one, and batched at several sizes.

MTCNN (Zhang et al., IEEE Signal Processing Letters 23(10), 2016) as packaged by
facenet-pytorch 2.6.0 (MIT licence), through `lightfer.faces.detect.FaceDetector`, the
detector the align stage batches (`align.detect_batch_size`, `align.device`).

The images are skimage's astronaut (one face, 512x512), shifted and mirrored at random so
no two calls see the same pixels. Every variant (threads x one-by-one/batch size) runs in
this one process, after a warm-up, interleaved in shuffled blocks of about
`--block-seconds` (`lightfer.bench.measure_throughput`); a variant's figure is the median
of its per-block rates. The machine's speed drifts within minutes, so only same-run ratios
compare: the batch speed-up is batched images/s over one-by-one images/s, as the ratio of
the medians and as the median of the ratios within each round.

Usage: .venv/bin/python scripts/bench_mtcnn.py [--threads 1 2] [--batch-sizes 2 4 8 16]
       [--device auto]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from collections.abc import Callable
from typing import get_args

import numpy as np
import torch
from skimage import data

from lightfer.bench import measure_throughput
from lightfer.faces.detect import Device, FaceDetector, resolve_device


def _images(count: int, seed: int) -> list[np.ndarray]:
    """`count` 512x512 astronaut images, each shifted by up to 40 px and maybe mirrored."""
    rng = np.random.default_rng(seed)
    base = data.astronaut()
    images = []
    for _ in range(count):
        shifted = np.roll(base, tuple(rng.integers(-40, 41, size=2)), axis=(0, 1))
        images.append(np.ascontiguousarray(shifted[:, ::-1] if rng.random() < 0.5 else shifted))
    return images


def _variant(
    detector: FaceDetector, images: list[np.ndarray], threads: int, batch_size: int
) -> Callable[[], object]:
    """One call: detect in the next image (batch_size 1) or the next batch, on `threads`."""
    if batch_size == 1:
        batches = itertools.cycle(images)
        run = detector.detect
    else:
        count = len(images) // batch_size * batch_size
        batches = itertools.cycle([images[i : i + batch_size] for i in range(0, count, batch_size)])
        run = detector.detect_batch

    def call() -> object:
        if torch.get_num_threads() != threads:  # process-global; other variants change it
            torch.set_num_threads(threads)
        return run(next(batches))

    return call


def main() -> None:
    """Run the benchmark and print a table of images/s and same-run ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[2, 4, 8, 16])
    parser.add_argument("--device", choices=get_args(Device), default="auto")
    parser.add_argument("--images", type=int, default=32, help="distinct images cycled through")
    parser.add_argument("--repeats", type=int, default=7, help="rounds of blocks")
    parser.add_argument("--block-seconds", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if max(args.batch_sizes) > args.images:
        parser.error(f"--images ({args.images}) must be at least the largest batch size")

    images = _images(args.images, args.seed)
    device = resolve_device(args.device)
    detector = FaceDetector(threads=args.threads[0], device=device)
    found = [len(faces) for faces in detector.detect_batch(images)]
    print(f"faces found per image: {sorted(set(found))} (expect [1])")

    per_call = {"single": 1} | {f"batch{size}": size for size in args.batch_sizes}
    variants = {
        f"{threads}t/{mode}": _variant(detector, images, threads, size)
        for threads in args.threads
        for mode, size in per_call.items()
    }
    rates = measure_throughput(
        variants, repeats=args.repeats, block_seconds=args.block_seconds, warmup_calls=2
    )
    median = {
        (threads, mode): statistics.median(rates[f"{threads}t/{mode}"]) * size
        for threads in args.threads
        for mode, size in per_call.items()
    }

    print(
        f"\ntorch {torch.__version__} on {device}, {args.repeats} rounds of "
        f"~{args.block_seconds} s blocks"
    )
    print(f"{'threads':>7} {'mode':>8} {'images/s':>9} {'ms/image':>9}  per-block images/s")
    for (threads, mode), rate in median.items():
        blocks = " ".join(f"{r * per_call[mode]:.1f}" for r in rates[f"{threads}t/{mode}"])
        print(f"{threads:>7} {mode:>8} {rate:>9.2f} {1000 / rate:>9.1f}  {blocks}")
    print(
        "\nbatch speed-up, batched / single images/s: ratio of the medians "
        "[median of per-round ratios, which drift cancels better]"
    )
    for threads in args.threads:
        single = rates[f"{threads}t/single"]
        ratios = []
        for mode, size in list(per_call.items())[1:]:
            rounds = [
                b * size / a for a, b in zip(single, rates[f"{threads}t/{mode}"], strict=True)
            ]
            overall = median[threads, mode] / median[threads, "single"]
            ratios.append(f"{mode} {overall:.2f} [{statistics.median(rounds):.2f}]")
        print(f"  {threads} thread(s): {', '.join(ratios)}")
    for threads in args.threads[1:]:
        for mode in per_call:
            ratio = median[threads, mode] / median[args.threads[0], mode]
            print(f"  {mode}: {threads} threads / {args.threads[0]} thread = {ratio:.2f}")


if __name__ == "__main__":
    main()
