"""The one place where the `lightfer` command line turns expected failures into messages.

Every `LightferError` (a problem the user can act on: a params file, a dataset, a model
file, a device) and every `OSError` (a path that cannot be read or written) that escapes a
command is printed to stderr, without a traceback, and the command exits with status 1.
Anything else is a bug and keeps its traceback. Usage errors stay Typer's (status 2).
"""

from __future__ import annotations

from typing import Any

import click
import typer
from typer.core import TyperGroup

from lightfer.errors import LightferError


def describe(exc: BaseException) -> str:
    """The message for `exc`: a `LightferError`'s own, or an `OSError` as `path: reason`.

    Multi-line `LightferError` messages (a list of params problems) keep their lines;
    anything else is put on one line.
    """
    if isinstance(exc, LightferError):
        return str(exc)
    if isinstance(exc, OSError) and exc.strerror:
        paths = " -> ".join(str(p) for p in (exc.filename, exc.filename2) if p is not None)
        return f"{paths}: {exc.strerror}" if paths else exc.strerror
    return " ".join(str(exc).split())


class ErrorReportingGroup(TyperGroup):
    """A Typer group whose subcommands' `LightferError`s and `OSError`s become one message
    on stderr and exit status 1 (see the module docstring)."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (LightferError, OSError) as exc:
            typer.echo(describe(exc), err=True)
            raise typer.Exit(code=1) from None
