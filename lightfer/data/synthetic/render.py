"""Render synthetic faces whose expression is driven by 17 Action Unit intensities.

Face model
----------
A face is a set of points in a *canonical frame*: x to the image right (the subject's
left), y down, one unit = the nominal inter-ocular distance (eye centre to eye centre),
origin midway between the eyes. `sample_identity` draws a subject's proportions (face width,
jaw and chin shape, eye size and spacing, brow shape, nose and mouth size, lip thickness)
and colours (skin, lips, iris, hair, brows, clothes, hair style, glasses); from them
`_neutral_shape` builds the 68 iBUG landmarks of the resting face. Every drawn part (head
outline, lids, iris, lips, teeth, wrinkles, hair) is derived from those landmarks, so the
landmarks returned are exactly where the features are drawn.

Expressions add a displacement per AU, linear in intensity (0 = neutral, 5 = the values
in `_AU_ACTIONS`), then a few constraints keep the geometry valid (lids and lips cannot
cross; AU45 closes the upper lids onto the lower ones). What each AU does:

- AU01 inner brow raiser: inner brow ends up, central forehead wrinkles.
- AU02 outer brow raiser: outer brow ends up, lateral forehead wrinkles.
- AU04 brow lowerer: brows down and drawn together, vertical furrows between them.
- AU05 upper lid raiser: upper lids up, sclera shows above the iris.
- AU06 cheek raiser: lower lids and cheeks up, crow's feet, bulge under the eyes.
- AU07 lid tightener: lower lids up and straightened, eyes narrowed.
- AU09 nose wrinkler: nose base and upper lip up, nostrils flare, brow heads down,
  wrinkles across the nose root.
- AU10 upper lip raiser: upper lip up (upper teeth show), deeper nasolabial folds.
- AU12 lip corner puller: corners up and outward (smile), deeper curved nasolabial folds.
- AU14 dimpler: corners pulled in and tucked, dimples beside them.
- AU15 lip corner depressor: corners down, folds down from the corners.
- AU17 chin raiser: chin and lower lip pushed up (mouth arches), chin-boss dimpling.
- AU20 lip stretcher: corners pulled sideways, lips flattened, creases at the corners.
- AU23 lip tightener: lips narrowed and thinned (less red shows), tension lines.
- AU25 lips part: lower lip down, dark mouth and teeth show between the lips.
- AU26 jaw drop: chin and lower jaw contour down, mouth opens.
- AU45 blink: upper lids close onto the lower lids.

Rendering
---------
A pose (roll, scale, shift, plus yaw and pitch through a rough depth map of the face)
maps canonical points to scene pixels; everything is drawn with OpenCV's anti-aliased
primitives at sub-pixel precision. Wrinkles and shading go into separate darkening and
lightening layers that are blurred and multiplied in. The scene adds a cluttered
background, neck, clothes and hair, an optional occluder, directional lighting, a colour
cast, contrast and brightness changes, blur and noise. `render_face` is a pure function of
its arguments: the randomness it needs (clutter, noise) comes from `Scene.seed`.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

from lightfer.labels import AU_MAX_INTENSITY, AU_NAMES

_N_LANDMARKS = 68
_SHIFT = 4  # sub-pixel bits for OpenCV drawing
_PIVOT_Y = 0.45  # canonical y of the point that the pose centres in the scene
_FACE_RADIUS = 1.6  # canonical radius that holds the face under any sampled pose
_OCCLUDERS = ("hand", "bar", "sunglasses", "object")
_HAIR_STYLES = ("bald", "short", "long", "fringe")


class RenderSpec(BaseModel):
    """Scene and nuisance knobs of the synthetic face renderer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scene_size: int = Field(128, ge=64, le=1024, description="side of the square scene (px)")
    min_iod_frac: float = Field(
        0.18, ge=0.05, le=0.4, description="smallest inter-ocular distance / scene size"
    )
    max_iod_frac: float = Field(
        0.26, ge=0.05, le=0.4, description="largest inter-ocular distance / scene size"
    )
    max_shift: float = Field(
        1.0, ge=0, le=1, description="share of the free margin the face centre may move by"
    )
    max_roll_deg: float = Field(20.0, ge=0, le=45, description="largest in-plane rotation")
    max_yaw_deg: float = Field(25.0, ge=0, le=45, description="largest left-right head turn")
    max_pitch_deg: float = Field(10.0, ge=0, le=30, description="largest up-down head tilt")
    lighting: float = Field(
        0.45, ge=0, le=1, description="largest directional shading strength across the face"
    )
    brightness: float = Field(
        0.12, ge=0, le=0.5, description="largest brightness offset (fraction of full scale)"
    )
    contrast: float = Field(0.25, ge=0, le=0.8, description="largest relative contrast change")
    color_cast: float = Field(
        0.1, ge=0, le=0.4, description="largest relative per-channel gain change"
    )
    clutter: int = Field(8, ge=0, le=50, description="most background shapes per scene")
    occlusion_prob: float = Field(
        0.15, ge=0, le=1, description="chance of a hand, bar, object or sunglasses on the face"
    )
    blur_prob: float = Field(0.3, ge=0, le=1, description="chance of a Gaussian blur")
    max_blur_sigma: float = Field(
        1.0, ge=0, le=5, description="largest blur sigma in pixels of a scene_size scene"
    )
    noise_std: float = Field(
        6.0, ge=0, le=50, description="largest pixel noise standard deviation (0-255 scale)"
    )

    @model_validator(mode="after")
    def _iod_range(self) -> RenderSpec:
        if self.min_iod_frac > self.max_iod_frac:
            raise ValueError(
                f"min_iod_frac ({self.min_iod_frac}) must not exceed max_iod_frac "
                f"({self.max_iod_frac})"
            )
        return self


@dataclass(frozen=True)
class Identity:
    """Face-shape and appearance parameters of one subject (canonical units, RGB 0-255)."""

    face_width: float  # half-width of the face at landmarks 0 and 16
    jaw_top: float  # y of landmarks 0 and 16
    chin_y: float  # y of the chin (landmark 8)
    chin_width: float  # half-width of the flat of the chin
    jaw_roundness: float  # superellipse exponent of the lower face (2 = oval, 3.5 = square)
    skull_top: float  # y of the top of the head
    hairline: float  # y of the hairline on the midline
    eye_spacing: float  # distance between the eye centres
    eye_width: float
    eye_height: float  # lid opening of the neutral eye
    eye_tilt: float  # how much higher the outer eye corners sit than the inner ones
    brow_height: float  # height of the brows above the eye centres
    brow_thickness: float
    brow_arch: float
    nose_length: float  # y of the nose tip
    nose_width: float  # half-width of the nostril base
    mouth_y: float  # y of the lip line
    mouth_width: float  # half-width of the mouth
    upper_lip: float  # red-lip thickness
    lower_lip: float
    iris_size: float  # iris radius
    skin: tuple[float, float, float]
    lip_color: tuple[float, float, float]
    iris_color: tuple[float, float, float]
    hair_color: tuple[float, float, float]
    brow_color: tuple[float, float, float]
    clothes_color: tuple[float, float, float]
    hair_style: str  # one of "bald", "short", "long", "fringe"
    hair_volume: float  # how far the hair stands off the skull
    glasses: bool
    glasses_color: tuple[float, float, float]


@dataclass(frozen=True)
class Scene:
    """Pose, lighting, background and occlusion of one image (size-independent)."""

    seed: int  # drives background clutter, texture and pixel noise
    iod_frac: float  # inter-ocular distance / scene size
    center: tuple[float, float]  # position of the face centre, fractions of the scene size
    roll_deg: float
    yaw_deg: float
    pitch_deg: float
    gaze: tuple[float, float]  # iris offset in canonical units
    light_angle: float  # direction the light comes from in the image, radians
    light_strength: float
    brightness: float  # offset, fraction of full scale
    contrast: float  # gain around mid-grey
    color_gain: tuple[float, float, float]
    clutter: int  # number of background shapes
    occluder: str  # "none" or one of "hand", "bar", "sunglasses", "object"
    occluder_pos: tuple[float, float]  # canonical position of the occluder
    occluder_size: float
    occluder_angle: float  # radians
    occluder_color: tuple[float, float, float]
    blur: float  # Gaussian blur sigma as a fraction of the inter-ocular distance in pixels
    noise_std: float


