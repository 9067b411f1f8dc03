"""bench: parameters, FLOPs, speed and memory of the models (the paper's Table 3 and beyond)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from lightfer import catalog
from lightfer.bench import format_markdown, run_benchmark
from lightfer.io import atomic_path, write_json
from lightfer.params import Params
from lightfer.stage import stage_main

logger = logging.getLogger("lightfer.stages.bench")


def run(params: Params, root: Path) -> dict[str, Any]:
    """Benchmark the configured models; write `reports/bench/bench.{json,md}`."""
    spec = params.bench
    with tempfile.TemporaryDirectory(prefix="lightfer-bench-") as workdir:
        results = run_benchmark(
            workdir=Path(workdir),
            models=spec.models,
            image_size=spec.image_size,
            batch_sizes=spec.batch_sizes,
            repeats=spec.repeats,
            block_seconds=spec.block_seconds,
            onnx=spec.onnx,
            int8=spec.int8,
            memory=spec.memory,
            gpu=spec.gpu,
            num_threads=spec.threads,
            seed=params.base.seed,
        )
    with atomic_path(catalog.bench_table_path(root)) as tmp:
        tmp.write_text(format_markdown(results))
    write_json(catalog.bench_metrics_path(root), results)
    logger.info("benchmark written to %s", catalog.bench_dir(root))
    return results


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.bench [--params FILE]`."""
    return stage_main("bench", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
