"""Markdown tables: one renderer, one set of cell formats, and the tables written twice.

Every table the project writes goes through `markdown_table`, and every number through
`num` (fixed decimals, `–` when missing), `pct` (a fraction in %) or `spread` (a
`{min, median, max}` entry over runs, written `min / median / max` as in the paper's
Table 2; the one convention for every over-seeds cell).

Two tables are written both by a stage and by the report: Table 2 for one dataset
(`table2`: the evaluate stage's `table2.md`) and the AU-noise study (`study_table`: the
study-summary stage's `study.md`). Both copies come from here, so they are the same bytes.

Pure formatting: nothing here imports numpy, torch or matplotlib.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "GROUPS",
    "NONE",
    "au_study_tables",
    "group_label",
    "interval",
    "markdown_table",
    "num",
    "ordered_groups",
    "pct",
    "runs_phrase",
    "spread",
    "study_table",
    "table2",
]

# The cell of a value that is missing or does not apply.
NONE = "–"
# evaluate.json's groups, in the paper's row order, and how the tables name them.
GROUPS: tuple[str, ...] = ("ldg", "ef-sll", "ef-ldl", "ef-ldl_au")
_GROUP_LABELS = {"ldg": "LDG", "ef-sll": "EF SLL", "ef-ldl": "EF LDL", "ef-ldl_au": "EF LDL+AU"}
_SPREAD_KEYS = ("min", "median", "max")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table (no trailing newline); each cell is written with `str`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def num(value: float | None, digits: int, scale: float = 1.0, sign: bool = False) -> str:
    """`value * scale` with `digits` decimals (a leading sign with `sign`); `NONE` if None."""
    if value is None:
        return NONE
    return f"{value * scale:{'+' if sign else ''}.{digits}f}"


def pct(value: float | None, sign: bool = False) -> str:
    """A fraction in % with 2 decimals (points, with `sign`); `NONE` if None."""
    return num(value, 2, 100.0, sign)


def spread(entry: Mapping[str, float] | None, digits: int = 2, scale: float = 100.0) -> str:
    """`min / median / max` of a spread over runs (evaluate.json, study.json); `NONE` if None.

    The default writes fractions in %; pass `digits=3, scale=1.0` for a KL divergence.
    """
    if entry is None:
        return NONE
    return " / ".join(num(entry[key], digits, scale) for key in _SPREAD_KEYS)


def group_label(group: str) -> str:
    """How the tables name an evaluate.json group (`ef-ldl` -> `EF LDL`)."""
    return _GROUP_LABELS.get(group, group)


def ordered_groups(groups: Iterable[str]) -> list[str]:
    """`groups` in the paper's row order (`GROUPS`), any others after them, sorted."""
    present = list(groups)
    return [g for g in GROUPS if g in present] + sorted(g for g in present if g not in GROUPS)


def runs_phrase(table: Mapping[str, Mapping[str, Any]]) -> str:
    """`runs: LDG 1, EF SLL 3, ...`: each evaluate.json group's run count, in row order."""
    return "runs: " + ", ".join(
        f"{group_label(g)} {table[g]['runs']}" for g in ordered_groups(table)
    )


def _median(entry: Mapping[str, Any] | None) -> float | None:
    return None if entry is None else entry["median"]


