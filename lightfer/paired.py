"""Paired comparisons of training regimes over seeds and test images, with bootstrap intervals.

A regime comparison in this project is a crossed design: every regime is trained with the
same seeds and scored on the same test images, so a score table is `(n_seeds, n_images)`
and row `s`, column `j` mean the same run seed and the same face in every regime. Both
factors vary: seeds (initialisation, augmentation, batch order) and images (which faces
happened to be in the test set). An interval for a difference must therefore resample
both, and must keep the pairing, i.e. draw the *same* images for both regimes and every
seed in one replicate, otherwise the large image-difficulty variance (shared by the two
regimes and cancelling in the difference) is counted against the effect.

`paired_difference` gives the mean difference `b - a` with a two-level (seeds x images,
"pigeonhole") percentile bootstrap interval, its bootstrap standard error and the minimum
detectable effect (MDE) at a given power; `mean_interval` gives one regime's mean with the
same bootstrap, for table cells. The statistic is linear, so the bootstrap of the
difference is the bootstrap of the per-cell differences, and one routine serves both.

Reading the numbers (derivable from the bootstrap's moments; `test_paired.py` checks the
first by simulation): write a score difference as `m + seed_s + image_j + e_sj`. The true
variance of the grand mean is `v_seed / S + v_image / N + v_e / (S N)`. The pigeonhole
bootstrap's expected variance is about `(S-1)/S * v_seed / S + v_image / N +
(3 - 2/S) * v_e / (S N)`: with few seeds it under-counts the seed variance by
`(S-1)/S` (0.8 at 5 seeds) and counts the seed x image interaction about 2.6 times (at 5
seeds). For 0/1 correctness the interaction (an image flipping between seeds) is usually
the largest part of a difference's variance, so the bootstrap interval, and the MDE, are
conservative there. `anova_standard_error` is the unbiased method-of-moments standard error
of the same crossed design, `sqrt((MS_seed + MS_image - MS_e) / (S N))`, returned beside
it for comparison (no interval is built from it).
"""

from __future__ import annotations

from statistics import NormalDist
from typing import Any

import numpy as np

__all__ = ["mean_interval", "paired_difference"]

# Cells (replicates x images) of the image-count matrix drawn at once: bounds memory
# (16 MiB of float64) while keeping the numpy calls large.
_CHUNK_CELLS = 1 << 21


def _as_scores(x: Any, name: str) -> np.ndarray:
    """`x` as a finite `(n_seeds, n_images)` float64 array with at least 2 seeds."""
    scores = np.asarray(x, dtype=np.float64)
    if scores.ndim != 2:
        raise ValueError(f"{name} must be a (n_seeds, n_images) array, got shape {scores.shape}")
    if scores.shape[0] < 2:
        raise ValueError(
            f"{name} has {scores.shape[0]} seed(s); at least 2 are needed to resample seeds"
        )
    if scores.shape[1] < 1:
        raise ValueError(f"{name} has no images")
    if not np.isfinite(scores).all():
        bad = int((~np.isfinite(scores)).sum())
        raise ValueError(f"{name} has {bad} NaN or infinite score(s); drop or fill them first")
    return scores


