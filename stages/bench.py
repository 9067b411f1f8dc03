"""bench: parameters, FLOPs, speed and memory of the models (the paper's Table 3 and beyond)."""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any

from lightfer import catalog
from lightfer.bench import format_markdown, run_benchmark
from lightfer.errors import StageOutputError
from lightfer.io import atomic_path, write_json
from lightfer.params import Params
from lightfer.stage import stage_main

logger = logging.getLogger("lightfer.stages.bench")


def run(params: Params, root: Path) -> dict[str, Any]:
    """Benchmark the configured models; write `reports/bench/bench.{json,md}`.

    With `bench.agreement`, the EfficientFace is that trained checkpoint, and the deployment
    runtimes' agreement with it is measured on its dataset's test faces.
    """
    spec = params.bench
    trained: dict[str, Any] = {}
    if spec.agreement is not None:
        agreement = spec.agreement
        params.dataset(agreement.dataset)  # configured, or a ParamsError listing those that are
        checkpoint = catalog.ef_model_path(
            root, agreement.dataset, agreement.regime, agreement.seed
        )
        faces = catalog.faces_dir(root, agreement.dataset)
        for path, made_by in ((checkpoint, "the train-ef stage"), (faces, "the align stage")):
            if not path.exists():
                raise StageOutputError(
                    f"bench.agreement needs {path}, which {made_by} writes; run it first "
                    f"(dvc repro), or set bench.agreement: null to benchmark random weights"
                )
        trained = {"checkpoint": checkpoint, "faces": faces, "agreement_limit": agreement.limit}
    with tempfile.TemporaryDirectory(prefix="lightfer-bench-") as workdir:
        results = run_benchmark(
            workdir=Path(workdir),
            models=spec.models,
            deployment_models=spec.deployment_models,
            image_size=spec.image_size,
            batch_sizes=spec.batch_sizes,
            repeats=spec.repeats,
            block_seconds=spec.block_seconds,
            onnx=spec.onnx,
            int8=spec.int8,
            openvino=spec.openvino,
            memory=spec.memory,
            gpu=spec.gpu,
            threads=spec.threads,
            seed=params.base.seed,
            **trained,
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
