"""Every image a dataset can ship decodes to 8-bit RGB, or fails with a named reason."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lightfer.errors import ImageReadError
from lightfer.images import load_rgb


def _save(path: Path, image: Image.Image, **kwargs) -> Path:
    image.save(path, **kwargs)
    return path


@pytest.mark.parametrize(
    ("mode", "value", "suffix"),
    [
        ("L", 128, ".png"),
        ("RGBA", (10, 20, 30, 255), ".png"),
        ("LA", (200, 255), ".png"),
        ("P", 3, ".png"),
        ("CMYK", (0, 0, 0, 0), ".jpg"),
        ("I;16", 65535, ".png"),
        ("RGB", (1, 2, 3), ".bmp"),
    ],
)
def test_every_mode_becomes_uint8_rgb(tmp_path: Path, mode, value, suffix):
    path = _save(tmp_path / f"img{suffix}", Image.new(mode, (9, 7), value))
    array = load_rgb(path)
    assert array.shape == (7, 9, 3) and array.dtype == np.uint8


def test_sixteen_bit_keeps_its_range(tmp_path: Path):
    path = _save(tmp_path / "deep.png", Image.new("I;16", (4, 4), 65535))
    assert load_rgb(path).max() == 255


def test_transparent_pixels_become_black(tmp_path: Path):
    path = _save(tmp_path / "a.png", Image.new("RGBA", (4, 4), (255, 255, 255, 0)))
    assert load_rgb(path).max() == 0


def test_exif_orientation_is_applied(tmp_path: Path):
    image = Image.new("RGB", (20, 10))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise when displayed
    path = _save(tmp_path / "rotated.jpg", image, exif=exif)
    assert load_rgb(path).shape == (20, 10, 3)


@pytest.mark.parametrize(
    ("content", "status"),
    [
        (None, "missing"),
        (b"", "empty"),
        (b"this is not an image", "unreadable"),
    ],
)
def test_bad_files_fail_with_a_status_and_the_path(tmp_path: Path, content, status):
    path = tmp_path / "face.jpg"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ImageReadError) as info:
        load_rgb(path)
    assert info.value.status == status
    assert str(path) in str(info.value)


def test_a_truncated_jpeg_is_reported_as_truncated(tmp_path: Path):
    full = _save(tmp_path / "full.jpg", Image.fromarray(np.full((64, 64, 3), 90, np.uint8)))
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(full.read_bytes()[:300])
    with pytest.raises(ImageReadError) as info:
        load_rgb(cut)
    assert info.value.status == "truncated"


def test_a_decompression_bomb_is_refused(tmp_path: Path, monkeypatch):
    path = _save(tmp_path / "big.png", Image.new("L", (100, 100)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(ImageReadError) as info:
        load_rgb(path)
    assert info.value.status == "too_large"


def test_a_huge_photo_is_reduced_while_it_is_decoded(tmp_path: Path):
    from lightfer.images import load_rgb_bounded

    path = tmp_path / "huge.jpg"
    Image.new("RGB", (8000, 6000), (200, 120, 40)).save(path, quality=80)
    image, scale = load_rgb_bounded(path, 2048)
    assert image.shape == (1536, 2048, 3) and scale == pytest.approx(2048 / 8000)
    assert abs(int(image[100, 100, 0]) - 200) <= 3
    Image.new("RGB", (40, 30)).save(tmp_path / "small.png")
    small, one = load_rgb_bounded(tmp_path / "small.png", 64)
    assert small.shape == (30, 40, 3) and one == 1.0
