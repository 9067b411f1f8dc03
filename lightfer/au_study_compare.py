"""The AU study's comparisons: each arm's gain over its baseline, paired, with intervals.

Every arm's test distributions are scored per face (top-1 correct against the test label,
top-1 against the true distribution's majority, KL from the true distribution) for every
seed; `lightfer.paired` turns two arms' `(seeds, faces)` score tables into the mean paired
difference, its bootstrap interval over seeds and faces, and the minimum detectable
effect. Two references frame the student: the LDG (its soft labels' argmax on the test
faces) and a logistic regression on the true AUs (what the faces' AUs say about the label).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from lightfer import catalog
from lightfer.au.analysis import kl_divergence
from lightfer.au.annotate import oracle_vectors
from lightfer.au_study import read_arm_predictions, study_of
from lightfer.au_study_result import au_gains_over_ldl, noise_curve
from lightfer.faces.cache import load_face_cache
from lightfer.io import atomic_path
from lightfer.manifest import read_manifest
from lightfer.paired import mean_interval, paired_difference
from lightfer.params import Params
from lightfer.splits import Splits
from lightfer.training.run import cached_soft_labels

__all__ = ["SCORES", "compare_arms", "face_scores", "write_gain_figure"]

# Per-face scores: name -> (what it measures, higher is better).
SCORES = {
    "accuracy": ("top-1 against the test label, %", True),
    "true_majority_accuracy": ("top-1 against the true distribution's majority, %", True),
    "kl_divergence": ("KL(true || predicted), nats", False),
}


def face_scores(probs: np.ndarray, labels: np.ndarray, true: np.ndarray) -> dict[str, np.ndarray]:
    """Per-face scores of `(seeds, faces, classes)` distributions, each `(seeds, faces)`."""
    top = probs.argmax(-1)
    return {
        "accuracy": 100.0 * (top == labels[None, :]),
        "true_majority_accuracy": 100.0 * (top == true.argmax(-1)[None, :]),
        "kl_divergence": kl_divergence(true[None, :, :], probs.astype(np.float64)),
    }


def _references(params: Params, root: Path, splits: Splits) -> dict[str, float]:
    """Test accuracy of the LDG and of a logistic regression on the true AUs, in %."""
    dataset = study_of(params).dataset
    labels = splits.labels
    ldg = cached_soft_labels(root, dataset, splits)[splits.test].argmax(1)
    crops, faces = load_face_cache(splits.cache)
    aus = oracle_vectors(
        params.aux,
        noise=0.0,
        manifest=read_manifest(catalog.manifest_path(root, dataset)),
        crops=crops,
        faces=faces,
        dataset=dataset,
        base_seed=params.base.seed,
    ).values
    scaler = StandardScaler().fit(aus[splits.train])
    regression = LogisticRegression(max_iter=2000).fit(
        scaler.transform(aus[splits.train]), labels[splits.train]
    )
    predicted = regression.predict(scaler.transform(aus[splits.test]))
    return {
        "ldg_accuracy": float(100.0 * np.mean(ldg == labels[splits.test])),
        "true_au_logistic_accuracy": float(100.0 * np.mean(predicted == labels[splits.test])),
    }


def _with_anova_mde(difference: dict[str, Any]) -> dict[str, Any]:
    """Add `mde_anova`: the MDE from the crossed design's unbiased standard error.

    The seeds-and-faces bootstrap counts the seed x face interaction (a face flipping
    between seeds, the largest part of a 0/1 difference's variance) about `3 - 2/S` times
    (2.7 at 6 seeds; `lightfer.paired`), so its interval and `mde` are conservative; `mde_anova` is
    what the design detects by the method-of-moments standard error. The report states the
    conservative one and shows both.
    """
    scale = difference["mde"] / difference["standard_error"] if difference["standard_error"] else 0
    return difference | {"mde_anova": scale * difference["anova_standard_error"]}


def compare_arms(params: Params, root: Path, splits: Splits) -> dict[str, Any]:
    """Every arm's scores and every configured comparison, JSON-ready.

    Returns:
        `design` (seeds, test faces, bootstrap settings), `references`, `arms` (per arm
        its settings and per score `mean_interval`), `comparisons` (per comparison its
        arms and per score `paired_difference`, in the score's units, arm minus baseline).
    """
    study = study_of(params)
    dataset = study.dataset
    if splits.true_dist is None:
        raise ValueError(f"{dataset} has no true distributions; the study needs synthetic data")
    ids = splits.sample_ids[splits.test]
    labels, true = splits.labels[splits.test], splits.true_dist[splits.test].astype(np.float64)
    scores = {
        name: face_scores(
            read_arm_predictions(
                catalog.arm_predictions_path(root, dataset, name), study.seeds, ids
            ),
            labels,
            true,
        )
        for name in study.arms
    }
    settings = {"n_boot": study.bootstrap, "seed": params.base.seed, "level": study.level}
    arms = {
        name: {"setup": arm.model_dump(mode="json", by_alias=True)}
        | {key: mean_interval(scores[name][key], **settings) for key in SCORES}
        for name, arm in study.arms.items()
    }
    comparisons = {
        name: {"baseline": base, "arm": arm}
        | {
            key: _with_anova_mde(
                paired_difference(
                    scores[base][key], scores[arm][key], power=study.power, **settings
                )
            )
            for key in SCORES
        }
        for name, (base, arm) in study.comparisons.items()
    }
    return {
        "design": {
            "seeds": list(study.seeds),
            "test_faces": len(ids),
            "train_faces": len(splits.train),
            "selection": "last epoch of the 1-cycle schedule",
            "bootstrap": study.bootstrap,
            "level": study.level,
            "power": study.power,
        },
        "references": _references(params, root, splits),
        "arms": arms,
        "comparisons": comparisons,
    }


def write_gain_figure(result: dict[str, Any], path: Path) -> None:
    """Each AU arm's accuracy gain over its baseline with its interval, against AU noise.

    The oracle arms that differ from the reference only in noise form the dose-response
    curve; the landmark spaces, whose noise has no number, stand to its right.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    gains = au_gains_over_ldl(result)
    curve = [(noise, gains[name][1]["accuracy"]) for noise, name in noise_curve(gains)]
    spaces = [
        (setup["space"], entry["accuracy"])
        for setup, entry in gains.values()
        if setup["space"] != "oracle"
    ]
    figure, axis = plt.subplots(figsize=(6.4, 3.6), dpi=120)
    axis.axhline(0.0, color="0.5", linewidth=0.8)
    if curve:
        x = [noise for noise, _ in curve]
        mean = np.array([gain["mean_difference"] for _, gain in curve])
        low = mean - np.array([gain["ci_low"] for _, gain in curve])
        high = np.array([gain["ci_high"] for _, gain in curve]) - mean
        axis.errorbar(x, mean, yerr=[low, high], marker="o", capsize=3, label="oracle AUs")
        mde = max(gain["mde"] for _, gain in curve)
        axis.axhspan(-mde, mde, color="0.9", zorder=0, label=f"± MDE ({mde:.1f})")
    right = max((noise for noise, _ in curve), default=0.0) + 1.0
    for i, (name, gain) in enumerate(spaces):
        mean = gain["mean_difference"]
        axis.errorbar(
            [right + 0.6 * i],
            [mean],
            yerr=[[mean - gain["ci_low"]], [gain["ci_high"] - mean]],
            marker="s",
            capsize=3,
            linestyle="none",
            label=name,
        )
    axis.set_xlabel("AU noise (std, 0-5 scale); landmark spaces at the right")
    axis.set_ylabel("accuracy gain over LDL (points)")
    level = result["design"]["level"]
    axis.set_title(f"AU term: gain over LDL, {level:.0%} intervals", fontsize=10)
    axis.legend(fontsize=8, loc="best")
    figure.tight_layout()
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png")
    plt.close(figure)
