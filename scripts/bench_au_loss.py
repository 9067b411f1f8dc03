"""The cost of the AU-neighbour term: EfficientFace training steps, ldl vs ldl_au.

Each variant trains EfficientFace on the same batch: `ldl` (soft-label cross-entropy) and
`ldl_au` with each source of the neighbours' predictions: `bank` (a memory bank, the
default), `ldg` (cached soft labels) and `batch` (the K neighbours' images forwarded without
gradient beside the batch). All run in this process, interleaved in shuffled blocks
after a warm-up; the ratios of their median step rates are the figures to quote (these
machines are shared and their speed drifts). Target: bank <= 1.2x the time of ldl.

    python scripts/bench_au_loss.py [--image-size 112] [--batch-size 32] [--k 8] [--threads 2]
"""

from __future__ import annotations

import argparse
import statistics

import torch

from lightfer.bench import measure_throughput
from lightfer.losses import AUNeighbourKL, Regime, build_regime, ldl_au_regime
from lightfer.models import create_model
from lightfer.training.data import Batch
from lightfer.training.loop import forward_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--rows", type=int, default=50_000, help="training-set size (bank)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--block-seconds", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = create_model("efficientface")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    b, k, n = args.batch_size, args.k, args.rows
    images = torch.randn(b, 3, args.image_size, args.image_size)
    neighbour_images = torch.randn(b * k, 3, args.image_size, args.image_size)
    rows = torch.randperm(n)[:b]
    batch = Batch(images, torch.randint(0, 7, (b,)), rows, torch.softmax(torch.randn(b, 7), 1))
    neighbours = torch.randint(0, n, (n, k))
    weights = torch.rand(n, k)
    soft = torch.softmax(torch.randn(n, 7), 1)

    def au(source: str) -> Regime:
        init = None if source == "batch" else soft
        return ldl_au_regime(1.0, AUNeighbourKL(neighbours, weights, source=source, init=init))

    def step(regime: Regime, with_neighbours: bool = False) -> None:
        optimizer.zero_grad(set_to_none=True)
        logits, seen = forward_batch(
            model, batch._replace(neighbour_images=neighbour_images if with_neighbours else None)
        )
        loss = regime(logits, seen)
        loss.backward()
        optimizer.step()

    variants = {
        "ldl": (build_regime("ldl"), False),
        "bank": (au("bank"), False),
        "ldg": (au("ldg"), False),
        "batch": (au("batch"), True),
    }
    rates = measure_throughput(
        {name: (lambda r=regime, w=wide: step(r, w)) for name, (regime, wide) in variants.items()},
        repeats=args.repeats,
        block_seconds=args.block_seconds,
    )
    medians = {name: statistics.median(values) for name, values in rates.items()}
    print(
        f"EfficientFace training steps at {args.image_size}px, batch {b}, K {k}, "
        f"{args.threads} thread(s), {args.repeats} interleaved rounds"
    )
    for name, value in medians.items():
        print(
            f"  {name:>5}: {value * b:7.1f} img/s  (per-block steps/s: "
            f"{', '.join(f'{v:.2f}' for v in rates[name])})"
        )
    for name in ("bank", "ldg", "batch"):
        print(f"  time per step, ldl_au[{name}] / ldl = {medians['ldl'] / medians[name]:.2f}x")


if __name__ == "__main__":
    main()
