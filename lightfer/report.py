"""The project report: Markdown tables in the shape of the paper's, beside the paper's numbers.

Every function here takes metrics already loaded (the JSON the stages write, as dicts) and
returns Markdown; nothing reads `params.yaml` or assumes where files live. The tables:

* Table 1: parameters, multiply-adds and median accuracy per dataset, LDG and EfficientFace.
* Table 2: min / median / max test accuracy over seeds per regime (LDG, EF SLL, EF LDL,
  EF LDL+AU), with the paper's Table 2 and the effects (median differences) beside it.
* Table 3: parameters, multiply-adds, GPU batches/s, CPU images/s and memory, eager and on
  the deployment path (ONNX Runtime), with the paper's Table 3 and the same-run ratios.
* LDL metrics, per-class accuracy and confusion matrices, training curves, the soft-label
  diagnostic, the auxiliary (AU) space and the AU-noise study.

`PAPER` holds the numbers the paper reports (docs/method.md, section 7: "Results the paper
reports" and "Cost"). `build_report` assembles the whole document from one
`DatasetMetrics` per dataset and the benchmark. Table 2 for one dataset and the AU-noise
study's table are `lightfer.tables`' (the stages write the same bytes to table2.md and
study.md); every table goes through `lightfer.tables.markdown_table`.
`plot_training_curves` draws the validation accuracy per epoch of a dataset's runs.
"""

from __future__ import annotations

import csv
import logging
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lightfer import tables
from lightfer.au_study_result import au_gains_over_ldl, is_reference_au_arm, noise_curve
from lightfer.io import atomic_path
from lightfer.tables import (
    GROUPS,
    NONE,
    group_label,
    markdown_table,
    num,
    ordered_groups,
    pct,
    runs_phrase,
    spread,
)

__all__ = [
    "PAPER",
    "AuStudyResult",
    "DatasetMetrics",
    "Report",
    "au_section",
    "au_study_answer",
    "au_study_section",
    "build_report",
    "confusion_section",
    "curves_section",
    "ldl_table",
    "paper_table2",
    "plot_training_curves",
    "run_group",
    "soft_label_section",
    "study_section",
    "table1",
    "table2_effects",
    "table3",
]

logger = logging.getLogger(__name__)

# The paper's numbers (docs/method.md, section 7). Accuracy in %, (min, median, max) over seeds.
PAPER: dict[str, Any] = {
    "source": (
        "Mastropasqua & Acevedo (EfficientFace + LDL + AUs), as restated in docs/method.md; "
        "EfficientFace: Zhao, Liu, Zhou, AAAI 2021"
    ),
    "datasets": ("RAF-DB", "CAER-S", "FER+", "AffectNet-7"),
    "seeds": {"RAF-DB": 5, "CAER-S": 2, "FER+": 5, "AffectNet-7": 2},
    "test_images": {"RAF-DB": 3068, "CAER-S": 20987, "FER+": 3589, "AffectNet-7": 3500},
    "table2": {
        "ldg": {
            "RAF-DB": (88.30, 88.41, 88.69),
            "CAER-S": (85.77, 85.97, 86.17),
            "FER+": (88.72, 88.97, 89.29),
            "AffectNet-7": (57.94, 58.57, 59.20),
        },
        "ef-sll": {
            "RAF-DB": (86.50, 86.92, 87.58),
            "CAER-S": (84.05, 84.17, 84.30),
            "FER+": (87.96, 88.09, 88.44),
            "AffectNet-7": (55.60, 56.70, 57.08),
        },
        "ef-ldl": {
            "RAF-DB": (87.38, 88.03, 88.52),
            "CAER-S": (84.01, 84.20, 84.40),
            "FER+": (88.62, 89.10, 89.32),
            "AffectNet-7": (57.58, 57.87, 58.17),
        },
    },
    # LDL + AUs is reported in prose only: about this many points below EF LDL.
    "ldl_au_minus_ldl": {"RAF-DB": -1.0, "FER+": -0.6},
    # The original EfficientFace paper's LDL gain (points, RAF-DB, "up to").
    "original_ldl_gain": 2.7,
    "table3": {
        "hardware": "GTX 1080 Ti (GPU, batch 16), i9-9900K (CPU, batch 1)",
        "models": {
            "resnet50": {
                "label": "ResNet-50",
                "params_m": 23.52,
                "mmacs": 4109.0,
                "gpu_batches_per_s": 97.08,
                "cpu_images_per_s": 11.11,
                "memory_mb": 85.6,
            },
            "efficientface": {
                "label": "EfficientFace",
                "params_m": 1.28,
                "mmacs": 154.0,
                "gpu_batches_per_s": 65.65,
                "cpu_images_per_s": 45.91,
                "memory_mb": 26.3,
            },
        },
    },
}

_GROUP_STAGE = {"ldg": "train-ldg", "ef-ldl_au": "train-ef-au"}  # default: train-ef
# The dataset kinds (params.yaml) that are the paper's datasets.
_PAPER_DATASET_OF_KIND = {
    "rafdb": "RAF-DB",
    "caers": "CAER-S",
    "ferplus": "FER+",
    "affectnet": "AffectNet-7",
}


