"""report: one Markdown report over every dataset and the benchmark, beside the paper.

Reads, for every dataset in params.yaml, `reports/<dataset>/evaluate.json` (required) and,
where their stages have run, `prepare.json`, `soft_labels.json`, `knn.json`,
`aux_analysis.json`, `study.json` (datasets in `study.datasets`), the per-epoch training
CSVs and JSONs in `train/`, and the figures in `confusion/` and `aux/`; and
`reports/bench/bench.json` (required). Writes `report/report.md` and the training-curve
figures in `report/figures/`; the report links the other stages' figures where they are.

The report lives outside `reports/` so that the stage can depend on the whole `reports/`
folder (a stage without axes needs concrete deps, and the datasets come from params):
whatever dataset is added, a change to any metric or figure rebuilds the report.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from lightfer.errors import StageOutputError
from lightfer.io import atomic_path
from lightfer.params import Params
from lightfer.report import DatasetMetrics, build_report, plot_training_curves
from stages.common import StageSpec, stage_main

logger = logging.getLogger("lightfer.stages.report")

REPORT = Path("report/report.md")
FIGURES = Path("report/figures")
BENCH = "reports/bench/bench.json"


def _read_json(path: Path, stage: str, dataset: str | None = None) -> dict[str, Any]:
    if not path.is_file():
        target = stage if dataset is None else f"{stage}@{dataset}"
        raise StageOutputError(
            f"{path} does not exist; the report needs it: run the {stage} stage first "
            f"(dvc repro {target})"
        )
    return json.loads(path.read_text())


def _optional_json(path: Path, inputs: list[tuple[str, bool]], root: Path) -> dict | None:
    inputs.append((path.relative_to(root).as_posix(), path.is_file()))
    return json.loads(path.read_text()) if path.is_file() else None


def _link(path: Path, report_dir: Path) -> str:
    return Path(os.path.relpath(path, report_dir)).as_posix()


def _load_dataset(
    params: Params, root: Path, dataset: str, figures_dir: Path, inputs: list[tuple[str, bool]]
) -> DatasetMetrics:
    """Read one dataset's metrics, draw its training curves into `figures_dir`."""
    reports = root / "reports" / dataset
    report_dir = (root / REPORT).parent
    evaluate = _read_json(reports / "evaluate.json", "evaluate", dataset)
    inputs.append(((reports / "evaluate.json").relative_to(root).as_posix(), True))
    optional = {
        name: _optional_json(reports / f"{name}.json", inputs, root)
        for name in ("prepare", "soft_labels", "knn", "aux_analysis")
    }
    in_study = dataset in params.study.datasets
    study = _optional_json(reports / "study.json", inputs, root) if in_study else None

    runs = sorted(evaluate["runs"])
    csvs = {run: reports / "train" / f"{run}.csv" for run in runs}
    csvs = {run: path for run, path in csvs.items() if path.is_file()}
    train = {}
    for run in runs:
        path = reports / "train" / f"{run}.json"
        summary = _optional_json(path, inputs, root)
        if summary is not None:
            train[run] = summary
    curves = None
    if csvs:
        out = figures_dir / f"{dataset}-training-curves.png"
        plot_training_curves(
            csvs,
            out,
            f"{dataset}: accuracy per epoch",
            selected_epochs={
                r: t["selected_epoch"] for r, t in train.items() if "selected_epoch" in t
            },
        )
        curves = _link(root / FIGURES / out.name, report_dir)
    inputs += [(p.relative_to(root).as_posix(), True) for p in csvs.values()]

    confusion = {}
    for run in runs:
        png = reports / "confusion" / f"{run}.png"
        if png.is_file():
            confusion[run] = _link(png, report_dir)
    aux_figures: dict[str, dict[str, str]] = {}
    labels = list((optional["aux_analysis"] or {}).get("backends", {}))
    for label in labels:
        stem = label.replace("@", "-")
        found = {
            kind: _link(reports / "aux" / f"{kind}-{stem}.png", report_dir)
            for kind in ("tsne", "heatmap")
            if (reports / "aux" / f"{kind}-{stem}.png").is_file()
        }
        if found:
            aux_figures[label] = found
    return DatasetMetrics(
        name=dataset,
        kind=params.dataset(dataset).kind,
        evaluate=evaluate,
        prepare=optional["prepare"],
        soft_labels=optional["soft_labels"],
        knn=optional["knn"],
        aux_analysis=optional["aux_analysis"],
        study=study,
        in_study=in_study,
        train=train,
        curves=curves,
        confusion=confusion,
        aux_figures=aux_figures,
    )


def run(params: Params, root: Path) -> dict[str, Any]:
    """Write `report/report.md` and the training curves in `report/figures/`."""
    bench = _read_json(root / BENCH, "bench")
    inputs: list[tuple[str, bool]] = []
    with atomic_path(root / FIGURES) as figures_dir:
        figures_dir.mkdir()
        datasets = [
            _load_dataset(params, root, name, figures_dir, inputs) for name in params.datasets
        ]
    inputs.append((BENCH, True))
    report = build_report(
        datasets,
        bench,
        ldg_arch=params.train.ldg.arch,
        ef_arch=params.train.ef.arch,
        inputs=inputs,
    )
    report_dir = (root / REPORT).parent
    broken = [link for link in report.figures if not (report_dir / link).is_file()]
    if broken:
        raise StageOutputError(f"{root / REPORT} would link missing figures: {', '.join(broken)}")
    with atomic_path(root / REPORT) as tmp:
        tmp.write_text(report.markdown)
    logger.info(
        "report written to %s: %d sections, %d figures",
        root / REPORT,
        len(report.sections),
        len(report.figures),
    )
    return {
        "report": REPORT.as_posix(),
        "datasets": list(params.datasets),
        "sections": report.sections,
        "figures": len(report.figures),
    }


STAGE = StageSpec(
    name="report",
    deps=("stages/report.py", "lightfer/report.py", "reports"),
    outs=(REPORT.as_posix(), FIGURES.as_posix()),
    params=("datasets", "study.datasets", "train.ldg.arch", "train.ef.arch"),
    run=run,
    axes=(),
)

if __name__ == "__main__":
    raise SystemExit(stage_main(STAGE))
