"""What the report reads: every dataset's metrics and figures, and the benchmark.

For every dataset in params.yaml, `reports/<dataset>/evaluate.json` (required) and, where
their stages have run, `prepare.json`, `soft_labels.json`, `knn.json`, `aux_analysis.json`,
`study.json` (datasets in `study.datasets`), the per-epoch training CSVs and JSONs in
`train/`, and the figures in `confusion/` and `aux/`; and `reports/bench/bench.json`
(required). The training curves are drawn here, into the report's figures folder.

The powered AU study (`studies/au/`) is its own DVC pipeline, and its committed results are
read as they are: declaring them as a DVC dependency would make `dvc repro` of this
pipeline re-run the study (about 80 minutes) wherever its cache is absent, as in a fresh
clone. They are listed under the report's inputs, and a test holds the report to them.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightfer import catalog
from lightfer.errors import StageOutputError
from lightfer.params import Params, load_params
from lightfer.report import AuStudyResult, DatasetMetrics, plot_training_curves

__all__ = ["ReportInputs", "gather_report_inputs"]

_OPTIONAL = ("prepare", "soft_labels", "knn", "aux_analysis")


@dataclass(frozen=True)
class ReportInputs:
    """The report's inputs; `inputs` lists every file it looked for, and whether it was there."""

    datasets: list[DatasetMetrics]
    bench: dict[str, Any]
    inputs: list[tuple[str, bool]]
    au_study: AuStudyResult | None = None


def _read_json(path: Path, stage: str, dataset: str | None = None) -> dict[str, Any]:
    if not path.is_file():
        target = stage if dataset is None else f"{stage}@{dataset}"
        raise StageOutputError(
            f"{path} does not exist; the report needs it: run the {stage} stage first "
            f"(dvc repro {target})"
        )
    return json.loads(path.read_text())


class _Reader:
    """Reads files under `root`, recording each one looked for in `inputs`."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.inputs: list[tuple[str, bool]] = []
        self.report_dir = catalog.report_path(root).parent

    def record(self, path: Path, found: bool = True) -> None:
        self.inputs.append((path.relative_to(self.root).as_posix(), found))

    def optional_json(self, path: Path) -> dict | None:
        self.record(path, path.is_file())
        return json.loads(path.read_text()) if path.is_file() else None

    def link(self, path: Path) -> str:
        """`path` relative to the report's folder, as the report links it."""
        return Path(os.path.relpath(path, self.report_dir)).as_posix()


def _curves(
    reader: _Reader, dataset: str, runs: list[str], train: dict[str, Any], figures_dir: Path
) -> str | None:
    """Draw the dataset's training curves into `figures_dir`; the report's link to them."""
    root = reader.root
    csvs = {run: catalog.training_log_paths(root, dataset, run)[0] for run in runs}
    csvs = {run: path for run, path in csvs.items() if path.is_file()}
    if not csvs:
        return None
    out = figures_dir / f"{dataset}-training-curves.png"
    selected = {r: t["selected_epoch"] for r, t in train.items() if "selected_epoch" in t}
    plot_training_curves(csvs, out, f"{dataset}: accuracy per epoch", selected_epochs=selected)
    for path in csvs.values():
        reader.record(path)
    return reader.link(catalog.report_figures_dir(root) / out.name)


def _dataset(params: Params, reader: _Reader, dataset: str, figures_dir: Path) -> DatasetMetrics:
    """Read one dataset's metrics, draw its training curves into `figures_dir`."""
    root = reader.root
    evaluate_path = catalog.stage_metrics_path(root, dataset, "evaluate")
    evaluate = _read_json(evaluate_path, "evaluate", dataset)
    reader.record(evaluate_path)
    optional = {
        name: reader.optional_json(catalog.stage_metrics_path(root, dataset, name))
        for name in _OPTIONAL
    }
    in_study = dataset in params.study.datasets
    study_path = catalog.stage_metrics_path(root, dataset, "study")
    study = reader.optional_json(study_path) if in_study else None
    runs = sorted(evaluate["runs"])
    train = {}
    for run in runs:
        summary = reader.optional_json(catalog.training_log_paths(root, dataset, run)[1])
        if summary is not None:
            train[run] = summary
    curves = _curves(reader, dataset, runs, train, figures_dir)
    confusion = {
        run: reader.link(catalog.confusion_path(root, dataset, run))
        for run in runs
        if catalog.confusion_path(root, dataset, run).is_file()
    }
    aux_figures: dict[str, dict[str, str]] = {}
    for label in (optional["aux_analysis"] or {}).get("backends", {}):
        found = {
            kind: reader.link(catalog.aux_figure_path(root, dataset, kind, label))
            for kind in ("tsne", "heatmap")
            if catalog.aux_figure_path(root, dataset, kind, label).is_file()
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


def gather_report_inputs(params: Params, root: Path, figures_dir: Path) -> ReportInputs:
    """Read the report's inputs under `root`; draw the training curves into `figures_dir`.

    `figures_dir` may be a temporary folder that becomes `results/figures/`: the report
    links the curves at their final place.

    Raises:
        StageOutputError: a required input (a dataset's evaluate.json, bench.json) is missing.
    """
    bench_path = catalog.bench_metrics_path(root)
    bench = _read_json(bench_path, "bench")
    reader = _Reader(root)
    datasets = [_dataset(params, reader, name, figures_dir) for name in params.datasets]
    reader.record(bench_path)
    au_study = _au_study(reader)
    return ReportInputs(datasets=datasets, bench=bench, inputs=reader.inputs, au_study=au_study)


def _au_study(reader: _Reader) -> AuStudyResult | None:
    """The AU study's committed comparisons and the links to its figure and tables."""
    study_root = catalog.au_study_root(reader.root)
    params_path = study_root / "params.yaml"
    if not params_path.is_file():
        return None
    dataset = load_params(params_path).au_study.dataset
    result = reader.optional_json(catalog.stage_metrics_path(study_root, dataset, "au_study"))
    if result is None:
        return None
    tables = catalog.stage_metrics_path(study_root, dataset, "au_study").with_suffix(".md")
    return AuStudyResult(
        result=result,
        figure=reader.link(catalog.au_study_figure_path(study_root, dataset)),
        tables=reader.link(tables),
    )