@dataclass(frozen=True)
class RenderedFace:
    """A rendered scene with its face annotations."""

    image: np.ndarray  # (S, S, 3) uint8 RGB
    landmarks: np.ndarray  # (68, 2) float32 pixel x, y, iBUG order
    box: np.ndarray  # (4,) float32 x0, y0, x1, y1, clipped to the image
    occluded: bool


# ---------------------------------------------------------------------------------------
# Muscle actions: landmark displacements at intensity 5.
# ---------------------------------------------------------------------------------------

# Which side of the midline each landmark lies on (-1 image left, +1 image right, 0 middle);
# "outward" displacements move a point away from the midline.
_SIDE = np.zeros(_N_LANDMARKS)
_SIDE[[*range(0, 8), *range(17, 22), 31, 32, *range(36, 42), 48, 49, 50, 58, 59, 60, 61, 67]] = -1
_SIDE[[*range(9, 17), *range(22, 27), 34, 35, *range(42, 48), *range(52, 57), 63, 64, 65]] = 1

# AU -> ((landmarks, outward, down), ...), canonical units at intensity 5.
_AU_ACTIONS: dict[str, tuple[tuple[tuple[int, ...], float, float], ...]] = {
    "AU01": (
        ((21, 22), -0.02, -0.21), ((20, 23), 0.0, -0.16), ((19, 24), 0.0, -0.09),
        ((18, 25), 0.0, -0.04), ((17, 26), 0.0, -0.01),
    ),
    "AU02": (
        ((17, 26), 0.02, -0.21), ((18, 25), 0.01, -0.19), ((19, 24), 0.0, -0.13),
        ((20, 23), 0.0, -0.06), ((21, 22), 0.0, -0.02), ((37, 38, 43, 44), 0.0, -0.015),
    ),
    "AU04": (
        ((21, 22), -0.09, 0.15), ((20, 23), -0.07, 0.14), ((19, 24), -0.04, 0.11),
        ((18, 25), -0.02, 0.08), ((17, 26), 0.0, 0.05), ((37, 38, 43, 44), 0.0, 0.025),
        ((27,), 0.0, 0.02),
    ),
    "AU05": (
        ((37, 38, 43, 44), 0.0, -0.1), ((36, 39, 42, 45), 0.0, -0.012),
        ((40, 41, 46, 47), 0.0, 0.02),
    ),
    "AU06": (
        ((40, 41, 46, 47), 0.0, -0.055), ((36, 45), 0.0, -0.02), ((37, 38, 43, 44), 0.0, 0.025),
        ((17, 18, 25, 26), 0.0, 0.035), ((1, 2, 14, 15), 0.015, -0.02), ((48, 54), 0.01, -0.02),
    ),
    "AU07": (
        ((40, 41, 46, 47), 0.0, -0.08), ((37, 38, 43, 44), 0.0, 0.035), ((36, 45), -0.01, 0.0),
        ((39, 42), 0.0, -0.01),
    ),
    "AU09": (
        ((31, 35), 0.04, -0.08), ((32, 33, 34), 0.0, -0.08), ((30,), 0.0, -0.05),
        ((29,), 0.0, -0.035), ((28,), 0.0, -0.02), ((21, 22), -0.03, 0.08),
        ((20, 23), -0.01, 0.05), ((49, 50, 51, 52, 53), 0.0, -0.06), ((61, 62, 63), 0.0, -0.05),
        ((48, 54), 0.0, -0.02), ((40, 41, 46, 47), 0.0, -0.035), ((37, 38, 43, 44), 0.0, 0.015),
    ),
    "AU10": (
        ((50, 51, 52), 0.0, -0.13), ((49, 53), 0.01, -0.11), ((61, 62, 63), 0.0, -0.15),
        ((48, 54, 60, 64), 0.01, -0.03), ((31, 32, 33, 34, 35), 0.0, -0.03),
    ),
    "AU12": (
        ((48, 54), 0.13, -0.15), ((60, 64), 0.115, -0.14), ((49, 53), 0.06, -0.07),
        ((59, 55), 0.07, -0.085), ((61, 63), 0.05, -0.075), ((67, 65), 0.05, -0.075),
        ((50, 52), 0.02, -0.025), ((58, 56), 0.03, -0.03), ((40, 41, 46, 47), 0.0, -0.02),
        ((2, 3, 13, 14), 0.02, -0.01),
    ),
    "AU14": (
        ((48, 54), -0.07, -0.025), ((60, 64), -0.065, -0.025), ((49, 53, 59, 55), -0.03, -0.01),
        ((50, 51, 52), 0.0, 0.02), ((56, 57, 58), 0.0, -0.02),
    ),
    "AU15": (
        ((48, 54), 0.02, 0.15), ((60, 64), 0.02, 0.14), ((49, 53), 0.0, 0.04),
        ((59, 55), 0.01, 0.08), ((61, 63), 0.0, 0.05), ((67, 65), 0.0, 0.05),
        ((58, 56), 0.0, 0.025), ((57,), 0.0, -0.01),
    ),
    "AU17": (
        ((55, 56, 57, 58, 59), 0.0, -0.1), ((65, 66, 67), 0.0, -0.07),
        ((49, 50, 51, 52, 53), 0.0, -0.035), ((61, 62, 63), 0.0, -0.06),
        ((48, 54, 60, 64), 0.0, 0.025), ((7, 8, 9), 0.0, -0.07), ((6, 10), 0.0, -0.04),
    ),
    "AU20": (
        ((48, 54), 0.17, 0.035), ((60, 64), 0.16, 0.035), ((49, 53, 59, 55), 0.1, 0.0),
        ((61, 63, 67, 65), 0.08, 0.0), ((50, 52, 58, 56), 0.04, 0.0), ((50, 51, 52), 0.0, 0.025),
        ((56, 57, 58), 0.0, -0.03), ((4, 5, 11, 12), 0.025, 0.0),
    ),
    "AU23": (
        ((48, 54), -0.08, 0.0), ((60, 64), -0.07, 0.0), ((49, 53), -0.045, 0.05),
        ((50, 51, 52), 0.0, 0.07), ((59, 55), -0.045, -0.06), ((56, 57, 58), 0.0, -0.08),
        ((61, 63, 67, 65), -0.025, 0.0),
    ),
    "AU25": (
        ((61, 62, 63), 0.0, -0.03), ((49, 50, 51, 52, 53), 0.0, -0.015),
        ((65, 66, 67), 0.0, 0.085), ((55, 56, 57, 58, 59), 0.0, 0.075), ((7, 8, 9), 0.0, 0.02),
    ),
    "AU26": (
        ((8,), 0.0, 0.34), ((7, 9), -0.01, 0.32), ((6, 10), -0.03, 0.28), ((5, 11), -0.03, 0.21),
        ((4, 12), -0.02, 0.14), ((3, 13), 0.0, 0.07), ((2, 14), 0.0, 0.03), ((57,), 0.0, 0.3),
        ((56, 58), 0.0, 0.29), ((55, 59), -0.02, 0.25), ((65, 66, 67), 0.0, 0.29),
        ((48, 54, 60, 64), -0.04, 0.1), ((49, 53), -0.02, 0.01),
    ),
    "AU45": (),  # the blink closes the lids after the sum, see `_expression_shape`
}  # fmt: skip


def _au_table() -> np.ndarray:
    """The (17, 68, 2) displacement per unit of intensity, `AU_NAMES` order."""
    table = np.zeros((len(AU_NAMES), _N_LANDMARKS, 2))
    for k, name in enumerate(AU_NAMES):
        for points, outward, down in _AU_ACTIONS[name]:
            idx = list(points)
            table[k, idx, 0] += _SIDE[idx] * outward
            table[k, idx, 1] += down
    return table / AU_MAX_INTENSITY


