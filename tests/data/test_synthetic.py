"""The synthetic dataset's statistics: what LDL experiments on it rely on."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from lightfer.data.synthetic.generator import (
    RAFDB_PRIOR,
    SyntheticSpec,
    generate_dataset,
    generate_sample,
    prototype_matrix,
    sample_annotation,
    task_ceiling,
)
from lightfer.images import load_rgb
from lightfer.labels import AU_NAMES, CLASSES
from lightfer.manifest import read_manifest, write_manifest

N = 6000


@pytest.fixture(scope="module")
def annotations():
    spec = SyntheticSpec()
    rng = np.random.default_rng(7)
    offset = np.zeros(len(AU_NAMES))
    drawn = [sample_annotation(rng, spec, offset) for _ in range(N)]
    return {
        "dist": np.stack([a.true_dist for a in drawn]).astype(np.float64),
        "aus": np.stack([a.aus for a in drawn]).astype(np.float64),
        "votes": np.stack([a.votes for a in drawn]),
        "label": np.array([a.label for a in drawn]),
        "spec": spec,
    }


def test_dominant_emotions_follow_the_rafdb_like_prior(annotations):
    dominant = annotations["dist"].argmax(1)
    prior = np.array([RAFDB_PRIOR[c] for c in CLASSES])
    observed = np.bincount(dominant, minlength=7) / N
    standard_error = np.sqrt(prior * (1 - prior) / N)
    assert np.all(np.abs(observed - prior) < 4 * standard_error), observed
    assert observed[CLASSES.index("happiness")] > 5 * observed[CLASSES.index("fear")]


def test_true_distributions_are_distributions_with_blends(annotations):
    dist = annotations["dist"]
    np.testing.assert_allclose(dist.sum(1), 1.0, atol=1e-5)
    assert (dist >= 0).all()
    second = np.sort(dist, 1)[:, -2]
    assert 0.4 < (second >= 0.1).mean() < 0.6  # blend_prob 0.5
    assert (dist.max(1) > second).all()  # the dominant emotion stays the most probable


def test_annotated_labels_follow_the_true_distributions(annotations):
    dist, label = annotations["dist"], annotations["label"]
    one_hot = np.eye(7)[label]
    np.testing.assert_allclose(one_hot.mean(0), dist.mean(0), atol=0.015)
    agreement = (label == dist.argmax(1)).mean()
    assert agreement == pytest.approx(dist.max(1).mean(), abs=0.015)
    assert agreement < 0.9, "labels must carry the noise LDL is meant to absorb"


def test_votes_sum_to_n_and_follow_the_distribution(annotations):
    votes, dist = annotations["votes"], annotations["dist"]
    n_votes = annotations["spec"].n_votes
    assert (votes.sum(1) == n_votes).all()
    np.testing.assert_allclose(votes.mean(0) / n_votes, dist.mean(0), atol=0.01)


def test_aus_express_the_emfacs_prototypes(annotations):
    dist, aus = annotations["dist"], annotations["aus"]
    assert (aus >= 0).all() and (aus <= 5).all()
    prototypes = prototype_matrix()
    clear = dist.max(1) > 0.8
    for k, name in enumerate(CLASSES):
        mean_aus = aus[clear & (dist.argmax(1) == k)].mean(0)
        expressive = prototypes[k, :-1] > 0  # AU45 (blink) does not depend on emotion
        if expressive.any():
            silent = ~expressive
            assert mean_aus[:-1][expressive].mean() > mean_aus[:-1][silent].mean() + 1.0, name
    happy = clear & (dist.argmax(1) == CLASSES.index("happiness"))
    assert aus[happy, AU_NAMES.index("AU12")].mean() > 2.5


def test_the_ceiling_is_neither_trivial_nor_hopeless(annotations):
    ceiling = task_ceiling(annotations["dist"], annotations["label"])
    assert 0.75 < ceiling["expected_oracle_accuracy"] < 0.9
    assert ceiling["realised_oracle_accuracy"] == pytest.approx(
        ceiling["expected_oracle_accuracy"], abs=0.02
    )


def test_same_seed_same_sample_other_seed_another():
    spec = SyntheticSpec(n_train=20, n_test=20, n_subjects=5)
    first, again = generate_sample(3, spec, seed=11), generate_sample(3, spec, seed=11)
    assert first.jpeg == again.jpeg
    np.testing.assert_array_equal(first.truth.aus, again.truth.aus)
    np.testing.assert_array_equal(first.landmarks, again.landmarks)
    other = generate_sample(3, spec, seed=12)
    assert other.jpeg != first.jpeg


def test_a_generated_dataset_is_a_valid_manifest_with_disjoint_subjects(tmp_path: Path):
    spec = SyntheticSpec(n_train=24, n_test=20, n_subjects=10)
    table = generate_dataset(spec, seed=5, image_dir=tmp_path / "images")
    write_manifest(
        tmp_path / "manifest.parquet",
        table,
        image_root=".",
        face_source="landmarks",
        au_names=AU_NAMES,
    )
    manifest = read_manifest(tmp_path / "manifest.parquet")
    split, subject = manifest.column("split"), manifest.column("subject")
    assert (split == "train").sum() == 24 and (split == "test").sum() == 20
    assert not set(subject[split == "train"]) & set(subject[split == "test"])
    size = spec.render.scene_size
    image = load_rgb(manifest.image_path(0))
    assert image.shape == (size, size, 3)
    landmarks = manifest.column("landmarks").reshape(-1, 68, 2)
    boxes = manifest.column("box")
    assert ((boxes[:, :2] >= 0) & (boxes[:, 2:] <= size)).all()
    inside = (landmarks >= -0.05 * size) & (landmarks <= 1.05 * size)
    assert inside.mean() > 0.98


def test_a_prior_that_would_let_a_blend_win_is_refused():
    with pytest.raises(ValueError, match=r"must stay below 0\.5"):
        SyntheticSpec(blend_weight=(0.1, 0.45), ambiguity=0.1)


def test_parallel_rendering_gives_the_same_dataset(tmp_path: Path):
    spec = SyntheticSpec(n_train=20, n_test=20, n_subjects=6)
    serial = generate_dataset(spec, seed=3, image_dir=tmp_path / "one" / "images")
    parallel = generate_dataset(spec, seed=3, image_dir=tmp_path / "two" / "images", workers=2)
    assert serial.equals(parallel)
    for path in serial.column("path").to_pylist():
        assert (tmp_path / "one" / path).read_bytes() == (tmp_path / "two" / path).read_bytes()
