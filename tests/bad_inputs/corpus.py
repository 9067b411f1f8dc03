"""The bad-input corpus of record: what a careless or unlucky user feeds lightfer.

One `Case` per input: an id, its kind, how it is built and run (`run(tmp, assets)`), the
expected outcome and a regex that the message (or, for a counted skip, one `reason:
example` line) must match; the regex names the file or key, so "an error" is not enough.

Outcomes:
    clear: the run stops with a `LightferError` (or the CLI with a message and a non-zero
        status), never a traceback.
    counted: the run goes on; the input is left out, counted under a reason and named.
    refused: the input is readable but using it would change or invent a value (a key
        silently replaced, a zero std, a truncated vote); it is refused with a message.

`python -m tests.bad_inputs.corpus` prints the totals.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import signal
import struct
import subprocess
import sys
import textwrap
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import yaml

from lightfer.errors import LightferError
from tests.conftest import PROJECT_ROOT, tiny_params
from tests.data.fixtures import (
    AffectNpy,
    AffectRow,
    FerRow,
    build_affectnet_csv,
    build_affectnet_npy,
    build_caers,
    build_fer2013_csvs,
    build_ferplus_folders,
    build_rafdb,
    write_image,
)

Expect = Literal["clear", "counted", "refused"]
SEVEN = {
    str(k): c
    for k, c in enumerate(
        ("neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger")
    )
}


@dataclass
class Outcome:
    """What a run did: `failed` with `message`, or went on with `counted` skips."""

    failed: bool
    message: str = ""
    counted: dict[str, list[str]] | None = None
    traceback: bool = False

    def lines(self) -> list[str]:
        """The counted skips as `reason: example` lines."""
        return [f"{r}: {e}" for r, examples in (self.counted or {}).items() for e in examples]


@dataclass(frozen=True)
class Case:
    id: str
    kind: str
    expect: Expect
    pattern: str
    run: Callable[[Path, Any], Outcome]


def _catch(call: Callable[[], Any]) -> Outcome:
    """Run `call`: a `LightferError` is a failure with its message; else what it counted."""
    try:
        result = call()
    except LightferError as exc:
        return Outcome(True, str(exc))
    return Outcome(False, "accepted", counted=_counted(result))


def _counted(result: Any) -> dict[str, list[str]]:
    """Skips from an adapter summary, an `AuxVectors`, or prediction rows."""
    if isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], dict):
        summary = result[1]
        found = dict(summary["skipped"]["examples"])
        fallback = (summary.get("true_dist") or {}).get("one_hot_fallback")
        return found | (fallback["examples"] if fallback else {})
    if hasattr(result, "status"):  # AuxVectors: the status of each row
        return {str(s): [f"row {i}"] for i, s in enumerate(result.status) if s != "ok"}
    if isinstance(result, list):  # prediction rows
        return {"error": [f"{r.file} frame {r.frame}: {r.error}" for r in result if r.error]}
    return {}


def _cli(*args: str) -> Outcome:
    from typer.testing import CliRunner

    from lightfer.cli import app

    result = CliRunner().invoke(app, list(args))
    crashed = result.exception is not None and not isinstance(result.exception, SystemExit)
    return Outcome(result.exit_code != 0, result.stderr + result.stdout, traceback=crashed)


# Params files ----------------------------------------------------------------------------


def _load(path: Path) -> Outcome:
    from lightfer.params import load_params

    return _catch(lambda: load_params(path))


def _params_text(tmp: Path, text: str, name: str = "params.yaml") -> Path:
    path = tmp / name
    path.write_text(text)
    return path


def _dump(raw: dict[str, Any]) -> str:
    return yaml.safe_dump(raw, sort_keys=False)


def _tiny(edit: Callable[[dict[str, Any]], Any] | None = None) -> dict[str, Any]:
    raw = tiny_params()
    if edit is not None:
        edit(raw)
    return raw


def params_case(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Path, Any], Outcome]:
    """Load the tiny params after `edit(raw)`."""
    return lambda tmp, _: _load(_params_text(tmp, _dump(_tiny(edit))))


def params_text_case(make: Callable[[Path], str]) -> Callable[[Path, Any], Outcome]:
    """Load a params file whose text is `make(tmp)`."""
    return lambda tmp, _: _load(_params_text(tmp, make(tmp)))


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = raw
        for part in parents:
            node = node[part]
        node[last] = value

    return edit


def _dataset(spec: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def edit(raw: dict[str, Any]) -> None:
        raw["datasets"] = {"real": spec}
        raw["study"]["datasets"] = []

    return edit


def _openface(tmp: Path, csv_dir: str | None, **aux: Any) -> str:
    raw = _tiny()
    raw["aux"].update(backend="openface", openface_csv_dir=csv_dir, **aux)
    return _dump(raw)


def _relative_root(tmp: Path) -> Outcome:
    """`root: ../ds/rafdb/basic` beside the params file, loaded from elsewhere: the root is
    resolved against the params file; here it does not exist there, and the message names
    the resolved path."""
    (tmp / "project").mkdir()
    raw = _tiny(_dataset({"kind": "rafdb", "root": "../ds/rafdb/basic"}))
    return _load(_params_text(tmp / "project", _dump(raw)))


# Dataset layouts -------------------------------------------------------------------------

_RAF = [("train_00001.jpg", 4), ("train_00002.jpg", 7), ("test_0001.jpg", 1)]


def _scan(kind: str, root: Path, **kwargs: Any) -> Outcome:
    from lightfer.data.affectnet import scan_affectnet
    from lightfer.data.caers import scan_caers
    from lightfer.data.ferplus import scan_ferplus
    from lightfer.data.imagefolder import scan_imagefolder
    from lightfer.data.rafdb import scan_rafdb

    scanners: dict[str, Callable[..., Any]] = {
        "rafdb": scan_rafdb,
        "ferplus": scan_ferplus,
        "affectnet": scan_affectnet,
        "caers": scan_caers,
        "imagefolder": scan_imagefolder,
    }
    return _catch(lambda: scanners[kind](root, **kwargs))


def rafdb_case(
    labels: list[tuple[str, object]] | None = None,
    rewrite: Callable[[Path], None] | None = None,
    **build: Any,
) -> Callable[[Path, Any], Outcome]:
    def run(tmp: Path, _: Any) -> Outcome:
        root = build_rafdb(tmp / "raf", labels if labels is not None else _RAF, **build)
        if rewrite is not None:
            rewrite(root / "EmoLabel/list_patition_label.txt")
        return _scan("rafdb", root)

    return run


def _reencode(encoding: str) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(path.read_text().encode(encoding))


_VOTES = (8, 1, 1, 0, 0, 0, 0, 0, 0, 0)


def fer_csv_case(
    rows: list[FerRow], edit: Callable[[Path], None] | None = None
) -> Callable[[Path, Any], Outcome]:
    def run(tmp: Path, _: Any) -> Outcome:
        root = build_fer2013_csvs(tmp / "fer", rows)
        if edit is not None:
            edit(root)
        return _scan("ferplus", root, image_dir=tmp / "png")

    return run


def _replace_in(name: str, old: str, new: str, count: int = 1) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        path = root / name
        path.write_text(path.read_text().replace(old, new, count))

    return edit


_GOOD_FER = [FerRow("Training", "fer0000000.png", _VOTES), FerRow("PublicTest", "fer1.png", _VOTES)]


def fer_folders_case(extra: list[str], absent: tuple[str, ...] = ()) -> Callable[..., Outcome]:
    def run(tmp: Path, _: Any) -> Outcome:
        rows = [("fer0000000.png", _VOTES), ("fer0000001.png", _VOTES)]
        folders = {"FER2013Train": rows, "FER2013Valid": rows, "FER2013Test": rows}
        root = build_ferplus_folders(
            tmp / "ferf", folders, absent_images=absent, extra_lines={"FER2013Train": extra}
        )
        return _scan("ferplus", root)

    return run


def affectnet_case(
    train: list[AffectRow], edit: Callable[[Path], None] | None = None
) -> Callable[[Path, Any], Outcome]:
    def run(tmp: Path, _: Any) -> Outcome:
        valid = [AffectRow("v/1.jpg", 3)]
        root = build_affectnet_csv(
            tmp / "aff",
            {"training.csv": [AffectRow("t/ok.jpg", 1), *train], "validation.csv": valid},
        )
        if edit is not None:
            edit(root / "Manually_Annotated_file_lists")
        return _scan("affectnet", root)

    return run


def _append_line(name: str, line: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        with open(folder / name, "a") as handle:
            handle.write(line + "\n")

    return edit


def _affectnet_npy_bad(tmp: Path, _: Any) -> Outcome:
    items = [AffectNpy("1", np.array(2)), AffectNpy("2", np.array(3))]
    root = build_affectnet_npy(tmp / "npy", {"train_set": items, "val_set": items})
    (root / "train_set/annotations/2_exp.npy").write_bytes(b"not numpy")
    return _scan("affectnet", root)


def imagefolder_case(edit: Callable[[Path], None]) -> Callable[[Path, Any], Outcome]:
    def run(tmp: Path, _: Any) -> Outcome:
        root = tmp / "folders"
        for split in ("train", "test"):
            for folder in SEVEN:
                write_image(root / split / folder / "a.jpg")
        edit(root)
        return _scan("imagefolder", root, classes=SEVEN, splits={"train": "train", "test": "test"})

    return run


def _caers_case(edit: Callable[[Path], None]) -> Callable[[Path, Any], Outcome]:
    def run(tmp: Path, _: Any) -> Outcome:
        root = build_caers(tmp / "caer", per_class=1)
        edit(root)
        return _scan("caers", root)

    return run


# Images ----------------------------------------------------------------------------------


def image_case(make: Callable[[Path], Path]) -> Callable[[Path, Any], Outcome]:
    def run(tmp: Path, _: Any) -> Outcome:
        from lightfer.images import load_rgb

        path = make(tmp)
        return _catch(lambda: load_rgb(path))

    return run


def _bytes(name: str, data: bytes) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).write_bytes(data)
        return tmp / name

    return make


def _truncated_jpeg(tmp: Path) -> Path:
    rng = np.random.default_rng(0)
    path = tmp / "cut.jpg"
    from PIL import Image

    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:600])
    return path


def _png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header announces `width` x `height` (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b""))
        + chunk(b"IEND", b"")
    )


def _link(name: str, target: str) -> Callable[[Path], Path]:
    def make(tmp: Path) -> Path:
        (tmp / name).symlink_to(target)
        return tmp / name

    return make


# OpenFace CSVs ---------------------------------------------------------------------------

_AUS = (
    "AU01",
    "AU02",
    "AU04",
    "AU05",
    "AU06",
    "AU07",
    "AU09",
    "AU10",
    "AU12",
    "AU14",
    "AU15",
    "AU17",
    "AU20",
    "AU23",
    "AU25",
    "AU26",
    "AU45",
)


def _openface_csv(confidences: list[float], *, sequence: bool = False, au: str = "1.0") -> str:
    lead = (
        ["frame", "face_id", "timestamp", "confidence", "success"]
        if sequence
        else ["face", "confidence"]
    )
    rows = [", ".join(lead + [f"{a}_r" for a in _AUS])]
    for i, c in enumerate(confidences):
        first = (
            [str(i), "0", "0.0", f"{abs(c):.2f}", "0" if c < 0 else "1"]
            if sequence
            else [str(i), f"{c:.3f}"]
        )
        rows.append(", ".join(first + [au] * len(_AUS)))
    return "\n".join(rows) + "\n"


def openface_case(
    files: dict[str, str | bytes],
    images: tuple[str, ...] = ("good.jpg", "bad.jpg"),
    folder: str = "of",
) -> Callable[[Path, Any], Outcome]:
    """`good.csv` is a confident face; `files` adds or replaces CSVs."""

    def run(tmp: Path, _: Any) -> Outcome:
        from lightfer.au.openface import openface_aux

        out = tmp / "of"
        out.mkdir()
        contents: dict[str, str | bytes] = {"good.csv": _openface_csv([0.98]), **files}
        for name, content in contents.items():
            data = content.encode() if isinstance(content, str) else content
            (out / name).write_bytes(data)
        return _catch(lambda: openface_aux([Path(i) for i in images], csv_dir=tmp / folder))

    return run


# Checkpoints and model files -------------------------------------------------------------


class Assets:
    """Model files built once per session (a small EfficientFace checkpoint, a tiny ONNX
    export) and a shared face detector."""

    def __init__(self, root: Path) -> None:
        self.root = root

    @functools.cached_property
    def payload(self) -> dict[str, Any]:
        import torch

        from lightfer.labels import CLASSES
        from lightfer.models import create_model
        from lightfer.models.checkpoint import save_checkpoint

        path = save_checkpoint(
            self.root / "ef.pt",
            create_model("efficientface"),
            arch="efficientface",
            classes=CLASSES,
            image_size=64,
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
        )
        return torch.load(path, weights_only=True)

    @functools.cached_property
    def onnx(self) -> Path:
        import torch

        path = self.root / "tiny.onnx"
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(7))
        model(torch.zeros(1, 3, 16, 16))
        torch.onnx.export(
            model,
            (torch.zeros(1, 3, 16, 16),),
            path,
            input_names=["input"],
            output_names=["logits"],
            dynamic_axes={"input": {0: "n"}},
            dynamo=False,
        )
        return path

    @functools.cached_property
    def detector(self) -> Any:
        from lightfer.faces.detect import FaceDetector

        return FaceDetector(threads=1)

    def predictor(self, forward: Callable[[np.ndarray], np.ndarray] | None = None) -> Any:
        from lightfer.predict import Predictor

        def zeros(batch: np.ndarray) -> np.ndarray:
            return np.zeros((len(batch), 7), np.float32)

        return Predictor(
            forward or zeros,
            image_size=32,
            mean=(0.5,) * 3,
            std=(0.25,) * 3,
            detector=self.detector,
        )


def _infer(path: Path, **kwargs: Any) -> Outcome:
    from lightfer.models.inference import load_for_inference

    return _catch(lambda: load_for_inference(path, **kwargs))


def checkpoint_case(edit: Callable[[dict[str, Any]], Any], name: str = "edited.pt") -> Callable:
    def run(tmp: Path, assets: Assets) -> Outcome:
        import torch

        payload = copy.copy(assets.payload)
        edit(payload)
        torch.save(payload, tmp / name)
        return _infer(tmp / name)

    return run


def _drop(*keys: str) -> Callable[[dict[str, Any]], None]:
    return lambda payload: [payload.pop(k) for k in keys]


def _put(**values: Any) -> Callable[[dict[str, Any]], None]:
    return lambda payload: payload.update(values)


def onnx_case(metadata: dict[str, str] | None) -> Callable[[Path, Any], Outcome]:
    def run(tmp: Path, assets: Assets) -> Outcome:
        import onnx

        model = onnx.load(assets.onnx)
        for key, value in (metadata or {}).items():
            model.metadata_props.add(key=key, value=value)
        onnx.save(model, tmp / "model.onnx")
        return _infer(tmp / "model.onnx")

    return run


def _meta(**changes: Any) -> dict[str, str]:
    from lightfer.export import inference_metadata
    from lightfer.labels import CLASSES

    values = {"classes": CLASSES, "image_size": 16, "mean": (0.5,) * 3, "std": (0.25,) * 3}
    return inference_metadata(**(values | changes))


def _file_model(name: str, data: bytes, **kwargs: Any) -> Callable[[Path, Any], Outcome]:
    def run(tmp: Path, _: Any) -> Outcome:
        (tmp / name).write_bytes(data)
        return _infer(tmp / name, **kwargs)

    return run


def _official_12_way(tmp: Path, _: Any) -> Outcome:
    import torch

    torch.save({"state_dict": {"module.fc.weight": torch.zeros(12, 4)}}, tmp / "pre.pth.tar")
    return _infer(tmp / "pre.pth.tar")


def _truncated_checkpoint(tmp: Path, assets: Assets) -> Outcome:
    import torch

    torch.save(assets.payload, tmp / "full.pt")
    (tmp / "cut.pt").write_bytes((tmp / "full.pt").read_bytes()[:5000])
    return _infer(tmp / "cut.pt")


class _Pickled:
    pass


def _unsafe_pickle(tmp: Path, _: Any) -> Outcome:
    import torch

    torch.save({"state_dict": {}, "trainer": _Pickled()}, tmp / "unsafe.pt")
    return _infer(tmp / "unsafe.pt")


def _save_zero_std(tmp: Path, _: Any) -> Outcome:
    import torch

    from lightfer.labels import CLASSES
    from lightfer.models.checkpoint import save_checkpoint

    model = torch.nn.Linear(2, 7)
    return _catch(
        lambda: save_checkpoint(
            tmp / "zero.pt",
            model,
            arch="efficientface",
            classes=CLASSES,
            image_size=64,
            mean=(0.5,) * 3,
            std=(0.2, 0.0, 0.2),
        )
    )


# Prediction ------------------------------------------------------------------------------


def _predict_folder(make: Callable[[Path], None]) -> Callable[[Path, Assets], Outcome]:
    def run(tmp: Path, assets: Assets) -> Outcome:
        folder = tmp / "photos"
        folder.mkdir()
        write_image(folder / "blank.png", size=32)
        make(folder)
        rows = list(assets.predictor().predict_paths([folder], progress=False))
        return _catch(lambda: rows)

    return run


def _video(tmp: Path, keep: float) -> Path:
    import cv2

    rng = np.random.default_rng(0)
    path = tmp / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (48, 48))
    for _ in range(20):
        writer.write(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8))
    writer.release()
    path.write_bytes(path.read_bytes()[: int(path.stat().st_size * keep)])
    return path


def _truncated_video(tmp: Path, assets: Assets) -> Outcome:
    path = _video(tmp, 0.5)
    return _catch(lambda: list(assets.predictor().predict_paths([path], progress=False)))


def _nan_model(tmp: Path, assets: Assets) -> Outcome:
    predictor = assets.predictor(lambda batch: np.full((len(batch), 7), np.nan, np.float32))
    return _catch(lambda: predictor.classify(np.zeros((2, 32, 32, 3), np.uint8)))


def _predict_cli(*args: str) -> Callable[[Path, Any], Outcome]:
    """`lightfer predict` with `{tmp}` in the arguments replaced; `photo.png` and
    `model.pt` (garbage) exist."""

    def run(tmp: Path, _: Any) -> Outcome:
        write_image(tmp / "photo.png", size=32)
        (tmp / "model.pt").write_bytes(b"junk")
        (tmp / "a_file").write_text("")
        (tmp / "outdir").mkdir()
        return _cli("predict", *(a.format(tmp=tmp) for a in args))

    return run


# Signals ---------------------------------------------------------------------------------

_WRITER = textwrap.dedent("""
    import sys, time
    from lightfer.predict import FaceRow, write_rows

    def rows():
        for i in range(10_000):
            if i == 3:
                print("writing", flush=True)
            time.sleep(0.01)
            yield FaceRow(f"img{i}.png", error="no face found")

    write_rows(rows(), sys.argv[1])