_AU_TABLE = _au_table()
_AU = {name: k for k, name in enumerate(AU_NAMES)}
_LID_PAIRS = np.array([[37, 41], [38, 40], [43, 47], [44, 46]])  # upper, lower
_LIP_PAIRS = np.array([[61, 67], [62, 66], [63, 65]])  # inner upper, inner lower
_OUTER_PAIRS = np.array([[50, 61], [51, 62], [52, 63], [58, 67], [57, 66], [56, 65]])


# ---------------------------------------------------------------------------------------
# Sampling
# ---------------------------------------------------------------------------------------

_SKIN_TONES = np.array(
    [[62, 40, 30], [96, 62, 44], [140, 96, 68], [182, 132, 100], [214, 168, 138],
     [238, 202, 178], [250, 222, 204]], dtype=np.float64,
)  # fmt: skip
_HAIR_COLORS = np.array(
    [[24, 20, 18], [56, 38, 28], [100, 70, 45], [196, 166, 112], [150, 72, 36],
     [150, 150, 150], [215, 213, 205]], dtype=np.float64,
)  # fmt: skip
_HAIR_COLOR_P = np.array([0.3, 0.25, 0.15, 0.12, 0.06, 0.08, 0.04])
_IRIS_COLORS = np.array(
    [[92, 56, 30], [52, 32, 22], [122, 100, 52], [82, 112, 72], [78, 120, 172], [120, 130, 140]],
    dtype=np.float64,
)
_IRIS_COLOR_P = np.array([0.35, 0.25, 0.12, 0.08, 0.12, 0.08])


def _rgb(values: np.ndarray) -> tuple[float, float, float]:
    r, g, b = np.clip(values, 0, 255)
    return float(r), float(g), float(b)


def sample_identity(rng: np.random.Generator) -> Identity:
    """Draw the face shape and appearance of one subject.

    Args:
        rng: the only source of randomness; the same state gives the same identity.

    Returns:
        An `Identity` to reuse for every image of this subject.
    """
    u = rng.uniform
    tone = u(0, len(_SKIN_TONES) - 1)
    low = int(tone)
    skin = _SKIN_TONES[low] + (tone - low) * (_SKIN_TONES[min(low + 1, 6)] - _SKIN_TONES[low])
    skin = skin + rng.normal(0, 5, 3)
    lips = skin * np.array([0.8, 0.55, 0.58]) + np.array([22, 4, 10]) + rng.normal(0, 6, 3)
    hair = _HAIR_COLORS[rng.choice(len(_HAIR_COLORS), p=_HAIR_COLOR_P)] * u(0.8, 1.15)
    hair = hair + rng.normal(0, 4, 3)
    brow = 0.65 * hair + 0.35 * np.minimum(hair, skin * 0.45)
    iris = _IRIS_COLORS[rng.choice(len(_IRIS_COLORS), p=_IRIS_COLOR_P)] * u(0.85, 1.15)
    style = _HAIR_STYLES[rng.choice(len(_HAIR_STYLES), p=[0.1, 0.4, 0.3, 0.2])]
    return Identity(
        face_width=u(0.98, 1.16),
        jaw_top=u(0.0, 0.15),
        chin_y=u(1.72, 1.98),
        chin_width=u(0.1, 0.3),
        jaw_roundness=u(1.9, 3.4),
        skull_top=u(-1.75, -1.5),
        hairline=u(-1.12, -0.88),
        eye_spacing=u(0.92, 1.08),
        eye_width=u(0.42, 0.52),
        eye_height=u(0.15, 0.21),
        eye_tilt=u(-0.02, 0.06),
        brow_height=u(0.3, 0.4),
        brow_thickness=u(0.055, 0.11),
        brow_arch=u(0.02, 0.09),
        nose_length=u(0.58, 0.78),
        nose_width=u(0.17, 0.27),
        mouth_y=u(1.12, 1.3),
        mouth_width=u(0.36, 0.48),
        upper_lip=u(0.055, 0.1),
        lower_lip=u(0.075, 0.13),
        iris_size=u(0.095, 0.115),
        skin=_rgb(skin),
        lip_color=_rgb(lips),
        iris_color=_rgb(iris),
        hair_color=_rgb(hair),
        brow_color=_rgb(brow),
        clothes_color=_rgb(u(20, 235, 3)),
        hair_style=style,
        hair_volume=u(0.04, 0.16),
        glasses=bool(rng.random() < 0.08),
        glasses_color=_rgb(rng.choice([20.0, 70.0, 170.0]) * u(0.8, 1.2, 3)),
    )


def sample_scene(rng: np.random.Generator, spec: RenderSpec) -> Scene:
    """Draw the pose, lighting, background and occlusion of one image.

    Args:
        rng: the only source of randomness; the same state gives the same scene.
        spec: the ranges to draw from.

    Returns:
        A `Scene`; `render_face` draws from `Scene.seed` what it needs beyond these values.
    """
    u = rng.uniform
    iod = u(spec.min_iod_frac, spec.max_iod_frac)
    slack = max(0.0, 0.5 - _FACE_RADIUS * iod) * spec.max_shift
    center = 0.5 + u(-slack, slack, 2)
    occluder, pos, angle = "none", (0.0, 0.0), 0.0
    if rng.random() < spec.occlusion_prob:
        occluder = _OCCLUDERS[int(rng.integers(len(_OCCLUDERS)))]
        if occluder == "hand":
            pos, angle = (u(-0.8, 0.8), u(0.8, 1.9)), u(-2.6, -0.5)
        elif occluder == "bar":
            pos, angle = (u(-0.5, 0.5), u(-0.3, 1.6)), u(0, math.pi)
        elif occluder == "object":
            pos, angle = (float(rng.choice([-1, 1]) * u(0.5, 1.1)), u(0.3, 1.8)), u(-0.6, 0.6)
    occ_color = (
        _SKIN_TONES[int(rng.integers(len(_SKIN_TONES)))] * u(0.9, 1.05, 3)
        if occluder == "hand"
        else u(10, 245, 3)
    )
    sigma = spec.max_blur_sigma
    blur = u(min(0.3, sigma), sigma) if rng.random() < spec.blur_prob else 0.0
    return Scene(
        seed=int(rng.integers(2**63)),
        iod_frac=iod,
        center=(float(center[0]), float(center[1])),
        roll_deg=u(-spec.max_roll_deg, spec.max_roll_deg),
        yaw_deg=u(-spec.max_yaw_deg, spec.max_yaw_deg),
        pitch_deg=u(-spec.max_pitch_deg, spec.max_pitch_deg),
        gaze=(u(-0.04, 0.04), u(-0.02, 0.02)),
        light_angle=u(0, 2 * math.pi),
        light_strength=u(0, spec.lighting),
        brightness=u(-spec.brightness, spec.brightness),
        contrast=1.0 + u(-spec.contrast, spec.contrast),
        color_gain=_rgb(1.0 + u(-spec.color_cast, spec.color_cast, 3)),
        clutter=int(rng.integers(spec.clutter // 2, spec.clutter + 1)),
        occluder=occluder,
        occluder_pos=(float(pos[0]), float(pos[1])),
        occluder_size=u(0.8, 1.25),
        occluder_angle=float(angle),
        occluder_color=_rgb(occ_color),
        blur=blur / (iod * spec.scene_size),
        noise_std=u(0, spec.noise_std),
    )


# ---------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=64)
def _spline_weights(n: int, samples: int) -> np.ndarray:
    """Matrix turning `n` control points into an open Catmull-Rom curve through them."""
    t = np.arange(samples)[:, None] / samples
    t2, t3 = t * t, t * t * t
    basis = 0.5 * np.hstack([-t + 2 * t2 - t3, 2 - 5 * t2 + 3 * t3, t + 4 * t2 - 3 * t3, t3 - t2])
    eye = np.eye(n)
    ext = np.concatenate([2 * eye[:1] - eye[1:2], eye, 2 * eye[-1:] - eye[-2:-1]])
    segments = np.stack([ext[:-3], ext[1:-2], ext[2:-1], ext[3:]], axis=1)
    return np.concatenate([(basis @ segments).reshape(-1, n), eye[-1:]])


def _spline(points: np.ndarray, samples: int = 4) -> np.ndarray:
    """Open Catmull-Rom curve through `points`, `samples` points per segment."""
    return _spline_weights(len(points), samples) @ points


@functools.lru_cache(maxsize=4)
def _unit_circle(n: int) -> np.ndarray:
    a = np.linspace(0, 2 * math.pi, n, endpoint=False)
    return np.stack([np.cos(a), np.sin(a)], axis=1)


def _ellipse(center, ax: float, ay: float, angle: float = 0.0, n: int = 16) -> np.ndarray:
    """Polygon of an ellipse with semi-axes `ax`, `ay` rotated by `angle` radians."""
    if angle == 0.0:
        return _unit_circle(n) * (ax, ay) + center
    c, s = math.cos(angle), math.sin(angle)
    return _unit_circle(n) @ np.array([[ax * c, ax * s], [-ay * s, ay * c]]) + center


def _jaw_contour(idt: Identity) -> np.ndarray:
    """Landmarks 0-16: a superellipse from the jaw's top to the chin, evenly spaced."""
    u = np.linspace(0, 1, 48)
    k = idt.jaw_roundness
    half = idt.chin_width + (idt.face_width - idt.chin_width) * (1 - u**k) ** (1 / k)
    side = np.stack([-half, idt.jaw_top + u * (idt.chin_y - idt.jaw_top)], axis=1)
    side = np.concatenate([side, [[0.0, idt.chin_y]]])
    arc = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(side, axis=0), axis=1))])
    at = np.linspace(0, arc[-1], 9)
    right = np.stack([np.interp(at, arc, side[:, 0]), np.interp(at, arc, side[:, 1])], axis=1)
    return np.concatenate([right, right[-2::-1] * (-1, 1)])