@dataclass(frozen=True)
class DatasetMetrics:
    """What the report knows about one dataset: the stages' JSON, loaded, and figure links.

    Optional inputs are None when the stage that writes them has not run. Figure links are
    relative to the report's directory and name only files that exist.

    Attributes:
        name: the dataset's key in params.yaml.
        kind: its kind (synthetic, rafdb, ...).
        evaluate: `evaluate.json`.
        prepare: `prepare.json` (the synthetic task's ceiling lives here).
        soft_labels: `soft_labels.json`.
        knn: `knn.json`.
        aux_analysis: `aux_analysis.json`.
        study: `study.json`; `in_study` says whether params.study.datasets names the dataset.
        train: each run's `train/<run>.json` (selected epoch, stopping).
        curves: the training-curve figure.
        confusion: each run's confusion-matrix figure.
        aux_figures: each auxiliary space's figures, {"tsne": link, "heatmap": link}.
    """

    name: str
    kind: str
    evaluate: Mapping[str, Any]
    prepare: Mapping[str, Any] | None = None
    soft_labels: Mapping[str, Any] | None = None
    knn: Mapping[str, Any] | None = None
    aux_analysis: Mapping[str, Any] | None = None
    study: Mapping[str, Any] | None = None
    in_study: bool = False
    train: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    curves: str | None = None
    confusion: Mapping[str, str] = field(default_factory=dict)
    aux_figures: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    @property
    def paper_dataset(self) -> str | None:
        """The paper's dataset this one is (RAF-DB, ...), or None."""
        return _PAPER_DATASET_OF_KIND.get(self.kind)

    @property
    def ceiling(self) -> Mapping[str, float] | None:
        """The synthetic task's test ceiling (prepare.json), if recorded."""
        return (self.prepare or {}).get("ceiling_test")


@dataclass(frozen=True)
class AuStudyResult:
    """The powered AU study's `au_study.json`, and its figure and tables as the report
    links them."""

    result: Mapping[str, Any]
    figure: str
    tables: str


@dataclass(frozen=True)
class Report:
    """The rendered report: its Markdown, section headings and linked figures."""

    markdown: str
    sections: list[str]
    figures: list[str]


# ----------------------------------------------------------------------------- helpers


def _median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def run_group(run: str) -> str:
    """The evaluate.json group of a run name (`ef-ldl-seed1` -> `ef-ldl`, `ldg` -> `ldg`)."""
    head, sep, seed = run.rpartition("-seed")
    return head if sep and seed.isdigit() else run


def _run_order(run: str) -> tuple[int, str]:
    group = run_group(run)
    return (GROUPS.index(group) if group in GROUPS else len(GROUPS), run)


def _group_runs(evaluate: Mapping[str, Any]) -> dict[str, list[str]]:
    groups: dict[str, list[str]] = {}
    for run in sorted(evaluate["runs"]):
        groups.setdefault(run_group(run), []).append(run)
    return {g: groups[g] for g in ordered_groups(groups)}


def _median_of(evaluate: Mapping[str, Any], group: str, key: str) -> float | None:
    entry = evaluate["table"].get(group, {}).get(key)
    return None if entry is None else entry["median"]


def _missing_groups(data: DatasetMetrics) -> list[str]:
    return [
        f"{group_label(g)} is not in evaluate.json: the {_GROUP_STAGE.get(g, 'train-ef')} "
        f"stage has not run for {data.name}, or evaluate ran before it."
        for g in GROUPS
        if g not in data.evaluate["table"]
    ]


def _comparability(data: DatasetMetrics, *, ceiling: bool = True) -> str:
    if data.paper_dataset:
        return f"{data.name} is the paper's {data.paper_dataset}: its numbers are comparable."
    text = (
        f"{data.name} is not one of the paper's datasets, so its accuracies are not comparable "
        "with the paper's in absolute terms; compare the directions and sizes of the effects."
    )
    if data.kind == "synthetic":
        text = (
            f"{data.name} is the embedded synthetic dataset (7 classes, faces rendered from "
            "FACS action units, known true emotion distributions), not comparable with the "
            "paper's in-the-wild datasets in absolute terms; compare the directions and sizes "
            "of the effects."
        )
    if ceiling and data.ceiling:
        text += " " + _ceiling_note(data.ceiling)
    return text


def _ceiling_note(ceiling: Mapping[str, float]) -> str:
    return (
        "Its ceiling: an oracle that knows each test image's true distribution and predicts "
        f"its argmax scores {pct(ceiling['realised_oracle_accuracy'])}% against the "
        f"annotated test labels ({pct(ceiling['expected_oracle_accuracy'])}% expected, "
        "E[max d])."
    )


# ------------------------------------------------------------------------------- Table 1


def table1(
    datasets: Sequence[DatasetMetrics], bench: Mapping[str, Any], *, ldg_arch: str, ef_arch: str
) -> str:
    """Table 1: params, multiply-adds and median test accuracy per dataset, beside the paper.

    Args:
        datasets: the datasets, in params order.
        bench: `bench.json` (params and FLOPs of the benchmarked models).
        ldg_arch: the LDG's architecture in this project (`train.ldg.arch`).
        ef_arch: EfficientFace's architecture name (`train.ef.arch`).
    """
    models = bench.get("models", {})
    ours = [d.name for d in datasets]
    header = ["model", "source", "params (M)", "M mult-adds", *ours, *PAPER["datasets"]]
    rows = []
    for label, arch, group in (
        (f"LDG ({ldg_arch})", ldg_arch, "ldg"),
        (f"EfficientFace LDL ({ef_arch})", ef_arch, "ef-ldl"),
    ):
        info = models.get(arch)
        cost = (
            [NONE, NONE]
            if info is None
            else [num(info["params"] / 1e6, 2), num(info["mflops"] / 2, 1)]
        )
        accuracy = [pct(_median_of(d.evaluate, group, "accuracy")) for d in datasets]
        rows.append([label, "this project", *cost, *accuracy, *[NONE] * len(PAPER["datasets"])])
    paper_cost = PAPER["table3"]["models"]
    for label, key, group in (
        ("LDG (ResNet-50)", "resnet50", "ldg"),
        ("EfficientFace LDL", "efficientface", "ef-ldl"),
    ):
        rows.append(
            [
                label,
                "paper",
                num(paper_cost[key]["params_m"], 2),
                num(paper_cost[key]["mmacs"], 1),
                *[NONE] * len(ours),
                *[num(PAPER["table2"][group][p][1], 2) for p in PAPER["datasets"]],
            ]
        )
    runs = "; ".join(
        f"{d.name}: {d.evaluate['test_samples']} test images, LDG "
        f"{d.evaluate['table'].get('ldg', {}).get('runs', 0)} run(s), EF LDL "
        f"{d.evaluate['table'].get('ef-ldl', {}).get('runs', 0)} seed(s)"
        for d in datasets
    )
    seeds = ", ".join(f"{p} {n}" for p, n in PAPER["seeds"].items())
    notes = [
        f"**Table 1.** Parameters, multiply-adds (224x224 input) and test accuracy (%, median "
        f"over runs) per dataset, for the LDG and EfficientFace trained with LDL. This project "
        f"({runs}) beside the paper (seeds: {seeds}).",
        "",
        markdown_table(header, rows),
        "",
        "Multiply-adds are what the paper calls MFLOPs; bench.json counts 2 FLOPs per "
        "multiply-add, so its `mflops` is halved here.",
    ]
    if ldg_arch not in models:
        bench_ldg = models.get("resnet50")
        detail = (
            f" bench measures the paper's ResNet-50 ({num(bench_ldg['params'] / 1e6, 2)} M, "
            f"{num(bench_ldg['mflops'] / 2, 1)} M mult-adds, Table 3)."
            if bench_ldg
            else ""
        )
        notes.append(
            f"This project's LDG is a {ldg_arch} (train.ldg.arch), which bench.json does not "
            f"cover (bench.models), hence no cost;{detail}"
        )
    notes += [_comparability(d, ceiling=False) for d in datasets]
    return "\n".join(notes) + "\n"