""")


def signal_case(signum: int) -> Callable[[Path, Any], Outcome]:
    """A prediction run writing its rows is sent `signum` mid-write: it must stop and
    leave neither the output nor a hidden temporary behind."""

    def run(tmp: Path, _: Any) -> Outcome:
        env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
        process = subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(tmp / "out.csv")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            text=True,
            # As from a terminal: a shell's background job (CI under nohup ... &) starts
            # with SIGINT ignored, and the writer would inherit that and never see Ctrl-C.
            preexec_fn=lambda: signal.signal(signum, signal.SIG_DFL),
        )
        assert process.stdout is not None
        process.stdout.readline()  # the write has begun
        time.sleep(0.05)
        process.send_signal(signum)
        code = process.wait(timeout=60)
        left = sorted(p.name for p in tmp.iterdir())
        return Outcome(True, f"{signal.Signals(signum).name}: exit {code}; left: {left}")

    return run


# The table -------------------------------------------------------------------------------

R = r"[^\n]*"  # anything on the line
CASES: tuple[Case, ...] = (
    # params files
    Case(
        "params-duplicate-block",
        "params",
        "refused",
        r"line \d+: key 'train' repeats line \d+",
        params_text_case(lambda tmp: _dump(_tiny()) + "train:\n  seeds: [5]\n"),
    ),
    Case(
        "params-duplicate-key-in-block",
        "params",
        "refused",
        r"line 3: key 'seed' repeats line 2",
        params_text_case(
            lambda tmp: "base:\n  seed: 1\n  seed: 2\n" + _dump(_tiny()).split("\n", 3)[3]
        ),
    ),
    Case(
        "params-duplicate-dataset",
        "params",
        "refused",
        r"key 'synthetic' repeats",
        params_text_case(
            lambda tmp: _dump(_tiny()).replace(
                "datasets:\n", "datasets:\n  synthetic: {kind: synthetic}\n", 1
            )
        ),
    ),
    Case(
        "params-unknown-key",
        "params",
        "clear",
        r"align\.crop_sise: unknown key; did you mean 'crop_size'",
        params_case(lambda raw: raw["align"].update(crop_sise=raw["align"].pop("crop_size"))),
    ),
    Case(
        "params-bad-choice",
        "params",
        "clear",
        r"align\.border: 'mirror' is not one of",
        params_case(_set("align.border", "mirror")),
    ),
    Case(
        "params-not-yaml",
        "params",
        "clear",
        r"params\.yaml is not valid YAML",
        params_text_case(lambda tmp: "base:\n  seed: [1\n"),
    ),
    Case(
        "params-list",
        "params",
        "clear",
        r"params\.yaml must hold a mapping of sections, got list",
        params_text_case(lambda tmp: "- base\n- align\n"),
    ),
    Case(
        "params-empty",
        "params",
        "clear",
        r"params\.yaml must hold a mapping of sections, got NoneType",
        params_text_case(lambda tmp: ""),
    ),
    Case(
        "params-missing-file",
        "params",
        "clear",
        r"nowhere\.yaml does not exist \(looked in",
        lambda tmp, _: _load(tmp / "nowhere.yaml"),
    ),
    Case(
        "params-directory",
        "params",
        "clear",
        r"/[^ ]+ is a directory; name the params file",
        lambda tmp, _: _load(tmp),
    ),
    Case(
        "params-utf16",
        "params",
        "clear",
        r"params\.yaml is not valid YAML: unacceptable character #x0000",
        lambda tmp, _: _load(_bytes("params.yaml", _dump(_tiny()).encode("utf-16-le"))(tmp)),
    ),
    Case(
        "params-relative-root-missing",
        "params",
        "clear",
        r"datasets\.real\.root: directory '/[^']*/ds/rafdb/basic' does not exist",
        lambda tmp, _: _relative_root(tmp),
    ),
    Case(
        "params-openface-dir-missing",
        "params",
        "clear",
        r"aux: openface_csv_dir '[^']*/nowhere' is not a directory",
        params_text_case(lambda tmp: _openface(tmp, str(tmp / "nowhere"))),
    ),
    Case(
        "params-openface-dir-without-dataset",
        "params",
        "clear",
        r"aux\.openface_csv_dir: [^ ]*/of/synthetic missing or without \.csv files",
        params_text_case(lambda tmp: (tmp / "of").mkdir() or _openface(tmp, str(tmp / "of"))),
    ),
    Case(
        "params-openface-confidence-range",
        "params",
        "clear",
        r"aux\.openface_min_confidence: 1\.5",
        params_text_case(lambda tmp: _openface(tmp, None, openface_min_confidence=1.5)),
    ),
    Case(
        "params-mlcr-without-csv",
        "params",
        "clear",
        r"aux: backend 'mlcr' needs mlcr_csv",
        params_case(_set("aux.backend", "mlcr")),
    ),
    Case(
        "params-pretrained-missing",
        "params",
        "clear",
        r"train\.ef\.pretrained: file '[^']*/gone\.pt' does not exist",
        params_case(_set("train.ef.pretrained", "gone.pt")),
    ),
    Case(
        "params-study-not-synthetic",
        "params",
        "clear",
        r"study\.datasets: other is not a synthetic dataset",
        params_case(_set("study.datasets", ["other"])),
    ),
    Case(
        "params-dataset-name",
        "params",
        "clear",
        r"datasets: dataset names \['My Set'\] must match",
        params_case(
            lambda raw: raw["datasets"].update({"My Set": raw["datasets"].pop("synthetic")})
        ),
    ),
    Case(
        "params-duplicate-seeds",
        "params",
        "clear",
        r"train\.seeds: values must be unique",
        params_case(_set("train.seeds", [0, 0])),
    ),
    Case(
        "params-seed-not-a-number",
        "params",
        "clear",
        r"base\.seed: 'abc' is invalid",
        params_case(_set("base.seed", "abc")),
    ),
    Case(
        "params-no-dataset",
        "params",
        "clear",
        r"datasets: \{\} is invalid",
        params_case(_set("datasets", {})),
    ),
    Case(
        "params-rafdb-misspelt-label-file",
        "params",
        "clear",
        r"list_partition_label\.txt exists: .*'patition', rename it",
        lambda tmp, _: (
            build_rafdb(tmp / "raf", _RAF),
            (tmp / "raf/EmoLabel/list_patition_label.txt").rename(
                tmp / "raf/EmoLabel/list_partition_label.txt"
            ),
            _load(
                _params_text(
                    tmp, _dump(_tiny(_dataset({"kind": "rafdb", "root": str(tmp / "raf")})))
                )
            ),
        )[-1],
    ),
    Case(
        "params-imagefolder-class-map",
        "params",
        "clear",
        r"datasets\.real\.classes: .*no folder for anger",
        lambda tmp, _: (
            (tmp / "f/train").mkdir(parents=True),
            (tmp / "f/test").mkdir(),
            _load(
                _params_text(
                    tmp,
                    _dump(
                        _tiny(
                            _dataset(
                                {
                                    "kind": "imagefolder",
                                    "root": str(tmp / "f"),
                                    "classes": {k: v for k, v in SEVEN.items() if v != "anger"},
                                }
                            )
                        )
                    ),
                )
            ),
        )[-1],
    ),
    Case(
        "cli-params-missing-file",
        "params",
        "clear",
        r"missing\.yaml does not exist \(looked in [^)]*\); run from the project root or name",
        lambda tmp, _: _cli("params", "--file", str(tmp / "missing.yaml")),
    ),
    Case(
        "cli-params-duplicate",
        "params",
        "refused",
        r"dup\.yaml repeats keys",
        lambda tmp, _: _cli(
            "params", "--file", str(_params_text(tmp, _dump(_tiny()) + "align: {}\n", "dup.yaml"))
        ),
    ),
    # dataset layouts
    Case(
        "rafdb-utf16-without-bom",
        "dataset",
        "clear",
        r"list_patition_label\.txt:1: not utf-8 text",
        rafdb_case(rewrite=_reencode("utf-16-le")),
    ),
    Case(
        "rafdb-latin1-name",
        "dataset",
        "clear",
        r"list_patition_label\.txt:4: not utf-8 text \(byte 0xe9",
        rafdb_case(
            rewrite=lambda p: p.write_bytes(
                p.read_bytes() + "train_caf\xe9.jpg 4\n".encode("latin-1")
            )
        ),
    ),
    Case(
        "rafdb-unknown-code",
        "dataset",
        "counted",
        r"unknown_label: EmoLabel/list_patition_label\.txt:4 'train_00009\.jpg 9'",
        rafdb_case([*_RAF, ("train_00009.jpg", 9)]),
    ),
    Case(
        "rafdb-missing-image",
        "dataset",
        "counted",
        r"missing_file: .*no Image/aligned/train_00002_aligned\.jpg",
        rafdb_case(absent_images=["train_00002.jpg"]),
    ),
    Case(
        "rafdb-one-field",
        "dataset",
        "counted",
        r"malformed_line: .*:4 'train_00005\.jpg'",
        rafdb_case(extra_lines=["train_00005.jpg"]),
    ),
    Case(
        "rafdb-unknown-split",
        "dataset",
        "counted",
        r"unknown_split: .*'val_0001\.jpg 2'",
        rafdb_case([*_RAF, ("val_0001.jpg", 2)]),
    ),
    Case(
        "rafdb-duplicate-line",
        "dataset",
        "counted",
        r"duplicate: train_00001",
        rafdb_case([*_RAF, ("train_00001.jpg", 4)]),
    ),
    Case(
        "rafdb-nothing-usable",
        "dataset",
        "clear",
        r"RAF-DB: no usable sample; skipped \{'unknown_label': 2\}",
        rafdb_case([("train_1.jpg", 0), ("test_1.jpg", 8)]),
    ),
    Case(
        "rafdb-negative-distribution",
        "dataset",
        "counted",
        r"bad_distribution: train_00001\.jpg",
        rafdb_case(
            distribution={
                "train_00001.jpg": [0.1, -0.2, 0.3, 0.4, 0.1, 0.1, 0.2],
                "train_00002.jpg": [0, 0, 0, 0, 0, 0, 1],
                "test_0001.jpg": [1, 0, 0, 0, 0, 0, 0],
            }
        ),
    ),
    Case(
        "ferplus-decimal-votes",
        "dataset",
        "counted",
        r"non_integer_votes: fer2013new\.csv data row 1 fer1\.png: votes \[4\.6",
        fer_csv_case(
            _GOOD_FER,
            _replace_in(
                "fer2013new.csv", "PublicTest,fer1.png,8,1,1", "PublicTest,fer1.png,4.6,4.4,1"
            ),
        ),
    ),
    Case(
        "ferplus-row-count",
        "dataset",
        "clear",
        r"fer2013\.csv has 2 data rows but .*fer2013new\.csv has 3",
        fer_csv_case(
            _GOOD_FER,
            lambda root: _append_line("fer2013new.csv", "Training,fer2.png,8,1,1,0,0,0,0,0,0,0")(
                root
            ),
        ),
    ),
    Case(
        "ferplus-usage-differs",
        "dataset",
        "clear",
        r"Usage columns of fer2013\.csv and fer2013new\.csv differ in 1 rows",
        fer_csv_case(_GOOD_FER, _replace_in("fer2013new.csv", "PublicTest,", "PrivateTest,")),
    ),
    Case(
        "ferplus-bad-pixels",
        "dataset",
        "counted",
        r"bad_pixels: fer2013\.csv data row 1",
        fer_csv_case(
            _GOOD_FER,
            lambda root: (root / "fer2013.csv").write_text(
                (root / "fer2013.csv").read_text().rsplit("\n", 2)[0] + "\n6,1 2 3,PublicTest\n"
            ),
        ),
    ),
    Case(
        "ferplus-extra-field",
        "dataset",
        "clear",
        r"fer2013new\.csv: not a well-formed CSV file \(.*line 3",
        fer_csv_case(
            _GOOD_FER,
            _replace_in("fer2013new.csv", "PublicTest,fer1.png,", "PublicTest,fer1.png,0,"),
        ),
    ),
    Case(
        "ferplus-latin1",
        "dataset",
        "clear",
        r"fer2013\.csv:1: not utf-8 text",
        fer_csv_case(
            _GOOD_FER,
            lambda root: (root / "fer2013.csv").write_bytes(
                b"\xe9" + (root / "fer2013.csv").read_bytes()
            ),
        ),
    ),
    Case(
        "ferplus-no-majority",
        "dataset",
        "counted",
        r"no_majority: fer2013new\.csv data row 2 fer2\.png",
        fer_csv_case([*_GOOD_FER, FerRow("Training", "fer2.png", (3, 3, 3, 1, 0, 0, 0, 0, 0, 0))]),
    ),
    Case(
        "ferplus-not-a-face",
        "dataset",
        "counted",
        r"not_a_face: fer2013new\.csv data row 2 \(empty name\)",
        fer_csv_case([*_GOOD_FER, FerRow("Training", "", (0,) * 9 + (10,))]),
    ),
    Case(
        "ferplus-folder-decimal-votes",
        "dataset",
        "counted",
        r"malformed_row: FER2013Train/label\.csv:3 'fer9\.png",
        fer_folders_case(['fer9.png,"(0, 0, 48, 48)",4.5,4.5,1,0,0,0,0,0,0,0']),
    ),
    Case(
        "ferplus-folder-missing-image",
        "dataset",
        "counted",
        r"missing_file: FER2013Train/label\.csv:2: no FER2013Train/fer0000001\.png",
        fer_folders_case([], absent=("fer0000001.png",)),
    ),
    Case(
        "affectnet-extra-field",
        "dataset",
        "counted",
        r"malformed_row: Manually_Annotated_file_lists/training\.csv: 10 fields, not 9: t/x\.jpg",
        affectnet_case([], _append_line("training.csv", "t/x.jpg,1,2,30,40,,1,0.5,0.2,EXTRA")),
    ),
    Case(
        "affectnet-contempt",
        "dataset",
        "counted",
        r"contempt: .*training\.csv:3 t/c\.jpg: expression 7",
        affectnet_case([AffectRow("t/c.jpg", 7)]),
    ),
    Case(
        "affectnet-bad-box",
        "dataset",
        "counted",
        r"bad_box: .*training\.csv:3 t/b\.jpg: box",
        affectnet_case([AffectRow("t/b.jpg", 2, box=(1, 1, 0, 5))]),
    ),
    Case(
        "affectnet-missing-image",
        "dataset",
        "counted",
        r"missing_file: .*no Manually_Annotated_Images/t/m\.jpg",
        affectnet_case([AffectRow("t/m.jpg", 2, image=False)]),
    ),
    Case(
        "affectnet-code-text",
        "dataset",
        "counted",
        r"unknown_code: .*t/u\.jpg: expression None",
        affectnet_case([AffectRow("t/u.jpg", "happy")]),
    ),
    Case(
        "affectnet-missing-column",
        "dataset",
        "clear",
        r"AffectNet file .*training\.csv lacks columns \['valence'\]",
        affectnet_case([], _replace_in("training.csv", "valence", "valance")),
    ),
    Case(
        "affectnet-utf16-csv",
        "dataset",
        "clear",
        r"training\.csv:1: not utf-8 text",
        affectnet_case(
            [],
            lambda folder: (folder / "training.csv").write_bytes(
                (folder / "training.csv").read_text().encode("utf-16-le")
            ),
        ),
    ),
    Case(
        "affectnet-npy-garbage",
        "dataset",
        "counted",
        r"bad_annotation: train_set/annotations/2_exp\.npy",
        _affectnet_npy_bad,
    ),
    Case(
        "caers-unknown-class",
        "dataset",
        "clear",
        r"CAER-S split folder [^ ]*/train has class folders \['Contempt'\]",
        _caers_case(lambda root: write_image(root / "train/Contempt/1.png")),
    ),
    Case(
        "caers-not-an-image",
        "dataset",
        "counted",
        r"not_an_image: train/Happy/notes\.txt",
        _caers_case(lambda root: (root / "train/Happy/notes.txt").write_text("x")),
    ),
    Case(
        "imagefolder-outside-class-folder",
        "dataset",
        "counted",
        r"outside_class_folder: train/stray\.jpg",
        imagefolder_case(lambda root: write_image(root / "train/stray.jpg")),
    ),
    Case(
        "imagefolder-broken-link",
        "dataset",
        "counted",
        r"not_a_file: train/3/gone\.jpg",
        imagefolder_case(lambda root: (root / "train/3/gone.jpg").symlink_to(root / "nowhere.jpg")),
    ),
    Case(
        "imagefolder-looping-link",
        "dataset",
        "counted",
        r"not_a_file: test/0/loop\.jpg",
        imagefolder_case(
            lambda root: (root / "test/0/loop.jpg").symlink_to(root / "test/0/loop.jpg")
        ),
    ),
    Case(
        "imagefolder-not-an-image",
        "dataset",
        "counted",
        r"not_an_image: train/1/readme\.md",
        imagefolder_case(lambda root: (root / "train/1/readme.md").write_text("x")),
    ),
    Case(
        "imagefolder-unknown-class",
        "dataset",
        "clear",
        r"[^ ]*/train has class folders \['7'\] that the class map does not name",
        imagefolder_case(lambda root: write_image(root / "train/7/a.jpg")),
    ),
    Case(
        "imagefolder-empty-split",
        "dataset",
        "clear",
        r"[^ ]*/test holds no images in class folders",
        imagefolder_case(lambda root: [p.unlink() for p in (root / "test").rglob("*.jpg")]),
    ),
    # images
    Case(
        "image-missing",
        "image",
        "clear",
        r"/absent\.jpg: file does not exist",
        image_case(lambda tmp: tmp / "absent.jpg"),
    ),
    Case(
        "image-empty",
        "image",
        "clear",
        r"/empty\.jpg: file is empty \(0 bytes\)",
        image_case(_bytes("empty.jpg", b"")),
    ),
    Case(
        "image-truncated",
        "image",
        "clear",
        r"(?i)/cut\.jpg: cannot decode image: .*truncated",
        image_case(_truncated_jpeg),
    ),
    Case(
        "image-not-an-image",
        "image",
        "clear",
        r"/notes\.png: not an image format PIL can decode",
        image_case(_bytes("notes.png", b"hello, world\n" * 10)),
    ),
    Case(
        "image-bomb",
        "image",
        "clear",
        r"/bomb\.png: image is too large to decode",
        image_case(_bytes("bomb.png", _png_claiming(30_000, 30_000))),
    ),
    Case(
        "image-broken-link",
        "image",
        "clear",
        r"/link\.jpg: symbolic link to [^ ]*gone\.jpg is broken or loops",
        image_case(_link("link.jpg", "gone.jpg")),
    ),
    Case(
        "image-looping-link",
        "image",
        "clear",
        r"/loop\.jpg: symbolic link to loop\.jpg is broken or loops",
        image_case(_link("loop.jpg", "loop.jpg")),
    ),
    Case(
        "image-directory",
        "image",
        "clear",
        r"/folder\.jpg: is a directory",
        image_case(lambda tmp: (tmp / "folder.jpg").mkdir() or tmp / "folder.jpg"),
    ),
    # OpenFace CSVs
    Case(
        "openface-confidence-zero",
        "openface",
        "counted",
        r"openface_low_confidence: row 1",
        openface_case({"bad.csv": _openface_csv([0.0])}),
    ),
    Case(
        "openface-below-success-threshold",
        "openface",
        "counted",
        r"openface_low_confidence: row 1",
        openface_case({"bad.csv": _openface_csv([0.5])}),
    ),
    Case(
        "openface-sequence-failed",
        "openface",
        "counted",
        r"openface_failed: row 1",
        openface_case({"bad.csv": _openface_csv([-0.9], sequence=True)}),
    ),
    Case(
        "openface-header-only",
        "openface",
        "counted",
        r"openface_no_face: row 1",
        openface_case({"bad.csv": _openface_csv([])}),
    ),
    Case(
        "openface-missing-csv",
        "openface",
        "counted",
        r"openface_missing_csv: row 1",
        openface_case({}),
    ),
    Case(
        "openface-dir-missing",
        "openface",
        "clear",
        r"OpenFace CSV folder [^ ]*/elsewhere does not exist",
        openface_case({}, folder="elsewhere"),
    ),
    Case(
        "openface-nothing-usable",
        "openface",
        "clear",
        r"no usable OpenFace face for any of the 2 images in [^ ]*/of",
        openface_case({"good.csv": _openface_csv([0.2]), "bad.csv": _openface_csv([0.1])}),
    ),
    Case(
        "openface-no-au-columns",
        "openface",
        "clear",
        r"/bad\.csv: no AU intensity columns",
        openface_case({"bad.csv": "face, confidence\n0, 0.9\n"}),
    ),
    Case(
        "openface-some-aus-missing",
        "openface",
        "clear",
        r"/bad\.csv: missing AU intensity columns \['AU02_r'",
        openface_case({"bad.csv": "face,confidence,AU01_r\n0,0.9,1.0\n"}),
    ),
    Case(
        "openface-non-numeric-au",
        "openface",
        "clear",
        r"/bad\.csv: non-numeric AU intensities",
        openface_case({"bad.csv": _openface_csv([0.95], au="n/a")}),
    ),
    Case(
        "openface-binary-csv",
        "openface",
        "clear",
        r"/bad\.csv: cannot read it as an OpenFace CSV",
        openface_case({"bad.csv": b"\xff\xfe\x00\x01" * 50}),
    ),
    Case(
        "openface-shared-stem",
        "openface",
        "clear",
        r"a/x\.jpg and b/x\.png share the file stem 'x'",
        openface_case({}, images=("a/x.jpg", "b/x.png")),
    ),
    # checkpoints and model files
    Case(
        "checkpoint-without-arch",
        "checkpoint",
        "clear",
        r"edited\.pt is a lightfer checkpoint without arch",
        checkpoint_case(_drop("arch")),
    ),
    Case(
        "checkpoint-without-classes",
        "checkpoint",
        "clear",
        r"edited\.pt is a lightfer checkpoint without classes, image_size",
        checkpoint_case(_drop("classes", "image_size")),
    ),
    Case(
        "checkpoint-zero-std",
        "checkpoint",
        "refused",
        r"edited\.pt records unusable metadata: std \[0\.25, 0\.0, 0\.25\]",
        checkpoint_case(_put(std=[0.25, 0.0, 0.25])),
    ),
    Case(
        "checkpoint-nan-mean",
        "checkpoint",
        "refused",
        r"edited\.pt records unusable metadata: mean \[nan",
        checkpoint_case(_put(mean=[float("nan"), 0.5, 0.5])),
    ),
    Case(
        "checkpoint-image-size-zero",
        "checkpoint",
        "refused",
        r"edited\.pt records unusable metadata: image_size 0",
        checkpoint_case(_put(image_size=0)),
    ),
    Case(
        "checkpoint-repeated-classes",
        "checkpoint",
        "refused",
        r"edited\.pt records unusable metadata: classes",
        checkpoint_case(_put(classes=["neutral"] * 7)),
    ),
    Case(
        "checkpoint-class-order",
        "checkpoint",
        "refused",
        r"checkpoint [^ ]*edited\.pt was trained with classes \(anger, .*mislabelled",
        checkpoint_case(
            _put(
                classes=["anger", "disgust", "fear", "surprise", "sadness", "happiness", "neutral"]
            )
        ),
    ),
    Case(
        "checkpoint-state-dict-not-tensors",
        "checkpoint",
        "clear",
        r"edited\.pt records arch 'efficientface' and a state_dict of type list",
        checkpoint_case(_put(state_dict=[1, 2])),
    ),
    Case(
        "checkpoint-future-version",
        "checkpoint",
        "clear",
        r"edited\.pt has format version 2",
        checkpoint_case(_put(version=2)),
    ),
    Case(
        "checkpoint-empty",
        "checkpoint",
        "clear",
        r"/empty\.pt is empty \(0 bytes\)",
        _file_model("empty.pt", b""),
    ),
    Case(
        "checkpoint-garbage",
        "checkpoint",
        "clear",
        r"/junk\.pt is truncated or corrupted",
        _file_model("junk.pt", b"\x00junk" * 40),
    ),
    Case(
        "checkpoint-truncated",
        "checkpoint",
        "clear",
        r"/cut\.pt is truncated or corrupted",
        _truncated_checkpoint,
    ),
    Case(
        "checkpoint-unsafe-pickle",
        "checkpoint",
        "clear",
        r"unsafe\.pt holds Python objects",
        _unsafe_pickle,
    ),
    Case(
        "checkpoint-pretraining-head",
        "checkpoint",
        "clear",
        r"pre\.pth\.tar has a 12-way classifier and no recorded class order",
        _official_12_way,
    ),
    Case(
        "checkpoint-save-zero-std",
        "checkpoint",
        "refused",
        r"cannot save checkpoint [^ ]*zero\.pt: it records unusable metadata: std",
        _save_zero_std,
    ),
    Case(
        "onnx-empty",
        "checkpoint",
        "clear",
        r"model file [^ ]*/empty\.onnx is empty \(0 bytes\)",
        _file_model("empty.onnx", b""),
    ),
    Case(
        "onnx-garbage",
        "checkpoint",
        "clear",
        r"ONNX model [^ ]*/junk\.onnx cannot be opened by ONNX Runtime",
        _file_model("junk.onnx", b"\x08\x07garbage" * 20),
    ),
    Case(
        "onnx-without-metadata",
        "checkpoint",
        "clear",
        r"ONNX model [^ ]*model\.onnx does not record lightfer\.classes",
        onnx_case(None),
    ),
    Case(
        "onnx-zero-std",
        "checkpoint",
        "refused",
        r"ONNX model [^ ]*model\.onnx records unusable metadata: std",
        onnx_case(_meta(std=(0.0, 0.0, 0.0))),
    ),
    Case(
        "onnx-metadata-not-json",
        "checkpoint",
        "clear",
        r"ONNX model [^ ]*model\.onnx has malformed lightfer metadata",
        onnx_case(_meta() | {"lightfer.mean": "[0.5, 0.5"}),
    ),
    # prediction
    Case(
        "predict-cuda-without-gpu",
        "predict",
        "clear",
        r"device 'cuda:99' (was asked for, but torch sees no CUDA GPU|does not exist)",
        _predict_cli(
            "{tmp}/photo.png",
            "--model",
            "{tmp}/model.pt",
            "--device",
            "cuda:99",
            "--out",
            "{tmp}/p.csv",
        ),
    ),
    Case(
        "predict-device-typo",
        "predict",
        "clear",
        r"device 'gpu0' is not a torch device",
        _predict_cli(
            "{tmp}/photo.png",
            "--model",
            "{tmp}/model.pt",
            "--device",
            "gpu0",
            "--out",
            "{tmp}/p.csv",
        ),
    ),
    Case(
        "predict-onnx-on-cuda",
        "predict",
        "clear",
        r"ONNX models run on ONNX Runtime's CPU provider; got device 'cuda'",
        _predict_cli(
            "{tmp}/photo.png", "--model", "{tmp}/m.onnx", "--device", "cuda", "--out", "{tmp}/p.csv"
        ),
    ),
    Case(
        "predict-out-under-a-file",
        "predict",
        "clear",
        r"cannot write [^ ]*a_file/p\.csv: [^ ]*a_file is a file, not a folder",
        _predict_cli("{tmp}/photo.png", "--model", "{tmp}/model.pt", "--out", "{tmp}/a_file/p.csv"),
    ),
    Case(
        "predict-out-is-a-directory",
        "predict",
        "clear",
        r"output [^ ]*outdir is a directory; name a file",
        _predict_cli(
            "{tmp}/photo.png",
            "--model",
            "{tmp}/model.pt",
            "--out",
            "{tmp}/outdir",
            "--format",
            "csv",
        ),
    ),
    Case(
        "predict-out-unwritable",
        "predict",
        "clear",
        r"/proc/lightfer/p\.csv",
        _predict_cli(
            "{tmp}/photo.png", "--model", "{tmp}/model.pt", "--out", "/proc/lightfer/p.csv"
        ),
    ),
    Case(
        "predict-model-is-a-directory",
        "predict",
        "clear",
        r"model file [^ ]*outdir is a directory",
        _predict_cli("{tmp}/photo.png", "--model", "{tmp}/outdir", "--out", "{tmp}/p.csv"),
    ),
    Case(
        "predict-model-garbage",
        "predict",
        "clear",
        r"checkpoint [^ ]*model\.pt is truncated or corrupted",
        _predict_cli("{tmp}/photo.png", "--model", "{tmp}/model.pt", "--out", "{tmp}/p.csv"),
    ),
    Case(
        "predict-no-input",
        "predict",
        "clear",
        r"no image or video file found in [^ ]*/outdir",
        _predict_cli("{tmp}/outdir", "--model", "{tmp}/model.pt", "--out", "{tmp}/p.csv"),
    ),
    Case(
        "predict-broken-link-in-folder",
        "predict",
        "counted",
        r"error: [^ ]*photos/gone\.jpg frame None: [^ ]*gone\.jpg: symbolic link",
        _predict_folder(lambda folder: (folder / "gone.jpg").symlink_to(folder / "missing.jpg")),
    ),
    Case(
        "predict-looping-link-in-folder",
        "predict",
        "counted",
        r"error: [^ ]*photos/loop\.png frame None: .*broken or loops",
        _predict_folder(lambda folder: (folder / "loop.png").symlink_to(folder / "loop.png")),
    ),
    Case(
        "predict-garbage-video",
        "predict",
        "counted",
        r"error: [^ ]*photos/clip\.mp4 frame None: .*cannot open it as a video",
        _predict_folder(lambda folder: (folder / "clip.mp4").write_bytes(b"not a video" * 10)),
    ),
    Case(
        "predict-truncated-video",
        "predict",
        "counted",
        r"error: [^ ]*clip\.avi frame \d+: .*stopped after \d+ of the 20 frames",
        _truncated_video,
    ),
    Case(
        "predict-nan-outputs",
        "predict",
        "refused",
        r"the model returned non-finite outputs \(NaN or infinity\) for 2 of 2 faces",
        _nan_model,
    ),
    # signals
    Case(
        "signal-sigterm-mid-write",
        "signal",
        "clear",
        r"SIGTERM: exit 143; left: \[\]$",
        signal_case(signal.SIGTERM),
    ),
    Case(
        "signal-sigint-mid-write",
        "signal",
        "clear",
        r"SIGINT: exit (1|130|-2); left: \[\]$",
        signal_case(signal.SIGINT),
    ),
)


def totals(cases: tuple[Case, ...] = CASES) -> dict[str, int]:
    """Tried, and how many of each expected outcome."""
    counts = Counter(case.expect for case in cases)
    return {"tried": len(cases), **{kind: counts[kind] for kind in ("clear", "counted", "refused")}}


def by_kind(cases: tuple[Case, ...] = CASES) -> dict[str, int]:
    """Cases per kind of input."""
    return dict(Counter(case.kind for case in cases))


if __name__ == "__main__":
    print(json.dumps({"totals": totals(), "by_kind": by_kind()}, indent=2))
