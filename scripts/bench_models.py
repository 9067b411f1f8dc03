"""Benchmark EfficientFace against its LDG (ResNet-50) and ShuffleNetV2, and print the ratios.

Runs `lightfer.bench.run_benchmark` (all models in one process, interleaved shuffled blocks,
same-run medians) and prints its Markdown tables, ending with the issue's targets:

* EfficientFace eager >= 4x ResNet-50 eager, and >= 0.8x ShuffleNetV2 x1.0 eager (batch 1);
* EfficientFace's deployment path (ONNX Runtime fp32 or int8) >= 3.5x its eager speed;
* EfficientFace's inference memory <= 1/3 of ResNet-50's.

Usage::

    .venv/bin/python scripts/bench_models.py [--threads 1] [--repeats 7] [--json out.json]

A full run at 224x224 takes several minutes on two cores. This is a measuring tool, not a
test: on a shared machine the absolute numbers drift by tens of percent; compare ratios.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

from lightfer.bench import format_markdown, run_benchmark


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        nargs="+",
        default=["efficientface", "resnet50", "shufflenet_v2_x1_0"],
        help="registry names (default: %(default)s)",
    )
    parser.add_argument("--image-size", type=int, default=224, help="default: %(default)s")
    parser.add_argument(
        "--batch-sizes", type=int, nargs="+", default=[1, 16], help="default: %(default)s"
    )
    parser.add_argument(
        "--repeats", type=int, default=7, help="interleaved rounds (default: %(default)s)"
    )
    parser.add_argument(
        "--block-seconds", type=float, default=1.0, help="block length (default: %(default)s)"
    )
    parser.add_argument(
        "--threads", type=int, default=1, help="intra-op threads (default: %(default)s)"
    )
    parser.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime (and int8)")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 model")
    parser.add_argument("--no-memory", action="store_true", help="skip the RSS subprocesses")
    parser.add_argument("--json", type=Path, help="also write the results dict to this file")
    parser.add_argument(
        "--workdir", type=Path, help="keep the ONNX files here (default: a temporary folder)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print Markdown to stdout; returns the exit status."""
    args = _parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    with tempfile.TemporaryDirectory(prefix="lightfer-bench-") as scratch:
        workdir = args.workdir or Path(scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        results = run_benchmark(
            workdir=workdir,
            models=args.models,
            image_size=args.image_size,
            batch_sizes=args.batch_sizes,
            repeats=args.repeats,
            block_seconds=args.block_seconds,
            onnx=not args.no_onnx,
            int8=not (args.no_onnx or args.no_int8),
            memory=not args.no_memory,
            num_threads=args.threads,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    sys.stdout.write(format_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
