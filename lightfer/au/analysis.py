"""What the auxiliary space says about emotions (the paper's Sec. 4.5).

- `neighbour_agreement`: how often a sample's neighbours in the auxiliary space share its
  label, and how far apart their true emotion distributions are, each next to its chance
  level. This is the number that predicts whether the AU-neighbour term can help: the term
  pulls a prediction toward the neighbours', which only helps if neighbours tend to feel
  the same.
- `write_tsne_map`: a 2-D t-SNE map of the space coloured by label (the paper's Fig. 9).
- `write_au_heatmap`: the mean of each dimension per emotion, beside the EMFACS prototypes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from lightfer.errors import AuxLabelError
from lightfer.io import atomic_path
from lightfer.labels import AU_NAMES, CLASSES

__all__ = [
    "kl_divergence",
    "neighbour_agreement",
    "prototype_correlation",
    "write_au_heatmap",
    "write_tsne_map",
]

_EPS = 1e-12


def kl_divergence(p: np.ndarray, q: np.ndarray, *, floor: float = _EPS) -> np.ndarray:
    """KL(p || q) in nats along the last axis, with 0 log 0 = 0.

    `q` enters as `log(q + floor)`, so a zero where `p` is positive (a one-hot target, a
    neighbour that rules a class out) costs a large but finite `-log(floor)`, not `inf`.
    """
    return np.sum(np.where(p > 0, p * (np.log(np.maximum(p, _EPS)) - np.log(q + floor)), 0.0), -1)


def neighbour_agreement(
    rows: np.ndarray,
    neighbours: np.ndarray,
    labels: np.ndarray,
    *,
    true_dist: np.ndarray | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Label agreement and true-distribution distance between neighbours, vs chance.

    Args:
        rows: `(n,)` cache rows of the graph's samples.
        neighbours: `(n, K)` their neighbours' cache rows.
        labels: hard label of every cache row.
        true_dist: true emotion distribution of every cache row, where known.
        seed: seed of the random pairs behind the chance levels.

    Returns:
        `label_agreement` (fraction of (sample, neighbour) pairs with the same label),
        `chance_agreement` (the same for random pairs: the sum of squared class shares),
        and with `true_dist`, `neighbour_kl` (mean KL(d_j || d_i) over pairs) and
        `random_pair_kl` (the same for random pairs of the graph's samples).
    """
    rows, neighbours = np.asarray(rows), np.asarray(neighbours)
    own = labels[rows][:, None]
    shares = np.bincount(labels[rows], minlength=len(CLASSES)) / len(rows)
    result = {
        "label_agreement": float(np.mean(labels[neighbours] == own)),
        "chance_agreement": float(np.sum(shares**2)),
    }
    if true_dist is not None:
        rng = np.random.default_rng(seed)
        random = rng.choice(rows, size=neighbours.shape)
        mine = true_dist[rows][:, None, :]
        result["neighbour_kl"] = float(np.mean(kl_divergence(true_dist[neighbours], mine)))
        result["random_pair_kl"] = float(np.mean(kl_divergence(true_dist[random], mine)))
    return result


def _standardised(vectors: np.ndarray) -> np.ndarray:
    std = vectors.std(0)
    return (vectors - vectors.mean(0)) / np.where(std > 0, std, 1.0)


