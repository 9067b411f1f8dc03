"""The issue's speed, agreement and memory targets, evaluated on `run_benchmark` results.

A target is a ratio of two same-run figures and a bound. Speed figures are CPU images/s of
one model on one runtime at batch 1, in the timing group of one thread count; a target
without a thread count is evaluated at every count the benchmark timed. The "deployment"
runtime of a model is its fastest deployment runtime among those whose top-1 agreement with
fp32 PyTorch reaches `AGREEMENT_BOUND` (all of them when agreement was not measured), so a
fast but inaccurate file cannot meet a target.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from lightfer.bench_runtimes import DEPLOYMENT_RUNTIMES

__all__ = ["AGREEMENT_BOUND", "TARGETS", "Target", "evaluate_targets", "group_key", "ratio"]

AGREEMENT_BOUND = 0.99


class Target(NamedTuple):
    """One target: `numerator / denominator` compared with `bound`.

    Attributes:
        description: for the table; `{threads}` is replaced by the thread count.
        numerator: "model/runtime/b<batch>", a CPU throughput (runtime "deployment": see
            the module docstring), or "memory:<model>/<measure>" (measure "tensors", or a
            runtime for RSS growth).
        denominator: the same kinds.
        bound: the ratio's bound.
        kind: ">=" (ratio >= bound) or "<=".
        threads: the thread counts a speed target applies at; None: every timed count.
    """

    description: str
    numerator: str
    denominator: str
    bound: float
    kind: str
    threads: tuple[int, ...] | None = None


TARGETS: dict[str, Target] = {
    "ef_vs_resnet50_eager": Target(
        "EfficientFace eager >= 4x ResNet-50 eager (batch 1, {threads})",
        "efficientface/eager/b1",
        "resnet50/eager/b1",
        4.0,
        ">=",
    ),
    "ef_vs_shufflenet_eager": Target(
        "EfficientFace eager >= 0.8x ShuffleNetV2 x1.0 eager (batch 1, {threads})",
        "efficientface/eager/b1",
        "shufflenet_v2_x1_0/eager/b1",
        0.8,
        ">=",
    ),
    "ef_deployment_vs_eager": Target(
        "EfficientFace deployment >= 3.5x its eager (batch 1, {threads})",
        "efficientface/deployment/b1",
        "efficientface/eager/b1",
        3.5,
        ">=",
    ),
    "ef_deployment_vs_official_1t": Target(
        "EfficientFace deployment >= 4x the official-style eager EfficientFace (batch 1, "
        "{threads})",
        "efficientface/deployment/b1",
        "efficientface/eager_official/b1",
        4.0,
        ">=",
        (1,),
    ),
    "ef_deployment_vs_official_2t": Target(
        "EfficientFace deployment >= 5x the official-style eager EfficientFace (batch 1, "
        "{threads})",
        "efficientface/deployment/b1",
        "efficientface/eager_official/b1",
        5.0,
        ">=",
        (2,),
    ),
    "ef_vs_resnet50_memory_tensors": Target(
        "EfficientFace weights + peak activations <= 1/3 of ResNet-50's",
        "memory:efficientface/tensors",
        "memory:resnet50/tensors",
        1 / 3,
        "<=",
    ),
    "ef_vs_resnet50_memory_rss_eager": Target(
        "EfficientFace eager peak RSS growth <= 1/3 of ResNet-50's",
        "memory:efficientface/eager",
        "memory:resnet50/eager",
        1 / 3,
        "<=",
    ),
    "ef_vs_resnet50_memory_rss_onnx": Target(
        "EfficientFace ONNX Runtime fp32 peak RSS growth <= 1/3 of ResNet-50's",
        "memory:efficientface/onnx_fp32",
        "memory:resnet50/onnx_fp32",
        1 / 3,
        "<=",
    ),
}


def group_key(batch: int, threads: int) -> str:
    """The key of a timing group in the results: "b<batch>-t<threads>"."""
    return f"b{batch}-t{threads}"


def _threads_text(threads: int) -> str:
    return f"{threads} thread{'s' if threads > 1 else ''}"


def _qualified(results: Mapping[str, Any], model: str) -> Sequence[str]:
    """The deployment runtimes a "deployment" figure of `model` may take."""
    agreement = results.get("agreement") or {}
    if agreement.get("model") != model:
        return DEPLOYMENT_RUNTIMES
    measured = agreement["runtimes"]
    return [r for r in DEPLOYMENT_RUNTIMES if measured.get(r, {}).get("top1", 0) >= AGREEMENT_BOUND]


def _figure(
    results: Mapping[str, Any], key: str, group: str | None
) -> tuple[list[float], str | None] | None:
    """Per-round values of a figure (a speed's in timing group `group`) and, for a speed,
    the runtime it is; None if absent."""
    if key.startswith("memory:"):
        model, measure = key.removeprefix("memory:").split("/")
        entry = results["memory"].get(model, {}).get(measure)
        return None if entry is None else ([entry["mb"]], None)
    model, runtime, _ = key.split("/")
    per_runtime = results["cpu"].get(model, {})
    candidates = _qualified(results, model) if runtime == "deployment" else (runtime,)
    entries = {r: per_runtime[r][group] for r in candidates if group in per_runtime.get(r, {})}
    if not entries:
        return None
    best = max(entries, key=lambda r: entries[r]["images_per_s"])
    return entries[best]["blocks"], best


def evaluate_targets(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Evaluate `TARGETS` on `run_benchmark` results; targets whose inputs are absent are skipped.

    `value` is the ratio of the two same-run medians. For speed targets, whose variants ran
    in the same rounds, `per_round` also gives the median, min and max of the per-round
    ratios: their spread shows how much the machine's drift can move the value.

    Returns:
        key (a speed target's with "@<threads>t" appended) -> `{"description", "value",
        "bound", "met", "per_round"}`, and for speed targets `threads`, `runtime` (the
        numerator's; for "deployment", the runtime chosen) and `flop_bound_share` (the
        numerator's images/s over the model's fp32 FLOP bound in its timing group).
    """
    evaluated = {}
    for key, target in TARGETS.items():
        if target.numerator.startswith("memory:"):
            settings = [(key, None)]
        else:
            counts = results["settings"]["threads"]
            settings = [
                (f"{key}@{n}t", n) for n in counts if target.threads is None or n in target.threads
            ]
        for name, threads in settings:
            group = None
            if threads is not None:
                model, _, batch = target.numerator.split("/")
                group = group_key(int(batch.removeprefix("b")), threads)
            numerator = _figure(results, target.numerator, group)
            denominator = _figure(results, target.denominator, group)
            if numerator is None or denominator is None:
                continue
            (num_blocks, runtime), (den_blocks, _) = numerator, denominator
            value = ratio(num_blocks, den_blocks)
            met = (
                value["value"] >= target.bound
                if target.kind == ">="
                else value["value"] <= target.bound
            )
            entry: dict[str, Any] = {
                "description": target.description.format(
                    threads=_threads_text(threads) if threads else ""
                ),
                "bound": target.bound,
                "met": met,
                **value,
            }
            if threads is not None:
                fraction = results["flop_bound"][model]["fraction"]
                entry.update(
                    threads=threads,
                    runtime=runtime,
                    flop_bound_share=fraction.get(f"{runtime}/{group}"),
                )
            evaluated[name] = entry
    return evaluated


def ratio(numerator: Sequence[float], denominator: Sequence[float]) -> dict[str, Any]:
    """The ratio of two same-run medians (`value`) and the spread of the per-round ratios
    (`per_round`: median, min, max); the rounds pair up when both ran in the same rounds."""
    ratios = [n / d for n, d in zip(numerator, denominator, strict=True)]
    return {
        "value": statistics.median(numerator) / statistics.median(denominator),
        "per_round": {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
    }
