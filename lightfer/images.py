"""Decode any image a dataset ships into an 8-bit RGB array, or say exactly why not."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from lightfer.errors import ImageReadError

# PIL refuses images above twice this many pixels (decompression bombs); warn-level images
# (above it) are still decoded. 178 M pixels is far beyond any face dataset.
Image.MAX_IMAGE_PIXELS = 89_478_485


def _to_rgb(image: Image.Image) -> Image.Image:
    """Convert grey, palette, alpha, CMYK and 16/32-bit images to 8-bit RGB."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(array.max()), 1.0)
        image = Image.fromarray(np.clip(array / peak * 255.0 + 0.5, 0, 255).astype(np.uint8))
    elif image.mode == "F":
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scaled = (array - low) / (high - low) if high > low else np.zeros_like(array)
        image = Image.fromarray((scaled * 255.0 + 0.5).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def load_rgb(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as an (H, W, 3) uint8 RGB array, honouring EXIF orientation.

    Raises:
        ImageReadError: with `status` one of `missing`, `empty`, `too_large`, `truncated`
            or `unreadable`, and a message naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(path, "missing", "file does not exist")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty", "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()
                image = ImageOps.exif_transpose(image)
                return np.asarray(_to_rgb(image), dtype=np.uint8).copy()
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, "too_large", f"image is too large to decode ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, "unreadable", "not an image format PIL can decode") from exc
    except OSError as exc:
        status = "truncated" if "truncated" in str(exc).lower() else "unreadable"
        raise ImageReadError(path, status, f"cannot decode image: {exc}") from exc
