"""68-point iBUG landmarks with dlib's shape predictor, for the landmark-based AU backends.

The model is dlib's `shape_predictor_68_face_landmarks.dat` (Kazemi and Sullivan, "One
Millisecond Face Alignment with an Ensemble of Regression Trees", CVPR 2014; trained by
Davis King on iBUG 300-W), as shipped inside the `face-recognition-models` package, so
nothing is downloaded. Its licence follows 300-W's: research use.

The package is located with `importlib.util.find_spec` and never imported, since importing
it needs `pkg_resources`. dlib itself (`dlib-bin` wheel) is imported on first use.

Accuracy: the model was trained on faces of roughly 100-300 px found by dlib's HOG detector.
On faces below about 100 px (e.g. 64 px aligned crops) landmarks are poor, and dlib returns
integer pixel positions; `predict_crops` therefore enlarges crops to `work_size` before
predicting, which removes the rounding but cannot add detail that is not there.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from lightfer.errors import AuxLabelError

if TYPE_CHECKING:
    from collections.abc import Sequence

logger = logging.getLogger(__name__)

MODEL_FILE = "shape_predictor_68_face_landmarks.dat"
MODELS_PACKAGE = "face_recognition_models"

# Where dlib's detector would put its box in a crop aligned to `lightfer.faces.align`'s
# default template (eye centres at (0.34, 0.40) and (0.66, 0.40), mouth corners at y 0.74),
# as x0, y0, x1, y1 fractions of the crop side. dlib's HOG boxes, which the model was
# trained on, are squares about 2.05 inter-ocular distances (IOD) wide, centred on the eyes
# horizontally, from about 0.55 IOD above the eye line to 1.5 IOD below it (under the lower
# lip; the chin is cut); the exact proportions vary by a tenth of an IOD with the pyramid
# level that found the face. With the template's IOD of 0.32 (its eye-to-mouth distance,
# 1.06 IOD, is the average face's) that is x 0.5 -/+ 0.33, y 0.40 - 0.18 .. 0.40 + 0.48.
# On skimage's astronaut, boxes 0.03 larger or smaller on each side move the landmarks by
# about 0.015 IOD on average, as much as this box does compared with the whole photo.
CROP_BOX: tuple[float, float, float, float] = (0.17, 0.22, 0.83, 0.88)


def model_path() -> Path:
    """Path of the 68-point model inside the installed `face-recognition-models` package.

    Raises:
        AuxLabelError: the package or the model file is not installed.
    """
    spec = importlib.util.find_spec(MODELS_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    candidates = [Path(folder) / "models" / MODEL_FILE for folder in folders]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    looked = ", ".join(str(c) for c in candidates) or f"no {MODELS_PACKAGE} package on sys.path"
    raise AuxLabelError(
        f"dlib's {MODEL_FILE} not found (looked in: {looked}); "
        "run `pip install face-recognition-models` (a 100 MB sdist that ships the model)"
    )


def _import_dlib() -> Any:
    try:
        import dlib
    except ImportError as exc:
        raise AuxLabelError(
            "dlib is not installed; run `pip install dlib-bin` (a binary wheel of dlib)"
        ) from exc
    return dlib


def _check_rgb(image: np.ndarray, what: str) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.shape[-1:] != (3,):
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(
            f"{what} must be uint8 RGB with 3 channels last, got shape {shape} and dtype {dtype}"
        )


class Dlib68:
    """dlib's 68-point shape predictor, loaded on first use (about 1 s, 100 MB).

    Args:
        path: the `.dat` model; None finds it in `face-recognition-models`.
        work_size: `predict_crops` resizes crops to this side before predicting (see the
            module docstring); None predicts at the crops' own size.
    """

    def __init__(self, path: Path | str | None = None, *, work_size: int | None = 256) -> None:
        if work_size is not None and work_size < 16:
            raise ValueError(f"work_size must be at least 16 px or None, got {work_size}")
        self.path = Path(path) if path is not None else None
        self.work_size = work_size
        self._dlib: Any = None
        self._predictor: Any = None

    def _load(self) -> Any:
        if self._predictor is None:
            self._dlib = _import_dlib()
            path = self.path if self.path is not None else model_path()
            if not path.is_file():
                raise AuxLabelError(
                    f"dlib landmark model {path} does not exist; pass path=None to use the one "
                    "in face-recognition-models"
                )
            logger.debug("loading %s", path)
            self._predictor = self._dlib.shape_predictor(str(path))
            self.path = path
        return self._predictor

    def predict(self, image: np.ndarray, box: Sequence[float] | np.ndarray) -> np.ndarray:
        """68 landmarks of the face in `box`.

        Args:
            image: (H, W, 3) uint8 RGB.
            box: x0, y0, x1, y1 in pixels, ideally as dlib's frontal face detector would
                place it (see `CROP_BOX` for its proportions); it is rounded to whole pixels.

        Returns:
            (68, 2) float32 x, y in image pixels, iBUG order (whole pixels: dlib rounds).

        Raises:
            ValueError: not a uint8 RGB image, or an empty box.
        """
        _check_rgb(image, "image")
        if image.ndim != 3:
            raise ValueError(f"image must be (H, W, 3), got shape {image.shape}")
        x0, y0, x1, y1 = (round(float(v)) for v in box)
        if x1 <= x0 or y1 <= y0:
            raise ValueError(f"box must have x1 > x0 and y1 > y0, got {tuple(box)}")
        predictor = self._load()
        shape = predictor(np.ascontiguousarray(image), self._dlib.rectangle(x0, y0, x1, y1))
        return np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float32)

    def predict_crops(
        self, crops: np.ndarray, box_fraction: Sequence[float] = CROP_BOX
    ) -> np.ndarray:
        """68 landmarks of each aligned face crop, with the face box the template implies.

        Args:
            crops: (N, S, S, 3) uint8 RGB crops aligned with `lightfer.faces.align` (e.g. the
                face cache's `faces.npy`).
            box_fraction: the face box as x0, y0, x1, y1 fractions of the crop side; the
                default `CROP_BOX` suits the default template.

        Returns:
            (N, 68, 2) float32 x, y in crop pixels.

        Raises:
            ValueError: not (N, S, S, 3) uint8, or a box outside 0..1.
        """
        _check_rgb(crops, "crops")
        if crops.ndim != 4 or crops.shape[1] != crops.shape[2]:
            raise ValueError(f"crops must be (N, S, S, 3), got shape {crops.shape}")
        fractions = np.asarray(box_fraction, dtype=np.float64)
        if (
            fractions.shape != (4,)
            or not ((fractions >= 0) & (fractions <= 1)).all()
            or not (fractions[0] < fractions[2] and fractions[1] < fractions[3])
        ):
            raise ValueError(f"box_fraction must be x0 < x1, y0 < y1 in 0..1, got {box_fraction}")
        side = crops.shape[1]
        work = self.work_size or side
        scale = work / side
        out = np.empty((len(crops), 68, 2), dtype=np.float32)
        for i, crop in enumerate(crops):
            if work != side:
                interpolation = cv2.INTER_AREA if work < side else cv2.INTER_LINEAR
                crop = cv2.resize(crop, (work, work), interpolation=interpolation)
            # Pixel centres: a point at work-pixel u sits at crop pixel (u + 0.5) / scale - 0.5.
            out[i] = (self.predict(crop, fractions * work) + 0.5) / scale - 0.5
        return out
