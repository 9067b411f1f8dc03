"""The `lightfer` command line."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from lightfer import __version__
from lightfer.cli_errors import ErrorReportingGroup
from lightfer.errors import LightferError
from lightfer.flow_cli import flow_app
from lightfer.results_cli import results_app

app = typer.Typer(
    help="Lightweight facial expression recognition with LDL on the AU space.",
    cls=ErrorReportingGroup,  # every LightferError and OSError: one message, exit 1
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"lightfer {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    """Lightweight facial expression recognition with LDL on the AU space."""


params_app = typer.Typer(
    help="Validate a params file (no command), or apply a dataset preset to it (`preset`)."
)
app.add_typer(params_app, name="params")
app.add_typer(flow_app, name="flow")
app.add_typer(results_app, name="results")


@params_app.callback(invoke_without_command=True)
def check_params(
    ctx: typer.Context,
    file: Annotated[Path, typer.Option("--file", "-f", help="Params file to check.")] = Path(
        "params.yaml"
    ),
) -> None:
    """Validate a params file against the schema and list every problem."""
    from lightfer.params import load_params

    if ctx.invoked_subcommand is not None:
        return
    try:
        params = load_params(file)
    except LightferError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"{file}: valid ({len(params.datasets)} dataset(s): {', '.join(params.datasets)})")


@params_app.command("preset")
def apply_preset(
    name: Annotated[
        str,
        typer.Argument(
            help="The preset: presets/NAME.yaml (rafdb, ferplus, ...).", show_default=False
        ),
    ],
    file: Annotated[Path, typer.Option("--file", "-f", help="Params file to update.")] = Path(
        "params.yaml"
    ),
    presets_dir: Annotated[
        Path | None,
        typer.Option(
            "--presets",
            help="Folder of the presets. Default: presets/ beside the params file.",
            show_default=False,
        ),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print what would change; write nothing.")
    ] = False,
) -> None:
    """Merge a dataset preset (the paper's settings) into a params file, key by key.

    The preset's mappings update the file's; its other values replace the file's. The result
    is validated before the file is replaced (atomically); every changed key is printed with
    its old and new value. The file is rewritten by PyYAML, which drops its comments (keys
    and their order are kept): `git diff` shows the change. Exits with 1 when the preset is
    unknown (the available ones are listed) or the result breaks the schema (nothing is
    written then).
    """
    from lightfer import presets

    try:
        result = presets.apply_preset(file, name, presets_dir=presets_dir, write=not dry_run)
    except LightferError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    if not result.changes:
        typer.echo(f"{file}: already has preset {name}'s {result.unchanged} setting(s); unchanged")
        return
    verb = "applied" if result.written else "would apply (--dry-run, nothing written)"
    typer.echo(
        f"{file}: {verb} preset {name}: {len(result.changes)} key(s) changed, "
        f"{result.unchanged} already set"
    )
    for change in result.changes:
        typer.echo(f"  {change}")
    if result.had_comments:
        tense = "were dropped" if result.written else "would be dropped"
        typer.echo(
            f"note: {file}'s comments {tense}: PyYAML rewrites the file without them "
            f"(keys and order are kept)",
            err=True,
        )


# Options `predict` and `serve` share.
_Device = Annotated[
    str, typer.Option("--device", help="torch device of the model and the detector.")
]
_Threads = Annotated[
    int | None,
    typer.Option(
        "--threads",
        min=1,
        help="CPU threads. Default: torch's default (all cores).",
        show_default=False,
    ),
]


@app.command("predict")
def predict(
    paths: Annotated[
        list[Path],
        typer.Argument(
            help="Images, videos and folders (searched recursively for images and videos).",
            show_default=False,
        ),
    ],
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            "-m",
            help="A lightfer checkpoint, an official EfficientFace file, or an ONNX (.onnx) "
            "or OpenVINO (.xml) export with lightfer metadata. Default: the newest trained "
            "checkpoint under models/ (not the LDG's, nor the study's), named on stderr.",
            show_default=False,
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Output file, one row per face (.csv or .jsonl)."),
    ] = Path("predictions.csv"),
    output_format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="csv or jsonl. Default: from the suffix of --out.",
            show_default=False,
        ),
    ] = None,
    frame_stride: Annotated[
        int, typer.Option("--frame-stride", min=1, help="Classify every N-th video frame.")
    ] = 1,
    draw: Annotated[
        Path | None,
        typer.Option(
            "--draw",
            help="Also write each input image with boxes and labels drawn into this folder "
            "(video frames are not drawn). Default: no drawings.",
            show_default=False,
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Faces per forward pass.")
    ] = 32,
    device: _Device = "cpu",
    threads: _Threads = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show a progress bar on stderr.")
    ] = True,
) -> None:
    """Detect faces and predict their expression distribution in images, folders and videos.

    Writes one row per face (file, frame, box, detector score, the seven probabilities,
    label); an unreadable file or an image without a face gets one row saying so, and the
    run goes on. Without --model, the newest checkpoint `dvc repro` trained (models/) is
    used. Exits with 1 when the model cannot be loaded or there is none, when no input file
    is found, or when none of the files could be read; otherwise 0, even if some files
    failed.
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    from lightfer.io import check_output_file
    from lightfer.predict import PredictionSummary, Predictor, expand_paths, rows_format, write_rows

    if output_format is not None and output_format not in ("csv", "jsonl"):
        raise typer.BadParameter(
            f"{output_format!r} is not one of csv, jsonl", param_hint="'--format'"
        )
    try:
        kind = rows_format(out, output_format)  # type: ignore[arg-type]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--out'") from None
    check_output_file(out)  # before any work, not after it
    model = model or _default_model()
    if not expand_paths(paths):
        typer.echo(f"no image or video file found in {', '.join(map(str, paths))}", err=True)
        raise typer.Exit(code=1)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    package_logger = logging.getLogger("lightfer")
    previous_level = package_logger.level
    package_logger.addHandler(handler)
    package_logger.setLevel(logging.INFO)
    summary = PredictionSummary()
    try:
        predictor = Predictor.from_path(
            model, device=device, batch_size=batch_size, threads=threads
        )
        with logging_redirect_tqdm(loggers=[package_logger]):
            rows = predictor.predict_paths(
                paths, frame_stride=frame_stride, progress=progress, draw_dir=draw
            )
            write_rows(summary.track(rows), out, format=kind)
    except (LightferError, ValueError) as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    finally:
        package_logger.removeHandler(handler)
        package_logger.setLevel(previous_level)
    typer.echo(f"{out}: {summary}")
    if summary.processed == 0:
        typer.echo(f"none of the {summary.files} file(s) could be read", err=True)
        raise typer.Exit(code=1)


def _default_model() -> Path:
    """The newest trained checkpoint under ./models, said on stderr; exit 1 if there is none."""
    from lightfer.catalog import newest_expression_model

    found = newest_expression_model(Path())
    if found is None:
        typer.echo(
            f"no --model given and no trained checkpoint under {Path.cwd() / 'models'}: "
            f"`dvc repro` trains them into models/<dataset>/, or pass --model with a "
            f"lightfer checkpoint (.pt), an official EfficientFace .tar, an .onnx or an "
            f"OpenVINO .xml export",
            err=True,
        )
        raise typer.Exit(code=1)
    typer.echo(f"no --model given: using the newest trained checkpoint, {found}", err=True)
    return found


@app.command("export")
def export(
    checkpoint: Annotated[
        Path,
        typer.Argument(
            help="A lightfer checkpoint (.pt) or an official EfficientFace file.",
            show_default=False,
        ),
    ],
    out: Annotated[
        Path,
        typer.Option(
            "--out",
            "-o",
            help="The float32 file to write: .onnx for ONNX Runtime, .xml for OpenVINO (its "
            "weights go beside it, as .bin). Required.",
            show_default=False,
        ),
    ],
    runtime: Annotated[
        str,
        typer.Option(
            "--runtime",
            help="onnx: an ONNX model for ONNX Runtime; openvino: an OpenVINO model (IR "
            ".xml + .bin), converted from the ONNX one.",
        ),
    ] = "onnx",
    int8: Annotated[
        bool,
        typer.Option(
            "--int8",
            help="Also write <out stem>.int8.onnx (ONNX Runtime static quantisation, QDQ: int8 "
            "weights per output channel, uint8 activations) or <out stem>.int8.xml (NNCF "
            "post-training quantisation). Needs --calibration, or --random-calibration.",
        ),
    ] = False,
    bf16: Annotated[
        bool,
        typer.Option(
            "--bf16",
            help="Also write <out stem>.bf16.xml, which OpenVINO runs in bfloat16 (--runtime "
            "openvino, on a CPU with AVX512_BF16 or AMX).",
        ),
    ] = False,
    calibration: Annotated[
        Path | None,
        typer.Option(
            "--calibration",
            help="Where --int8 takes its activation ranges from: the align stage's face "
            "cache (a folder with faces.npy and faces.parquet; its usable training crops), "
            "or a folder of face images already aligned as `lightfer predict` aligns them "
            "(searched recursively; each is resized to the model's input size, not "
            "detected again). Use faces like those the model will see.",
            show_default=False,
        ),
    ] = None,
    random_calibration: Annotated[
        bool,
        typer.Option(
            "--random-calibration",
            help="Calibrate --int8 on standard-normal noise instead of faces: the file is "
            "then good for speed measurements only, its predictions can be far off.",
        ),
    ] = False,
    calibration_limit: Annotated[
        int,
        typer.Option(
            "--calibration-limit",
            min=1,
            help="Most inputs used for calibration (a seeded random subset when there are more).",
        ),
    ] = 256,
    arch: Annotated[
        str | None,
        typer.Option(
            "--arch",
            help="Architecture of an official file, which does not record it. Default: "
            "efficientface; a lightfer checkpoint uses its own.",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Export a checkpoint to ONNX or OpenVINO for `lightfer predict --model` and CPU deployment.

    Writes OUT with the class order, input size and normalisation in its metadata, once
    the runtime reproduces PyTorch's logits on random inputs (within 1e-4 + 1e-3 relative;
    the largest difference is printed). An official EfficientFace file records none of
    these: it is exported at 224 pixels with the official training's (RAF-DB) mean and
    std and upstream's class order, as `lightfer predict` reads it. With --int8 or
    --bf16, each copy's largest logit difference and top-1 agreement with PyTorch are
    printed on a calibration batch (--int8) or random inputs: a check that the conversion
    went through, not an accuracy; evaluate it on test faces before use.
    Exits with 1 when the checkpoint cannot be loaded, the export does not reproduce
    PyTorch, the calibration data cannot be read, or --bf16 is asked on a CPU without it.
    """
    if runtime not in _EXPORT_SUFFIXES:
        raise typer.BadParameter(
            f"{runtime!r} is not one of {', '.join(_EXPORT_SUFFIXES)}", param_hint="'--runtime'"
        )
    suffix = _EXPORT_SUFFIXES[runtime]
    if out.suffix.lower() != suffix:
        raise typer.BadParameter(
            f"{out} does not end in {suffix}, which `lightfer predict` needs to read it as "
            f"a --runtime {runtime} model",
            param_hint="'--out'",
        )
    if bf16 and runtime != "openvino":
        raise typer.BadParameter(
            "--bf16 needs --runtime openvino (ONNX Runtime has no bfloat16 path here)",
            param_hint="'--bf16'",
        )
    if int8 and calibration is None and not random_calibration:
        raise typer.BadParameter(
            "--int8 needs calibration data: --calibration DIR (a face cache or a folder of "
            "aligned faces), or --random-calibration for a speed-only file",
            param_hint="'--int8'",
        )
    if calibration is not None and random_calibration:
        raise typer.BadParameter(
            "pass --calibration or --random-calibration, not both", param_hint="'--calibration'"
        )
    if not int8 and (calibration is not None or random_calibration):
        raise typer.BadParameter(
            "calibration only applies to --int8; add --int8", param_hint="'--calibration'"
        )
    from lightfer.export import verify_forward

    try:
        model, info = _load_for_export(checkpoint, arch=arch)
        size = info["image_size"]
        if bf16:  # refused before anything is written
            from lightfer.openvino_export import require_bf16

            require_bf16(out.with_name(f"{out.stem}.bf16{suffix}"))
        if int8:  # read before anything is written
            batches, described = _calibration_batches(calibration, limit=calibration_limit, **info)
        write = _write_onnx if runtime == "onnx" else _write_openvino
        forward = write(model, out, info, "fp32", None)
        difference = verify_forward(model, forward, source=str(out), image_size=size)
        typer.echo(
            f"{out}: float32, {_megabytes(out)}, {size} px; max |logit difference| vs "
            f"PyTorch {difference:.2g} on random inputs"
        )
        for precision in [name for name, wanted in (("int8", int8), ("bf16", bf16)) if wanted]:
            path = out.with_name(f"{out.stem}.{precision}{suffix}")
            forward = write(model, path, info, precision, batches if int8 else None)
            batch, inputs = (
                (next(iter(batches())), "calibration inputs")
                if int8
                else (_random_batch(8, size), "random inputs")
            )
            difference, agreement = _compare(model, forward, batch)
            calibrated = f", calibrated on {described}" if precision == "int8" else ""
            typer.echo(
                f"{path}: {precision}, {_megabytes(path)}{calibrated}; max |logit difference| "
                f"vs PyTorch {difference:.2g}, top-1 agreement {agreement:.0%} on "
                f"{len(batch)} {inputs}"
            )
    except (LightferError, ValueError) as exc:
        typer.echo(" ".join(str(exc).split()), err=True)  # one line, even for torch's errors
        raise typer.Exit(code=1) from None


_EXPORT_SUFFIXES = {"onnx": ".onnx", "openvino": ".xml"}


def _write_onnx(
    model: Any, path: Path, info: dict[str, Any], precision: str, batches: Any
) -> Callable[[Any], Any]:
    """Write an ONNX file, fp32 (once it matches PyTorch) or int8 (quantised from the fp32
    file beside it), and return its forward."""
    from lightfer.export import (
        INPUT_NAME,
        OUTPUT_NAME,
        export_onnx,
        inference_metadata,
        inference_session,
        quantize_int8,
    )

    if precision == "fp32":
        metadata = inference_metadata(**info)
        export_onnx(model, path, image_size=info["image_size"], metadata=metadata)
    else:
        quantize_int8(path.with_name(path.name.replace(".int8.", ".")), path, batches)
    session = inference_session(path)
    return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]


def _write_openvino(
    model: Any, path: Path, info: dict[str, Any], precision: str, batches: Any
) -> Callable[[Any], Any]:
    """Write an OpenVINO file in `precision` (fp32 once it matches PyTorch); return its
    forward."""
    from lightfer.export import inference_metadata
    from lightfer.openvino_export import export_openvino, openvino_forward

    metadata = inference_metadata(**info)
    export_openvino(
        model,
        path,
        image_size=info["image_size"],
        metadata=metadata,
        precision=precision,
        calibration=batches,
    )
    return openvino_forward(path, precision=precision)


def _random_batch(count: int, size: int) -> Any:
    """A seeded standard-normal batch `(count, 3, size, size)`."""
    import torch

    return torch.randn(count, 3, size, size, generator=torch.Generator().manual_seed(1))


def _megabytes(path: Path) -> str:
    """The size of a model file; of an OpenVINO one, with its weights (.bin)."""
    size = path.stat().st_size
    if path.suffix == ".xml":
        size += path.with_suffix(".bin").stat().st_size
    return f"{size / 1e6:.2f} MB"


def _load_for_export(path: Path, *, arch: str | None) -> tuple[Any, dict[str, Any]]:
    """The eval-mode model of a checkpoint and its `inference_metadata` arguments, read and
    validated by `load_for_inference`, as `lightfer predict` reads the file."""
    from lightfer.errors import CheckpointError
    from lightfer.labels import CLASSES
    from lightfer.models.inference import load_for_inference

    if path.suffix.lower() == ".onnx":
        raise CheckpointError(f"{path} is already an ONNX export; export its checkpoint")
    loaded = load_for_inference(path, arch=arch or "efficientface", classes=None)
    if arch is not None and loaded.source == "lightfer" and arch != loaded.arch:
        raise CheckpointError(
            f"checkpoint {path} records arch {loaded.arch}, not {arch}; drop --arch, which is "
            f"for official files only"
        )
    if loaded.classes != CLASSES:
        typer.echo(
            f"{path} has classes ({', '.join(loaded.classes)}), not ({', '.join(CLASSES)}): the "
            f"export records them, but `lightfer predict` will refuse it",
            err=True,
        )
    info = {"image_size": loaded.image_size, "mean": loaded.mean, "std": loaded.std}
    return loaded.module.eval(), {"classes": loaded.classes, **info}


def _calibration_batches(
    source: Path | None,
    *,
    limit: int,
    classes: Any,
    image_size: int,
    mean: Any,
    std: Any,
    batch_size: int = 32,
) -> tuple[Any, str]:
    """A callable yielding normalised calibration batches, and what they are, for the user.

    Faces are normalised (and resized when needed) by the training loader's evaluation path
    (`FaceDataset` without augmentation), so they reach the model as training's did.
    """
    import numpy as np
    import torch

    from lightfer.errors import DatasetError, ImageReadError
    from lightfer.face_batches import cache_split, normalised_batches, seeded_subset
    from lightfer.faces.align import AlignSpec, resize_face
    from lightfer.faces.cache import CACHE_FILE
    from lightfer.images import load_rgb
    from lightfer.predict import IMAGE_SUFFIXES

    if source is None:

        def noise() -> Any:
            generator = torch.Generator().manual_seed(0)
            for start in range(0, limit, batch_size):
                n = min(batch_size, limit - start)
                yield torch.randn(n, 3, image_size, image_size, generator=generator)

        typer.echo(
            "calibrating int8 on random noise: the int8 file is for speed measurements only",
            err=True,
        )
        return noise, f"{limit} random inputs"
    if (source / CACHE_FILE).is_file():
        crops, rows = cache_split(source, "train", limit=limit)
        described = f"{len(rows)} training crops of the face cache {source}"
    elif source.is_dir():
        files = sorted(
            p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        files = [files[i] for i in seeded_subset(len(files), limit)]
        spec = AlignSpec(crop_size=image_size)
        faces, failed = [], []
        for file in files:
            try:
                faces.append(resize_face(load_rgb(file), spec)[0])
            except ImageReadError as err:
                failed.append(str(err))
        if failed:
            typer.echo(f"skipped {len(failed)} unreadable image(s), e.g. {failed[0]}", err=True)
        if not faces:
            raise DatasetError(
                f"calibration folder {source} holds no readable image "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}); pass aligned face crops or a face cache"
            )
        crops = np.stack(faces)
        rows = np.arange(len(crops))
        described = f"{len(rows)} face images from {source}"
    else:
        raise DatasetError(
            f"calibration data {source} is neither a folder of aligned face images nor a "
            f"face cache (faces.npy and faces.parquet)"
        )
    batches = normalised_batches(
        crops, rows, mean=mean, std=std, image_size=image_size, batch_size=batch_size
    )
    return batches, described


def _compare(model: Any, forward: Any, batch: Any) -> tuple[float, float]:
    """Largest logit difference and top-1 agreement between `model` and a deployed forward."""
    import torch

    with torch.inference_mode():
        expected = model(batch).numpy()
    got = forward(batch.numpy())
    agreement = float((got.argmax(axis=1) == expected.argmax(axis=1)).mean())
    return float(abs(got - expected).max()), agreement


@app.command("serve")
def serve(
    model: Annotated[
        Path,
        typer.Option(
            "--model",
            "-m",
            help="A lightfer checkpoint, an official EfficientFace file, or an ONNX export "
            "(.onnx) with lightfer metadata. Required.",
            show_default=False,
        ),
    ],
    host: Annotated[
        str, typer.Option("--host", help="Address to listen on (0.0.0.0: every interface).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="TCP port.")] = 8000,
    max_upload_mb: Annotated[
        int,
        typer.Option("--max-upload-mb", min=1, help="Largest photo accepted, in MB (10^6 bytes)."),
    ] = 20,
    device: _Device = "cpu",
    threads: _Threads = None,
) -> None:
    """Serve the model's web page: drop a photo or take one with the webcam, see each face's
    expression distribution.

    Opens http://HOST:PORT/ (a local page; nothing is loaded from the internet) with a JSON
    API beside it: POST /api/predict (multipart field `file`) returns the rows `lightfer
    predict` writes for that image; GET /api/health names the model. See docs/serve.md.
    The model is loaded once, before the server starts; Ctrl+C stops it.
    """
    import uvicorn

    from lightfer.predict import Predictor
    from lightfer.web import create_app

    predictor = Predictor.from_path(model, device=device, threads=threads)
    web = create_app(predictor, model_name=model.name, max_upload_bytes=max_upload_mb * 1_000_000)
    typer.echo(f"serving {model} on http://{host}:{port}/ (Ctrl+C stops)")
    uvicorn.run(web, host=host, port=port)


def main() -> None:
    """Entry point of the `lightfer` script."""
    app(prog_name="lightfer")


if __name__ == "__main__":
    sys.exit(main())
