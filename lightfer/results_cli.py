"""`lightfer results check`: the working tree's results against a git revision's.

Exit status 0 when the data stages' outputs are byte-identical and every headline metric
is within its committed tolerance, 1 otherwise (one line per failure), and 1 with one line
when a file the check needs is missing (see lightfer.results_check).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lightfer.results_check import CheckOutcome, ResultsCheckError, check_results

results_app = typer.Typer(help="Check the results against a git revision's, the DVC way.")


@results_app.callback()
def _group() -> None:
    """Check the results against a git revision's, the DVC way."""


def format_outcome(outcome: CheckOutcome, rev: str) -> str:
    """The metric table (committed, now, difference, tolerance, OK or MOVED), then the
    data outputs' verdict and, if any, one line per failure."""
    width = max((len(m.name) for m in outcome.metrics), default=6)
    lines = [f"{'metric':<{width}}  committed        now       diff  tolerance  status"]
    for m in outcome.metrics:
        now = "missing" if m.now is None else f"{m.now:.5f}"
        diff = "–" if m.difference is None else f"{m.difference:+.5f}"
        lines.append(
            f"{m.name:<{width}}  {m.committed:9.5f}  {now:>9}  {diff:>9}  {m.tolerance:9.5f}  "
            f"{'MOVED' if m.moved else 'OK'}"
        )
    lines.append(f"data stages: {outcome.data_outputs} outputs compared with {rev}'s dvc.lock")
    if outcome.failures:
        lines += [f"FAILED: {failure}" for failure in outcome.failures]
    else:
        lines.append(f"OK: the results are {rev}'s, within the committed tolerances")
    return "\n".join(lines)


@results_app.command("check")
def check(
    against: Annotated[
        str, typer.Option("--against", help="The git revision to compare with.")
    ] = "HEAD",
    root: Annotated[Path, typer.Option("--root", help="The project (holds dvc.lock).")] = Path("."),
) -> None:
    """Data-stage outputs byte-identical to REV's, headline metrics within REV's tolerances."""
    try:
        outcome = check_results(root.resolve(), against)
    except ResultsCheckError as exc:
        typer.echo(f"lightfer results check: {exc}", err=True)
        raise typer.Exit(code=1) from None
    typer.echo(format_outcome(outcome, against))
    if outcome.failures:
        raise typer.Exit(code=1)
