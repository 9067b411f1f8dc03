"""Builders of tiny dataset roots in the exact on-disk formats, quirks included.

Each builder writes real image files (Pillow) and label files byte-for-byte in the layout
the adapters' docstrings describe: RAF-DB's
`list_patition_label.txt` and `_aligned` suffix, FER+'s row-aligned CSV pair and generated
folders with `label.csv`, CAER-S class folders, and AffectNet's CSV and npy releases.
"""

from __future__ import annotations

import functools
import json
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from PIL import Image

from lightfer.data.synthetic.render import (
    RenderedFace,
    RenderSpec,
    render_face,
    sample_identity,
    sample_scene,
)
from lightfer.labels import AU_NAMES
from lightfer.manifest import Manifest, read_manifest, write_manifest

FERPLUS_HEADER = (
    "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF"
)
AFFECTNET_HEADER = (
    "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,"
    "valence,arousal"
)


def write_image(path: Path, value: int = 128, size: int = 8, grey: bool = False) -> Path:
    """Write a small uniform image; the format follows the suffix (.jpg, .png)."""
    shape = (size, size) if grey else (size, size, 3)
    return write_pixels(path, np.full(shape, value, dtype=np.uint8))


ImageMaker = Callable[[str], np.ndarray]
"""Pixels (uint8, H x W or H x W x 3) of the image a builder writes, given what names it
(a relative path, or a CSV row number)."""


def write_pixels(path: Path, pixels: np.ndarray) -> Path:
    """Write an image array; the format follows the suffix (.jpg, .png)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path


def _write(path: Path, key: str, image: ImageMaker | None, **uniform: int) -> None:
    if image is None:
        write_image(path, **uniform)
    else:
        write_pixels(path, image(key))


@functools.lru_cache(maxsize=4096)
def rendered_face(key: str, size: int) -> RenderedFace:
    """A synthetic face scene of `size` pixels with its box and 68 landmarks, the same for
    the same `key`: a stand-in for a photo where a test needs a face of a real size."""
    rng = np.random.default_rng(zlib.crc32(key.encode()))
    spec = RenderSpec(scene_size=size)
    aus = rng.uniform(0.0, 5.0, len(AU_NAMES))
    return render_face(aus, sample_identity(rng), sample_scene(rng, spec), spec)


def grey_face(key: str, size: int = 48) -> np.ndarray:
    """`rendered_face(key, 64)` as a `size`-pixel grey image, as FER2013 stores faces."""
    face = Image.fromarray(rendered_face(key, 64).image).convert("L")
    return np.asarray(face.resize((size, size), Image.Resampling.BILINEAR))


def astronaut_frame(key: str, size: int = 256) -> np.ndarray:
    """A `size`-pixel frame around skimage's astronaut's head, framed a little differently
    for each `key` (shift, zoom, mirror): MTCNN finds exactly one face in it."""
    from skimage import data as skimage_data

    rng = np.random.default_rng(zlib.crc32(key.encode()))
    side = int(rng.integers(256, 320))
    top, left = int(rng.integers(0, 40)), int(rng.integers(60, 100))
    frame = skimage_data.astronaut()[top : top + side, left : left + side]
    if rng.random() < 0.5:
        frame = frame[:, ::-1]
    return np.asarray(Image.fromarray(np.ascontiguousarray(frame)).resize((size, size)))


def build_rafdb(
    root: Path,
    labels: Sequence[tuple[str, object]],
    *,
    absent_images: Iterable[str] = (),
    extra_lines: Sequence[str] = (),
    distribution: dict[str, Sequence[float]] | None = None,
    distribution_dir: str = "EmoLabel",
    image: ImageMaker | None = None,
) -> Path:
    """RAF-DB basic: `EmoLabel/list_patition_label.txt` lines `<name>.jpg <code>` and
    `Image/aligned/<stem>_aligned.jpg`, except for the names in `absent_images`; the image
    of `<name>.jpg` is `image(name)`, or a tiny uniform one."""
    absent = set(absent_images)
    (root / "EmoLabel").mkdir(parents=True, exist_ok=True)
    lines = [f"{name} {code}" for name, code in labels] + list(extra_lines)
    (root / "EmoLabel/list_patition_label.txt").write_text("\n".join(lines) + "\n")
    (root / "Image/aligned").mkdir(parents=True, exist_ok=True)
    for name, _ in labels:
        if name not in absent:
            path = root / "Image/aligned" / f"{name.rsplit('.', 1)[0]}_aligned.jpg"
            _write(path, name, image)
    if distribution is not None:
        text = "".join(f"{name} {' '.join(map(str, p))}\n" for name, p in distribution.items())
        (root / distribution_dir).mkdir(parents=True, exist_ok=True)
        (root / distribution_dir / "distribution_basic.txt").write_text(text)
    return root


@dataclass(frozen=True)
class FerRow:
    """One row of both FER2013 CSVs: `usage`, the fer2013new.csv name and 10 votes, and the
    FER2013 emotion code of fer2013.csv."""

    usage: str
    name: str
    votes: tuple[int, ...]
    emotion: int = 6


def fer_pixel_value(row: int) -> int:
    """The grey value that fills data row `row`'s 48x48 image, so a PNG names its row."""
    return (row * 11 + 7) % 256


