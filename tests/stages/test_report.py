"""The report stage: every table's numbers are the metrics files', every figure link resolves,
no section is empty, the paper's numbers are there, and a missing input is named."""

from __future__ import annotations

import json
import re
import shutil
import statistics
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from lightfer import catalog
from lightfer.errors import StageOutputError
from lightfer.params import load_params
from lightfer.report import run_group
from stages import evaluate as evaluate_stage
from stages import report, study_summary
from tests.conftest import PROJECT_ROOT
from tests.stages.dvc_stages import dvc_stages
from tests.stages.report_project import AUX_ANALYSIS, DATASET, KNN, make_report_project

LABELS = {"ldg": "LDG", "ef-sll": "EF SLL", "ef-ldl": "EF LDL", "ef-ldl_au": "EF LDL+AU"}

# docs/method.md, section 7 ("Results the paper reports", "Cost"), restated apart from PAPER.
PAPER_TABLE2 = {
    "LDG": [
        "88.30 / 88.41 / 88.69",
        "85.77 / 85.97 / 86.17",
        "88.72 / 88.97 / 89.29",
        "57.94 / 58.57 / 59.20",
    ],
    "EF SLL": [
        "86.50 / 86.92 / 87.58",
        "84.05 / 84.17 / 84.30",
        "87.96 / 88.09 / 88.44",
        "55.60 / 56.70 / 57.08",
    ],
    "EF LDL": [
        "87.38 / 88.03 / 88.52",
        "84.01 / 84.20 / 84.40",
        "88.62 / 89.10 / 89.32",
        "57.58 / 57.87 / 58.17",
    ],
}
PAPER_TABLE3 = {  # params (M), MFLOPs, GPU batch/s, CPU img/s, memory MB
    "ResNet-50": ("23.52", "4109.0", "97.08", "11.11", "85.6"),
    "EfficientFace": ("1.28", "154.0", "65.65", "45.91", "26.3"),
}


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def table_after(markdown: str, caption: str) -> list[dict[str, str]]:
    """The rows (header -> cell) of the first Markdown table after the line starting `caption`."""
    lines = markdown.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(caption))
    first = next(i for i in range(start + 1, len(lines)) if lines[i].startswith("|"))
    header = _cells(lines[first])
    rows = []
    for line in lines[first + 2 :]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(header, _cells(line), strict=True)))
    return rows


def by(rows: list[dict[str, str]], key: str, value: str) -> dict[str, str]:
    matches = [row for row in rows if row[key] == value]
    assert len(matches) == 1, (key, value, rows)
    return matches[0]


def spread(entry: dict[str, float], digits: int = 2, scale: float = 100.0) -> str:
    return " / ".join(f"{entry[k] * scale:.{digits}f}" for k in ("min", "median", "max"))


def write_stage_tables(root: Path, params: Any) -> None:
    """Run evaluate and study-summary on the fake project's metrics (no models): they
    rewrite evaluate.json and study.json as they are and write table2.md and study.md."""
    metrics = catalog.stage_metrics_path
    evaluated = json.loads(metrics(root, DATASET, "evaluate").read_text())
    study = json.loads(metrics(root, DATASET, "study").read_text())
    groups: dict[str, list[str]] = {}
    for run in sorted(evaluated["runs"]):
        groups.setdefault(run_group(run), []).append(run)
    test_rows = SimpleNamespace(test=range(evaluated["test_samples"]))
    run_of = {catalog.model_path(root, DATASET, run): run for run in evaluated["runs"]}
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate_stage, "load_splits", lambda *args: test_rows)
        patch.setattr(evaluate_stage, "model_runs", lambda *args: groups)
        patch.setattr(
            evaluate_stage,
            "evaluate_checkpoint",
            lambda path, *args, **kwargs: evaluated["runs"][run_of[path]],
        )
        patch.setattr(evaluate_stage, "write_confusion_matrix_png", lambda *args, **kwargs: None)
        patch.setattr(study_summary, "summarise", lambda *args: study["rows"])
        evaluate_stage.run(params, root, dataset=DATASET)
        study_summary.run(params, root, dataset=DATASET)


