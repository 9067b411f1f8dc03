"""DVC's own view of the pipeline, for the Prefect flow: stages, order, status, and record.

`dvc.yaml` is the one description of the DAG and DVC's lock file and cache are the one
record of what is done. This module reads both through DVC's Python API instead of
restating them: `load_stages` gives every stage (foreach/matrix expanded, as `dvc repro`
sees them) with its command, outputs and the stages it reads from; `needs_run` asks DVC the
question `dvc repro` asks (`dvc status` of that stage); `record` does what `dvc repro` does
after a command succeeds (`dvc commit` of the stage: dependency and output hashes into
`dvc.lock`, outputs into DVC's cache). DVC serialises its own operations with a repository
lock, so these calls belong in one process (the flow's), never in concurrent workers.
"""

from __future__ import annotations

import logging
import shlex
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lightfer.errors import LightferError

__all__ = ["DvcStage", "load_stages", "needs_run", "record", "remove_outputs"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DvcStage:
    """One stage of `dvc.yaml` as DVC expands it.

    Attributes:
        name: DVC's address, e.g. `train-ef@synthetic-ldl`.
        cmd: the shell command DVC runs.
        outs: every declared output path (metrics and plots included), relative to the root.
        upstream: the names of the selected stages whose outputs it reads, in DAG order.
    """

    name: str
    cmd: str
    outs: tuple[str, ...]
    upstream: tuple[str, ...]

    @property
    def base(self) -> str:
        """The stage's name in `dvc.yaml`, before any `@` of a foreach or matrix."""
        return self.name.split("@", 1)[0]

    def python_module(self) -> tuple[str, list[str]] | None:
        """`(module, args)` when the command is `python -m <module> ARGS`, else None."""
        words = shlex.split(self.cmd)
        if len(words) >= 3 and Path(words[0]).name.startswith("python") and words[1] == "-m":
            return words[2], words[3:]
        return None


def _repo(root: Path) -> Any:
    """DVC's `Repo` at `root` (imported here: importing DVC takes a second)."""
    from dvc.repo import Repo

    return Repo(str(root))


def load_stages(root: Path, only: Sequence[str] = ()) -> list[DvcStage]:
    """The stages of `root/dvc.yaml` in an order DVC could run them (upstream first).

    Args:
        root: the project (the DVC repository's root).
        only: keep these stages: a `dvc.yaml` name selects all its expansions
            (`train-ef` selects `train-ef@...`), a full address selects one. Upstream links
            to stages left out are dropped: a kept stage reads what they left on disk.

    Raises:
        LightferError: a name in `only` matches no stage.
    """
    import networkx as nx

    with _repo(root) as repo:
        graph = repo.index.graph  # an edge A -> B: stage A reads an output of stage B
        declared = {stage: i for i, stage in enumerate(repo.index.stages)}
        # Upstream first; among stages free to go, the order of dvc.yaml (stable across runs).
        ordered = nx.lexicographical_topological_sort(graph.reverse(copy=False), declared.get)
        order = {stage: i for i, stage in enumerate(ordered)}
        root_path = Path(repo.root_dir)
        # Only this dvc.yaml's stages: the index also holds other pipelines of the repository
        # (studies/au/dvc.yaml, the AU study, is run on its own with `dvc repro <its file>`).
        own = (root_path / "dvc.yaml").resolve()
        stages = sorted(
            (s for s in declared if s.cmd and Path(s.path).resolve() == own),
            key=order.__getitem__,
        )
        chosen = [s for s in stages if not only or _selected(s.addressing, only)]
        unknown = [
            name for name in only if not any(_selected(s.addressing, [name]) for s in stages)
        ]
        if unknown:
            names = sorted({s.addressing.split("@", 1)[0] for s in stages})
            raise LightferError(
                f"no stage called {', '.join(unknown)} in {root_path / 'dvc.yaml'}; its stages: "
                + ", ".join(names)
            )
        kept = {s.addressing for s in chosen}
        return [
            DvcStage(
                name=stage.addressing,
                cmd=stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd),
                outs=tuple(
                    Path(out.fs_path).relative_to(root_path).as_posix() for out in stage.outs
                ),
                upstream=tuple(
                    up.addressing
                    for up in sorted(graph.successors(stage), key=order.__getitem__)
                    if up.addressing in kept
                ),
            )
            for stage in chosen
        ]


def _selected(address: str, only: Sequence[str]) -> bool:
    return any(address == name or address.startswith(f"{name}@") for name in only)


def needs_run(root: Path, name: str) -> list[str]:
    """Why `dvc repro` would run stage `name` now; empty when it is up to date."""
    with _repo(root) as repo:
        status = repo.status(targets=[name])
    reasons: list[str] = []
    for entry in status.get(name, []):
        if isinstance(entry, str):
            reasons.append(entry)
        else:
            for kind, changes in entry.items():
                detail = (
                    changes
                    if isinstance(changes, str)
                    else ", ".join(f"{path} {state}" for path, state in changes.items())
                )
                reasons.append(f"{kind}: {detail}")
    return reasons


def remove_outputs(root: Path, stage: DvcStage) -> None:
    """Delete the stage's outputs before it runs, as `dvc repro` does (they are in DVC's
    cache if they were ever recorded), so no stale file survives a run that no longer
    writes it."""
    for out in stage.outs:
        path = root / out
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()


def record(root: Path, name: str) -> None:
    """Record a stage that just ran in `dvc.lock` and DVC's cache (`dvc commit <name>`).

    Raises:
        LightferError: DVC cannot record it (e.g. a declared output was not written).
    """
    from dvc.exceptions import DvcException

    try:
        with _repo(root) as repo:
            repo.commit(name, force=True)
    except DvcException as err:
        raise LightferError(f"DVC could not record stage {name}: {err}") from err
    logger.info("recorded %s in dvc.lock", name)