@functools.lru_cache(maxsize=512)
def _neutral_shape(idt: Identity) -> np.ndarray:
    """The 68 iBUG landmarks of the subject's resting face, canonical frame (read-only)."""
    lm = np.zeros((_N_LANDMARKS, 2))
    lm[0:17] = _jaw_contour(idt)
    ex = idt.eye_spacing / 2
    # Brows from past the outer eye corner to above the inner one, mirrored on the right.
    t = np.linspace(0, 1, 5)
    brow_y = -idt.brow_height + idt.brow_arch * np.array([0.9, -0.15, -0.5, -0.4, 0.0])
    lm[17:22] = np.stack([-(ex + 0.46 - 0.74 * t), brow_y], axis=1)
    lm[22:27] = lm[21:16:-1] * (-1, 1)
    # Nose bridge and nostril base.
    nl, nw = idt.nose_length, idt.nose_width
    lm[27:31, 1] = np.linspace(-0.1, nl, 4)
    lm[31:36] = np.array([[-nw, nl + 0.05], [-nw / 2, nl + 0.09], [0, nl + 0.11],
                          [nw / 2, nl + 0.09], [nw, nl + 0.05]])  # fmt: skip
    # Eyes: outer corner, two upper lid points, inner corner, two lower lid points.
    ew, eh, tilt = idt.eye_width, idt.eye_height, idt.eye_tilt
    rel = np.array([-0.5, -1 / 6, 1 / 6, 0.5, 1 / 6, -1 / 6])  # x from the outer side
    lid = np.array([0.0, -0.56, -0.56, 0.0, 0.44, 0.44]) * eh
    right_eye = np.stack([-ex + rel * ew, lid - tilt * (0.5 - rel) + 0.005], axis=1)
    lm[36:42] = right_eye
    lm[[45, 44, 43, 42, 47, 46]] = right_eye * (-1, 1)
    # Lips: outer contour 48-59, inner contour 60-67 (closed mouth).
    my, mw, ul, ll = idt.mouth_y, idt.mouth_width, idt.upper_lip, idt.lower_lip
    lm[48:60] = np.array([
        [-mw, my], [-0.6 * mw, my - 0.75 * ul], [-0.22 * mw, my - ul], [0, my - 0.85 * ul],
        [0.22 * mw, my - ul], [0.6 * mw, my - 0.75 * ul], [mw, my],
        [0.6 * mw, my + 0.8 * ll], [0.25 * mw, my + ll], [0, my + 1.02 * ll],
        [-0.25 * mw, my + ll], [-0.6 * mw, my + 0.8 * ll],
    ])  # fmt: skip
    lm[60:68] = np.array([
        [-0.9 * mw, my], [-0.4 * mw, my], [0, my + 0.005], [0.4 * mw, my], [0.9 * mw, my],
        [0.4 * mw, my], [0, my + 0.005], [-0.4 * mw, my],
    ])  # fmt: skip
    lm.flags.writeable = False
    return lm


def _expression_shape(neutral: np.ndarray, aus: np.ndarray) -> np.ndarray:
    """Apply the AU displacements to a neutral shape and keep lids and lips valid."""
    lm = neutral + np.tensordot(aus, _AU_TABLE, axes=1)
    blink = aus[_AU["AU45"]] / AU_MAX_INTENSITY
    upper, lower = _LID_PAIRS[:, 0], _LID_PAIRS[:, 1]
    lm[upper, 1] += blink * (lm[lower, 1] - lm[upper, 1])
    for pairs in (_LID_PAIRS, _LIP_PAIRS):
        top, bottom = pairs[:, 0], pairs[:, 1]
        crossed = lm[top, 1] > lm[bottom, 1]
        mid = (lm[top, 1] + lm[bottom, 1]) / 2
        lm[top[crossed], 1] = mid[crossed]
        lm[bottom[crossed], 1] = mid[crossed]
    # The red of the lips keeps a minimal thickness around the inner contour.
    outer, inner = _OUTER_PAIRS[:, 0], _OUTER_PAIRS[:, 1]
    sign = np.array([-1, -1, -1, 1, 1, 1])
    gap = sign * (lm[outer, 1] - lm[inner, 1])
    lm[outer, 1] += sign * np.maximum(0.0, 0.02 - gap)
    return lm


@dataclass(frozen=True)
class _Pose:
    """Maps canonical points to scene pixels through a rough depth map of the face."""

    scale: float  # pixels per canonical unit
    center: tuple[float, float]
    yaw: tuple[float, float]  # cos, sin
    pitch: tuple[float, float]
    roll: tuple[float, float]
    nose_length: float

    @classmethod
    def of(cls, identity: Identity, scene: Scene, size: int) -> _Pose:
        def cs(deg: float) -> tuple[float, float]:
            return math.cos(math.radians(deg)), math.sin(math.radians(deg))

        return cls(
            scale=scene.iod_frac * size / identity.eye_spacing,
            center=(scene.center[0] * size, scene.center[1] * size),
            yaw=cs(scene.yaw_deg),
            pitch=cs(scene.pitch_deg),
            roll=cs(scene.roll_deg),
            nose_length=identity.nose_length,
        )

    def project(self, points: np.ndarray) -> np.ndarray:
        """Scene pixel positions of canonical points, given the face surface's depth there."""
        x, y = points[:, 0], points[:, 1]
        z = 0.55 * (1 - np.minimum((x / 1.2) ** 2, 1.3))  # a rounded face ...
        z -= 0.3 * np.maximum(0, -0.5 - y) ** 2 + 0.15 * np.maximum(0, y - 1.5) ** 2
        ridge = np.interp(y, [-0.2, self.nose_length, self.nose_length + 0.22], [0.05, 1, 0])
        z += 0.3 * ridge * np.exp(-((x / 0.16) ** 2))  # ... and a nose
        (cy, sy), (cp, sp), (cr, sr) = self.yaw, self.pitch, self.roll
        x1 = x * cy + z * sy
        y1 = (y - _PIVOT_Y) * cp - (z * cy - x * sy) * sp
        return np.stack([self.center[0] + self.scale * (x1 * cr - y1 * sr),
                         self.center[1] + self.scale * (x1 * sr + y1 * cr)], axis=1)  # fmt: skip


# ---------------------------------------------------------------------------------------
# Drawing
# ---------------------------------------------------------------------------------------

# Layers of a canvas: the RGB image, darkening by wrinkles (sharp) and by shadows (soft),
# lightening by highlights (soft), and the head mask that limits the soft shadows.
# The soft layers are drawn at half resolution: they are blurred anyway.
_IMAGE, _FINE, _SOFT, _LIGHT, _MASK = range(5)
_SHADING = (_FINE, _SOFT, _LIGHT)
_HALF_RESOLUTION = (_SOFT, _LIGHT)
_MIN_STRENGTH = 0.02