@pytest.fixture(scope="module")
def params():
    return load_params(PROJECT_ROOT / "params.yaml")


@pytest.fixture(scope="module")
def built(tmp_path_factory, params):
    """The fake project, the stage's summary and the report's text."""
    root = tmp_path_factory.mktemp("report")
    make_report_project(root)
    write_stage_tables(root, params)
    evaluate = json.loads((root / "reports" / DATASET / "evaluate.json").read_text())
    summary = report.run(params, root)
    markdown = (root / "results" / "report.md").read_text()
    bench = json.loads((root / "reports/bench/bench.json").read_text())
    study = json.loads((root / "reports" / DATASET / "study.json").read_text())
    return {
        "root": root,
        "evaluate": evaluate,
        "bench": bench,
        "study": study,
        "summary": summary,
        "markdown": markdown,
    }


def test_table2_is_evaluate_json(built):
    evaluate, markdown = built["evaluate"], built["markdown"]
    rows = table_after(markdown, f"**Table 2 ({DATASET}).**")
    assert [row["model"] for row in rows] == [LABELS[g] for g in LABELS]
    sll = evaluate["table"]["ef-sll"]["accuracy"]["median"]
    for group, label in LABELS.items():
        row, expected = by(rows, "model", label), evaluate["table"][group]
        assert row["runs"] == str(expected["runs"])
        assert row["accuracy (%)"] == spread(expected["accuracy"])
        assert row["mean class accuracy (%)"] == spread(expected["mean_class_accuracy"])
        assert row["KL to true distribution"] == spread(expected["kl_divergence"], 3, 1.0)
        if group != "ef-sll":
            delta = (expected["accuracy"]["median"] - sll) * 100
            assert row["Δ median vs EF SLL"] == f"{delta:+.2f}"
    assert f"{evaluate['test_samples']} test images" in markdown


def test_the_summary_holds_the_headline_medians_with_tolerances(built):
    evaluate = built["evaluate"]
    summary = json.loads((built["root"] / "results" / "summary.json").read_text())
    models = summary[DATASET]["models"]
    assert set(models) == set(LABELS)
    for group in LABELS:
        for metric in ("accuracy", "mean_class_accuracy", "kl_divergence"):
            spread_ = evaluate["table"][group][metric]
            entry = models[group][metric]
            assert entry["value"] == pytest.approx(spread_["median"], abs=1e-5)
            assert entry["tolerance"] >= spread_["max"] - spread_["min"] - 1e-5
    assert summary[DATASET]["accuracy_vs_ldl"], "the study's effects are in the summary"


def test_the_stages_tables_are_the_reports_blocks(built):
    """table2.md and study.md, as evaluate and study-summary write them, are the report's
    Table 2 and AU-noise study blocks for the dataset, byte for byte."""
    reports, markdown = built["root"] / "reports" / DATASET, built["markdown"]
    table2 = (reports / "table2.md").read_text()
    study = (reports / "study.md").read_text()
    assert table2.startswith(f"**Table 2 ({DATASET}).**") and table2.endswith("|\n")
    assert study.startswith(f"**AU-noise study ({DATASET}).**") and study.endswith("|\n")
    sections = markdown.split("\n## ")
    (table2_section,) = [s for s in sections if s.startswith("Table 2:")]
    (study_section,) = [s for s in sections if s.startswith("AU-noise study")]
    assert f"### {DATASET}\n\n{table2}" in table2_section
    assert f"### {DATASET}\n\n{study}" in study_section


