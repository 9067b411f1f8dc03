"""Measure MTCNN images/s on 512x512 face images: torch threads, single vs batched calls.

MTCNN (Zhang et al., IEEE Signal Processing Letters 23(10), 2016) as packaged by
facenet-pytorch 2.6.0 (MIT licence), through `lightfer.faces.detect.FaceDetector`.

The images are skimage's astronaut (one face, 512x512), shifted and mirrored at random so
no two calls see the same pixels. Every variant (threads x single/batched) runs in this one
process, after a warm-up, interleaved in shuffled blocks of about `--block-seconds`
(`lightfer.bench.measure_throughput`); a variant's figure is the median of its per-block
rates. The machine's speed drifts within minutes, so only same-run ratios compare.

Usage: .venv/bin/python scripts/bench_mtcnn.py [--threads 1 2] [--batch-size 4]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
from collections.abc import Callable

import numpy as np
import torch
from skimage import data

from lightfer.bench import measure_throughput
from lightfer.faces.detect import FaceDetector


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
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7, help="rounds of blocks")
    parser.add_argument("--block-seconds", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    images = _images(args.images, args.seed)
    detector = FaceDetector(threads=args.threads[0])
    found = [len(faces) for faces in detector.detect_batch(images)]
    print(f"faces found per image: {sorted(set(found))} (expect [1])")

    per_call = {"single": 1, f"batch{args.batch_size}": args.batch_size}
    variants = {
        (threads, mode): _variant(detector, images, threads, size)
        for threads in args.threads
        for mode, size in per_call.items()
    }
    named = {f"{threads}t/{mode}": call for (threads, mode), call in variants.items()}
    rates = measure_throughput(
        named, repeats=args.repeats, block_seconds=args.block_seconds, warmup_calls=2
    )
    median = {
        (threads, mode): statistics.median(rates[f"{threads}t/{mode}"]) * per_call[mode]
        for threads, mode in variants
    }

    print(f"\ntorch {torch.__version__}, {args.repeats} rounds of ~{args.block_seconds} s blocks")
    print(f"{'threads':>7} {'mode':>8} {'images/s':>9} {'ms/image':>9}  per-block images/s")
    for threads, mode in variants:
        blocks = " ".join(f"{r * per_call[mode]:.1f}" for r in rates[f"{threads}t/{mode}"])
        rate = median[threads, mode]
        print(f"{threads:>7} {mode:>8} {rate:>9.2f} {1000 / rate:>9.1f}  {blocks}")
    batched = f"batch{args.batch_size}"
    print("\nratios of same-run medians:")
    for threads in args.threads:
        ratio = median[threads, batched] / median[threads, "single"]
        print(f"  {threads} thread(s): {batched} / single = {ratio:.2f}")
    for mode in per_call:
        for threads in args.threads[1:]:
            ratio = median[threads, mode] / median[args.threads[0], mode]
            print(f"  {mode}: {threads} threads / {args.threads[0]} thread = {ratio:.2f}")


if __name__ == "__main__":
    main()