def _rgb_scaled(color: tuple[float, float, float], factor: float) -> tuple[float, float, float]:
    r, g, b = (min(255.0, c * factor) for c in color)
    return r, g, b


class _Canvas:
    """Records fills and lines in canonical coordinates; `render` projects them in one go."""

    def __init__(self, pose: _Pose) -> None:
        self.pose = pose
        self._points: list[np.ndarray] = []
        self._count = 0
        # Per layer, in drawing order: (width in px, 0 = fill; closed; color; start; stop).
        self._ops: list[list[tuple]] = [[] for _ in range(_MASK + 1)]

    def _add(self, layer: int, points, width: int, closed: bool, color) -> None:
        start = self._count
        self._count += len(points)
        self._points.append(points)
        self._ops[layer].append((width, closed, color, start, self._count))

    def fill(self, points: np.ndarray, color, layer: int = _IMAGE) -> None:
        self._add(layer, points, 0, True, color)

    def line(self, points, color, width: float, layer: int = _IMAGE, closed: bool = False):
        self._add(layer, points, max(1, round(width * self.pose.scale)), closed, color)

    def wrinkle(self, points, strength: float, width: float = 0.025) -> None:
        """A darkening line, `strength` 0-1."""
        if strength > _MIN_STRENGTH:
            self.line(points, min(strength, 1.0) * 255, width, _FINE)

    def shadow(self, points: np.ndarray, strength: float) -> None:
        if strength > _MIN_STRENGTH:
            self.fill(points, min(strength, 1.0) * 255, _SOFT)

    def highlight(self, points: np.ndarray, strength: float) -> None:
        if strength > _MIN_STRENGTH:
            self.fill(points, min(strength, 1.0) * 255, _LIGHT)

    def cover(self, points: np.ndarray, color) -> None:
        """Paint an opaque surface that hides the shading of whatever lies under it."""
        self.fill(points, color)
        for layer in _SHADING:
            self.fill(points, 0, layer)

    def render(self, layers: list[np.ndarray]) -> None:
        """Draw the recorded operations onto `layers` (indexed like `_IMAGE`...).

        Each layer sees its operations in the order they were recorded (wrinkles between two
        fills excepted, see `_weakest_first`); consecutive lines of one style go to OpenCV in
        one call.
        """
        pixels = self.pose.project(np.concatenate(self._points))
        fixed = np.round(pixels * (1 << _SHIFT)).astype(np.int32)
        self._ops[_FINE] = _weakest_first(self._ops[_FINE])
        for index, (target, ops) in enumerate(zip(layers, self._ops, strict=True)):
            half = index in _HALF_RESOLUTION
            shift = _SHIFT + half  # one more fractional bit halves the coordinates
            batch: list[np.ndarray] = []
            for k, (width, closed, color, start, stop) in enumerate(ops):
                if width == 0:
                    cv2.fillPoly(target, [fixed[start:stop]], color, cv2.LINE_AA, shift)
                    continue
                batch.append(fixed[start:stop])
                if k + 1 == len(ops) or ops[k + 1][:3] != (width, closed, color):
                    px = max(1, round(width / 2)) if half else width
                    cv2.polylines(target, batch, closed, color, px, cv2.LINE_AA, shift)
                    batch = []


def _weakest_first(ops: list[tuple]) -> list[tuple]:
    """Sort each run of wrinkle lines between two fills by strength.

    Lines of equal strength then batch, and the strongest wins where lines cross; the fills
    (covers that erase shading) keep their place.
    """
    out: list[tuple] = []
    run: list[tuple] = []
    for op in [*ops, None]:
        if op is None or op[0] == 0:
            out += sorted(run, key=lambda line: (line[2], line[0]))
            run = []
            if op is not None:
                out.append(op)
        else:
            run.append(op)
    return out


def _vec(dx: float, dy: float) -> np.ndarray:
    """An offset in the canonical frame."""
    return np.array((dx, dy))


_SQUARE = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])


def _background(size: int, rng: np.random.Generator, clutter: int) -> np.ndarray:
    """A smooth two-tone gradient with blotchy texture and random shapes, partly desaturated."""
    corners = cv2.resize(rng.uniform(15, 240, (2, 2, 3)), (6, 6), interpolation=cv2.INTER_LINEAR)
    coarse = np.clip(corners + rng.normal(0, 14, (6, 6, 3)), 0, 255).astype(np.uint8)
    image = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
    kinds = rng.integers(4, size=clutter).tolist()
    colors = rng.uniform(0, 255, (clutter, 3)).tolist()
    centers = rng.uniform(-0.1, 1.1, (clutter, 2)) * size
    extents = rng.uniform(0.04, 0.3, (clutter, 2)) * size
    angles = rng.uniform(0, math.pi, clutter).tolist()
    shapes = rng.normal(0, 1, (clutter, 6, 2))
    for kind, color, center, extent, angle, shape in zip(
        kinds, colors, centers, extents, angles, shapes, strict=True
    ):
        if kind == 0:  # rectangle
            c, s = math.cos(angle), math.sin(angle)
            pts = center + (_SQUARE * extent) @ np.array([[c, s], [-s, c]])
        elif kind == 1:
            pts = _ellipse(center, *extent, angle)
        elif kind == 2:  # a stroke
            pts = np.stack([center, center + shape[0] * 0.3 * size])
            fixed = np.round(pts * (1 << _SHIFT)).astype(np.int32)
            thickness = max(1, round(extent[0] / 12))
            cv2.polylines(image, [fixed], False, color, thickness, cv2.LINE_AA, _SHIFT)
            continue
        else:  # irregular polygon
            pts = center + shape[: 3 + int(3 * angle / math.pi)] * extent
        fixed = np.round(pts * (1 << _SHIFT)).astype(np.int32)
        cv2.fillPoly(image, [fixed], color, cv2.LINE_AA, _SHIFT)
    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    saturation = rng.uniform(0.2, 0.9)
    return cv2.addWeighted(image, saturation, grey, 1 - saturation, 0)


_HALF_CIRCLE = np.stack(
    [np.cos(np.linspace(0, math.pi, 15)), -np.sin(np.linspace(0, math.pi, 15))], 1
)


def _skull_arc(idt: Identity, grow: float, drop: float = 0.0) -> np.ndarray:
    """Top of the head from the image-right side over to the image-left side."""
    base = idt.jaw_top - drop
    return _HALF_CIRCLE * (idt.face_width + grow, base - idt.skull_top + grow) + (0, base)


def _draw_body(cv: _Canvas, idt: Identity) -> None:
    """Hair behind the head, clothes, neck and ears: everything drawn before the face."""
    w, chin = idt.face_width, idt.chin_y
    if idt.hair_style == "long":
        arc = _skull_arc(idt, idt.hair_volume + 0.08, 0.1)
        flow = np.array([[-w - 0.35, chin + 0.5], [-w - 0.2, chin + 0.9],
                         [w + 0.2, chin + 0.9], [w + 0.35, chin + 0.5]])  # fmt: skip
        cv.fill(np.concatenate([arc, flow]), _rgb_scaled(idt.hair_color, 0.8))
    collar = chin + 0.75
    cv.fill(np.array([[-2.8, 4.5], [-2.5, collar + 0.3], [-1.3, collar], [-0.55, collar - 0.05],
                      [0, collar + 0.3], [0.55, collar - 0.05], [1.3, collar], [2.5, collar + 0.3],
                      [2.8, 4.5]]), idt.clothes_color)  # fmt: skip
    cv.fill(np.array([[-0.52 * w, 1.0], [-0.58 * w, collar + 0.05], [0, collar + 0.32],
                      [0.58 * w, collar + 0.05], [0.52 * w, 1.0]]),
            _rgb_scaled(idt.skin, 0.78))  # fmt: skip
    for side in (-1, 1):
        center = np.array([side * (w + 0.05), idt.jaw_top + 0.2])
        ear = _ellipse(center, 0.13, 0.3, n=14)
        cv.fill(ear, _rgb_scaled(idt.skin, 0.9))
        cv.wrinkle((ear[[3, 5, 7, 9, 11]] - center) * 0.7 + center + _vec(-side * 0.02, 0), 0.3)


