"""knn: the NGT neighbour graph over the training split's auxiliary vectors (eq. 5).

Writes `data/<dataset>/knn/graph.npz` (each training face's K neighbours, distances and
`a_ij`, with the sample_id of every point, loaded once by training), the NGT index itself
beside it (`knn/ngt/`), and `reports/<dataset>/knn.json`: the recall of the approximate
search against exact search, the kernel width, what was left out, and the neighbour
agreement (does a face's neighbourhood share its label?), the figure that predicts
whether the AU term can help.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightfer import catalog
from lightfer.au.store import read_aux
from lightfer.io import atomic_path, write_json
from lightfer.knn import training_graph, write_graph
from lightfer.params import Params
from lightfer.splits import load_splits
from lightfer.stage import DATASET, stage_main

logger = logging.getLogger("lightfer.stages.knn")


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Write `data/<dataset>/knn/` (graph.npz + the NGT index) and `reports/<dataset>/knn.json`."""
    splits = load_splits(params, root, dataset)
    vectors = read_aux(
        catalog.aux_path(root, dataset), sample_ids=splits.sample_ids, cache=splits.cache
    )
    out_dir = catalog.knn_dir(root, dataset)
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        graph, report = training_graph(
            vectors,
            splits,
            knn=params.knn,
            threads=params.base.threads,
            seed=params.base.seed,
            index_dir=tmp / catalog.ngt_index_dir(root, dataset).name,
        )
        write_graph(tmp / catalog.GRAPH_FILE, graph, splits.sample_ids)
    write_json(catalog.stage_metrics_path(root, dataset, "knn"), report)
    logger.info(
        "%s: %d faces, K=%d, recall@K %s, label agreement %.3f (chance %.3f)",
        dataset,
        report["in_graph"],
        params.knn.k,
        report["recall_at_k"],
        report["label_agreement"],
        report["chance_agreement"],
    )
    return report


def main(argv: list[str] | None = None) -> int:
    """`python -m stages.knn --dataset NAME [--params FILE]`."""
    return stage_main("knn", run, argv, options=(DATASET,))


if __name__ == "__main__":
    raise SystemExit(main())
