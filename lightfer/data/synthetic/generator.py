"""The embedded default dataset: synthetic FACS faces with known emotion distributions.

Generative story, per sample (every draw comes from a seed-derived generator, so the same
seed gives the same dataset, and sample i does not depend on how many samples follow it):

1. A subject (identity: face shape, skin, features, hair) and a resting AU offset per
   subject; train and test subjects are disjoint, as in a leakage-free split.
2. A **true emotion distribution** `d` over the 7 classes: a dominant emotion drawn from a
   class prior shaped like RAF-DB's imbalance, often blended with a plausible second
   emotion (surprise with fear, disgust with anger, sadness with neutral, ...), plus a
   little diffuse ambiguity.
3. **AU intensities** `w = intensity * P^T d + subject offset + noise` (clipped to 0-5),
   where P holds EMFACS-style prototypes (docs/method.md, section 5) on OpenFace's 17
   AUs; AU45 (blink) is independent of emotion. Images that share a distribution therefore
   share AUs, which is the premise of the AU-neighbour loss, and the annotators' noise
   below is not in w.
4. An image rendered from the AUs (`render.py`), inside a cluttered scene, with its face
   box and 68 landmarks.
5. `n_votes` **crowd votes** ~ Multinomial(d) (like FER+) and one **annotated label** ~ d
   (the label noise LDL is meant to absorb).

The task's ceiling is the accuracy of an oracle that predicts argmax d against the
annotated labels: E[max_k d_k] in expectation.
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pyarrow as pa
from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lightfer.data.synthetic.render import RenderSpec, render_face, sample_identity, sample_scene
from lightfer.labels import AU_MAX_INTENSITY, AU_NAMES, CLASSES, NUM_CLASSES
from lightfer.manifest import fixed_list

logger = logging.getLogger(__name__)

# Share of each class in RAF-DB's basic training split (12,271 images), canonical order.
RAFDB_PRIOR: dict[str, float] = {
    "neutral": 2524 / 12271,
    "happiness": 4772 / 12271,
    "sadness": 1982 / 12271,
    "surprise": 1290 / 12271,
    "fear": 281 / 12271,
    "disgust": 717 / 12271,
    "anger": 705 / 12271,
}

# EMFACS-style prototypes on OpenFace's AUs (0-5). AU16 (disgust) and AU24 (anger) are not
# among OpenFace's outputs, so AU10/AU17 carry disgust and AU23 anger, as in the literature.
_PROTOTYPES: dict[str, dict[str, float]] = {
    "neutral": {},
    "happiness": {"AU06": 3.5, "AU12": 4.5, "AU25": 2.0, "AU07": 0.8},
    "sadness": {"AU01": 3.5, "AU04": 2.5, "AU15": 3.5, "AU17": 2.0},
    "surprise": {"AU01": 4.0, "AU02": 4.0, "AU05": 3.5, "AU25": 3.0, "AU26": 4.0},
    "fear": {
        "AU01": 3.5,
        "AU02": 2.5,
        "AU04": 3.0,
        "AU05": 4.0,
        "AU07": 2.0,
        "AU20": 4.0,
        "AU25": 3.0,
        "AU26": 2.5,
    },
    "disgust": {"AU09": 4.5, "AU10": 3.5, "AU15": 2.5, "AU17": 2.0, "AU04": 1.0},
    "anger": {"AU04": 4.5, "AU05": 2.5, "AU07": 3.5, "AU23": 4.0, "AU17": 1.0},
}

# Which second emotion blends with each dominant one (rows sum to 1; zero on the diagonal).
_BLEND_AFFINITY: dict[str, dict[str, float]] = {
    "neutral": {
        "sadness": 0.35,
        "happiness": 0.25,
        "surprise": 0.15,
        "anger": 0.1,
        "disgust": 0.1,
        "fear": 0.05,
    },
    "happiness": {"neutral": 0.5, "surprise": 0.4, "sadness": 0.05, "disgust": 0.05},
    "sadness": {"neutral": 0.4, "fear": 0.2, "disgust": 0.2, "anger": 0.2},
    "surprise": {"fear": 0.45, "happiness": 0.3, "neutral": 0.25},
    "fear": {"surprise": 0.5, "sadness": 0.3, "disgust": 0.2},
    "disgust": {"anger": 0.5, "sadness": 0.3, "fear": 0.2},
    "anger": {"disgust": 0.5, "neutral": 0.2, "sadness": 0.2, "fear": 0.1},
}

_BLINK = AU_NAMES.index("AU45")


def prototype_matrix() -> np.ndarray:
    """The (7, 17) EMFACS prototype intensities, canonical class order x `AU_NAMES`."""
    matrix = np.zeros((NUM_CLASSES, len(AU_NAMES)), dtype=np.float64)
    for k, name in enumerate(CLASSES):
        for au, value in _PROTOTYPES[name].items():
            matrix[k, AU_NAMES.index(au)] = value
    return matrix


def _blend_matrix() -> np.ndarray:
    matrix = np.zeros((NUM_CLASSES, NUM_CLASSES))
    for k, name in enumerate(CLASSES):
        for other, weight in _BLEND_AFFINITY[name].items():
            matrix[k, CLASSES.index(other)] = weight
    return matrix


class SyntheticSpec(BaseModel):
    """How many synthetic faces to make and how hard the task is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    n_train: int = Field(2400, ge=20, description="training images")
    n_test: int = Field(800, ge=20, description="test images")
    n_subjects: int = Field(400, ge=4, description="identities; 80% train, 20% test")
    n_votes: int = Field(10, ge=1, le=1000, description="crowd votes per image (FER+ has 10)")
    class_prior: dict[str, float] = Field(
        default_factory=lambda: dict(RAFDB_PRIOR),
        description="relative frequency of each dominant emotion (default: RAF-DB's)",
    )
    blend_prob: float = Field(0.5, ge=0, le=1, description="chance of a second emotion")
    blend_weight: tuple[float, float] = Field(
        (0.1, 0.35), description="range of the second emotion's share of the distribution"
    )
    ambiguity: float = Field(0.12, ge=0, lt=0.5, description="max diffuse probability mass")
    intensity: tuple[float, float] = Field(
        (0.45, 1.0), description="range of the expression intensity multiplier"
    )
    subject_au_std: float = Field(0.35, ge=0, le=5, description="per-subject resting AU offset")
    au_noise_std: float = Field(0.35, ge=0, le=5, description="per-image AU noise")
    blink_prob: float = Field(0.1, ge=0, le=1, description="chance of a blink (AU45)")
    jpeg_quality: int = Field(92, ge=30, le=100, description="JPEG quality of the scenes")
    render: RenderSpec = Field(default_factory=RenderSpec, description="scene and nuisances")

    @field_validator("class_prior")
    @classmethod
    def _prior_covers_classes(cls, prior: dict[str, float]) -> dict[str, float]:
        if set(prior) != set(CLASSES):
            missing = [c for c in CLASSES if c not in prior]
            unknown = sorted(set(prior) - set(CLASSES))
            raise ValueError(
                f"must name each of {', '.join(CLASSES)} once"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown {unknown}" if unknown else "")
            )
        if any(v < 0 for v in prior.values()) or sum(prior.values()) <= 0:
            raise ValueError("weights must be >= 0 with a positive sum")
        return prior

    @field_validator("blend_weight", "intensity")
    @classmethod
    def _ordered_range(cls, pair: tuple[float, float]) -> tuple[float, float]:
        low, high = pair
        if not 0 <= low <= high <= 1:
            raise ValueError(f"must be [low, high] with 0 <= low <= high <= 1, got {list(pair)}")
        return pair

    @model_validator(mode="after")
    def _dominant_stays_dominant(self) -> SyntheticSpec:
        if self.blend_weight[1] + self.ambiguity >= 0.5:
            raise ValueError(
                "blend_weight[1] + ambiguity must stay below 0.5 so that the dominant emotion "
                f"remains the most probable one (got {self.blend_weight[1]} + {self.ambiguity})"
            )
        return self