def _draw_head(cv: _Canvas, idt: Identity, lm: np.ndarray) -> None:
    """Skin of the face and skull, its mask, and darkening towards its silhouette."""
    outline = np.concatenate([_spline(lm[0:17], 3), _skull_arc(idt, 0.0)[1:-1]])
    cv.cover(outline, idt.skin)
    cv.fill(outline, 255, _MASK)
    for width, strength in ((0.55, 0.12), (0.34, 0.22), (0.16, 0.32)):
        cv.line(outline, strength * 255, width, _SOFT, closed=True)


def _draw_eye(cv: _Canvas, lm: np.ndarray, idx: list[int], idt: Identity, scene: Scene) -> None:
    """One eye from its landmarks: outer corner, upper lid x2, inner corner, lower lid x2."""
    upper = _spline(lm[idx[0:4]], 4)
    lower = _spline(lm[idx[3:6] + idx[0:1]], 4)
    opening = float(lm[idx[5], 1] + lm[idx[4], 1] - lm[idx[1], 1] - lm[idx[2], 1]) / 2
    corners = (lm[idx[0]] + lm[idx[3]]) / 2
    is_open = opening > 0.012
    if is_open:
        cv.fill(np.concatenate([upper, lower[1:-1]]), (226.0, 222.0, 214.0))
        # The iris follows the middle of the lid opening a little, and the gaze.
        follow = 0.3 * ((lm[idx[1], 1] + lm[idx[5], 1]) / 2 - corners[1])
        iris = corners + _vec(scene.gaze[0], follow + scene.gaze[1] - 0.05 * idt.eye_height)
        r = idt.iris_size
        cv.fill(_ellipse(iris, r, r), idt.iris_color)
        cv.fill(_ellipse(iris, 0.45 * r, 0.45 * r, n=12), (18.0, 14.0, 14.0))
        cv.fill(
            _ellipse(iris + _vec(-0.3 * r, -0.35 * r), 0.18 * r, 0.18 * r, n=8), (245, 245, 240)
        )
        cv.fill(np.concatenate([upper, upper[::-1] - _vec(0, 0.17)]), idt.skin)  # lids hide the
        cv.fill(np.concatenate([lower, lower[::-1] + _vec(0, 0.17)]), idt.skin)  # iris' overflow
        cv.wrinkle(upper + _vec(0, 0.025), 0.25, 0.05)  # the lid's shadow on the eyeball
        cv.line(lower, _rgb_scaled(idt.skin, 0.72), 0.015)
    lash = _rgb(np.asarray(idt.brow_color) * 0.4 + 8)
    cv.line(upper, lash, 0.038 if is_open else 0.045)
    # Lid crease, fading as AU05 pulls the lid up into the socket.
    retraction = max(0.0, opening - idt.eye_height)
    cv.wrinkle(upper[2:-2] - _vec(0, 0.06 + 0.5 * retraction), 0.22 * (1 - 3 * retraction))
    cv.shadow(_ellipse(corners + _vec(0, -0.12), 0.32, 0.13), 0.12)


_BROW_TAPER = np.interp(np.linspace(0, 1, 13), [0, 0.35, 0.8, 1], [0.35, 0.85, 1.0, 0.85])[:, None]


def _draw_brow(cv: _Canvas, points: np.ndarray, idt: Identity) -> None:
    """A tapered brow along its five landmarks (listed from the outer end)."""
    centre = _spline(points, 3)  # 13 points
    tangent = np.gradient(centre, axis=0)
    normal = tangent[:, ::-1] * (1, -1) / np.hypot(tangent[:, :1], tangent[:, 1:])
    if normal[:, 1].sum() > 0:
        normal = -normal
    offset = normal * (idt.brow_thickness / 2 * _BROW_TAPER)
    cv.fill(np.concatenate([centre + offset, (centre - offset)[::-1]]), idt.brow_color)


def _draw_nose(cv: _Canvas, lm: np.ndarray, idt: Identity, au: dict[str, float]) -> None:
    """Bridge shading, alar wings, nostrils (flaring with AU09) and the shadow under the nose."""
    flare = 1 + 0.3 * au["AU09"]
    for side, wing in ((-1, lm[31]), (1, lm[35])):
        root = lm[27] + _vec(side * 0.1, 0.1)
        cv.wrinkle(
            np.array([root, (root + wing) / 2 + _vec(side * 0.03, 0), wing + _vec(0, -0.1)]), 0.07
        )
        cv.wrinkle(wing + np.array([[side * 0.02, 0.01], [side * 0.055, -0.04],
                                    [side * 0.04, -0.1], [0.0, -0.13]]), 0.38, 0.03)  # fmt: skip
        nostril = (wing + lm[33]) / 2 + _vec(side * 0.01, -0.015)
        cv.fill(_ellipse(nostril, 0.055 * flare, 0.026, side * 0.25, n=10),
                _rgb_scaled(idt.skin, 0.35))  # fmt: skip
    cv.wrinkle(_spline(lm[31:36], 2), 0.16)
    cv.shadow(_ellipse(lm[33] + _vec(0, 0.06), 0.2, 0.05), 0.18)
    cv.highlight(_ellipse(lm[30] + _vec(0, -0.03), 0.05, 0.07, n=10), 0.18)
    cv.highlight(_ellipse((lm[27] + lm[30]) / 2, 0.035, 0.2, n=10), 0.1)


def _draw_mouth(cv: _Canvas, lm: np.ndarray, idt: Identity, press: float) -> None:
    """Lips, and when they part the dark mouth with upper (and lower) teeth.

    `press` (AU23, 0-1) darkens and thickens the line where the lips meet.
    """
    inner_up = _spline(lm[60:65], 3)
    inner_low = _spline(lm[[60, 67, 66, 65, 64]], 3)
    gap = float((inner_low[:, 1] - inner_up[:, 1]).max())
    if gap > 0.01:
        cv.fill(np.concatenate([inner_up, inner_low[-2:0:-1]]), (38.0, 11.0, 16.0))
        upper_edge = inner_up[1:-1]
        teeth_low = np.minimum(upper_edge[:, 1] + 0.075, inner_low[1:-1, 1])
        teeth = np.stack([upper_edge[:, 0], teeth_low], axis=1)
        cv.fill(np.concatenate([upper_edge, teeth[::-1]]), (232.0, 226.0, 210.0))
        depth = 0.05 * min(1.0, max(0.0, (gap - 0.15) / 0.15))
        if depth > 0.005:
            lower_edge = inner_low[1:-1]
            top = np.maximum(lower_edge[:, 1] - depth, teeth_low)
            teeth = np.stack([lower_edge[:, 0], top], axis=1)
            cv.fill(np.concatenate([lower_edge, teeth[::-1]]), (210.0, 204.0, 190.0))
    cv.fill(np.concatenate([_spline(lm[48:55], 3), inner_up[::-1]]),
            _rgb_scaled(idt.lip_color, 0.9))  # fmt: skip
    cv.fill(np.concatenate([_spline(lm[[54, 55, 56, 57, 58, 59, 48]], 3), inner_low[::-1]]),
            idt.lip_color)  # fmt: skip
    cv.line(inner_up, _rgb_scaled(idt.lip_color, 0.45 - 0.25 * press), 0.02 + 0.025 * press)
    cv.highlight(_ellipse(lm[57] + _vec(0, -0.035), 0.12, 0.025, n=10), 0.2)
    cv.shadow(_ellipse(lm[57] + _vec(0, 0.08), 0.16, 0.04, n=10), 0.12)


_XS = np.linspace(-1, 1, 7)
_ARCH = np.stack([_XS, _XS**2], axis=1)  # a parabola for curved wrinkles