def test_table1_is_evaluate_and_bench_json(built, params):
    evaluate, bench, markdown = built["evaluate"], built["bench"], built["markdown"]
    rows = table_after(markdown, "**Table 1.**")
    ef = by(rows, "model", f"EfficientFace LDL ({params.train.ef.arch})")
    info = bench["models"][params.train.ef.arch]
    assert ef["params (M)"] == f"{info['params'] / 1e6:.2f}"
    assert ef["M mult-adds"] == f"{info['mflops'] / 2:.1f}"
    assert ef[DATASET] == f"{evaluate['table']['ef-ldl']['accuracy']['median'] * 100:.2f}"
    ldg = by(rows, "model", f"LDG ({params.train.ldg.arch})")
    assert ldg[DATASET] == f"{evaluate['table']['ldg']['accuracy']['median'] * 100:.2f}"
    assert by(rows, "model", "LDG (ResNet-50)")["RAF-DB"] == "88.41"
    assert by(rows, "model", "EfficientFace LDL")["FER+"] == "89.10"


def test_table3_is_bench_json(built):
    bench, markdown = built["bench"], built["markdown"]
    group = f"b1-t{bench['settings']['threads'][0]}"  # the table's: the first thread count
    speed = table_after(markdown, "**Table 3 (cost).**")
    memory = table_after(markdown, "**Table 3 (memory")
    for name, info in bench["models"].items():
        row = by(speed, "model", name)
        assert row["params (M)"] == f"{info['params'] / 1e6:.2f}"
        assert row["M mult-adds"] == f"{info['mflops'] / 2:.1f}"
        for runtime, column in (
            ("eager", "CPU img/s b1 eager"),
            ("onnx_fp32", "CPU img/s b1 ONNX fp32"),
            ("onnx_int8", "CPU img/s b1 ONNX int8"),
        ):
            entry = bench["cpu"][name].get(runtime, {}).get(group)  # int8: EfficientFace's only
            assert row[column] == (f"{entry['images_per_s']:.2f}" if entry else "–")
        gpu = bench["gpu"]
        expected_gpu = f"{gpu['batches_per_s'][name]:.2f}" if gpu["available"] else "–"
        assert row["GPU batch/s"] == expected_gpu
        mem = by(memory, "model", name)
        columns = {
            "tensors": "tensors",
            "eager": "eager",
            "onnx_fp32": "ONNX fp32",
            "onnx_int8": "ONNX int8",
        }
        for measure, column in columns.items():
            entry = bench["memory"][name].get(measure)
            assert mem[column] == (f"{entry['mb']:.1f}" if entry else "–")
    ratios = table_after(markdown, "**EfficientFace / ResNet-50.**")
    eager = by(ratios, "quantity", "CPU img/s b1, eager")
    cpu = bench["cpu"]
    expected = (
        cpu["efficientface"]["eager"][group]["images_per_s"]
        / (cpu["resnet50"]["eager"][group]["images_per_s"])
    )
    assert eager["this project"] == f"{expected:.3f}"
    assert eager["paper"] == f"{45.91 / 11.11:.3f}"
    targets = table_after(markdown, "**Benchmark targets**")
    assert len(targets) == len(bench["targets"])


def test_ldl_and_per_class_tables_are_the_runs_medians(built):
    evaluate, markdown = built["evaluate"], built["markdown"]
    ldl = table_after(markdown, f"**LDL metrics ({DATASET}).**")
    per_class = table_after(markdown, f"**Per-class accuracy ({DATASET}).**")
    for group, label in LABELS.items():
        runs = [
            m
            for name, m in evaluate["runs"].items()
            if name == group or name.startswith(f"{group}-seed")
        ]
        row = by(ldl, "model", label)
        assert row["runs"] == str(len(runs))
        for key, column in (
            ("kl_divergence", "KL"),
            ("chebyshev", "Chebyshev"),
            ("cosine", "cosine"),
            ("intersection", "intersection"),
        ):
            assert row[column] == f"{statistics.median(r[key] for r in runs):.3f}"
        tma = statistics.median(r["true_majority_accuracy"] for r in runs)
        assert row["true-majority accuracy (%)"] == f"{tma * 100:.2f}"
        row = by(per_class, "model", label)
        for cls in runs[0]["classes"]:
            value = statistics.median(r["per_class_accuracy"][cls] for r in runs)
            assert row[cls] == f"{value * 100:.2f}"


