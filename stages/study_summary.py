"""study-summary: the AU-noise study's table, beside the main DAG's ldl and ldl_au runs.

Rows: `ldl` (no AU term), `ldl_au` on the configured backend (`aux.backend`, e.g. the
landmark geometry a user would have on real photos), and `ldl_au` on oracle AUs at each
noise level. Columns: the neighbour graph's label agreement (vs chance), then test
accuracy, accuracy against the true majority and KL to the true distribution, as median
[min, max] over the seeds. Writes `reports/<dataset>/study.md` and `study.json`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lightfer.errors import StageOutputError
from lightfer.io import atomic_path, write_json
from lightfer.params import Params
from stages import study
from stages.common import StageSpec, stage_main
from stages.evaluate import spread
from stages.train_ef import run_name as ef_run_name
from stages.train_ef_au import REGIME as AU_REGIME

METRICS = ("accuracy", "true_majority_accuracy", "kl_divergence")


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise StageOutputError(f"{path} does not exist; run the stage that writes it first")
    return json.loads(path.read_text())


def _row(label: str, noise: float | None, agreement: dict[str, Any] | None,
         runs: list[dict[str, Any]]) -> dict[str, Any]:  # fmt: skip
    row: dict[str, Any] = {"aux": label, "noise": noise, "runs": len(runs)}
    if agreement is not None:
        row["label_agreement"] = agreement["label_agreement"]
        row["chance_agreement"] = agreement["chance_agreement"]
        row["neighbour_kl"] = agreement.get("neighbour_kl")
    for key in METRICS:
        if all(key in run for run in runs):
            row[key] = spread([run[key] for run in runs])
    return row


def summarise(params: Params, root: Path, dataset: str) -> list[dict[str, Any]]:
    """The table's rows (see the module docstring)."""
    reports = root / "reports" / dataset
    evaluated = _read(reports / "evaluate.json")["runs"]
    seeds = params.train.seeds
    rows = [
        _row("none (ldl)", None, None, [evaluated[ef_run_name("ldl", s)] for s in seeds]),
        _row(params.aux.backend, None, _read(reports / "knn.json"),
             [evaluated[ef_run_name(AU_REGIME, s)] for s in seeds]),
    ]  # fmt: skip
    for noise in params.study.noise:
        runs = [_read(reports / "study" / f"{study.run_name(noise, s)}.json") for s in seeds]
        rows.append(_row("oracle", noise, runs[0]["graph"], [r["test"] for r in runs]))
    return rows


def _cell(row: dict[str, Any], key: str, scale: float, digits: int) -> str:
    if key not in row:
        return "n/a"
    value = row[key]
    return (f"{value['median'] * scale:.{digits}f} [{value['min'] * scale:.{digits}f}, "
            f"{value['max'] * scale:.{digits}f}]")  # fmt: skip


def format_table(dataset: str, rows: list[dict[str, Any]], params: Params) -> str:
    """The Markdown table."""
    lines = [
        f"EfficientFace on {dataset}: the AU-neighbour term (lambda {params.au_loss.weight:g}, "
        f"K {params.knn.k}, source {params.au_loss.source}) by auxiliary space; median [min, "
        f"max] over {len(params.train.seeds)} seeds. Oracle noise is the std of Gaussian noise "
        "added to the true AUs (0-5 scale).",
        "",
        "| regime | AU space | noise | neighbour label agreement (chance) | accuracy (%) | "
        "true-majority accuracy (%) | KL to true distribution |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        agreement = "–"
        if "label_agreement" in row:
            agreement = f"{row['label_agreement']:.3f} ({row['chance_agreement']:.3f})"
        noise = "–" if row["noise"] is None else f"{row['noise']:g}"
        regime = "ldl" if row["aux"] == "none (ldl)" else "ldl_au"
        lines.append(
            f"| {regime} | {row['aux']} | {noise} | {agreement} | "
            f"{_cell(row, 'accuracy', 100, 2)} | {_cell(row, 'true_majority_accuracy', 100, 2)} "
            f"| {_cell(row, 'kl_divergence', 1, 3)} |"
        )
    return "\n".join(lines) + "\n"


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Write `reports/<dataset>/study.md` and `reports/<dataset>/study.json`."""
    rows = summarise(params, root, dataset)
    reports = root / "reports" / dataset
    write_json(reports / "study.json", {"rows": rows})
    with atomic_path(reports / "study.md") as tmp:
        tmp.write_text(format_table(dataset, rows, params))
    return {"rows": rows}


STAGE = StageSpec(
    name="study-summary",
    deps=("stages/study_summary.py", "stages/evaluate.py", "reports/{dataset}/study",
          "reports/{dataset}/knn.json", "reports/{dataset}/evaluate.json"),
    outs=("reports/{dataset}/study.md", "reports/{dataset}/study.json"),
    params=("train.seeds", "study", "aux.backend", "au_loss", "knn.k"),
    run=run,
    sources=(("dataset", lambda params: list(params.study.datasets)),),
)  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(stage_main(STAGE))
