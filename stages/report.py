"""report: one Markdown report over every dataset and the benchmark, beside the paper.

Reads what `lightfer.report_inputs` gathers (every dataset's metrics and figures, the
benchmark) and writes `results/report.md` and the training-curve figures in
`results/figures/`; the report links the other stages' figures where they are.

The report lives outside `reports/` so that the stage can depend on the whole `reports/`
folder (a stage without axes needs concrete deps, and the datasets come from params):
whatever dataset is added, a change to any metric or figure rebuilds the report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightfer import catalog
from lightfer.errors import StageOutputError
from lightfer.io import atomic_path
from lightfer.params import Params
from lightfer.report import build_report
from lightfer.report_inputs import gather_report_inputs
from lightfer.stage import stage_main
from lightfer.summary import write_summary

logger = logging.getLogger("lightfer.stages.report")


def run(params: Params, root: Path) -> dict[str, Any]:
    """Write `results/report.md`, the training curves in `results/figures/` and the headline
    metrics in `results/summary.json` (the pipeline's one DVC metrics file)."""
    with atomic_path(catalog.report_figures_dir(root)) as figures_dir:
        figures_dir.mkdir()
        gathered = gather_report_inputs(params, root, figures_dir)
    report = build_report(
        gathered.datasets,
        gathered.bench,
        ldg_arch=params.train.ldg.arch,
        ef_arch=params.train.ef.arch,
        inputs=gathered.inputs,
        au_study=gathered.au_study,
    )
    path = catalog.report_path(root)
    broken = [link for link in report.figures if not (path.parent / link).is_file()]
    if broken:
        raise StageOutputError(f"{path} would link missing figures: {', '.join(broken)}")
    with atomic_path(path) as tmp:
        tmp.write_text(report.markdown)
    write_summary(
        catalog.summary_path(root),
        {data.name: data.evaluate for data in gathered.datasets},
        {data.name: data.study for data in gathered.datasets if data.study is not None},
    )
    logger.info(
        "report written to %s: %d sections, %d figures",
        path,
        len(report.sections),
        len(report.figures),
    )
    return {
        "report": path.relative_to(root).as_posix(),
        "datasets": list(params.datasets),
        "sections": report.sections,
        "figures": len(report.figures),
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.report [--params FILE]`."""
    return stage_main("report", run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
