"""Tests of the synthetic face renderer: what a user of the images and annotations notices."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from lightfer.data.synthetic.render import (
    RenderedFace,
    RenderSpec,
    render_face,
    sample_identity,
    sample_scene,
)
from lightfer.labels import AU_NAMES

cv2.setNumThreads(1)

CLEAN = RenderSpec(occlusion_prob=0.0, noise_std=0.0, blur_prob=0.0)
BROWS, EYES, NOSE = range(17, 27), range(36, 48), range(27, 36)
MOUTH, CHIN, JAW = range(48, 68), (7, 8, 9), range(4, 13)


def _aus(**intensities: float) -> np.ndarray:
    values = np.zeros(len(AU_NAMES))
    for name, value in intensities.items():
        values[AU_NAMES.index(name)] = value
    return values


def _frontal_pair(au: str, seed: int = 3) -> tuple[RenderedFace, RenderedFace]:
    """One subject in one clean, upright, frontal scene: neutral, then `au` at 5."""
    rng = np.random.default_rng(seed)
    identity = sample_identity(rng)
    scene = dataclasses.replace(sample_scene(rng, CLEAN), roll_deg=0, yaw_deg=0, pitch_deg=0)
    return (
        render_face(_aus(), identity, scene, CLEAN),
        render_face(_aus(**{au: 5.0}), identity, scene, CLEAN),
    )


def _iod(face: RenderedFace) -> float:
    lm = face.landmarks
    return float(np.linalg.norm(lm[42:48].mean(axis=0) - lm[36:42].mean(axis=0)))


def test_same_seed_gives_the_same_bytes_and_annotations() -> None:
    spec = RenderSpec()
    faces = []
    for _ in range(2):
        rng = np.random.default_rng(11)
        identity, scene = sample_identity(rng), sample_scene(rng, spec)
        faces.append(render_face(_aus(AU06=3, AU12=4.2), identity, scene, spec))
    assert faces[0].image.tobytes() == faces[1].image.tobytes()
    assert np.array_equal(faces[0].landmarks, faces[1].landmarks)
    assert np.array_equal(faces[0].box, faces[1].box)


def test_other_seeds_give_other_subjects_and_scenes() -> None:
    spec = RenderSpec()
    images = []
    for seed in (1, 2):
        rng = np.random.default_rng(seed)
        images.append(render_face(_aus(), sample_identity(rng), sample_scene(rng, spec), spec))
    assert np.abs(images[0].image.astype(int) - images[1].image).mean() > 10


@pytest.mark.parametrize("size", [64, 128, 200])
def test_outputs_have_the_documented_shapes_and_types(size: int) -> None:
    spec = RenderSpec(scene_size=size)
    rng = np.random.default_rng(5)
    face = render_face(_aus(AU25=2), sample_identity(rng), sample_scene(rng, spec), spec)
    assert face.image.shape == (size, size, 3) and face.image.dtype == np.uint8
    assert face.landmarks.shape == (68, 2) and face.landmarks.dtype == np.float32
    assert face.box.shape == (4,) and face.box.dtype == np.float32
    assert isinstance(face.occluded, bool)


def test_faces_fill_a_realistic_share_of_the_scene_and_boxes_hold_the_landmarks() -> None:
    spec = RenderSpec()
    size = spec.scene_size
    rng = np.random.default_rng(8)
    inside = 0
    for _ in range(30):
        face = render_face(
            _aus(AU26=rng.uniform(0, 5)), sample_identity(rng), sample_scene(rng, spec), spec
        )
        x0, y0, x1, y1 = face.box
        assert 0 <= x0 < x1 <= size and 0 <= y0 < y1 <= size
        # Yaw foreshortens the eye distance a little below the sampled range.
        assert 0.8 * spec.min_iod_frac <= _iod(face) / size <= 1.05 * spec.max_iod_frac
        lm = face.landmarks
        if lm.min() >= 0 and lm.max() <= size:
            inside += 1
            assert (lm[:, 0] >= x0).all() and (lm[:, 0] <= x1).all()
            assert (lm[:, 1] >= y0).all() and (lm[:, 1] <= y1).all()
            assert y0 < lm[17:27, 1].min()  # the box reaches above the brows, to the forehead
    assert inside >= 27  # the whole face is in the scene most of the time


# AU -> landmarks around which its intensity must visibly change the image.
AU_REGIONS = {
    "AU01": BROWS,
    "AU02": BROWS,
    "AU04": BROWS,
    "AU05": EYES,
    "AU06": EYES,
    "AU07": EYES,
    "AU09": NOSE,
    "AU10": MOUTH,
    "AU12": MOUTH,
    "AU14": MOUTH,
    "AU15": MOUTH,
    "AU17": [*MOUTH, *CHIN],
    "AU20": MOUTH,
    "AU23": MOUTH,
    "AU25": MOUTH,
    "AU26": [*MOUTH, *JAW],
    "AU45": EYES,
}


def test_every_au_has_a_region() -> None:
    assert set(AU_REGIONS) == set(AU_NAMES)


@pytest.mark.parametrize("au", AU_NAMES)
def test_each_au_visibly_changes_its_own_region(au: str) -> None:
    neutral, moved = _frontal_pair(au)
    idx = list(AU_REGIONS[au])
    pad = 0.15 * _iod(neutral)
    points = np.concatenate([neutral.landmarks[idx], moved.landmarks[idx]])
    x0, y0 = np.floor(points.min(axis=0) - pad).astype(int)
    x1, y1 = np.ceil(points.max(axis=0) + pad).astype(int)
    diff = np.abs(moved.image.astype(np.float32) - neutral.image).mean(axis=2)
    region = np.zeros(diff.shape, bool)
    region[max(y0, 0) : y1, max(x0, 0) : x1] = True
    inside, outside = diff[region].mean(), diff[~region].mean()
    strong = int((diff[region] > 15).sum())
    assert inside > 2.5, f"{au} at 5 changes its region by only {inside:.1f} grey levels"
    assert strong >= 12, f"{au} at 5 changes only {strong} pixels by more than 15 levels"
    assert inside > 3 * outside, f"{au} changes the rest of the scene as much as its region"


def _y(face: RenderedFace, idx) -> float:
    return float(face.landmarks[list(idx), 1].mean())


def _width(face: RenderedFace, left: int, right: int) -> float:
    return float(face.landmarks[right, 0] - face.landmarks[left, 0])


def _gap(face: RenderedFace, top: int, bottom: int) -> float:
    return float(face.landmarks[bottom, 1] - face.landmarks[top, 1])


# AU -> (measure of the landmarks, expected sign of its change from 0 to 5); y grows downward.
MOVES = {
    "AU01": (lambda f: _y(f, (20, 21, 22, 23)), -1),  # inner brows up
    "AU02": (lambda f: _y(f, (17, 18, 25, 26)), -1),  # outer brows up
    "AU04": (lambda f: _y(f, (20, 21, 22, 23)), +1),  # brows down ...
    "AU04w": (lambda f: _width(f, 21, 22), -1),  # ... and together
    "AU05": (lambda f: _y(f, (37, 38, 43, 44)), -1),  # upper lids up
    "AU06": (lambda f: _y(f, (40, 41, 46, 47)), -1),  # lower lids pushed up by the cheeks
    "AU07": (lambda f: _gap(f, 37, 41) + _gap(f, 44, 46), -1),  # eyes narrowed
    "AU09": (lambda f: _y(f, NOSE[4:]), -1),  # nostrils up
    "AU10": (lambda f: _y(f, (50, 51, 52)), -1),  # upper lip up
    "AU12": (lambda f: _y(f, (48, 54)), -1),  # corners up ...
    "AU12w": (lambda f: _width(f, 48, 54), +1),  # ... and outward
    "AU14": (lambda f: _width(f, 48, 54), -1),  # corners pulled in
    "AU15": (lambda f: _y(f, (48, 54)), +1),  # corners down
    "AU17": (lambda f: _y(f, (56, 57, 58, 8)), -1),  # lower lip and chin pushed up
    "AU20": (lambda f: _width(f, 48, 54), +1),  # lips stretched sideways
    "AU23": (lambda f: _gap(f, 51, 57), -1),  # lips thinned
    "AU25": (lambda f: _gap(f, 62, 66), +1),  # lips apart
    "AU26": (lambda f: _y(f, (8,)), +1),  # chin down ...
    "AU26g": (lambda f: _gap(f, 62, 66), +1),  # ... and mouth open
    "AU45": (lambda f: _gap(f, 37, 41) + _gap(f, 44, 46), -1),  # lids closed
}


@pytest.mark.parametrize("case", list(MOVES))
def test_landmarks_move_the_way_the_muscle_pulls(case: str) -> None:
    measure, sign = MOVES[case]
    neutral, moved = _frontal_pair(case[:4])
    change = (measure(moved) - measure(neutral)) / _iod(neutral)
    assert sign * change > 0.02, f"{case}: moved {change:+.3f} inter-ocular distances"


def test_blink_closes_the_eyes_completely() -> None:
    _, closed = _frontal_pair("AU45")
    assert abs(_gap(closed, 37, 41)) < 0.01 * _iod(closed)
    assert abs(_gap(closed, 44, 46)) < 0.01 * _iod(closed)


def test_movement_grows_smoothly_with_intensity() -> None:
    rng = np.random.default_rng(4)
    identity, scene = sample_identity(rng), sample_scene(rng, CLEAN)
    levels = np.linspace(0, 5, 6)
    corners = [_y(render_face(_aus(AU12=v), identity, scene, CLEAN), (48, 54)) for v in levels]
    steps = -np.diff(corners)
    assert (steps > 0).all()
    assert steps.max() < 1.5 * steps.min()


def test_open_mouth_is_dark_between_the_inner_lip_landmarks() -> None:
    _, opened = _frontal_pair("AU26", seed=5)  # a light-skinned subject
    x, y = np.round(opened.landmarks[[62, 66]].mean(axis=0)).astype(int)
    inside = opened.image[y - 1 : y + 2, x - 1 : x + 2].mean()
    cheek = np.round(opened.landmarks[[3, 31]].mean(axis=0)).astype(int)
    skin = opened.image[cheek[1] - 1 : cheek[1] + 2, cheek[0] - 1 : cheek[0] + 2].mean()
    assert inside < 0.6 * skin


def test_prototype_expressions_differ_from_each_other() -> None:
    rng = np.random.default_rng(6)
    identity, scene = sample_identity(rng), sample_scene(rng, CLEAN)
    prototypes = {
        "happiness": _aus(AU06=4, AU12=4.5, AU25=2),
        "sadness": _aus(AU01=4, AU04=3, AU15=4),
        "surprise": _aus(AU01=4, AU02=4, AU05=4, AU26=4),
        "fear": _aus(AU01=4, AU02=3, AU04=3, AU05=4, AU07=2, AU20=4, AU26=3),
        "anger": _aus(AU04=4.5, AU05=2.5, AU07=3.5, AU23=4),
        "disgust": _aus(AU09=4.5, AU10=3.5, AU15=2.5, AU17=2),
    }
    shapes = {k: render_face(v, identity, scene, CLEAN).landmarks for k, v in prototypes.items()}
    names = list(shapes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            distance = np.linalg.norm(shapes[a] - shapes[b], axis=1).max()
            assert distance > 2.0, f"{a} and {b} put every landmark within {distance:.1f} px"


def test_occluders_are_drawn_and_reported() -> None:
    spec = RenderSpec(occlusion_prob=1.0, noise_std=0.0, blur_prob=0.0)
    rng = np.random.default_rng(9)
    for _ in range(6):
        identity, scene = sample_identity(rng), sample_scene(rng, spec)
        face = render_face(_aus(), identity, scene, spec)
        bare = render_face(_aus(), identity, dataclasses.replace(scene, occluder="none"), spec)
        assert face.occluded and not bare.occluded
        assert np.abs(face.image.astype(int) - bare.image).max() > 50
        assert np.array_equal(face.landmarks, bare.landmarks)


@pytest.mark.parametrize(
    ("aus", "message"),
    [
        (np.zeros(16), "shape"),
        (np.zeros((17, 1)), "shape"),
        (_aus(AU12=-0.5), "AU12"),
        (_aus(AU26=5.5), "AU26"),
        (_aus(AU04=np.nan), "AU04"),
        (_aus(AU45=np.inf), "AU45"),
    ],
)
def test_bad_aus_are_refused_with_the_problem_named(aus: np.ndarray, message: str) -> None:
    rng = np.random.default_rng(0)
    identity, scene = sample_identity(rng), sample_scene(rng, CLEAN)
    with pytest.raises(ValueError, match=message):
        render_face(aus, identity, scene, CLEAN)


def test_render_spec_documents_and_checks_its_fields() -> None:
    for name, field in RenderSpec.model_fields.items():
        assert field.description, f"{name} has no description"
        assert field.default is not None, f"{name} has no default"
    with pytest.raises(ValidationError, match="min_iod_frac"):
        RenderSpec(min_iod_frac=0.3, max_iod_frac=0.2)
    with pytest.raises(ValidationError):
        RenderSpec(scene_size=32)
    with pytest.raises(ValidationError):
        RenderSpec(unknown_knob=1)