def _draw_forehead_and_nose_lines(cv: _Canvas, lm: np.ndarray, au: dict[str, float]) -> None:
    """Forehead wrinkles (AU01 centre, AU02 sides), glabella furrows (AU04), nose root (AU09)."""
    for k in range(3):
        lift = 0.14 + 0.085 * k
        fade = 1 - 0.2 * k
        y_mid = min(lm[21, 1], lm[22, 1]) - lift
        cv.wrinkle(_ARCH * (0.4, 0.04) + _vec(0, y_mid), 0.45 * au["AU01"] * fade)
        if au["AU02"] > _MIN_STRENGTH:
            for side, brow in ((-1, lm[19]), (1, lm[24])):
                lateral = _ARCH * (side * 0.28, 0.03) + _vec(side * 0.58, brow[1] - lift)
                cv.wrinkle(lateral, 0.42 * au["AU02"] * fade)
    if au["AU04"] > _MIN_STRENGTH:
        mid = (lm[21] + lm[22]) / 2
        for side in (-1, 1):
            cv.wrinkle(np.array([mid + _vec(side * 0.05, -0.08), mid + _vec(side * 0.045, 0.13)]),
                       0.5 * au["AU04"])  # fmt: skip
    if au["AU09"] > _MIN_STRENGTH:
        for k in range(3):
            y = lm[27, 1] + 0.03 + 0.065 * k
            cv.wrinkle(np.array([[-0.11, y + 0.02], [0, y], [0.11, y + 0.02]]), 0.5 * au["AU09"])


def _draw_eye_and_cheek_lines(
    cv: _Canvas, lm: np.ndarray, neutral: np.ndarray, au: dict[str, float]
) -> None:
    """Crow's feet (AU06), lower-lid bulge (AU06, AU07, AU09), raised cheeks (AU06, AU12)."""
    bulge = 0.35 * max(au["AU06"], au["AU07"]) + 0.1 * au["AU09"]
    rise = 0.14 * max(au["AU06"], 0.6 * au["AU12"])
    glow = 0.1 + 0.12 * max(au["AU06"], au["AU12"])
    for side, corner, lower in ((-1, lm[36], lm[[41, 40]]), (1, lm[45], lm[[46, 47]])):
        if au["AU06"] > _MIN_STRENGTH:
            for dy in (-0.06, 0.0, 0.06):
                start = corner + _vec(side * 0.05, dy * 0.5)
                cv.wrinkle(
                    np.array([start, start + _vec(side * 0.13, dy * 1.5)]), 0.45 * au["AU06"]
                )
        if bulge > _MIN_STRENGTH:
            cv.wrinkle(_spline(np.concatenate([[corner], lower]), 3) + _vec(0, 0.06), bulge)
        apple = np.array([side * 0.56, neutral[30, 1] - 0.1 - rise])
        cv.highlight(_ellipse(apple, 0.2, 0.13, n=12), glow)
        cv.shadow(_ellipse(apple + _vec(side * 0.3, 0.3), 0.07, 0.25, -side * 0.35, n=10), 0.06)


def _draw_mouth_lines(cv: _Canvas, lm: np.ndarray, au: dict[str, float]) -> None:
    """Folds and creases around the mouth and on the chin.

    Nasolabial folds (AU12, AU10, AU09, AU06), dimples (AU14), folds below the corners
    (AU15), stretch creases (AU20), lip tension lines (AU23) and the chin boss (AU17).
    """
    fold = 0.06 + 0.38 * max(au["AU12"], au["AU10"], 0.8 * au["AU09"], 0.4 * au["AU06"])
    for side, wing, corner in ((-1, lm[31], lm[48]), (1, lm[35], lm[54])):
        top = wing + _vec(side * 0.07, -0.04)
        end = corner + _vec(side * 0.1, 0.1 - 0.08 * au["AU12"])
        bend = (top + end) / 2 + _vec(side * (0.05 + 0.05 * au["AU12"]), 0)
        cv.wrinkle(_spline(np.array([top, bend, end]), 4), fold, 0.03)
        if au["AU14"] > _MIN_STRENGTH:
            dimple = corner + _vec(side * 0.11, 0.0)
            crease = np.array([corner + _vec(side * 0.05, -0.08), corner + _vec(side * 0.07, 0.07)])
            cv.wrinkle(crease, 0.75 * au["AU14"], 0.03)
            cv.shadow(_ellipse(dimple, 0.04, 0.055, n=8), 0.5 * au["AU14"])
        cv.wrinkle(np.array([corner + _vec(side * 0.02, 0.04), corner + _vec(side * 0.07, 0.24)]),
                   0.45 * au["AU15"])  # fmt: skip
        for dy in (-0.025, 0.025):
            stretch = np.array(
                [corner + _vec(side * 0.04, dy), corner + _vec(side * 0.16, 1.5 * dy)]
            )
            cv.wrinkle(stretch, 0.55 * au["AU20"])
    if au["AU23"] > _MIN_STRENGTH:
        for x in (-0.12, -0.04, 0.04, 0.12):
            cv.wrinkle(np.array([[x, lm[51, 1] - 0.1], [x * 1.1, lm[51, 1] - 0.02]]),
                       0.6 * au["AU23"], 0.02)  # fmt: skip
    sulcus_y = (lm[57, 1] + lm[8, 1]) / 2 - 0.05
    cv.wrinkle(_ARCH * (0.22, 0.04) + _vec(0, sulcus_y), 0.06 + 0.4 * au["AU17"])
    if au["AU17"] > _MIN_STRENGTH:
        for dx, dy in ((-0.08, 0.05), (0.06, 0.03), (0.0, 0.1), (-0.04, 0.14), (0.09, 0.12)):
            cv.shadow(_ellipse((dx, sulcus_y + dy), 0.026, 0.022, n=8), 0.6 * au["AU17"])
    cv.highlight(_ellipse((0, lm[8, 1] - 0.14), 0.16, 0.08, n=10), 0.08 + 0.15 * au["AU17"])


def _draw_hair(cv: _Canvas, idt: Identity) -> None:
    """Hair over the skull down to the hairline, or a jagged fringe over the forehead."""
    if idt.hair_style == "bald":
        return
    w, hl = idt.face_width, idt.hairline
    if idt.hair_style == "fringe":
        xs = np.linspace(-0.9 * w, 0.9 * w, 11)
        front = np.stack([xs, -idt.brow_height - 0.3 + 0.06 * (np.arange(11) % 2)], axis=1)
    else:
        front = np.array([[-0.72 * w, hl + 0.14], [-0.35 * w, hl + 0.03], [0, hl],
                          [0.35 * w, hl + 0.03], [0.72 * w, hl + 0.14]])  # fmt: skip
    sides = np.array([[-w + 0.02, idt.jaw_top - 0.15], [-w + 0.06, -0.45]])
    outline = [_skull_arc(idt, idt.hair_volume, 0.15), sides, front, sides[::-1] * (-1, 1)]
    cv.cover(np.concatenate(outline), idt.hair_color)
    strand = _rgb_scaled(idt.hair_color, 0.75)
    low = front[:, 1].min() - 0.08
    top = idt.skull_top - idt.hair_volume + 0.12
    for x in np.linspace(-0.6, 0.6, 5) * w:
        cv.line(np.array([[0.6 * x, top], [0.95 * x, (top + low) / 2], [x, low]]), strand, 0.02)


def _draw_glasses(cv: _Canvas, lm: np.ndarray, idt: Identity) -> None:
    """Round frames with a glint on each lens, a bridge and temple arms to the ears."""
    width = 0.035
    centres = [(lm[36] + lm[39]) / 2, (lm[42] + lm[45]) / 2]
    for side, c in zip((-1, 1), centres, strict=True):
        cv.line(_ellipse(c + _vec(0, 0.02), 0.29, 0.2, n=20), idt.glasses_color, width, closed=True)
        cv.highlight(c + np.array([[-0.15, 0.1], [-0.08, 0.12], [0.1, -0.12], [0.03, -0.14]]), 0.15)
        cv.line(np.array([c + _vec(side * 0.29, -0.02), (side * idt.face_width, -0.04)]),
                idt.glasses_color, width)  # fmt: skip
    cv.line(np.array([centres[0] + _vec(0.29, -0.03), (0, -0.09), centres[1] + _vec(-0.29, -0.03)]),
            idt.glasses_color, width)  # fmt: skip