# ------------------------------------------------------------------------------- Table 2


def _paper_spread(group: str, dataset: str) -> str:
    low, median, high = PAPER["table2"][group][dataset]
    return spread({"min": low, "median": median, "max": high}, scale=1.0)


def paper_table2() -> str:
    """The paper's Table 2 (accuracy %, min / median / max), LDL+AU as the paper gives it."""
    rows = []
    for group in ("ldg", "ef-sll", "ef-ldl"):
        rows.append(
            [
                group_label(group),
                *[_paper_spread(group, p) for p in PAPER["datasets"]],
            ]
        )
    rows.append(
        [
            group_label("ef-ldl_au"),
            *[
                f"≈ {-PAPER['ldl_au_minus_ldl'][p]:.1f} below EF LDL"
                if p in PAPER["ldl_au_minus_ldl"]
                else "not reported"
                for p in PAPER["datasets"]
            ],
        ]
    )
    seeds = ", ".join(f"{p} {n}" for p, n in PAPER["seeds"].items())
    return (
        f"**Paper, Table 2.** Test accuracy (%), min / median / max over seeds ({seeds}); "
        "LDL+AU is given in prose only, relative to EF LDL (the authors blame noisy automatic "
        f"AU annotations). The original EfficientFace paper reports LDL gains of up to "
        f"{PAPER['original_ldl_gain']} points on RAF-DB.\n\n"
        + markdown_table(["model", *PAPER["datasets"]], rows)
        + "\n"
    )


def _paper_effect(first: str, second: str, dataset: str) -> float | None:
    if first == "ef-ldl_au":
        return PAPER["ldl_au_minus_ldl"].get(dataset)
    return PAPER["table2"][first][dataset][1] - PAPER["table2"][second][dataset][1]


_EFFECTS = (("ef-ldl", "ef-sll"), ("ef-ldl_au", "ef-ldl"), ("ldg", "ef-ldl"))


def table2_effects(datasets: Sequence[DatasetMetrics]) -> str:
    """The regimes' effects (median accuracy differences, points): ours beside the paper's."""
    rows = []
    for first, second in _EFFECTS:
        ours = []
        for d in datasets:
            a = _median_of(d.evaluate, first, "accuracy")
            b = _median_of(d.evaluate, second, "accuracy")
            ours.append(NONE if a is None or b is None else pct(a - b, sign=True))
        paper = []
        for p in PAPER["datasets"]:
            value = _paper_effect(first, second, p)
            approx = "≈ " if first == "ef-ldl_au" and value is not None else ""
            paper.append("not reported" if value is None else f"{approx}{value:+.2f}")
        rows.append([f"{group_label(first)} − {group_label(second)}", *ours, *paper])
    header = ["effect", *[d.name for d in datasets], *[f"{p} (paper)" for p in PAPER["datasets"]]]
    return (
        "**Effects.** Median test accuracy differences in points, the comparable quantity "
        "across datasets: this project's datasets beside the paper's.\n\n"
        + markdown_table(header, rows)
        + "\n"
    )


def _table2_section(datasets: Sequence[DatasetMetrics]) -> str:
    parts = []
    for d in datasets:
        parts.append(f"### {d.name}\n\n" + tables.table2(d.name, d.evaluate))
        notes = _missing_groups(d)
        if d.ceiling:
            notes.append(_ceiling_note(d.ceiling))
        if d.paper_dataset:
            paper = _paper_spread("ef-ldl", d.paper_dataset)
            notes.append(f"Paper, EF LDL on {d.paper_dataset}: {paper}.")
        if notes:
            parts[-1] += "\n" + "\n".join(notes) + "\n"
    parts.append("### The paper's Table 2\n\n" + paper_table2() + "\n" + table2_effects(datasets))
    return "\n".join(parts)


# ------------------------------------------------------------------------------- Table 3


def _cpu(bench: Mapping[str, Any], model: str, runtime: str) -> float | None:
    """Batch-1 images/s at the benchmark's first thread count (the table's)."""
    group = f"b1-t{bench['settings']['threads'][0]}"
    entry = bench.get("cpu", {}).get(model, {}).get(runtime, {}).get(group)
    return None if entry is None else entry["images_per_s"]


