"""Paired seed x image bootstrap: effects, widths, the MDE, pairing, determinism, errors."""

from __future__ import annotations

import numpy as np
import pytest

from lightfer.paired import mean_interval, paired_difference

SEEDS = 5


def _correctness(rng: np.random.Generator, n_images: int, accuracy: float = 0.7) -> np.ndarray:
    """0/1 correctness with per-image difficulty, as a classifier's test scores look."""
    p = rng.beta(accuracy * 4, (1 - accuracy) * 4, n_images)
    return (rng.random((SEEDS, n_images)) < p).astype(np.float64)


def test_a_known_effect_is_recovered_and_covered():
    rng = np.random.default_rng(0)
    a = _correctness(rng, 3000)
    # B turns a wrong answer right with probability 0.02 / 0.3: a true gain of 2 points.
    fixes = rng.random(a.shape) < 0.02 / (1 - a.mean())
    b = np.maximum(a, fixes)
    result = paired_difference(a, b, n_boot=1000)
    assert result["mean_difference"] == pytest.approx((b - a).mean())
    assert result["ci_low"] < 0.02 < result["ci_high"]
    assert result["ci_low"] > 0
    assert result["per_seed"] == pytest.approx((b - a).mean(1).tolist())
    assert (result["n_seeds"], result["n_images"]) == (SEEDS, 3000)


def test_identical_regimes_give_zero_with_a_zero_width_interval():
    a = _correctness(np.random.default_rng(1), 500)
    result = paired_difference(a, a.copy(), n_boot=200)
    assert result["mean_difference"] == 0.0
    assert result["ci_low"] == result["ci_high"] == 0.0
    assert result["standard_error"] == result["mde"] == 0.0


def test_the_interval_shrinks_as_one_over_root_n_images():
    rng = np.random.default_rng(2)
    widths = []
    for n_images in (1000, 4000):
        a = rng.standard_normal((SEEDS, n_images))
        b = a + 0.1 + rng.standard_normal((SEEDS, n_images))
        result = paired_difference(a, b, n_boot=1000)
        widths.append(result["ci_high"] - result["ci_low"])
    assert widths[0] / widths[1] == pytest.approx(2.0, rel=0.2)


def test_the_mde_is_about_2_8_standard_errors():
    rng = np.random.default_rng(3)
    a, b = rng.standard_normal((2, SEEDS, 800))
    result = paired_difference(a, b, n_boot=300)
    assert result["mde"] / result["standard_error"] == pytest.approx(2.8016, abs=1e-4)
    assert (result["level"], result["power"]) == (0.95, 0.8)
    looser = paired_difference(a, b, n_boot=300, level=0.9, power=0.5)
    assert looser["mde"] / looser["standard_error"] == pytest.approx(1.6449, abs=1e-4)


def test_seed_level_variance_widens_the_interval():
    rng = np.random.default_rng(4)
    a = _correctness(rng, 2000)
    b = _correctness(rng, 2000)
    shifted = b + rng.normal(0.0, 0.05, (SEEDS, 1))  # some seeds train better in regime B
    plain = paired_difference(a, b, n_boot=1000)
    seedy = paired_difference(a, shifted, n_boot=1000)
    assert seedy["standard_error"] > 2 * plain["standard_error"]
    assert seedy["ci_high"] - seedy["ci_low"] > 2 * (plain["ci_high"] - plain["ci_low"])


def test_pairing_narrows_the_interval_on_correlated_data():
    rng = np.random.default_rng(5)
    difficulty = rng.standard_normal((1, 3000))  # shared by both regimes: cancels if paired
    a = difficulty + 0.3 * rng.standard_normal((SEEDS, 3000))
    b = difficulty + 0.05 + 0.3 * rng.standard_normal((SEEDS, 3000))
    paired = paired_difference(a, b, n_boot=1000)
    # Unpaired: each regime resampled on its own images, variances added.
    first, second = mean_interval(a, n_boot=1000, seed=1), mean_interval(b, n_boot=1000, seed=2)
    unpaired = np.hypot(first["standard_error"], second["standard_error"])
    assert paired["standard_error"] < unpaired / 2
    assert paired["ci_low"] > 0  # the 0.05 gain is resolved only when paired


def test_the_bootstrap_counts_the_seed_by_image_interaction_about_2_6_times():
    # Pure seed x image noise of variance 1: the grand mean's variance is 1/(S N), which the
    # ANOVA estimate hits on average; the pigeonhole bootstrap's is (3 - 2/S)/(S N) (the
    # module docstring). Averaged over datasets: one has only S - 1 = 4 df between seeds.
    rng = np.random.default_rng(6)
    n_images, truth = 300, 1 / (SEEDS * 300)
    boot, anova = [], []
    for k in range(100):
        cell = mean_interval(rng.standard_normal((SEEDS, n_images)), n_boot=300, seed=k)
        boot.append(cell["standard_error"] ** 2)
        anova.append(cell["anova_standard_error"] ** 2)
    assert np.mean(anova) == pytest.approx(truth, rel=0.25)
    assert np.mean(boot) == pytest.approx((3 - 2 / SEEDS) * truth, rel=0.12)
    # Image effects only (no seed or interaction noise): both are exact.
    images = np.repeat(rng.standard_normal((1, 3000)), SEEDS, axis=0)
    only = mean_interval(images, n_boot=2000)
    assert only["standard_error"] == pytest.approx(images[0].std() / np.sqrt(3000), rel=0.05)
    assert only["anova_standard_error"] == pytest.approx(images[0].std() / np.sqrt(3000), rel=0.01)


def test_the_same_seed_gives_the_same_result():
    rng = np.random.default_rng(7)
    a, b = _correctness(rng, 600), _correctness(rng, 600)
    assert paired_difference(a, b, n_boot=300, seed=3) == paired_difference(
        a, b, n_boot=300, seed=3
    )
    assert paired_difference(a, b, n_boot=300, seed=4)["ci_low"] != pytest.approx(
        paired_difference(a, b, n_boot=300, seed=3)["ci_low"], abs=1e-12
    )


def test_mean_interval_covers_the_mean():
    a = _correctness(np.random.default_rng(8), 1000)
    cell = mean_interval(a, n_boot=500)
    assert cell["mean"] == pytest.approx(a.mean())
    assert cell["ci_low"] < cell["mean"] < cell["ci_high"]
    assert "mde" not in cell


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (np.zeros((5, 10)), np.zeros((5, 11)), "same"),
        (np.zeros((1, 10)), np.zeros((1, 10)), "at least 2"),
        (np.zeros(10), np.zeros(10), r"\(n_seeds, n_images\)"),
        (np.zeros((5, 0)), np.zeros((5, 0)), "no images"),
        (np.full((5, 10), np.nan), np.zeros((5, 10)), "NaN"),
    ],
)
def test_bad_inputs_are_explained(a, b, message):
    with pytest.raises(ValueError, match=message):
        paired_difference(a, b, n_boot=10)


@pytest.mark.parametrize(
    "settings", [{"n_boot": 1}, {"level": 1.0}, {"power": 0.0}, {"n_boot": 2.5}]
)
def test_bad_settings_are_explained(settings):
    with pytest.raises(ValueError, match=next(iter(settings))):
        paired_difference(np.zeros((2, 3)), np.zeros((2, 3)), **settings)
