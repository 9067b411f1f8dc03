"""Where every artefact of the pipeline lives, relative to a project root.

The one place that names the data paths: stages and library code ask this module instead
of joining path pieces themselves, and a test holds it to the outputs `dvc.yaml` declares.
A training run has a name (`ldg`, `ef-sll-seed0`; the study's `noise0.5-seed0`). One
`train-ef` stage trains every seed of a regime, so an EfficientFace run's files sit in its
regime's folder: `ef-sll-seed0` is `models/<dataset>/ef-sll/seed0.pt`.
"""

from __future__ import annotations

from pathlib import Path

# Finished training runs and align keep no state here; killed ones resume from it.
RUNS_DIR = ".runs"
MANIFEST_FILE = "manifest.parquet"
GRAPH_FILE = "graph.npz"


# The data of one dataset, in DAG order.


def dataset_dir(root: Path, dataset: str) -> Path:
    """`data/<dataset>/`: every data artefact of one dataset."""
    return root / "data" / dataset


def prepared_dir(root: Path, dataset: str) -> Path:
    """`prepare`'s output: the manifest and, where the stage writes them, the images."""
    return dataset_dir(root, dataset) / "prepared"


def manifest_path(root: Path, dataset: str) -> Path:
    return prepared_dir(root, dataset) / MANIFEST_FILE


def faces_dir(root: Path, dataset: str) -> Path:
    """`align`'s face cache (`faces.npy` and `faces.parquet`)."""
    return dataset_dir(root, dataset) / "faces"


def aux_path(root: Path, dataset: str) -> Path:
    """`aux-labels`' auxiliary vectors, keyed by sample_id."""
    return dataset_dir(root, dataset) / "aux.parquet"


def knn_dir(root: Path, dataset: str) -> Path:
    """`knn`'s output: the neighbour graph and the NGT index beside it."""
    return dataset_dir(root, dataset) / "knn"


def graph_path(root: Path, dataset: str) -> Path:
    return knn_dir(root, dataset) / GRAPH_FILE


def ngt_index_dir(root: Path, dataset: str) -> Path:
    return knn_dir(root, dataset) / "ngt"


def soft_labels_path(root: Path, dataset: str) -> Path:
    """`soft-labels`' cached LDG distributions, keyed by sample_id."""
    return dataset_dir(root, dataset) / "soft_labels.parquet"


# Models.

LDG_RUN = "ldg"


def models_dir(root: Path, dataset: str) -> Path:
    return root / "models" / dataset


def _run_file(run: str) -> Path:
    """A run's path under its models or logs folder, without suffix.

    `ef-<regime>-seed<k>` -> `ef-<regime>/seed<k>` (its regime's folder); `ldg` -> `ldg`.
    """
    group, _, seed = run.rpartition("-")
    if group.startswith("ef-") and seed.startswith("seed"):
        return Path(group) / seed
    return Path(run)


def model_path(root: Path, dataset: str, run: str) -> Path:
    """The checkpoint of a training run of the main DAG (`ldg` or `ef_run_name(...)`)."""
    return models_dir(root, dataset) / f"{_run_file(run)}.pt"


def ldg_path(root: Path, dataset: str) -> Path:
    return model_path(root, dataset, LDG_RUN)


def ef_run_name(regime: str, seed: int) -> str:
    return f"ef-{regime}-seed{seed}"


def ef_models_dir(root: Path, dataset: str, regime: str) -> Path:
    """`models/<dataset>/ef-<regime>/`: one checkpoint per seed, written by one stage."""
    return models_dir(root, dataset) / f"ef-{regime}"


def ef_model_path(root: Path, dataset: str, regime: str, seed: int) -> Path:
    return model_path(root, dataset, ef_run_name(regime, seed))


def study_run_name(noise: float, seed: int) -> str:
    return f"noise{noise}-seed{seed}"  # noise0.0-seed0


def study_models_dir(root: Path, dataset: str) -> Path:
    """`models/study/<dataset>/`: every study run's checkpoint, written by one stage."""
    return root / "models" / "study" / dataset


def study_model_path(root: Path, dataset: str, noise: float, seed: int) -> Path:
    return study_models_dir(root, dataset) / f"{study_run_name(noise, seed)}.pt"


def newest_expression_model(root: Path) -> Path | None:
    """The most recently written EfficientFace-style checkpoint of the main DAG, or None.

    `models/<dataset>/ef-<regime>/*.pt` newest by modification time, leaving out the LDGs
    (`ldg.pt`, the label-distribution teachers) and the noise study's models
    (`models/study/`).
    """
    found = [path for path in (root / "models").glob("*/ef-*/*.pt") if path.is_file()]
    return max(found, key=lambda path: (path.stat().st_mtime, str(path)), default=None)


# Reports of one dataset.


def reports_dir(root: Path, dataset: str) -> Path:
    return root / "reports" / dataset


def contact_sheet_path(root: Path, dataset: str) -> Path:
    return reports_dir(root, dataset) / "contact_sheet.png"


def stage_metrics_path(root: Path, dataset: str, metrics: str) -> Path:
    """A per-dataset stage's metrics: `prepare`, `align`, `aux`, `knn`, `soft_labels`,
    `evaluate`, `study` (the study's summary) or `aux_analysis`."""
    return reports_dir(root, dataset) / f"{metrics}.json"


def curves_dir(root: Path, dataset: str) -> Path:
    """`reports/<dataset>/curves/`: the per-epoch histories of the runs a stage trains by
    the folder (DVC plots a folder's every file, so the summaries live apart)."""
    return reports_dir(root, dataset) / "curves"