def _memory(bench: Mapping[str, Any], model: str, measure: str) -> float | None:
    entry = bench.get("memory", {}).get(model, {}).get(measure)
    return None if entry is None else entry["mb"]


def _gpu(bench: Mapping[str, Any], model: str) -> float | None:
    gpu = bench.get("gpu", {})
    return gpu.get("batches_per_s", {}).get(model) if gpu.get("available") else None


def table3(bench: Mapping[str, Any]) -> str:
    """Table 3: cost of the benchmarked models, eager and deployment path, beside the paper.

    Args:
        bench: `bench.json`.
    """
    env, settings, gpu = bench["environment"], bench["settings"], bench.get("gpu", {})
    paper = PAPER["table3"]["models"]
    speed_rows, memory_rows = [], []
    for name, info in bench["models"].items():
        speed_rows.append(
            [
                name,
                "this project",
                num(info["params"] / 1e6, 2),
                num(info["mflops"] / 2, 1),
                num(_gpu(bench, name), 2),
                *[num(_cpu(bench, name, r), 2) for r in ("eager", "onnx_fp32", "onnx_int8")],
            ]
        )
        memory_rows.append(
            [
                name,
                "this project",
                *[
                    num(_memory(bench, name, m), 1)
                    for m in ("tensors", "eager", "onnx_fp32", "onnx_int8")
                ],
            ]
        )
    for p in paper.values():
        speed_rows.append(
            [
                p["label"],
                "paper",
                num(p["params_m"], 2),
                num(p["mmacs"], 1),
                num(p["gpu_batches_per_s"], 2),
                num(p["cpu_images_per_s"], 2),
                NONE,
                NONE,
            ]
        )
        memory_rows.append([p["label"], "paper", NONE, num(p["memory_mb"], 1), NONE, NONE])
    gpu_text = (
        f"GPU: {gpu['device']}, batch {gpu['batch_size']}."
        if gpu.get("available")
        else f"GPU batch/s: not measured ({gpu.get('note', 'no GPU section in bench.json')})."
    )
    lines = [
        f"**Table 3 (cost).** No dataset: random {settings['image_size']}x"
        f"{settings['image_size']} input. This project: {env['cpu']}, "
        f"{settings['threads'][0]} thread(s) of {env['logical_cpus']}, torch {env['torch']}, "
        f"onnxruntime {env.get('onnxruntime')}; speeds are medians of {settings['repeats']} "
        f"interleaved rounds of {settings['block_seconds']} s (no seeds: one benchmark run). "
        f"Paper: {PAPER['table3']['hardware']}. {gpu_text}",
        "",
        markdown_table(
            [
                "model",
                "source",
                "params (M)",
                "M mult-adds",
                "GPU batch/s",
                "CPU img/s b1 eager",
                "CPU img/s b1 ONNX fp32",
                "CPU img/s b1 ONNX int8",
            ],
            speed_rows,
        ),
        "",
        "**Table 3 (memory, MiB; paper: MB).** tensors: "
        + bench.get("memory_methods", {}).get("tensors", "weights + peak activations")
        + ". eager / ONNX: "
        + bench.get("memory_methods", {}).get("rss", "peak resident-set growth")
        + ". The paper's inference memory is shown under eager; it does not say how it was "
        "measured.",
        "",
        markdown_table(
            ["model", "source", "tensors", "eager", "ONNX fp32", "ONNX int8"], memory_rows
        ),
        "",
        _ratios(bench),
    ]
    targets = bench.get("targets", {})
    if targets:
        lines += [
            "",
            "**Benchmark targets** (bench.json; ratios of same-run medians).",
            "",
            markdown_table(
                ["target", "value", "bound", "met"],
                [
                    [
                        t["description"],
                        num(t["value"], 2),
                        num(t["bound"], 2),
                        "yes" if t["met"] else "**no**",
                    ]
                    for t in targets.values()
                ],
            ),
        ]
    return "\n".join(lines) + "\n"


def _ratios(bench: Mapping[str, Any]) -> str:
    """EfficientFace over ResNet-50: the machine-independent comparison with the paper."""
    ef, rn = "efficientface", "resnet50"
    if ef not in bench["models"] or rn not in bench["models"]:
        return (
            "EfficientFace / ResNet-50 ratios: bench.json lacks one of the two models "
            f"(benchmarked: {', '.join(bench['models'])})."
        )
    paper = PAPER["table3"]["models"]

    def ratio(a: float | None, b: float | None) -> str:
        return NONE if a is None or b is None or b == 0 else f"{a / b:.3f}"

    # The ONNX runtimes both were timed on (the bench times int8 for EfficientFace only,
    # `bench.deployment_models`), so that neither side gets a runtime the other lacks.
    common = [
        r
        for r in ("onnx_fp32", "onnx_int8")
        if _cpu(bench, ef, r) is not None and _cpu(bench, rn, r) is not None
    ]

    def deployment(model: str) -> float | None:
        rates = [rate for r in common if (rate := _cpu(bench, model, r)) is not None]
        return max(rates) if rates else None

    m = bench["models"]
    rows = [
        [
            "params",
            ratio(m[ef]["params"], m[rn]["params"]),
            ratio(paper[ef]["params_m"], paper[rn]["params_m"]),
        ],
        [
            "mult-adds",
            ratio(m[ef]["mflops"], m[rn]["mflops"]),
            ratio(paper[ef]["mmacs"], paper[rn]["mmacs"]),
        ],
        [
            "GPU batch/s",
            ratio(_gpu(bench, ef), _gpu(bench, rn)),
            ratio(paper[ef]["gpu_batches_per_s"], paper[rn]["gpu_batches_per_s"]),
        ],
        [
            "CPU img/s b1, eager",
            ratio(_cpu(bench, ef, "eager"), _cpu(bench, rn, "eager")),
            ratio(paper[ef]["cpu_images_per_s"], paper[rn]["cpu_images_per_s"]),
        ],
        ["CPU img/s b1, deployment (best ONNX)", ratio(deployment(ef), deployment(rn)), NONE],
        [
            "memory, eager",
            ratio(_memory(bench, ef, "eager"), _memory(bench, rn, "eager")),
            ratio(paper[ef]["memory_mb"], paper[rn]["memory_mb"]),
        ],
        [
            "memory, tensors",
            ratio(_memory(bench, ef, "tensors"), _memory(bench, rn, "tensors")),
            NONE,
        ],
    ]
    return (
        "**EfficientFace / ResNet-50.** Same-run ratios, comparable across machines: this "
        "project beside the paper.\n\n"
        + markdown_table(["quantity", "this project", "paper"], rows)
    )


