"""The `lightfer` command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated

import typer

from lightfer import __version__
from lightfer.errors import LightferError

app = typer.Typer(help="Lightweight facial expression recognition with LDL on the AU space.")


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


@app.command("params")
def check_params(
    file: Annotated[Path, typer.Option("--file", "-f", help="Params file to check.")] = Path(
        "params.yaml"
    ),
) -> None:
    """Validate a params file against the schema and list every problem."""
    from lightfer.params import load_params

    try:
        params = load_params(file)
    except LightferError as exc:
        typer.echo(str(exc), err=True)
        raise typer.Exit(code=1) from None
    typer.echo(f"{file}: valid ({len(params.datasets)} dataset(s): {', '.join(params.datasets)})")


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
        Path,
        typer.Option(
            "--model",
            "-m",
            help="A lightfer checkpoint, an official EfficientFace file, or an ONNX export "
            "(.onnx) with lightfer metadata. Required.",
            show_default=False,
        ),
    ],
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
    device: Annotated[
        str, typer.Option("--device", help="torch device of the model and the detector.")
    ] = "cpu",
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            min=1,
            help="CPU threads. Default: torch's default (all cores).",
            show_default=False,
        ),
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show a progress bar on stderr.")
    ] = True,
) -> None:
    """Detect faces and predict their expression distribution in images, folders and videos.

    Writes one row per face (file, frame, box, detector score, the seven probabilities,
    label); an unreadable file or an image without a face gets one row saying so, and the
    run goes on. Exits with 1 when the model cannot be loaded, when no input file is found,
    or when none of the files could be read; otherwise 0, even if some files failed.
    """
    from tqdm.contrib.logging import logging_redirect_tqdm

    from lightfer.predict import PredictionSummary, Predictor, expand_paths, rows_format, write_rows

    if output_format is not None and output_format not in ("csv", "jsonl"):
        raise typer.BadParameter(
            f"{output_format!r} is not one of csv, jsonl", param_hint="'--format'"
        )
    try:
        kind = rows_format(out, output_format)  # type: ignore[arg-type]
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="'--out'") from None
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


def main() -> None:
    """Entry point of the `lightfer` script."""
    app(prog_name="lightfer")


if __name__ == "__main__":
    sys.exit(main())