def table2(dataset: str, evaluate: Mapping[str, Any]) -> str:
    """Table 2 for one dataset: a caption and min / median / max over runs per regime.

    Args:
        dataset: the dataset's name.
        evaluate: its `evaluate.json` (`test_samples` and `table`).

    Returns:
        The caption, a blank line and the table, ending with a newline: runs, accuracy and
        mean class accuracy (%), KL to the true distribution when a run has one, and the
        median accuracy's difference from EF SLL's, in points.
    """
    table = evaluate["table"]
    groups = ordered_groups(table)
    sll = _median(table.get("ef-sll", {}).get("accuracy"))
    with_kl = any("kl_divergence" in table[g] for g in groups)
    rows = []
    for group in groups:
        row = table[group]
        median = row["accuracy"]["median"]
        delta = NONE if sll is None or group == "ef-sll" else pct(median - sll, sign=True)
        kl = [spread(row.get("kl_divergence"), 3, 1.0)] if with_kl else []
        rows.append(
            [
                group_label(group),
                row["runs"],
                spread(row["accuracy"]),
                spread(row.get("mean_class_accuracy")),
                *kl,
                delta,
            ]
        )
    header = [
        "model",
        "runs",
        "accuracy (%)",
        "mean class accuracy (%)",
        *(["KL to true distribution"] if with_kl else []),
        "Δ median vs EF SLL",
    ]
    caption = (
        f"**Table 2 ({dataset}).** Test accuracy (%) on {dataset}, "
        f"{evaluate['test_samples']} test images, min / median / max over runs "
        f"({runs_phrase(table)}); the epoch is chosen on validation. Δ: the median minus EF "
        "SLL's, in points."
    )
    return f"{caption}\n\n{markdown_table(header, rows)}\n"


def study_table(dataset: str, rows: Sequence[Mapping[str, Any]]) -> str:
    """The AU-noise study for one dataset: a caption and one row per auxiliary space.

    Args:
        dataset: the dataset's name.
        rows: `study.json`'s rows; the first whose `aux` starts with `none` is plain LDL.

    Returns:
        The caption, a blank line and the table, ending with a newline: regime, AU space,
        noise, runs, the graph's label agreement (chance), accuracy (%), its median's
        difference from plain LDL's (points), true-majority accuracy (%) and KL to the true
        distribution, each spread as min / median / max over seeds.
    """
    base = next((r for r in rows if r["aux"].startswith("none")), None)
    cells = []
    for row in rows:
        agreement = NONE
        if "label_agreement" in row:
            agreement = f"{num(row['label_agreement'], 3)} ({num(row['chance_agreement'], 3)})"
        gain = NONE
        if base is not None and row is not base and "accuracy" in row:
            gain = pct(row["accuracy"]["median"] - base["accuracy"]["median"], sign=True)
        cells.append(
            [
                "ldl" if row is base else "ldl_au",
                row["aux"],
                NONE if row.get("noise") is None else f"{row['noise']:g}",
                row["runs"],
                agreement,
                spread(row.get("accuracy")),
                gain,
                spread(row.get("true_majority_accuracy")),
                spread(row.get("kl_divergence"), 3, 1.0),
            ]
        )
    header = [
        "regime",
        "AU space",
        "noise",
        "runs",
        "label agreement (chance)",
        "accuracy (%)",
        "Δ vs ldl",
        "true-majority accuracy (%)",
        "KL to true distribution",
    ]
    caption = (
        f"**AU-noise study ({dataset}).** EfficientFace LDL+AU by auxiliary space: none "
        "(plain LDL), the configured backend, and oracle AUs with Gaussian noise of the given "
        "std (0-5 scale); min / median / max over seeds. Label agreement: how often a face's "
        "AU-space neighbours share its label (chance in brackets). Δ: median accuracy minus "
        "plain LDL's, in points."
    )
    return f"{caption}\n\n{markdown_table(header, cells)}\n"


def interval(entry: Mapping[str, Any], key: str, digits: int) -> str:
    """`value [low, high]` of a bootstrap entry (`lightfer.paired`)."""
    return (
        f"{num(entry[key], digits, sign=key == 'mean_difference')} "
        f"[{num(entry['ci_low'], digits, sign=key == 'mean_difference')}, "
        f"{num(entry['ci_high'], digits, sign=key == 'mean_difference')}]"
    )


