"""evaluate: every trained model of a dataset on its test split, and the table over seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightfer import catalog
from lightfer.evaluation import (
    evaluate_checkpoint,
    model_runs,
    seed_table,
    write_confusion_matrix_png,
)
from lightfer.io import atomic_path, write_json
from lightfer.labels import CLASSES
from lightfer.params import Params
from lightfer.splits import load_splits
from lightfer.stage import DATASET, stage_main
from lightfer.tables import table2
from lightfer.training.run import AU_REGIME


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Write `reports/<dataset>/evaluate.json`, `table2.md` and confusion-matrix PNGs."""
    splits = load_splits(params, root, dataset)
    groups = model_runs([*params.train.regimes, AU_REGIME], params.train.seeds)
    per_run: dict[str, dict[str, Any]] = {}
    for name in [run for runs in groups.values() for run in runs]:
        metrics = evaluate_checkpoint(
            catalog.model_path(root, dataset, name), splits, image_size=params.align.crop_size
        )
        write_confusion_matrix_png(
            catalog.confusion_path(root, dataset, name),
            metrics["confusion_matrix"],
            CLASSES,
            title=f"{dataset} {name}: accuracy {metrics['accuracy']:.3f}",
        )
        per_run[name] = metrics
    table = seed_table(groups, per_run)
    summary = {"test_samples": len(splits.test), "runs": per_run, "table": table}
    write_json(catalog.stage_metrics_path(root, dataset, "evaluate"), summary)
    with atomic_path(catalog.table2_path(root, dataset)) as tmp:
        tmp.write_text(table2(dataset, summary))
    return summary


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.evaluate --dataset NAME [--params FILE]`."""
    return stage_main("evaluate", run, argv, options=(DATASET,))


if __name__ == "__main__":
    raise SystemExit(main())