def write_tsne_map(
    path: Path,
    vectors: np.ndarray,
    labels: np.ndarray,
    *,
    title: str,
    seed: int = 0,
    max_points: int = 3000,
) -> dict[str, Any]:
    """A t-SNE map of `vectors` (standardised) coloured by label, saved as PNG (Fig. 9).

    At most `max_points` samples (a seeded, stratification-free random subset) are mapped:
    t-SNE's cost grows faster than linearly and a denser map shows nothing more.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.manifold import TSNE

    if np.ptp(np.asarray(vectors, dtype=np.float64), axis=0).max(initial=0.0) == 0.0:
        raise AuxLabelError(
            f"cannot map {title!r}: every vector is the same (a constant auxiliary space "
            f"has no neighbours to show); check the aux stage's inputs"
        )
    rng = np.random.default_rng(seed)
    keep = np.sort(rng.permutation(len(vectors))[:max_points])
    points = TSNE(
        n_components=2, init="pca", random_state=seed, perplexity=min(30.0, (len(keep) - 1) / 3)
    ).fit_transform(_standardised(np.asarray(vectors, dtype=np.float64)[keep]))
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=110)
    colours = plt.get_cmap("tab10")
    for index, name in enumerate(CLASSES):
        mask = labels[keep] == index
        ax.scatter(*points[mask].T, s=6, color=colours(index), label=f"{name} ({mask.sum()})")
    ax.set(title=title, xticks=[], yticks=[])
    ax.legend(fontsize=7, markerscale=2, loc="best")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return {"points": len(keep)}


def _au_number(name: str) -> int | None:
    match = re.match(r"^AU0*(\d+)", name)
    return int(match.group(1)) if match else None


def write_au_heatmap(
    path: Path,
    vectors: np.ndarray,
    names: Sequence[str],
    labels: np.ndarray,
    *,
    prototypes: np.ndarray,
    title: str,
) -> np.ndarray:
    """Mean of each dimension per emotion (standardised), beside the EMFACS prototypes.

    Args:
        path: the PNG to write.
        vectors: `(n, D)` auxiliary vectors of labelled samples.
        names: the D dimension names (AU dimensions are matched to prototypes by number).
        labels: `(n,)` their labels.
        prototypes: `(7, 17)` EMFACS prototype intensities over `lightfer.labels.AU_NAMES`.
        title: the figure's title.

    Returns:
        The `(7, D)` matrix of standardised means that was drawn.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    z = _standardised(np.asarray(vectors, dtype=np.float64))
    means = np.stack(
        [
            z[labels == c].mean(0) if np.any(labels == c) else np.zeros(z.shape[1])
            for c in range(len(CLASSES))
        ]
    )
    fig, axes = plt.subplots(
        1,
        2,
        figsize=(4 + 0.45 * (len(names) + len(AU_NAMES)), 3.6),
        dpi=110,
        gridspec_kw={"width_ratios": [len(names), len(AU_NAMES)]},
    )
    limit = max(float(np.abs(means).max()), 1e-6)
    panels = (
        (means, list(names), "mean per emotion (z-score)", "RdBu_r", (-limit, limit)),
        (prototypes, list(AU_NAMES), "EMFACS prototypes", "Greys", (0.0, None)),
    )
    for ax, (matrix, columns, label, cmap, (low, high)) in zip(axes, panels, strict=True):
        image = ax.imshow(matrix, cmap=cmap, vmin=low, vmax=high, aspect="auto")
        ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=7)
        ax.set_yticks(range(len(CLASSES)), CLASSES, fontsize=8)
        ax.set_title(label, fontsize=9)
        fig.colorbar(image, ax=ax, fraction=0.04)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return means


def prototype_correlation(means: np.ndarray, names: Sequence[str], prototypes: np.ndarray) -> float:
    """Pearson correlation between per-emotion means and the prototypes, on shared AUs.

    Dimensions are matched to `lightfer.labels.AU_NAMES` by AU number (`AU12_r`,
    `AU12_geo` -> AU12); NaN when fewer than two dimensions match (e.g. landmarks).
    """
    index = {_au_number(name): i for i, name in enumerate(AU_NAMES)}
    pairs = [(d, index[_au_number(n)]) for d, n in enumerate(names) if _au_number(n) in index]
    if len(pairs) < 2:
        return float("nan")
    ours = means[:, [d for d, _ in pairs]].ravel()
    theirs = prototypes[:, [p for _, p in pairs]].ravel()
    return float(np.corrcoef(ours, theirs)[0, 1])