# ---------------------------------------------------------------------------- LDL metrics

_LDL_KEYS = ("kl_divergence", "chebyshev", "cosine", "intersection")


def ldl_table(dataset: str, evaluate: Mapping[str, Any]) -> str:
    """LDL metrics against the true distributions, median over each group's runs."""
    groups = _group_runs(evaluate)
    runs = evaluate["runs"]
    if not any("kl_divergence" in metrics for metrics in runs.values()):
        return (
            f"{dataset} has no true label distributions, so evaluate.json holds no LDL metrics "
            "for it; its classification results are in Table 2.\n"
        )
    rows = []
    for group, names in groups.items():
        cells = [num(_median(runs[n][k] for n in names), 3) for k in _LDL_KEYS]
        tma = pct(_median(runs[n]["true_majority_accuracy"] for n in names))
        rows.append([group_label(group), len(names), *cells, tma])
    return (
        f"**LDL metrics ({dataset}).** Predicted distribution against the true vote "
        f"distribution on the {evaluate['test_samples']} test images, median over each "
        f"model's runs ({runs_phrase(evaluate['table'])}). KL(true ‖ predicted) and "
        "Chebyshev: lower is better; cosine, intersection and true-majority accuracy (the "
        "prediction's argmax is the true distribution's): higher is better. The paper reports "
        "accuracy only, so these have no paper counterpart.\n\n"
        + markdown_table(
            [
                "model",
                "runs",
                "KL",
                "Chebyshev",
                "cosine",
                "intersection",
                "true-majority accuracy (%)",
            ],
            rows,
        )
        + "\n"
    )


# ------------------------------------------------------------------------------ confusion


def confusion_section(data: DatasetMetrics) -> str:
    """Per-class accuracy (median over runs) and the confusion matrices of `data`."""
    runs = data.evaluate["runs"]
    groups = _group_runs(data.evaluate)
    first = next(iter(runs.values()))
    classes = first.get("classes") or sorted(first["per_class_accuracy"])
    rows = [
        [
            group_label(g),
            len(names),
            *[pct(_median(runs[n]["per_class_accuracy"][c] for n in names)) for c in classes],
        ]
        for g, names in groups.items()
    ]
    parts = [
        f"**Per-class accuracy ({data.name}).** Test recall per class (%), median over each "
        f"model's runs ({runs_phrase(data.evaluate['table'])}). The paper shows no per-class "
        "numbers.",
        "",
        markdown_table(["model", "runs", *classes], rows),
        "",
    ]
    shown = [names[0] for names in groups.values() if names[0] in data.confusion]
    if shown:
        parts.append(f"Confusion matrices of the first run of each model ({', '.join(shown)}):")
        parts.append("")
        parts += [f"![{data.name} {run}: confusion matrix]({data.confusion[run]})" for run in shown]
    others = [r for r in sorted(data.confusion) if r not in shown]
    if others:
        parts.append(
            "\nThe other runs: " + ", ".join(f"[{r}]({data.confusion[r]})" for r in others)
        )
    missing = [r for r in sorted(runs) if r not in data.confusion]
    if missing:
        parts.append(
            f"\nNo confusion-matrix figure for {', '.join(missing)}: the evaluate stage has not "
            f"written it for {data.name}."
        )
    return "\n".join(parts) + "\n"


# -------------------------------------------------------------------------------- curves


def _read_curve(path: Path) -> dict[str, list[float]]:
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns: dict[str, list[float]] = {}
    for key in ("epoch", "val_accuracy", "train_accuracy"):
        if rows and key in rows[0]:
            columns[key] = [float(row[key]) for row in rows]
    return columns