def test_au_tables_are_knn_and_aux_analysis_json(built):
    markdown = built["markdown"]
    graph = by(
        table_after(markdown, f"**Neighbour graph ({DATASET}).**"),
        "auxiliary space",
        KNN["backend"],
    )
    assert graph["recall@K"] == f"{KNN['recall_at_k']:.3f}"
    assert graph["K"] == str(KNN["k"])
    assert graph["label agreement (chance)"] == (
        f"{KNN['label_agreement']:.3f} (chance {KNN['chance_agreement']:.3f})"
    )
    spaces = table_after(markdown, f"**Auxiliary spaces ({DATASET}).**")
    assert [row["auxiliary space"] for row in spaces] == list(AUX_ANALYSIS["backends"])
    for label, entry in AUX_ANALYSIS["backends"].items():
        row = by(spaces, "auxiliary space", label)
        assert row["label agreement"] == f"{entry['label_agreement']:.3f}"
        assert row["chance"] == f"{entry['chance_agreement']:.3f}"
        assert row["neighbour KL"] == f"{entry['neighbour_kl']:.3f}"
        corr = entry.get("prototype_correlation")
        assert row["prototype correlation"] == ("–" if corr is None else f"{corr:.3f}")
    for name in ("tsne-geometry.png", "heatmap-geometry.png", "tsne-oracle-0.0.png"):
        assert f"](../reports/{DATASET}/aux/{name})" in markdown


def test_study_table_is_study_json(built):
    rows = table_after(built["markdown"], f"**AU-noise study ({DATASET}).**")
    expected = built["study"]["rows"]
    assert len(rows) == len(expected)
    base = expected[0]["accuracy"]["median"]
    for row, entry in zip(rows, expected, strict=True):
        assert row["regime"] == ("ldl" if entry is expected[0] else "ldl_au")
        assert row["AU space"] == entry["aux"]
        assert row["runs"] == str(entry["runs"])
        assert row["noise"] == ("–" if entry["noise"] is None else f"{entry['noise']:g}")
        agreement = (
            f"{entry['label_agreement']:.3f} ({entry['chance_agreement']:.3f})"
            if "label_agreement" in entry
            else "–"
        )
        assert row["label agreement (chance)"] == agreement
        assert row["accuracy (%)"] == spread(entry["accuracy"])
        assert row["true-majority accuracy (%)"] == spread(entry["true_majority_accuracy"])
        assert row["KL to true distribution"] == spread(entry["kl_divergence"], 3, 1.0)
        if entry is expected[0]:
            assert row["Δ vs ldl"] == "–"
        else:
            assert row["Δ vs ldl"] == f"{(entry['accuracy']['median'] - base) * 100:+.2f}"


def test_every_linked_figure_exists_and_no_section_is_empty(built):
    root, markdown = built["root"], built["markdown"]
    links = re.findall(r"\]\(([^)]+\.(?:png|svg))\)", markdown)
    assert len(set(links)) == built["summary"]["figures"] >= 1 + 7 + 4
    for link in links:
        assert (root / "results" / link).is_file(), link
    curves = root / "results" / "figures" / f"{DATASET}-training-curves.png"
    assert curves.read_bytes().startswith(b"\x89PNG") and curves.stat().st_size > 10_000
    assert f"](figures/{DATASET}-training-curves.png)" in markdown
    # Every heading has text of its own before the next heading of the same or a higher level.
    parts = re.split(r"^(#{1,3}) (.*)$", markdown, flags=re.M)
    headings = list(zip(parts[1::3], parts[2::3], parts[3::3], strict=True))
    for index, (level, title, _) in enumerate(headings):
        own = []
        for deeper, _, body in headings[index:]:
            if own and len(deeper) <= len(level):
                break
            own.append(body.strip())
        assert any(own), f"section {title!r} is empty"
    titles = [title for _, title, _ in headings]
    expected = (
        "Table 1",
        "Table 2",
        "Table 3",
        "LDL metrics",
        "confusion matrices",
        "Training curves",
        "Soft labels",
        "Auxiliary (AU) space",
        "AU-noise study",
    )
    for title in expected:
        assert any(title in t for t in titles), title
    assert "has not run" not in markdown