def training_log_paths(root: Path, dataset: str, run: str) -> tuple[Path, Path]:
    """A main-DAG training run's per-epoch history (`.csv`) and summary (`.json`):
    `train/ldg.{csv,json}`; `curves/ef-<regime>/seed<k>.csv`, `train/ef-<regime>/seed<k>.json`.
    """
    file = _run_file(run)
    train = reports_dir(root, dataset) / "train"
    if file.parent == Path():
        return train / f"{run}.csv", train / f"{run}.json"
    return (curves_dir(root, dataset) / file).with_suffix(".csv"), (train / file).with_suffix(
        ".json"
    )


def ef_logs_dir(root: Path, dataset: str, regime: str) -> Path:
    """`reports/<dataset>/train/ef-<regime>/`: each seed's summary."""
    return reports_dir(root, dataset) / "train" / f"ef-{regime}"


def ef_curves_dir(root: Path, dataset: str, regime: str) -> Path:
    """`reports/<dataset>/curves/ef-<regime>/`: each seed's per-epoch history."""
    return curves_dir(root, dataset) / f"ef-{regime}"


def study_runs_dir(root: Path, dataset: str) -> Path:
    """`reports/<dataset>/study/`: each study run's summary."""
    return reports_dir(root, dataset) / "study"


def study_curves_dir(root: Path, dataset: str) -> Path:
    """`reports/<dataset>/curves/study/`: each study run's per-epoch history."""
    return curves_dir(root, dataset) / "study"


def study_log_paths(root: Path, dataset: str, noise: float, seed: int) -> tuple[Path, Path]:
    """A study run's per-epoch history (`.csv`) and summary with test metrics (`.json`)."""
    name = study_run_name(noise, seed)
    # Not `with_suffix`: the name holds a dot of its own (`noise0.5-seed0`).
    return study_curves_dir(root, dataset) / f"{name}.csv", study_runs_dir(root, dataset) / (
        f"{name}.json"
    )


def table2_path(root: Path, dataset: str) -> Path:
    return reports_dir(root, dataset) / "table2.md"


def confusion_dir(root: Path, dataset: str) -> Path:
    return reports_dir(root, dataset) / "confusion"


def confusion_path(root: Path, dataset: str, run: str) -> Path:
    return confusion_dir(root, dataset) / f"{run}.png"


def study_table_path(root: Path, dataset: str) -> Path:
    return reports_dir(root, dataset) / "study.md"


def aux_figures_dir(root: Path, dataset: str) -> Path:
    """`aux-analysis`' t-SNE maps and heatmaps."""
    return reports_dir(root, dataset) / "aux"


def aux_figure_path(root: Path, dataset: str, kind: str, space: str) -> Path:
    """A `tsne` or `heatmap` figure of one auxiliary space (`oracle@0.0` -> `oracle-0.0`)."""
    return aux_figures_dir(root, dataset) / f"{kind}-{space.replace('@', '-')}.png"


# Whole-project outputs.


def bench_dir(root: Path) -> Path:
    return root / "reports" / "bench"


def bench_metrics_path(root: Path) -> Path:
    return bench_dir(root) / "bench.json"


def bench_table_path(root: Path) -> Path:
    return bench_dir(root) / "bench.md"


def report_path(root: Path) -> Path:
    """The assembled results live in `results/`, apart from the per-stage `reports/`, which
    the report stage depends on as a whole."""
    return root / "results" / "report.md"


def report_figures_dir(root: Path) -> Path:
    return root / "results" / "figures"


def summary_path(root: Path) -> Path:
    """The headline metrics (`lightfer.summary`), beside the report they summarise."""
    return root / "results" / "summary.json"


# The powered AU study (`studies/au/`, whose root holds its own data, models and reports).


def au_study_root(root: Path) -> Path:
    """`studies/au/`: the AU study's own pipeline, params, data, models and reports."""
    return root / "studies" / "au"


def arm_run_name(arm: str, seed: int) -> str:
    """An AU-study training run: `<arm>-seed<k>`."""
    return f"{arm}-seed{seed}"


def arm_models_dir(root: Path, dataset: str, arm: str) -> Path:
    """`models/<dataset>/arms/<arm>/`: one checkpoint per seed."""
    return models_dir(root, dataset) / "arms" / arm


def arm_predictions_path(root: Path, dataset: str, arm: str) -> Path:
    """Every seed's test-set distributions of one arm, keyed by seed and `sample_id`."""
    return dataset_dir(root, dataset) / "arms" / f"{arm}.parquet"


def arm_report_path(root: Path, dataset: str, arm: str) -> Path:
    """One arm's training summaries and test metrics, per seed."""
    return reports_dir(root, dataset) / "arms" / f"{arm}.json"


def au_study_figure_path(root: Path, dataset: str) -> Path:
    """The study's figure: each AU arm's gain over LDL with its interval, against noise."""
    return reports_dir(root, dataset) / "au_study_gain.png"


# Resumable state.


def stage_run_name(stage: str, *values: object) -> str:
    """An expanded stage as DVC names it: `bench`, `align@caer`, `train-ef@synthetic-sll`."""
    return f"{stage}@{'-'.join(map(str, values))}" if values else stage


def run_state_dir(root: Path, stage_run: str, fingerprint: str) -> Path:
    """Where a resumable run keeps its state: `.runs/<stage run>/<fingerprint>/`."""
    return root / RUNS_DIR / stage_run / fingerprint