def plot_training_curves(
    csv_paths: Mapping[str, Path],
    out_png: Path,
    title: str,
    *,
    selected_epochs: Mapping[str, int] | None = None,
) -> Path:
    """Validation accuracy per epoch of each run, one panel per model/regime, as a PNG.

    Each run is a solid line (validation accuracy) over a dotted one (training accuracy,
    where the CSV has it), coloured by its position within the panel; a dot marks the epoch
    the run kept, when `selected_epochs` gives it. Test accuracy is not drawn: the epoch is
    chosen on validation.

    Args:
        csv_paths: run name (`ldg`, `ef-ldl-seed0`, ...) -> its per-epoch CSV (columns
            `epoch`, `val_accuracy`, optionally `train_accuracy`).
        out_png: the PNG to write (atomically).
        title: the figure's title.
        selected_epochs: run name -> the epoch the run kept.

    Returns:
        `out_png`.

    Raises:
        ValueError: no runs, or a CSV lacks the `epoch` column or both accuracy columns.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    if not csv_paths:
        raise ValueError(f"no training curves to plot for {out_png}")
    curves = {name: _read_curve(Path(path)) for name, path in csv_paths.items()}
    for name, curve in curves.items():
        if "epoch" not in curve or not {"val_accuracy", "train_accuracy"} & set(curve):
            raise ValueError(f"{csv_paths[name]} has no epoch and accuracy columns (run {name})")
    panels: dict[str, list[str]] = {}
    for name in sorted(curves):
        panels.setdefault(run_group(name), []).append(name)
    panels = {g: panels[g] for g in ordered_groups(panels)}
    fig = Figure(figsize=(3.4 * len(panels), 3.3), dpi=110)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), sharey=True, squeeze=False)[0]
    colours = [f"C{i}" for i in range(10)]
    for ax, (group, names) in zip(axes, panels.items(), strict=True):
        for index, name in enumerate(names):
            curve, colour = curves[name], colours[index % len(colours)]
            epochs = curve["epoch"]
            # A run without a validation split (train.val_fraction 0) kept its last epoch.
            val = [100 * v for v in curve.get("val_accuracy", curve["train_accuracy"])]
            label = name if "val_accuracy" in curve else f"{name} (no validation: training)"
            ax.plot(epochs, val, color=colour, lw=1.6, label=label)
            if "train_accuracy" in curve and "val_accuracy" in curve:
                train = [100 * v for v in curve["train_accuracy"]]
                ax.plot(epochs, train, color=colour, lw=1.0, ls=":", alpha=0.8)
            chosen = (selected_epochs or {}).get(name)
            if chosen in epochs:
                ax.plot([chosen], [val[epochs.index(chosen)]], "o", color=colour, ms=5)
        ax.set_title(group_label(group), fontsize=10)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    axes[0].set_ylabel("accuracy (%)")
    fig.suptitle(f"{title} (validation solid, training dotted)", fontsize=11)
    fig.tight_layout()
    with atomic_path(out_png) as tmp:
        fig.savefig(tmp, format="png")
    logger.debug("training curves written to %s", out_png)
    return Path(out_png)


def curves_section(data: DatasetMetrics) -> str:
    """The training-curve figure of `data` and each run's kept epoch."""
    parts = []
    if data.curves:
        parts += [
            f"![{data.name}: training curves]({data.curves})",
            "",
            f"Validation accuracy per epoch (solid; a dot marks the epoch kept) and training "
            f"accuracy (dotted) of every run on {data.name}, one panel per model.",
        ]
    else:
        parts.append(
            f"No training curves for {data.name}: no train/<run>.csv exists for its runs "
            "(the training stages have not run)."
        )
    if data.train:
        rows = [
            [
                run,
                t.get("epochs_completed", NONE),
                t.get("selected_epoch", NONE),
                "yes" if t.get("stopped_early") else "no",
                pct(t.get("val_accuracy")),
                pct(t.get("test_accuracy")),
            ]
            for run, t in sorted(data.train.items(), key=lambda item: _run_order(item[0]))
        ]
        parts += [
            "",
            f"**Training runs ({data.name}).** Epochs run, the epoch kept (chosen by "
            "validation accuracy) and its validation and test accuracy (%).",
            "",
            markdown_table(
                [
                    "run",
                    "epochs",
                    "kept epoch",
                    "stopped early",
                    "val accuracy (%)",
                    "test accuracy (%)",
                ],
                rows,
            ),
        ]
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------- soft labels


def soft_label_section(data: DatasetMetrics) -> str:
    """How peaked the LDG's soft labels are, on its own training images and held out."""
    soft = data.soft_labels
    if soft is None:
        return f"The soft-labels stage has not run for {data.name} (no soft_labels.json).\n"
    rows = [
        ["training images", num(soft.get("mean_top_probability_train"), 3)],
        ["held-out images (validation + test)", num(soft.get("mean_top_probability_held_out"), 3)],
    ]
    ceiling = (data.prepare or {}).get("ceiling_train")
    if ceiling:
        rows.append(
            [
                "true distributions, training images (E[max d])",
                num(ceiling["expected_oracle_accuracy"], 3),
            ]
        )
    text = (
        f"**Soft labels ({data.name}).** Mean top probability of the frozen LDG's soft labels "
        f"({soft.get('rows')} images, temperature {soft.get('temperature')}, "
        f"{soft.get('folds')} fold(s): 1 is the paper's way, the LDG labels the images it was "
        "trained on).\n\n" + markdown_table(["images", "mean top probability"], rows) + "\n\n"
    )
    train, held = soft.get("mean_top_probability_train"), soft.get("mean_top_probability_held_out")
    if train is not None and held is not None:
        text += (
            f"On its own training images the LDG is {'more' if train > held else 'less'} "
            f"confident than on held-out ones ({train - held:+.3f}): the closer the training "
            "soft labels are to one-hot, the closer LDL comes to SLL. "
        )
    text += "The paper reports no such diagnostic.\n"
    return text


# -------------------------------------------------------------------------------- AU space


