"""knn: the NGT neighbour graph over the training split's auxiliary vectors (eq. 5).

Writes `data/<dataset>/knn/graph.npz` (each training face's K neighbours, distances and
`a_ij`, loaded once by training), the NGT index itself beside it (`knn/ngt/`), and
`reports/<dataset>/knn.json`: the recall of the approximate search against exact search,
the kernel width, what was left out, and the neighbour agreement (does a face's
neighbourhood share its label?), the figure that predicts whether the AU term can help.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightfer.au import OK, AuxVectors
from lightfer.au.analysis import neighbour_agreement
from lightfer.errors import StageOutputError
from lightfer.io import atomic_path, write_json
from lightfer.knn import NeighbourGraph, build_graph
from lightfer.params import KnnParams, Params
from stages.aux_labels import aux_path, read_aux
from stages.common import StageSpec, stage_main
from stages.training import Splits, load_splits

logger = logging.getLogger("lightfer.stages.knn")

GRAPH_FILE = "graph.npz"


def knn_dir(root: Path, dataset: str) -> Path:
    return root / "data" / dataset / "knn"


def read_graph(root: Path, dataset: str) -> NeighbourGraph:
    """The dataset's neighbour graph.

    Raises:
        StageOutputError: the knn stage has not run.
    """
    path = knn_dir(root, dataset) / GRAPH_FILE
    if not path.is_file():
        raise StageOutputError(f"{path} does not exist; run the knn stage first")
    return NeighbourGraph.load(path)


def graph_of(
    vectors: AuxVectors,
    splits: Splits,
    knn: KnnParams,
    *,
    threads: int,
    seed: int,
    index_dir: Path | None = None,
) -> tuple[NeighbourGraph, dict[str, Any]]:
    """The graph over the training faces that have an auxiliary vector, and its report."""
    usable = vectors.status[splits.train] == OK
    rows = splits.train[usable]
    if len(rows) <= knn.k:
        raise StageOutputError(
            f"only {len(rows)} training faces have a {vectors.backend} vector, too few for "
            f"k={knn.k}; see reports/<dataset>/aux.json for why the others have none"
        )
    graph = build_graph(
        vectors.values[rows], rows, k=knn.k, standardise=knn.standardise, kernel=knn.kernel,
        sigma=knn.sigma, epsilon=knn.epsilon, threads=threads, index_dir=index_dir,
        recall_sample=knn.recall_sample, seed=seed,
    )  # fmt: skip
    report = {
        "backend": vectors.backend,
        "dimensions": len(vectors.names),
        "train_faces": len(splits.train),
        "in_graph": len(rows),
        "without_vector": int((~usable).sum()),
        "k": knn.k,
        "kernel": graph.kernel,
        "sigma": float(graph.sigma),
        "recall_at_k": graph.recall,
        "mean_weight": float(graph.weights.mean()),
    }
    agreement = neighbour_agreement(
        rows, graph.indices, splits.labels, true_dist=splits.true_dist, seed=seed
    )
    report.update(agreement)
    return graph, report


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Write `data/<dataset>/knn/` (graph.npz + the NGT index) and `reports/<dataset>/knn.json`."""
    splits = load_splits(params, root, dataset)
    vectors = read_aux(aux_path(root, dataset))
    if len(vectors) != len(splits.crops):
        raise StageOutputError(
            f"{aux_path(root, dataset)} has {len(vectors)} rows but the face cache "
            f"{len(splits.crops)}; re-run aux-labels"
        )
    with atomic_path(knn_dir(root, dataset)) as tmp:
        tmp.mkdir()
        graph, report = graph_of(
            vectors, splits, params.knn, threads=params.base.threads, seed=params.base.seed,
            index_dir=tmp / "ngt",
        )  # fmt: skip
        graph.save(tmp / GRAPH_FILE)
    write_json(root / "reports" / dataset / "knn.json", report)
    logger.info(
        "%s: %d faces, K=%d, recall@K %s, label agreement %.3f (chance %.3f)", dataset,
        report["in_graph"], params.knn.k, report["recall_at_k"], report["label_agreement"],
        report["chance_agreement"],
    )  # fmt: skip
    return report


STAGE = StageSpec(
    name="knn",
    deps=("stages/knn.py", "stages/aux_labels.py", "stages/training.py", "lightfer/knn.py",
          "lightfer/au", "data/{dataset}/faces", "data/{dataset}/prepared",
          "data/{dataset}/aux.parquet"),
    outs=("data/{dataset}/knn", "reports/{dataset}/knn.json"),
    params=("base.seed", "train.val_fraction", "knn"),
    run=run,
)  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(stage_main(STAGE))