def _check_settings(n_boot: int, level: float, power: float | None = None) -> None:
    if int(n_boot) != n_boot or n_boot < 2:
        raise ValueError(f"n_boot must be an integer >= 2, got {n_boot}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if power is not None and not 0.0 < power < 1.0:
        raise ValueError(f"power must be in (0, 1), got {power}")


def _counts(draws: np.ndarray, size: int) -> np.ndarray:
    """`(r, size)` float64 counts of each index in each row of the `(r, m)` `draws`."""
    r = draws.shape[0]
    flat = draws + (np.arange(r, dtype=np.int64) * size)[:, None]
    return np.bincount(flat.ravel(), minlength=r * size).reshape(r, size).astype(np.float64)


def _bootstrap_means(scores: np.ndarray, n_boot: int, seed: int) -> np.ndarray:
    """Grand means of `scores` over `n_boot` two-level bootstrap replicates.

    A replicate draws `S` seeds and `N` images with replacement; its mean is
    `sum_s sum_j c_s w_j x_sj / (S N)` with the draw counts `c` and `w`, i.e. the mean of
    the `S x N` resampled cells, every resampled seed scored on the same resampled images.
    """
    n_seeds, n_images = scores.shape
    rng = np.random.default_rng(seed)
    chunk = max(1, _CHUNK_CELLS // n_images)
    means = np.empty(n_boot, dtype=np.float64)
    for start in range(0, n_boot, chunk):
        r = min(chunk, n_boot - start)
        seed_counts = _counts(rng.integers(0, n_seeds, (r, n_seeds)), n_seeds)
        image_counts = _counts(rng.integers(0, n_images, (r, n_images)), n_images)
        per_seed = image_counts @ scores.T  # (r, S): each seed's sum over the drawn images
        means[start : start + r] = (seed_counts * per_seed).sum(1) / (n_seeds * n_images)
    return means


def _anova_standard_error(scores: np.ndarray) -> float:
    """Unbiased standard error of the grand mean of a crossed seeds x images design.

    `Var = v_seed/S + v_image/N + v_e/(S N) = (MS_seed + MS_image - MS_e) / (S N)` with the
    two-way ANOVA mean squares (one observation per cell); clipped at 0.
    """
    n_seeds, n_images = scores.shape
    grand = scores.mean()
    seed_means, image_means = scores.mean(1), scores.mean(0)
    ms_seed = n_images * np.sum((seed_means - grand) ** 2) / (n_seeds - 1)
    if n_images < 2:
        return float(np.sqrt(ms_seed / (n_seeds * n_images)))
    ms_image = n_seeds * np.sum((image_means - grand) ** 2) / (n_images - 1)
    residual = scores - seed_means[:, None] - image_means[None, :] + grand
    ms_error = np.sum(residual**2) / ((n_seeds - 1) * (n_images - 1))
    return float(np.sqrt(max(ms_seed + ms_image - ms_error, 0.0) / (n_seeds * n_images)))


def _summary(scores: np.ndarray, *, n_boot: int, seed: int, level: float) -> dict[str, Any]:
    """Mean, percentile interval, bootstrap and ANOVA standard errors, per-seed means."""
    replicates = _bootstrap_means(scores, n_boot, seed)
    alpha = 1.0 - level
    low, high = np.quantile(replicates, [alpha / 2, 1.0 - alpha / 2])
    return {
        "mean": float(scores.mean()),
        "ci_low": float(low),
        "ci_high": float(high),
        "standard_error": float(replicates.std(ddof=1)),
        "anova_standard_error": _anova_standard_error(scores),
        "per_seed": [float(v) for v in scores.mean(1)],
        "n_seeds": int(scores.shape[0]),
        "n_images": int(scores.shape[1]),
        "level": float(level),
        "n_boot": int(n_boot),
    }


def mean_interval(
    a: Any, *, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, Any]:
    """One regime's mean score with the two-level bootstrap interval (a table cell).

    Args:
        a: `(n_seeds, n_images)` per-image scores (e.g. 0/1 correctness), one row per seed.
        n_boot: bootstrap replicates.
        seed: seed of the resampling (the same seed gives the same interval).
        level: the interval's coverage.

    Returns:
        JSON-ready `mean`, `ci_low`, `ci_high` (percentile interval), `standard_error`
        (the replicates' sd), `anova_standard_error` (see the module docstring),
        `per_seed` (each seed's mean), `n_seeds`, `n_images`, `level`, `n_boot`.

    Raises:
        ValueError: `a` is not 2-D, has fewer than 2 seeds or no images, holds NaN or
            infinite values, or a setting is out of range.
    """
    _check_settings(n_boot, level)
    return _summary(_as_scores(a, "a"), n_boot=int(n_boot), seed=seed, level=level)


def paired_difference(
    a: Any,
    b: Any,
    *,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
    power: float = 0.8,
) -> dict[str, Any]:
    """Mean difference `b - a` of two regimes on the same seeds and test images.

    The interval resamples seeds and images with replacement, the same image draw for both
    regimes and every seed of a replicate (the pairing): image difficulty, shared by the two
    regimes, cancels, and what remains is how much the *difference* varies over seeds and
    images.

    Args:
        a: `(n_seeds, n_images)` per-image scores of regime A; row `s` from seed `s`,
            column `j` test image `j`.
        b: the same for regime B, with the same seeds and images in the same order.
        n_boot: bootstrap replicates.
        seed: seed of the resampling (the same seed gives the same result).
        level: the interval's coverage; the MDE's test is two-sided at `1 - level`.
        power: the MDE's power.

    Returns:
        JSON-ready floats (in the scores' units): `mean_difference`, `ci_low`, `ci_high`
        (percentile interval), `standard_error` (the replicates' sd), `mde`
        (`(z_{1-alpha/2} + z_power) * standard_error`, the true difference this design
        detects with probability `power`; about 2.8 standard errors at 0.95 and 0.8),
        `anova_standard_error` (see the module docstring), `per_seed` (each seed's mean
        difference), `n_seeds`, `n_images`, `level`, `power`, `n_boot`.

    Raises:
        ValueError: the arrays differ in shape, are not 2-D, have fewer than 2 seeds or no
            images, hold NaN or infinite values, or a setting is out of range.
    """
    _check_settings(n_boot, level, power)
    first, second = _as_scores(a, "a"), _as_scores(b, "b")
    if first.shape != second.shape:
        raise ValueError(
            f"a {first.shape} and b {second.shape} must have the same (n_seeds, n_images) "
            "shape: the same seeds and test images in both regimes"
        )
    result = _summary(second - first, n_boot=int(n_boot), seed=seed, level=level)
    result["mean_difference"] = result.pop("mean")
    normal = NormalDist()
    z = normal.inv_cdf(1.0 - (1.0 - level) / 2) + normal.inv_cdf(power)
    result["mde"] = float(z * result["standard_error"])
    result["power"] = float(power)
    return result
