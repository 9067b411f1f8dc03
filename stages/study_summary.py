"""study-summary: the AU-noise study's table, beside the main DAG's ldl and ldl_au runs.

Rows: `ldl` (no AU term), `ldl_au` on the configured backend (`aux.backend`, e.g. the
landmark geometry a user would have on real photos), and `ldl_au` on oracle AUs at each
noise level (`lightfer.study`). Writes `reports/<dataset>/study.md` and `study.json`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightfer import catalog
from lightfer.io import atomic_path, write_json
from lightfer.params import Params
from lightfer.stage import STUDY_DATASET, stage_main
from lightfer.study import summarise
from lightfer.tables import study_table


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Write `reports/<dataset>/study.md` and `reports/<dataset>/study.json`."""
    rows = summarise(params, root, dataset)
    write_json(catalog.stage_metrics_path(root, dataset, "study"), {"rows": rows})
    with atomic_path(catalog.study_table_path(root, dataset)) as tmp:
        tmp.write_text(study_table(dataset, rows))
    return {"rows": rows}


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.study_summary --dataset NAME [--params FILE]`."""
    return stage_main("study-summary", run, argv, options=(STUDY_DATASET,))


if __name__ == "__main__":
    raise SystemExit(main())
