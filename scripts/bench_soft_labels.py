"""Cached vs online soft labels: the cost of one LDL training step of EfficientFace.

Cached (the project's default) reads each image's soft label from the soft-labels stage;
online (the official code's way) runs the frozen ResNet-50 LDG on every augmented batch.
Both variants run in this process, interleaved in shuffled blocks after a warm-up; the
ratio of their median step rates is the figure to quote (these machines are shared and
their speed drifts).

    python scripts/bench_soft_labels.py [--image-size 224] [--batch-size 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from lightfer.bench import measure_throughput
from lightfer.losses import build_regime
from lightfer.models import create_model
from lightfer.training.data import Batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--block-seconds", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    student, teacher = create_model("efficientface"), create_model("resnet50").eval()
    regime = build_regime("ldl")
    optimizer = torch.optim.Adam(student.parameters(), lr=1e-4)
    images = torch.randn(args.batch_size, 3, args.image_size, args.image_size)
    labels = torch.randint(0, 7, (args.batch_size,))
    cached = torch.softmax(torch.randn(args.batch_size, 7), dim=1)

    def step(soft: torch.Tensor) -> None:
        batch = Batch(images=images, labels=labels, rows=labels, soft=soft)
        optimizer.zero_grad(set_to_none=True)
        regime(student(images), batch).backward()
        optimizer.step()

    def online() -> None:
        with torch.inference_mode():
            soft = torch.softmax(teacher(images), dim=1)
        step(soft.clone())

    rates = measure_throughput(
        {"cached": lambda: step(cached), "online": online},
        repeats=args.repeats,
        block_seconds=args.block_seconds,
    )
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(
        f"EfficientFace LDL steps at {args.image_size}px, batch {args.batch_size}, "
        f"{args.threads} thread(s), {args.repeats} interleaved rounds"
    )
    for name, value in medians.items():
        print(
            f"  {name:>6}: {value * args.batch_size:7.1f} img/s  (per-block steps/s: "
            f"{', '.join(f'{v:.2f}' for v in rates[name])})"
        )
    print(f"  cached / online = {medians['cached'] / medians['online']:.2f}x")


if __name__ == "__main__":
    main()
