"""A fake project holding the metrics the report stage reads, for its tests.

The metrics the embedded run has committed (evaluate, prepare, soft labels, the training
curves, the benchmark) are copied from the project's `reports/`; the AU outputs (knn,
aux-analysis, study) are written here in the formats their stages write, and every figure
is a tiny PNG. An `ef-ldl_au` group is added to evaluate.json when the committed one
predates the train-ef-au stage.
"""

from __future__ import annotations

import copy
import json
import shutil
import statistics
import struct
import zlib
from pathlib import Path
from typing import Any

from tests.conftest import PROJECT_ROOT

DATASET = "synthetic"
_AGGREGATED = ("accuracy", "mean_class_accuracy", "kl_divergence", "true_majority_accuracy")


def tiny_png() -> bytes:
    """A valid 1x1 grey PNG."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00\x80"))
        + chunk(b"IEND", b"")
    )


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True))


def _spread(values: list[float]) -> dict[str, float]:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def _with_ldl_au(evaluate: dict[str, Any], train: Path) -> dict[str, Any]:
    """Add ef-ldl_au runs (shifted copies of the ef-ldl ones) if evaluate.json has none."""
    if "ef-ldl_au" in evaluate["table"]:
        return evaluate
    evaluate = copy.deepcopy(evaluate)
    seeds = sorted(r for r in evaluate["runs"] if r.startswith("ef-ldl-seed"))
    names = []
    for index, run in enumerate(seeds):
        name = run.replace("ef-ldl-", "ef-ldl_au-")
        metrics = copy.deepcopy(evaluate["runs"][run])
        metrics["accuracy"] -= 0.01 * (index + 1)
        metrics["kl_divergence"] += 0.02 * (index + 1)
        metrics["true_majority_accuracy"] -= 0.005 * (index + 1)
        evaluate["runs"][name] = metrics
        names.append(name)
        for suffix in (".csv", ".json"):
            if (train / f"{run}{suffix}").is_file():
                shutil.copy(train / f"{run}{suffix}", train / f"{name}{suffix}")
    evaluate["table"]["ef-ldl_au"] = {
        key: _spread([evaluate["runs"][n][key] for n in names]) for key in _AGGREGATED
    } | {"runs": len(names)}
    return evaluate


KNN = {
    "backend": "geometry",
    "dimensions": 17,
    "train_faces": 1440,
    "in_graph": 1437,
    "without_vector": 3,
    "k": 8,
    "kernel": "exp",
    "sigma": 2.3174,
    "recall_at_k": 0.9812,
    "mean_weight": 0.4121,
    "label_agreement": 0.4127,
    "chance_agreement": 0.2236,
    "neighbour_kl": 0.6114,
    "random_pair_kl": 1.3528,
}

AUX_ANALYSIS = {
    "k": 8,
    "backends": {
        "geometry": {
            "dimensions": 17,
            "in_graph": 1437,
            "label_agreement": 0.4127,
            "chance_agreement": 0.2236,
            "neighbour_kl": 0.6114,
            "random_pair_kl": 1.3528,
            "prototype_correlation": 0.4411,
        },
        "landmarks": {
            "dimensions": 136,
            "in_graph": 1437,
            "label_agreement": 0.3051,
            "chance_agreement": 0.2236,
            "neighbour_kl": 0.9012,
            "random_pair_kl": 1.3528,
        },
        "oracle@0.0": {
            "dimensions": 17,
            "in_graph": 1440,
            "label_agreement": 0.7702,
            "chance_agreement": 0.2236,
            "neighbour_kl": 0.1843,
            "random_pair_kl": 1.3528,
            "prototype_correlation": 0.9342,
        },
        "oracle@0.5": {
            "dimensions": 17,
            "in_graph": 1440,
            "label_agreement": 0.6428,
            "chance_agreement": 0.2236,
            "neighbour_kl": 0.3377,
            "random_pair_kl": 1.3528,
        },
        "oracle@1.5": {
            "dimensions": 17,
            "in_graph": 1440,
            "label_agreement": 0.3896,
            "chance_agreement": 0.2236,
            "neighbour_kl": 0.7781,
            "random_pair_kl": 1.3528,
        },
    },
}
AUX_FIGURES = ("geometry", "oracle-0.0")  # the labels aux-analysis draws (configured, @0.0)


def _study(evaluate: dict[str, Any]) -> dict[str, Any]:
    def row(aux: str, noise: float | None, runs: list[dict[str, Any]], graph=None):
        entry: dict[str, Any] = {"aux": aux, "noise": noise, "runs": len(runs)}
        if graph is not None:
            entry |= {k: graph[k] for k in ("label_agreement", "chance_agreement", "neighbour_kl")}
        for key in ("accuracy", "true_majority_accuracy", "kl_divergence"):
            entry[key] = _spread([r[key] for r in runs])
        return entry

    runs = evaluate["runs"]
    ldl = [runs[r] for r in sorted(runs) if r.startswith("ef-ldl-seed")]
    au = [runs[r] for r in sorted(runs) if r.startswith("ef-ldl_au-seed")]
    rows = [row("none (ldl)", None, ldl), row("geometry", None, au, KNN)]
    for step, noise in enumerate((0.0, 0.5, 1.5)):
        shifted = [
            {
                k: r[k] + (0.02 - 0.015 * step) * (1 if k != "kl_divergence" else -1)
                for k in ("accuracy", "true_majority_accuracy", "kl_divergence")
            }
            for r in ldl
        ]
        rows.append(row("oracle", noise, shifted, AUX_ANALYSIS["backends"][f"oracle@{noise}"]))
    return {"rows": rows}


def make_report_project(root: Path) -> dict[str, Any]:
    """Write the report stage's inputs under `root`; returns the evaluate.json written."""
    source = PROJECT_ROOT / "reports"
    reports = root / "reports" / DATASET
    reports.mkdir(parents=True)
    for name in ("prepare.json", "soft_labels.json"):
        shutil.copy(source / DATASET / name, reports / name)
    for folder in ("train", "curves"):  # each run's summary and per-epoch history
        shutil.copytree(source / DATASET / folder, reports / folder)
    evaluate = _with_ldl_au(
        json.loads((source / DATASET / "evaluate.json").read_text()), reports / "train"
    )
    _write_json(reports / "evaluate.json", evaluate)
    (reports / "confusion").mkdir()
    for run in evaluate["runs"]:
        (reports / "confusion" / f"{run}.png").write_bytes(tiny_png())
    _write_json(reports / "knn.json", KNN)
    _write_json(reports / "aux_analysis.json", AUX_ANALYSIS)
    (reports / "aux").mkdir()
    for label in AUX_FIGURES:
        for kind in ("tsne", "heatmap"):
            (reports / "aux" / f"{kind}-{label}.png").write_bytes(tiny_png())
    _write_json(reports / "study.json", _study(evaluate))
    (root / "reports" / "bench").mkdir()
    shutil.copy(source / "bench" / "bench.json", root / "reports" / "bench" / "bench.json")
    return evaluate