def au_section(data: DatasetMetrics) -> str:
    """The neighbour graph, the auxiliary spaces compared, the t-SNE map and the heatmap."""
    parts = []
    knn = data.knn
    if knn is None:
        parts.append(f"The knn stage has not run for {data.name} (no knn.json).")
    else:
        agreement = f"{num(knn['label_agreement'], 3)} (chance {num(knn['chance_agreement'], 3)})"
        kl = NONE
        if "neighbour_kl" in knn:
            random_pairs = num(knn.get("random_pair_kl"), 3)
            kl = f"{num(knn['neighbour_kl'], 3)} (random pairs {random_pairs})"
        parts += [
            f"**Neighbour graph ({data.name}).** The NGT K-NN graph the AU term trains on.",
            "",
            markdown_table(
                [
                    "auxiliary space",
                    "K",
                    "faces in graph",
                    "sigma",
                    "recall@K",
                    "label agreement (chance)",
                    "neighbour KL (random pairs)",
                ],
                [
                    [
                        knn["backend"],
                        knn["k"],
                        knn.get("in_graph", NONE),
                        num(knn.get("sigma"), 3),
                        num(knn.get("recall_at_k"), 3),
                        agreement,
                        kl,
                    ]
                ],
            ),
            "",
        ]
    aux = data.aux_analysis
    if aux is None:
        parts.append(f"The aux-analysis stage has not run for {data.name} (no aux_analysis.json).")
    else:
        rows = []
        for label, b in aux["backends"].items():
            lift = b["label_agreement"] / b["chance_agreement"] if b["chance_agreement"] else None
            rows.append(
                [
                    label,
                    b.get("dimensions", NONE),
                    b.get("in_graph", NONE),
                    num(b["label_agreement"], 3),
                    num(b["chance_agreement"], 3),
                    num(lift, 2),
                    num(b.get("neighbour_kl"), 3),
                    num(b.get("random_pair_kl"), 3),
                    num(b.get("prototype_correlation"), 3),
                ]
            )
        parts += [
            f"**Auxiliary spaces ({data.name}).** Each space's K-NN graph (K {aux['k']}) over the "
            "training faces: how often a face's neighbours share its label (vs chance, and "
            "their ratio), the KL between neighbours' true distributions (vs random pairs), "
            "and the correlation of the per-emotion means with the EMFACS prototypes. "
            "oracle@s: the true AUs plus noise of std s (0-5 scale).",
            "",
            markdown_table(
                [
                    "auxiliary space",
                    "dimensions",
                    "faces",
                    "label agreement",
                    "chance",
                    "lift",
                    "neighbour KL",
                    "random-pair KL",
                    "prototype correlation",
                ],
                rows,
            ),
            "",
        ]
    for label, figures in data.aux_figures.items():
        if "tsne" in figures:
            parts.append(f"![{data.name}: t-SNE of the {label} space]({figures['tsne']})")
        if "heatmap" in figures:
            parts.append(f"![{data.name}: {label} mean per emotion]({figures['heatmap']})")
    if data.aux_figures:
        parts.append(
            "\nt-SNE of the training faces' auxiliary vectors coloured by emotion (the paper's "
            "Fig. 9), and each dimension's mean per emotion beside the EMFACS prototypes."
        )
    elif aux is not None:
        parts.append(f"aux-analysis wrote no t-SNE or heatmap figure for {data.name}.")
    parts.append(
        "\nThe paper judged its OpenFace AUs by the mean AU intensity per emotion and a t-SNE "
        "map coloured by emotion (its Fig. 9) only, with no number; its LDL+AU runs fell about "
        + " and ".join(f"{-v:.1f} ({p})" for p, v in PAPER["ldl_au_minus_ldl"].items())
        + " points below EF LDL, which it blames on noisy automatic AU annotations."
    )
    return "\n".join(parts) + "\n"


# ---------------------------------------------------------------------------------- study


def study_section(data: DatasetMetrics) -> str:
    """The AU-noise study's table (study.json, as study.md writes it) beside the paper."""
    if not data.in_study:
        return f"{data.name} is not in study.datasets, so the AU-noise study did not run on it.\n"
    if data.study is None:
        return f"The study-summary stage has not run for {data.name} (no study.json).\n"
    paper = ", ".join(f"{v:+.1f} on {p}" for p, v in PAPER["ldl_au_minus_ldl"].items())
    return (
        tables.study_table(data.name, data.study["rows"])
        + f"\nThe paper has no such study; its OpenFace AUs gave {paper} (LDL+AU minus LDL).\n"
    )


# --------------------------------------------------------------------------------- report


def _reading(gain: Mapping[str, Any]) -> str:
    """What a paired interval says: helps, hurts, or not resolved at this design's power."""
    if gain["ci_low"] > 0:
        return "helps"
    if gain["ci_high"] < 0:
        return "hurts"
    return f"no effect resolved (a true gain of {gain['mde']:.1f} points would show)"


def gain_citation(name: str, entry: Mapping[str, Any]) -> str:
    """A comparison as the report and the README cite it: `` `name` +g [lo, hi] (MDE m) ``."""
    gain = entry["accuracy"]
    return (
        f"`{name}` {tables.interval(gain, 'mean_difference', 2)} (MDE {tables.num(gain['mde'], 2)})"
    )


def au_study_answer(result: Mapping[str, Any]) -> str:
    """Does the AU term help? One paragraph from the study's numbers: the verdict with clean
    AUs, how the gain moves with AU noise, and what that says of the paper's explanation
    (noisy automatic AUs). Empty when the study has no LDL-versus-clean-AU comparison."""
    gains = au_gains_over_ldl(result)
    over_ldl = {name: entry for name, (_, entry) in gains.items()}
    clean = [name for name, (setup, _) in gains.items() if is_reference_au_arm(setup)]
    if not clean:
        return ""
    reference = over_ldl[clean[0]]["accuracy"]
    verdict = _reading(reference)
    noisy = [(noise, name) for noise, name in noise_curve(gains) if noise > 0]
    helps = [name for name, entry in over_ldl.items() if entry["accuracy"]["ci_low"] > 0]
    hurts = [name for name, entry in over_ldl.items() if entry["accuracy"]["ci_high"] < 0]
    text = [
        f"With clean AUs, the paper's term over LDL: {gain_citation(clean[0], over_ldl[clean[0]])}"
        f", {verdict}."
    ]
    if noisy:
        text.append(
            "With noisier AUs: "
            + "; ".join(gain_citation(name, over_ldl[name]) for _, name in noisy)
            + "."
        )
    text.append(
        f"Of the {len(over_ldl)} AU-term variants, {len(helps)} help"
        + (f" ({', '.join(helps)})" if helps else "")
        + f" and {len(hurts)} hurt"
        + (f" ({', '.join(hurts)})" if hurts else "")
        + "."
    )
    if reference["ci_low"] > 0:
        noisiest = over_ldl[noisy[-1][1]]["accuracy"] if noisy else None
        if noisiest is not None and noisiest["ci_low"] <= 0:
            text.append(
                "Clean AUs make the term help and noise takes the gain away: consistent with "
                "the paper's explanation that its automatic AUs were too noisy."
            )
        else:
            text.append("The term helps here even with noisy AUs.")
    else:
        text.append(
            "Perfect AUs do not make the term help, so noisy automatic AUs cannot be the whole "
            "reason the paper found no gain."
        )
    return " ".join(text) + "\n"