@dataclass(frozen=True)
class SyntheticSample:
    """Everything known about one generated face (the image is JPEG bytes)."""

    sample_id: str
    split: str
    subject: str
    truth: Annotation
    box: np.ndarray
    landmarks: np.ndarray
    jpeg: bytes


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def sample_distribution(rng: np.random.Generator, spec: SyntheticSpec) -> np.ndarray:
    """Draw one true emotion distribution (7 floats summing to 1, canonical order)."""
    prior = np.array([spec.class_prior[c] for c in CLASSES], dtype=np.float64)
    dominant = rng.choice(NUM_CLASSES, p=prior / prior.sum())
    dist = np.zeros(NUM_CLASSES)
    second_share = 0.0
    if rng.random() < spec.blend_prob:
        affinity = _blend_matrix()[dominant]
        second = rng.choice(NUM_CLASSES, p=affinity)
        second_share = rng.uniform(*spec.blend_weight)
        dist[second] = second_share
    diffuse = rng.uniform(0, spec.ambiguity)
    dist += diffuse * rng.dirichlet(np.ones(NUM_CLASSES))
    dist[dominant] += 1.0 - second_share - diffuse
    return dist / dist.sum()


def distribution_to_aus(
    rng: np.random.Generator, dist: np.ndarray, subject_offset: np.ndarray, spec: SyntheticSpec
) -> np.ndarray:
    """AU intensities (17, 0-5) expressing `dist` on one subject's face."""
    intensity = rng.uniform(*spec.intensity)
    aus = intensity * dist @ prototype_matrix() + subject_offset
    aus += rng.normal(0.0, spec.au_noise_std, size=aus.shape)
    aus[_BLINK] = rng.uniform(2.5, 5.0) if rng.random() < spec.blink_prob else rng.uniform(0, 0.5)
    return np.clip(aus, 0.0, AU_MAX_INTENSITY)


