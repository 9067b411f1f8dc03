"""Benchmark EfficientFace against its LDG (ResNet-50) and ShuffleNetV2, and print the ratios.

Runs `lightfer.bench.run_benchmark` (all models in one process, interleaved shuffled blocks,
same-run medians) and prints its Markdown tables, ending with the issue's targets:

* EfficientFace eager >= 4x ResNet-50 eager, and >= 0.8x ShuffleNetV2 x1.0 eager (batch 1);
* EfficientFace's deployment path (ONNX Runtime or OpenVINO) >= 3.5x its eager speed, and
  >= 4x (1 thread) and >= 5x (2 threads) the official-style eager EfficientFace;
* EfficientFace's inference memory <= 1/3 of ResNet-50's.

With --checkpoint and --faces (a trained model and its dataset's face cache), the deployment
runtimes' top-1 agreement with it is measured on the test faces, and only runtimes that
agree on at least 99% count as the deployment path.

Usage::

    .venv/bin/python scripts/bench_models.py [--threads 1 2] [--repeats 7] [--json out.json]

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
        "--deployment-models",
        nargs="+",
        default=["efficientface"],
        help="models also timed on int8 and OpenVINO (default: %(default)s)",
    )
    parser.add_argument(
        "--repeats", type=int, default=7, help="interleaved rounds (default: %(default)s)"
    )
    parser.add_argument(
        "--block-seconds", type=float, default=1.0, help="block length (default: %(default)s)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        nargs="+",
        default=[1, 2],
        help="intra-op thread counts, one timing group each (default: %(default)s)",
    )
    parser.add_argument("--no-onnx", action="store_true", help="skip ONNX Runtime")
    parser.add_argument("--no-openvino", action="store_true", help="skip OpenVINO")
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 models")
    parser.add_argument("--checkpoint", type=Path, help="a trained model, for agreement")
    parser.add_argument("--faces", type=Path, help="its dataset's face cache (with --checkpoint)")
    parser.add_argument("--no-memory", action="store_true", help="skip the RSS subprocesses")
    parser.add_argument("--json", type=Path, help="also write the results dict to this file")
    parser.add_argument(
        "--workdir", type=Path, help="keep the exported files here (default: a temporary folder)"
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
            deployment_models=args.deployment_models,
            onnx=not args.no_onnx,
            openvino=not args.no_openvino,
            int8=not args.no_int8,
            memory=not args.no_memory,
            threads=args.threads,
            checkpoint=args.checkpoint,
            faces=args.faces,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, allow_nan=False) + "\n")
    sys.stdout.write(format_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