def au_study_section(study: AuStudyResult | None) -> str:
    """Does the AU term help? The powered study's comparisons, figure and reading."""
    if study is None:
        return (
            "The powered AU study has no committed results here: `dvc repro "
            "studies/au/dvc.yaml` runs it (about 80 minutes on 2 CPU cores).\n"
        )
    result = study.result
    design = result["design"]
    refs = result["references"]
    rows = [
        [
            name,
            f"{entry['arm']} − {entry['baseline']}",
            tables.interval(entry["accuracy"], "mean_difference", 2),
            tables.num(entry["accuracy"]["mde"], 2),
            _reading(entry["accuracy"]),
        ]
        for name, entry in result["comparisons"].items()
    ]
    ldl = result["arms"]["ldl"]["accuracy"]["mean"] if "ldl" in result["arms"] else None
    return (
        f"The powered study (`studies/au/`, its own DVC pipeline): {len(design['seeds'])} "
        f"seeds x {design['test_faces']} test faces of its own synthetic dataset, every arm "
        f"on the same seeds and faces, each keeping the {design['selection']}. EfficientFace "
        f"LDL reaches {tables.num(ldl, 2)}% beside the LDG's "
        f"{tables.num(refs['ldg_accuracy'], 2)}% and a logistic regression on the true AUs' "
        f"{tables.num(refs['true_au_logistic_accuracy'], 2)}%. Accuracy gains in points, "
        f"{design['level']:.0%} intervals over seeds and faces; MDE: the smallest true gain "
        f"detected with {design['power']:.0%} power. All tables, with true-majority "
        f"accuracy, KL and the offline target quality: [au_study.md]({study.tables}).\n\n"
        + au_study_answer(result)
        + f"\n![AU term: gain over LDL against AU noise]({study.figure})\n\n"
        + tables.markdown_table(
            ["comparison", "arms", "accuracy gain [CI]", "MDE", "reading"], rows
        )
        + "\n"
    )


def _per_dataset(datasets: Sequence[DatasetMetrics], render: Any) -> str:
    return "\n".join(f"### {d.name}\n\n{render(d)}" for d in datasets)


def build_report(
    datasets: Sequence[DatasetMetrics],
    bench: Mapping[str, Any],
    *,
    ldg_arch: str,
    ef_arch: str,
    inputs: Sequence[tuple[str, bool]] = (),
    au_study: AuStudyResult | None = None,
) -> Report:
    """The whole report: the paper's three tables, then the per-dataset sections.

    Args:
        datasets: one per configured dataset, in params order.
        bench: `bench.json`.
        ldg_arch: `train.ldg.arch`.
        ef_arch: `train.ef.arch`.
        inputs: (path, exists) of every file the report looked for, listed at the end.
        au_study: the powered AU study's committed results, if any.

    Returns:
        The Markdown, its section headings (`##` and `###`) and the figure links.

    Raises:
        ValueError: a section came out empty (a bug: every section says why it has no data).
    """
    sections = [
        (
            "Table 1: cost and accuracy per dataset",
            table1(datasets, bench, ldg_arch=ldg_arch, ef_arch=ef_arch),
        ),
        ("Table 2: accuracy over seeds per regime", _table2_section(datasets)),
        ("Table 3: cost, eager and deployment path", table3(bench)),
        ("LDL metrics", _per_dataset(datasets, lambda d: ldl_table(d.name, d.evaluate))),
        ("Per-class accuracy and confusion matrices", _per_dataset(datasets, confusion_section)),
        ("Training curves", _per_dataset(datasets, curves_section)),
        ("Soft labels", _per_dataset(datasets, soft_label_section)),
        ("Auxiliary (AU) space", _per_dataset(datasets, au_section)),
        ("AU-noise study", _per_dataset(datasets, study_section)),
        ("Does the AU term help?", au_study_section(au_study)),
    ]
    if inputs:
        sections.append(
            (
                "Inputs",
                "Files this report was generated from (relative to the project root):\n\n"
                + "\n".join(f"- `{path}`{'' if ok else ' (missing)'}" for path, ok in inputs)
                + "\n",
            )
        )
    intro = (
        "# lightfer report\n\n"
        "Generated by the `report` stage (`dvc repro`) from the metrics files listed under "
        "*Inputs*; every number is read from them. Datasets: "
        + ", ".join(
            f"{d.name} (kind {d.kind}, {d.evaluate['test_samples']} test images)" for d in datasets
        )
        + f". The paper's numbers ({PAPER['source']}) stand beside ours in every table.\n\n"
        + "\n\n".join(f"> {_comparability(d)}" for d in datasets)
        + "\n"
    )
    headings: list[str] = []
    body = [intro]
    for title, text in sections:
        if not text.strip():
            raise ValueError(f"report section {title!r} is empty")
        body.append(f"## {title}\n\n{text.rstrip()}\n")
        headings.append(title)
        headings += [line[4:] for line in text.splitlines() if line.startswith("### ")]
    markdown = "\n".join(body)
    figures = []
    for d in datasets:
        figures += [*([d.curves] if d.curves else []), *d.confusion.values()]
        figures += [link for f in d.aux_figures.values() for link in f.values()]
    if au_study is not None:
        figures.append(au_study.figure)
    return Report(markdown=markdown, sections=headings, figures=figures)