def build_fer2013_csvs(
    root: Path, rows: Sequence[FerRow], *, image: ImageMaker | None = None
) -> Path:
    """`fer2013.csv` (`emotion,pixels,Usage`) and `fer2013new.csv`, row-aligned. Data row
    `index` holds the 48x48 grey pixels `image(str(index))`, or `fer_pixel_value(index)`."""
    root.mkdir(parents=True, exist_ok=True)
    fer = ["emotion,pixels,Usage"]
    plus = [FERPLUS_HEADER]
    for index, row in enumerate(rows):
        if image is None:
            pixels = " ".join([str(fer_pixel_value(index))] * 48 * 48)
        else:
            pixels = " ".join(map(str, np.asarray(image(str(index)), np.uint8).reshape(48 * 48)))
        fer.append(f"{row.emotion},{pixels},{row.usage}")
        plus.append(",".join([row.usage, row.name, *map(str, row.votes)]))
    (root / "fer2013.csv").write_text("\n".join(fer) + "\n")
    (root / "fer2013new.csv").write_text("\n".join(plus) + "\n")
    return root


def build_ferplus_folders(
    root: Path,
    folders: dict[str, Sequence[tuple[str, Sequence[int]]]],
    *,
    absent_images: Iterable[str] = (),
    extra_lines: dict[str, Sequence[str]] | None = None,
) -> Path:
    """`FER2013Train|Valid|Test/` with 48x48 grey PNGs and a header-less `label.csv` of
    `name,"(0, 0, 48, 48)",<10 votes>` lines."""
    absent = set(absent_images)
    for folder, rows in folders.items():
        lines = [f'{name},"(0, 0, 48, 48)",{",".join(map(str, votes))}' for name, votes in rows]
        lines += (extra_lines or {}).get(folder, [])
        (root / folder).mkdir(parents=True, exist_ok=True)
        (root / folder / "label.csv").write_text("\n".join(lines) + "\n")
        for name, _ in rows:
            if name not in absent:
                write_image(root / folder / name, size=48, grey=True)
    return root


def build_caers(
    root: Path,
    classes: Sequence[str] = ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise"),
    per_class: int = 2,
    splits: Sequence[str] = ("train", "test"),
    image: ImageMaker | None = None,
) -> Path:
    """`<split>/<Class>/NNNN.png` whole frames: `image("<split>/<Class>/NNNN.png")`, or
    tiny uniform ones."""
    for split in splits:
        for k, name in enumerate(classes):
            for i in range(per_class):
                key = f"{split}/{name}/{k * per_class + i + 1:04d}.png"
                _write(root / key, key, image, value=20 * k)
    return root


def landmark_string(points: np.ndarray) -> str:
    """68 (x, y) points as AffectNet writes them: `x0;y0;x1;y1;...`."""
    return ";".join(f"{v:.2f}" for v in np.asarray(points).reshape(-1))


@dataclass(frozen=True)
class AffectRow:
    """One AffectNet CSV row; `box` is face_x, face_y, face_width, face_height."""

    path: str
    expression: object
    box: tuple[float, float, float, float] = (10.0, 12.0, 50.0, 60.0)
    landmarks: str = ""
    image: bool = True


def build_affectnet_csv(
    root: Path,
    files: dict[str, Sequence[AffectRow]],
    *,
    csv_folder: str = "Manually_Annotated_file_lists",
    image_folder: str = "Manually_Annotated_Images",
    image: ImageMaker | None = None,
) -> Path:
    """The original release: `training.csv` / `validation.csv` and the image folder; a
    row's image is `image(row.path)`, or a tiny uniform one."""
    (root / csv_folder).mkdir(parents=True, exist_ok=True)
    (root / image_folder).mkdir(parents=True, exist_ok=True)
    for file_name, rows in files.items():
        lines = [AFFECTNET_HEADER]
        for row in rows:
            x, y, w, h = row.box
            lines.append(f"{row.path},{x},{y},{w},{h},{row.landmarks},{row.expression},0.5,-0.25")
            if row.image:
                _write(root / image_folder / row.path, row.path, image)
        (root / csv_folder / file_name).write_text("\n".join(lines) + "\n")
    return root


@dataclass(frozen=True)
class AffectNpy:
    """One image of the npy release: its `_exp.npy` array, optional `_lnd.npy` values."""

    image_id: str
    expression: np.ndarray
    landmarks: np.ndarray | None = None
    image: bool = True


def build_affectnet_npy(root: Path, folders: dict[str, Sequence[AffectNpy]]) -> Path:
    """`train_set|val_set/images/<id>.jpg` and `annotations/<id>_exp.npy` (+ `_lnd.npy`)."""
    for folder, items in folders.items():
        (root / folder / "images").mkdir(parents=True, exist_ok=True)
        (root / folder / "annotations").mkdir(parents=True, exist_ok=True)
        for item in items:
            np.save(root / folder / "annotations" / f"{item.image_id}_exp.npy", item.expression)
            if item.landmarks is not None:
                np.save(root / folder / "annotations" / f"{item.image_id}_lnd.npy", item.landmarks)
            if item.image:
                write_image(root / folder / "images" / f"{item.image_id}.jpg")
    return root


def round_trip(table: pa.Table, summary: dict, image_root: Path, out: Path) -> Manifest:
    """Write and read back the manifest; check that every listed image exists and that the
    summary is JSON (the prepare stage writes it with the metrics)."""
    json.dumps(summary, allow_nan=False)
    write_manifest(out / "manifest.parquet", table, image_root=image_root,
                   face_source=summary["face_source"])  # fmt: skip
    manifest = read_manifest(out / "manifest.parquet")
    assert all(manifest.image_path(i).is_file() for i in range(len(manifest)))
    return manifest
