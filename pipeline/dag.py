"""The plan as a graph: which stage runs wait for which, derived the way DVC links stages.

DVC draws an edge from stage A to stage B when one of B's dependencies overlaps one of A's
outputs: the same path, a path inside it (B reads `data/x/faces`, A writes `data/x`), or a
path containing it (B reads the directory `models/x`, A writes `models/x/ldg.pt`). The flow
uses the same rule on `stages.registry.plan`, so whatever stages the registry holds, a run
starts only after every run whose outputs it reads, and runs with no path between them
are free to run at the same time.

Two runs that write the same path could then race, which DVC forbids as overlapping
outputs; `check_outputs_disjoint` refuses such a plan before anything runs.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Sequence
from pathlib import PurePosixPath

from lightfer.errors import LightferError
from stages.common import StageRun

# Stages that measure time: they run alone (after every run planned before them, before any
# run planned after them), so a concurrent run cannot skew their figures. A name that is
# not in the plan does nothing.
EXCLUSIVE_STAGES: frozenset[str] = frozenset({"bench"})


def _parts(path: str) -> tuple[str, ...]:
    return PurePosixPath(path).parts


def _overlap(a: tuple[str, ...], b: tuple[str, ...]) -> bool:
    """Whether one path is the other or lies inside it (component-wise, not by characters)."""
    n = min(len(a), len(b))
    return a[:n] == b[:n]


def upstream_runs(runs: Sequence[StageRun]) -> dict[str, tuple[str, ...]]:
    """For each run (by name), the runs among `runs` whose outputs it reads, in plan order.

    Runs outside `runs` are not considered: with a subset of stages, a run reads what an
    unselected stage left on disk and waits for nothing there.
    """
    outs = [(run.name, [_parts(out) for out in run.outs]) for run in runs]
    edges: dict[str, tuple[str, ...]] = {}
    for run in runs:
        deps = [_parts(dep) for dep in run.deps]
        edges[run.name] = tuple(
            name
            for name, produced in outs
            if name != run.name and any(_overlap(d, o) for d in deps for o in produced)
        )
    return edges


def check_outputs_disjoint(runs: Iterable[StageRun]) -> None:
    """Raise `LightferError` if two runs write the same path or one writes inside another's
    output: run concurrently, they would overwrite each other."""
    owned = sorted((_parts(out), run.name) for run in runs for out in run.outs)
    problems = [
        f"{first_name} writes {PurePosixPath(*first)} and {second_name} writes "
        f"{PurePosixPath(*second)}"
        for (first, first_name), (second, second_name) in itertools.pairwise(owned)
        # Sorted, a path is directly followed by the paths inside it (if any).
        if _overlap(first, second)
    ]
    if problems:
        raise LightferError("overlapping outputs in the plan: " + "; ".join(problems))


def schedule(runs: Sequence[StageRun]) -> dict[str, tuple[str, ...]]:
    """What each run waits for when runs may go concurrently: the DVC edges of
    `upstream_runs`, plus the edges that make an `EXCLUSIVE_STAGES` run run alone."""
    edges = {name: list(ups) for name, ups in upstream_runs(runs).items()}
    names = [run.name for run in runs]
    for index, run in enumerate(runs):
        if run.stage in EXCLUSIVE_STAGES:
            edges[run.name] = names[:index]
            for later in names[index + 1 :]:
                edges[later].append(run.name)
    return {name: tuple(dict.fromkeys(ups)) for name, ups in edges.items()}


def execution_order(runs: Sequence[StageRun], edges: dict[str, tuple[str, ...]]) -> list[StageRun]:
    """`runs` in an order where each run comes after all it waits for (plan order where that
    already holds); raises `LightferError` on a cycle."""
    pending = list(runs)
    done: set[str] = set()
    ordered: list[StageRun] = []
    while pending:
        ready = next((r for r in pending if all(u in done for u in edges[r.name])), None)
        if ready is None:
            raise LightferError(
                "the plan has a dependency cycle among: " + ", ".join(r.name for r in pending)
            )
        pending.remove(ready)
        done.add(ready.name)
        ordered.append(ready)
    return ordered