def _draw_occluder(cv: _Canvas, lm: np.ndarray, scene: Scene) -> None:
    """A hand, a bar, sunglasses or a blob-like object in front of the face."""
    pos, size, angle = np.array(scene.occluder_pos), scene.occluder_size, scene.occluder_angle
    color = scene.occluder_color
    direction = np.array([math.cos(angle), math.sin(angle)])
    across = np.array([-direction[1], direction[0]])
    if scene.occluder == "hand":
        for k, spread in enumerate((-0.27, -0.09, 0.09, 0.27)):
            base = pos + direction * 0.25 * size + across * spread * size
            tip = base + (direction + across * spread * 0.4) * (0.45 + 0.08 * (k % 3)) * size
            finger = np.concatenate([_ellipse(base, 0.08 * size, 0.08 * size, n=8),
                                     _ellipse(tip, 0.075 * size, 0.075 * size, n=8)])  # fmt: skip
            cv.cover(finger[cv2.convexHull(finger.astype(np.float32), returnPoints=False)[:, 0]],
                     color)  # fmt: skip
            cv.line(np.array([base, tip]), _rgb_scaled(color, 0.8), 0.012)
        cv.cover(_ellipse(pos, 0.42 * size, 0.32 * size, angle), color)
    elif scene.occluder == "bar":
        along, thick = direction * 3.0, across * 0.17 * size
        cv.cover(np.array([pos - along - thick, pos - along + thick, pos + along + thick,
                           pos + along - thick]), color)  # fmt: skip
    elif scene.occluder == "sunglasses":
        for c in ((lm[36] + lm[39]) / 2, (lm[42] + lm[45]) / 2):
            cv.cover(_ellipse(c + _vec(0, 0.03), 0.31 * size, 0.22 * size, n=20),
                     _rgb_scaled(color, 0.2))  # fmt: skip
        cv.line(np.array([lm[39] + _vec(0, -0.04), lm[27], lm[42] + _vec(0, -0.04)]),
                _rgb_scaled(color, 0.3), 0.04)  # fmt: skip
    else:
        cv.cover(_ellipse(pos, 0.3 * size, 0.55 * size, angle, n=20), color)
        cv.cover(_ellipse(pos + direction * 0.1, 0.22 * size, 0.45 * size, angle, n=16),
                 _rgb_scaled(color, 0.8))  # fmt: skip


@functools.lru_cache(maxsize=4)
def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    ramp = np.arange(size, dtype=np.float32)
    return ramp[None, :], ramp[:, None]


def _finish(
    layers: list[np.ndarray], pose: _Pose, scene: Scene, rng: np.random.Generator
) -> np.ndarray:
    """Apply shading, lighting, colour cast, contrast, blur and noise; return uint8 RGB."""
    image, fine, soft, light, mask = layers
    size = image.shape[0]
    inv = np.float32(1 / 255)
    half = cv2.GaussianBlur(cv2.merge((soft, light)), (0, 0), max(0.3, 0.025 * pose.scale))
    soft, light = cv2.split(cv2.resize(half, (size, size), interpolation=cv2.INTER_LINEAR))
    if 0.012 * pose.scale > 0.5:
        fine = cv2.GaussianBlur(fine, (0, 0), 0.012 * pose.scale)
    gx, gy = _grid(size)
    cos, sin = math.cos(scene.light_angle), math.sin(scene.light_angle)
    reach = _FACE_RADIUS * pose.scale
    toward = (cos * (gx - pose.center[0]) + sin * (gy - pose.center[1])) * (1 / reach)
    gain = 1 + scene.light_strength * np.clip(toward, -1.2, 1.2)
    gain *= 1 - fine * inv
    gain *= 1 - soft * (mask * (inv * inv))
    gain *= 1 + light * (0.6 * inv)
    out = cv2.multiply(image.astype(np.float32), cv2.merge((gain, gain, gain)))
    color = np.zeros((3, 4), np.float32)
    color[:, :3] = np.diag(np.array(scene.color_gain, np.float32) * scene.contrast)
    color[:, 3] = 128 * (1 - scene.contrast) + 255 * scene.brightness
    out = cv2.transform(out, color)
    if scene.blur > 0:
        out = cv2.GaussianBlur(out, (0, 0), scene.blur * scene.iod_frac * size)
    if scene.noise_std > 0:
        # Grey uniform noise with the requested standard deviation (256 levels, centred).
        noise = np.frombuffer(rng.bytes(size * size), np.uint8).reshape(size, size)
        noise = noise.astype(np.float32) - 127.5
        out = cv2.scaleAdd(cv2.merge((noise, noise, noise)), scene.noise_std / 73.9, out)
    return np.clip(out, 0, 255).astype(np.uint8)


def _check_aus(aus: np.ndarray) -> np.ndarray:
    values = np.asarray(aus, dtype=np.float64)
    if values.shape != (len(AU_NAMES),):
        raise ValueError(
            f"aus must have shape ({len(AU_NAMES)},), one intensity per AU in AU_NAMES order "
            f"({', '.join(AU_NAMES)}); got shape {values.shape}"
        )
    bad = ~np.isfinite(values) | (values < 0) | (values > AU_MAX_INTENSITY)
    if bad.any():
        listed = ", ".join(f"{AU_NAMES[k]}={values[k]}" for k in np.flatnonzero(bad))
        raise ValueError(
            f"AU intensities must be finite and within 0-{AU_MAX_INTENSITY:g}; got {listed}"
        )
    return values


def render_face(
    aus: np.ndarray, identity: Identity, scene: Scene, spec: RenderSpec
) -> RenderedFace:
    """Draw one face making the expression `aus` into its scene.

    Args:
        aus: (17,) intensities 0-5 in `AU_NAMES` order.
        identity: the subject, from `sample_identity`.
        scene: pose, lighting and nuisances, from `sample_scene`.
        spec: supplies the scene size.

    Returns:
        The image with the 68 landmarks, the face box and whether an occluder was drawn.

    Raises:
        ValueError: `aus` has the wrong shape or a value that is not finite or not in 0-5.
    """
    values = _check_aus(aus)
    size = spec.scene_size
    rng = np.random.default_rng(scene.seed)
    neutral = _neutral_shape(identity)
    lm = _expression_shape(neutral, values)
    au = dict(zip(AU_NAMES, (values / AU_MAX_INTENSITY).tolist(), strict=True))
    pose = _Pose.of(identity, scene, size)

    cv = _Canvas(pose)
    _draw_body(cv, identity)
    _draw_head(cv, identity, lm)
    _draw_eye(cv, lm, [36, 37, 38, 39, 40, 41], identity, scene)
    _draw_eye(cv, lm, [45, 44, 43, 42, 47, 46], identity, scene)
    _draw_brow(cv, lm[17:22], identity)
    _draw_brow(cv, lm[26:21:-1], identity)
    _draw_nose(cv, lm, identity, au)
    _draw_mouth(cv, lm, identity, au["AU23"])
    _draw_forehead_and_nose_lines(cv, lm, au)
    _draw_eye_and_cheek_lines(cv, lm, neutral, au)
    _draw_mouth_lines(cv, lm, au)
    _draw_hair(cv, identity)
    if identity.glasses:
        _draw_glasses(cv, lm, identity)
    occluded = scene.occluder != "none"
    if occluded:
        _draw_occluder(cv, lm, scene)
    half = (size + 1) // 2
    layers = [_background(size, rng, scene.clutter), np.zeros((size, size), np.uint8),
              np.zeros((half, half), np.uint8), np.zeros((half, half), np.uint8),
              np.zeros((size, size), np.uint8)]  # fmt: skip
    cv.render(layers)
    image = _finish(layers, pose, scene, rng)

    # The box spans the landmarks and the forehead above the (neutral or raised) brows.
    forehead = neutral[17:27].copy()
    forehead[:, 1] = min(neutral[17:27, 1].min(), lm[17:27, 1].min()) - 0.45
    points = pose.project(np.concatenate([lm, forehead]))
    box = np.concatenate([points.min(axis=0), points[:_N_LANDMARKS].max(axis=0)])
    return RenderedFace(
        image=image,
        landmarks=points[:_N_LANDMARKS].astype(np.float32),
        box=np.clip(box, 0, size).astype(np.float32),
        occluded=occluded,
    )