def test_the_papers_numbers_and_the_caveat_are_there(built):
    markdown = built["markdown"]
    paper = table_after(markdown, "**Paper, Table 2.**")
    for label, cells in PAPER_TABLE2.items():
        row = by(paper, "model", label)
        assert [row[d] for d in ("RAF-DB", "CAER-S", "FER+", "AffectNet-7")] == cells
    ldl_au = by(paper, "model", "EF LDL+AU")
    assert "1.0" in ldl_au["RAF-DB"] and "0.6" in ldl_au["FER+"]
    speed = table_after(markdown, "**Table 3 (cost).**")
    memory = table_after(markdown, "**Table 3 (memory")
    for label, (params_m, mflops, gpu, cpu, mem) in PAPER_TABLE3.items():
        row = by(speed, "model", label)
        measured = (row["params (M)"], row["M mult-adds"], row["GPU batch/s"])
        assert (*measured, row["CPU img/s b1 eager"]) == (params_m, mflops, gpu, cpu)
        assert by(memory, "model", label)["eager"] == mem
    ceiling = json.loads((built["root"] / "reports" / DATASET / "prepare.json").read_text())
    assert "not comparable with the paper's" in markdown
    assert f"{ceiling['ceiling_test']['realised_oracle_accuracy'] * 100:.2f}%" in markdown


@pytest.mark.parametrize(
    ("path", "message"),
    [
        (f"reports/{DATASET}/evaluate.json", rf"{DATASET}/evaluate\.json.*evaluate@{DATASET}"),
        ("reports/bench/bench.json", r"bench/bench\.json.*run the bench stage"),
    ],
)
def test_a_missing_required_input_is_named(tmp_path, params, path, message):
    make_report_project(tmp_path)
    (tmp_path / path).unlink()
    with pytest.raises(StageOutputError, match=message):
        report.run(params, tmp_path)
    assert not (tmp_path / "results" / "report.md").exists()


def test_missing_optional_inputs_are_explained(tmp_path, params):
    make_report_project(tmp_path)
    reports = tmp_path / "reports" / DATASET
    for name in ("knn.json", "aux_analysis.json", "study.json", "soft_labels.json"):
        (reports / name).unlink()
    shutil.rmtree(reports / "aux")
    report.run(params, tmp_path)
    markdown = (tmp_path / "results" / "report.md").read_text()
    missing = {
        "knn": "knn.json",
        "aux-analysis": "aux_analysis.json",
        "study-summary": "study.json",
        "soft-labels": "soft_labels.json",
    }
    for stage, name in missing.items():
        assert f"The {stage} stage has not run for {DATASET} (no {name})" in markdown
        assert f"`reports/{DATASET}/{name}` (missing)" in markdown


def test_the_stage_declares_what_it_reads_and_writes(tmp_path):
    """dvc.yaml: the report reads the whole of `reports/` and writes outside it."""
    (stage,) = [s for s in dvc_stages(tmp_path, PROJECT_ROOT / "params.yaml") if s.name == "report"]
    deps = {dep for dep in stage.deps if not dep.startswith("lightfer/")} - {"params.yaml"}
    assert deps == {"stages/report.py", "reports"}
    assert {"lightfer/report.py", "lightfer/report_inputs.py", "lightfer/summary.py"} <= set(
        stage.deps
    )
    assert set(stage.outs) == {"results/report.md", "results/figures", "results/summary.json"}
    outs = stage.outs
    assert not any(dep.startswith(out) or out.startswith(dep) for dep in deps for out in outs)
