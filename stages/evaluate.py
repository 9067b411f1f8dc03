"""evaluate: every trained model of a dataset on its test split, and the table over seeds."""

from __future__ import annotations

import logging
import statistics
from pathlib import Path
from typing import Any

from lightfer.evaluation import classification_metrics, ldl_metrics, write_confusion_matrix_png
from lightfer.io import atomic_path, write_json
from lightfer.labels import CLASSES
from lightfer.params import Params
from lightfer.training.data import make_loader
from lightfer.training.loop import evaluate
from stages.common import StageSpec, stage_main
from stages.train_ef import run_name
from stages.train_ef_au import REGIME as AU_REGIME
from stages.training import Splits, dataset_of, device, load_splits, load_trained

logger = logging.getLogger("lightfer.stages.evaluate")

_AGGREGATED = ("accuracy", "mean_class_accuracy", "kl_divergence", "true_majority_accuracy")


def _runs(params: Params) -> dict[str, list[str]]:
    """Model runs grouped as the paper's Table 2 rows: the LDG, then EF per regime."""
    groups = {"ldg": ["ldg"]}
    for regime in (*params.train.regimes, AU_REGIME):
        groups[f"ef-{regime}"] = [run_name(regime, seed) for seed in params.train.seeds]
    return groups


def spread(values: list[float]) -> dict[str, float]:
    """Min, median and max of one metric over runs (the paper's Table 2 cells)."""
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def test_metrics(params: Params, splits: Splits, model_path: Path) -> dict[str, Any]:
    """A trained model's classification (and, with true distributions, LDL) test metrics."""
    model, checkpoint = load_trained(model_path)
    loader = make_loader(
        dataset_of(splits, splits.test, checkpoint.image_size or params.align.crop_size),
        batch_size=256, train=False,
    )  # fmt: skip
    result = evaluate(model, loader, device())
    metrics = classification_metrics(result["probs"], result["labels"], CLASSES)
    if splits.true_dist is not None:
        metrics.update(ldl_metrics(result["probs"], splits.true_dist[result["rows"]]))
    return metrics


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Write `reports/<dataset>/evaluate.json`, `table2.md` and confusion-matrix PNGs."""
    splits = load_splits(params, root, dataset)
    reports = root / "reports" / dataset
    per_run: dict[str, dict[str, Any]] = {}
    groups = _runs(params)
    for name in [run for runs in groups.values() for run in runs]:
        metrics = test_metrics(params, splits, root / "models" / dataset / f"{name}.pt")
        write_confusion_matrix_png(
            reports / "confusion" / f"{name}.png", metrics["confusion_matrix"], CLASSES,
            title=f"{dataset} {name}: accuracy {metrics['accuracy']:.3f}",
        )  # fmt: skip
        per_run[name] = metrics
    table = {
        group: {key: spread([per_run[r][key] for r in runs]) for key in _AGGREGATED
                if key in per_run[runs[0]]} | {"runs": len(runs)}
        for group, runs in groups.items()
    }  # fmt: skip
    summary = {"test_samples": len(splits.test), "runs": per_run, "table": table}
    write_json(reports / "evaluate.json", summary)
    with atomic_path(reports / "table2.md") as tmp:
        tmp.write_text(format_table(dataset, table, len(splits.test)))
    return summary


def _cell(row: dict[str, Any], key: str, scale: float = 100.0, digits: int = 2) -> str:
    if key not in row:
        return "n/a"
    return " / ".join(f"{row[key][s] * scale:.{digits}f}" for s in ("min", "median", "max"))


def format_table(dataset: str, table: dict[str, dict[str, Any]], test_samples: int) -> str:
    """The paper's Table 2 shape: min / median / max over seeds per model and regime."""
    lines = [
        f"Test accuracy (%) on {dataset} ({test_samples} test images), min / median / max "
        "over seeds; the epoch is chosen on validation.",
        "",
        "| model | runs | accuracy | mean class accuracy | KL to true distribution |",
        "| --- | --- | --- | --- | --- |",
    ]
    for group, row in table.items():
        lines.append(
            f"| {group} | {row['runs']} | {_cell(row, 'accuracy')} | "
            f"{_cell(row, 'mean_class_accuracy')} | {_cell(row, 'kl_divergence', 1.0, 3)} |"
        )
    return "\n".join(lines) + "\n"


STAGE = StageSpec(
    name="evaluate",
    deps=("stages/evaluate.py", "stages/training.py", "stages/train_ef.py", "stages/train_ef_au.py",
          "lightfer/evaluation.py", "lightfer/training", "lightfer/models",
          "data/{dataset}/faces", "data/{dataset}/prepared", "models/{dataset}"),
    outs=("reports/{dataset}/confusion", "reports/{dataset}/table2.md",
          "reports/{dataset}/evaluate.json"),
    params=("base.seed", "train.val_fraction", "train.regimes", "train.seeds"),
    run=run,
)  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(stage_main(STAGE))
