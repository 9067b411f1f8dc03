"""Decode any image a dataset ships into an 8-bit RGB array, or say exactly why not."""

from __future__ import annotations

import os
import warnings
from math import ceil
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
        ImageReadError: with `status` one of `missing`, `broken_link`, `empty`, `too_large`,
            `truncated` or `unreadable`, and a message naming the file.
    """
    return _decode(Path(path), None)[0]


def load_rgb_bounded(path: str | os.PathLike[str], max_side: int) -> tuple[np.ndarray, float]:
    """Read an image as `load_rgb` does, at most `max_side` pixels on its longer side.

    A larger image is reduced while it is decoded where the format allows (JPEG decodes
    straight at 1/2, 1/4 or 1/8 scale, so memory stays near that of the result), then
    resized to fit; smaller images are returned as they are.

    Returns:
        The array, and its scale relative to the file's pixels (1.0 when not reduced):
        divide coordinates in the array by it to get the file's.

    Raises:
        ImageReadError: as `load_rgb`.
        ValueError: `max_side` is below 1.
    """
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    return _decode(Path(path), max_side)


def _decode(path: Path, max_side: int | None) -> tuple[np.ndarray, float]:
    if not path.is_file():
        if path.is_dir():
            raise ImageReadError(path, "unreadable", "is a directory, not an image file")
        if path.is_symlink():
            target = os.readlink(path)
            raise ImageReadError(
                path, "broken_link", f"symbolic link to {target} is broken or loops"
            )
        raise ImageReadError(path, "missing", "file does not exist")
    if path.stat().st_size == 0:
        raise ImageReadError(path, "empty", "file is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                longest = max(image.size)
                if max_side is not None and longest > max_side:
                    factor = max_side / longest
                    image.draft("RGB", (ceil(image.width * factor), ceil(image.height * factor)))
                image.load()
                image = ImageOps.exif_transpose(image)
                if max_side is not None and max(image.size) > max_side:
                    image.thumbnail((max_side, max_side), Image.Resampling.BILINEAR)
                scale = max(image.size) / longest
                return np.asarray(_to_rgb(image), dtype=np.uint8).copy(), scale
    except Image.DecompressionBombError as exc:
        raise ImageReadError(path, "too_large", f"image is too large to decode ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(path, "unreadable", "not an image format PIL can decode") from exc
    except OSError as exc:
        status = "truncated" if "truncated" in str(exc).lower() else "unreadable"
        raise ImageReadError(path, status, f"cannot decode image: {exc}") from exc
