"""The `lightfer` command line."""

from __future__ import annotations

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


def main() -> None:
    """Entry point of the `lightfer` script."""
    app(prog_name="lightfer")


if __name__ == "__main__":
    sys.exit(main())
