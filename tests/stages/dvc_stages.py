"""The DAG as DVC resolves it, for the stage tests: each stage's command and outputs."""

from __future__ import annotations

import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.conftest import PROJECT_ROOT


@dataclass(frozen=True)
class DvcStage:
    """One expanded stage of dvc.yaml: its DVC name, its module's argv, deps and outputs."""

    name: str
    stage: str
    module: str
    argv: list[str]
    deps: list[str]
    outs: list[str]

    @property
    def arguments(self) -> dict[str, Any]:
        """`--dataset X --regime ldl` as `{"dataset": "X", "regime": "ldl"}`."""
        pairs = zip(self.argv[::2], self.argv[1::2], strict=True)
        return {flag[2:]: value for flag, value in pairs}


def dvc_stages(project: Path, params: Path | None = None) -> list[DvcStage]:
    """The repository's dvc.yaml expanded over `params` (default: `project/params.yaml`).

    The DAG is resolved in `project` (dvc.yaml is copied there; no DVC repository needed).
    """
    from dvc.repo import Repo

    shutil.copy(PROJECT_ROOT / "dvc.yaml", project / "dvc.yaml")
    if params is not None:
        shutil.copy(params, project / "params.yaml")
    stages = []
    for stage in Repo(str(project), uninitialized=True).index.stages:
        words = shlex.split(stage.cmd)
        assert words[:2] == ["python", "-m"], stage.cmd
        stages.append(
            DvcStage(
                name=stage.name,
                stage=stage.name.split("@")[0],
                module=words[2],
                argv=words[3:],
                deps=[str(dep.def_path) for dep in stage.deps],
                outs=[str(out.def_path) for out in stage.outs],
            )
        )
    return stages