def _subject_split(n_subjects: int) -> int:
    """Number of training subjects (the first ones); the rest are test subjects."""
    return max(1, min(n_subjects - 1, round(0.8 * n_subjects)))


@dataclass(frozen=True)
class Annotation:
    """The ground truth and the annotations of one face, before it is drawn."""

    true_dist: np.ndarray
    aus: np.ndarray
    votes: np.ndarray
    label: int


def sample_annotation(
    rng: np.random.Generator, spec: SyntheticSpec, subject_offset: np.ndarray
) -> Annotation:
    """Draw a true distribution, the AUs expressing it, crowd votes and one annotated label."""
    dist = sample_distribution(rng, spec)
    aus = distribution_to_aus(rng, dist, subject_offset, spec)
    votes = rng.multinomial(spec.n_votes, dist)
    label = int(rng.choice(NUM_CLASSES, p=dist))
    return Annotation(
        true_dist=dist.astype(np.float32),
        aus=aus.astype(np.float32),
        votes=votes.astype(np.int16),
        label=label,
    )


def generate_sample(index: int, spec: SyntheticSpec, seed: int) -> SyntheticSample:
    """Generate sample `index` (train samples first, then test) from `seed` alone."""
    split = "train" if index < spec.n_train else "test"
    n_train_subjects = _subject_split(spec.n_subjects)
    rng = _rng(seed, 0, index)
    if split == "train":
        subject = int(rng.integers(0, n_train_subjects))
    else:
        subject = int(rng.integers(n_train_subjects, spec.n_subjects))
    subject_rng = _rng(seed, 1, subject)
    identity = sample_identity(subject_rng)
    offset = np.abs(subject_rng.normal(0.0, spec.subject_au_std, size=len(AU_NAMES)))

    truth = sample_annotation(rng, spec, offset)
    face = render_face(truth.aus, identity, sample_scene(rng, spec.render), spec.render)

    buffer = io.BytesIO()
    Image.fromarray(face.image).save(buffer, format="JPEG", quality=spec.jpeg_quality)
    return SyntheticSample(
        sample_id=f"syn{index:06d}",
        split=split,
        subject=f"s{subject:04d}",
        truth=truth,
        box=face.box.astype(np.float32),
        landmarks=face.landmarks.astype(np.float32),
        jpeg=buffer.getvalue(),
    )


def _single_threaded() -> None:
    cv2.setNumThreads(1)


def generate_dataset(
    spec: SyntheticSpec,
    seed: int,
    image_dir: Path,
    *,
    workers: int = 1,
    progress: Callable[[int], None] | None = None,
) -> pa.Table:
    """Render every sample as `image_dir/<split>/<sample_id>.jpg` and return the manifest table.

    Samples are independent given `seed`, so `workers` processes render them in any order
    and the result is identical to a single-process run. Paths in the table are relative to
    `image_dir`'s parent, the manifest's image root.
    """
    render = partial(generate_sample, spec=spec, seed=seed)
    indices = range(spec.n_train + spec.n_test)
    rows: list[SyntheticSample] = []
    with contextlib.ExitStack() as stack:
        if workers > 1:
            pool = stack.enter_context(
                ProcessPoolExecutor(max_workers=workers, initializer=_single_threaded)
            )
            samples = pool.map(render, indices, chunksize=16)
        else:
            samples = map(render, indices)
        for sample in samples:
            target = image_dir / sample.split / f"{sample.sample_id}.jpg"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(sample.jpeg)
            rows.append(sample)
            if progress is not None:
                progress(1)
    prefix = image_dir.name
    return pa.table(
        {
            "sample_id": pa.array([r.sample_id for r in rows], pa.string()),
            "split": pa.array([r.split for r in rows], pa.string()),
            "path": pa.array([f"{prefix}/{r.split}/{r.sample_id}.jpg" for r in rows]),
            "label": pa.array([r.truth.label for r in rows], pa.int8()),
            "source_label": pa.array([CLASSES[r.truth.label] for r in rows], pa.string()),
            "true_dist": fixed_list(np.stack([r.truth.true_dist for r in rows]), pa.float32()),
            "votes": fixed_list(np.stack([r.truth.votes for r in rows]), pa.int16()),
            "box": fixed_list(np.stack([r.box for r in rows]), pa.float32()),
            "landmarks": fixed_list(
                np.stack([r.landmarks.reshape(-1) for r in rows]), pa.float32()
            ),
            "aus": fixed_list(np.stack([r.truth.aus for r in rows]), pa.float32()),
            "subject": pa.array([r.subject for r in rows], pa.string()),
        }
    )


def task_ceiling(true_dist: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """How well an oracle that knows the true distributions can match the annotated labels.

    Returns the expected accuracy E[max_k d_k] and the realised accuracy of argmax d.
    """
    return {
        "expected_oracle_accuracy": float(true_dist.max(axis=1).mean()),
        "realised_oracle_accuracy": float((true_dist.argmax(axis=1) == labels).mean()),
    }