def au_study_tables(dataset: str, result: Mapping[str, Any], targets: Sequence[Any]) -> str:
    """The powered AU study's report: comparisons, arms, and the offline target quality.

    Args:
        dataset: the study's dataset.
        result: the compare stage's `au_study.json` (`lightfer.au_study_compare`).
        targets: the targets stage's rows (`lightfer.au_study.target_quality_rows`).
    """
    design = result["design"]
    level = f"{design['level']:.0%}"
    refs = result["references"]
    comparisons = [
        [
            name,
            f"{entry['arm']} − {entry['baseline']}",
            interval(entry["accuracy"], "mean_difference", 2),
            f"{num(entry['accuracy']['mde'], 2)} ({num(entry['accuracy']['mde_anova'], 2)})",
            " ".join(num(v, 1, sign=True) for v in entry["accuracy"]["per_seed"]),
            interval(entry["true_majority_accuracy"], "mean_difference", 2),
            interval(entry["kl_divergence"], "mean_difference", 3),
        ]
        for name, entry in result["comparisons"].items()
    ]
    arms = []
    for name, entry in result["arms"].items():
        setup = entry["setup"]
        uses_graph = setup["regime"].endswith("_au")
        arms.append(
            [
                name,
                setup["regime"],
                setup["space"] if uses_graph else NONE,
                f"{setup['noise']:g}" if uses_graph and setup["space"] == "oracle" else NONE,
                setup["source"] if uses_graph else NONE,
                f"{setup['lambda']:g}" if uses_graph else NONE,
                setup["k"] if uses_graph else NONE,
                interval(entry["accuracy"], "mean", 2),
                interval(entry["true_majority_accuracy"], "mean", 2),
                interval(entry["kl_divergence"], "mean", 3),
            ]
        )
    quality = []
    for row in targets:
        mixed = {m["lambda"]: m for m in row["mixed"]}
        hard_mixed = {m["lambda"]: m for m in row.get("hard_mixed", [])}
        lambdas = sorted(mixed)
        quality.append(
            [
                row["space"],
                row["k"],
                num(row.get("label_agreement"), 3),
                num(row["soft"]["kl"], 3),
                num(row["neighbour_mean"]["kl"], 3),
                " / ".join(num(mixed[lam]["kl"], 3) for lam in lambdas),
                " / ".join(num(hard_mixed[lam]["kl"], 3) for lam in lambdas)
                if hard_mixed
                else NONE,
            ]
        )
    lambdas_text = ", ".join(f"{m['lambda']:g}" for m in targets[0]["mixed"]) if targets else ""
    return "\n".join(
        [
            f"**Does the AU term help? ({dataset}).** {len(design['seeds'])} seeds x "
            f"{design['test_faces']} test faces, {design['train_faces']} training faces; "
            f"every arm trains every seed and keeps the {design['selection']}. Gains are arm "
            f"minus baseline, paired by seed and face, in points (KL: nats, lower is better), "
            f"with {level} intervals from {design['bootstrap']} bootstrap replicates over "
            f"seeds and faces; MDE: the smallest true gain this design detects with "
            f"{design['power']:.0%} power, from the bootstrap (conservative: it counts the "
            f"seed x face interaction about 2.6 times) and, in brackets, from the crossed "
            f"design's unbiased standard error. References: the LDG "
            f"{num(refs['ldg_accuracy'], 2)}%, a logistic regression on the true AUs "
            f"{num(refs['true_au_logistic_accuracy'], 2)}%.",
            "",
            markdown_table(
                [
                    "comparison",
                    "arms",
                    f"accuracy gain [{level} CI]",
                    "MDE (ANOVA)",
                    "per seed",
                    f"true-majority gain [{level} CI]",
                    f"KL change [{level} CI]",
                ],
                comparisons,
            ),
            "",
            f"**Arms.** Mean over seeds [{level} CI].",
            "",
            markdown_table(
                [
                    "arm",
                    "regime",
                    "AU space",
                    "noise",
                    "source",
                    "λ",
                    "K",
                    "accuracy (%)",
                    "true-majority accuracy (%)",
                    "KL",
                ],
                arms,
            ),
            "",
            f"**Target quality, offline.** Mean KL(true ‖ target) over the training faces in "
            f"the graph, nats: the LDG soft labels d, the neighbour mean q̄, the mixed target "
            f"(d + λ s q̄) / (1 + λ s) and hard labels mixed alike, at λ = {lambdas_text}.",
            "",
            markdown_table(
                [
                    "AU space",
                    "K",
                    "label agreement",
                    "d",
                    "q̄",
                    "mixed d",
                    "mixed hard",
                ],
                quality,
            ),
            "",
        ]
    )
