"""aux-analysis: the auxiliary space against the emotions (the paper's Sec. 4.5).

For the configured backend, and for the others that need no outside tool (landmark
geometry, normalised landmarks, and on synthetic data the oracle at each study noise
level), the neighbour label agreement of the training faces' K-NN graph: the number that
predicts whether the AU term can help. For the configured backend (and the clean oracle
where there is one), a t-SNE map coloured by label (Fig. 9) and the mean of each dimension
per emotion beside the EMFACS prototypes. Writes `reports/<dataset>/aux_analysis.json` and
the figures in `reports/<dataset>/aux/`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightfer.au import AuxVectors
from lightfer.au.analysis import prototype_correlation, write_au_heatmap, write_tsne_map
from lightfer.au.geometry import geometry_aux
from lightfer.au.landmarks import landmark_aux
from lightfer.data.synthetic.generator import prototype_matrix
from lightfer.faces.cache import load_face_cache
from lightfer.io import atomic_path, write_json
from lightfer.manifest import read_manifest
from lightfer.params import Params
from stages import study
from stages.align import faces_dir
from stages.aux_labels import aligned_landmarks, annotate, aux_path, read_aux
from stages.common import StageSpec, stage_main
from stages.knn import graph_of
from stages.prepare import MANIFEST, prepared_dir
from stages.training import Splits, load_splits

logger = logging.getLogger("lightfer.stages.aux_analysis")

# Backends computed from what the dataset already has (no outside tool or file).
_SELF_CONTAINED = ("geometry", "landmarks")


def _spaces(params: Params, root: Path, dataset: str) -> dict[str, AuxVectors]:
    """The auxiliary spaces to compare, keyed by a label ("geometry", "oracle@0.5", ...)."""
    manifest = read_manifest(prepared_dir(root, dataset) / MANIFEST)
    crops, faces = load_face_cache(faces_dir(root, dataset))
    spaces = {params.aux.backend: read_aux(aux_path(root, dataset))}
    wanted = [backend for backend in _SELF_CONTAINED if backend not in spaces]
    if wanted:  # one landmark pass (dlib, where the dataset has none) serves both backends
        points, ok = aligned_landmarks(crops, faces, predict=params.aux.predict_landmarks)
        for backend in wanted:
            spaces[backend] = (geometry_aux if backend == "geometry" else landmark_aux)(points, ok)
    if "aus" in manifest.table.column_names:
        for noise in params.study.noise:
            aux = params.aux.model_copy(update={"backend": "oracle", "oracle_noise": noise})
            spaces[f"oracle@{noise}"] = annotate(
                aux, manifest=manifest, crops=crops, faces=faces, dataset=dataset,
                seed=study.noise_seed(params, noise),
            )  # fmt: skip
    return spaces


def _figures(
    out_dir: Path, label: str, vectors: AuxVectors, splits: Splits, dataset: str, seed: int
) -> dict[str, Any]:
    ok = vectors.status[splits.train] == "ok"
    rows = splits.train[ok]
    values, labels = vectors.values[rows], splits.labels[rows]
    name = label.replace("@", "-")
    write_tsne_map(out_dir / f"tsne-{name}.png", values, labels, seed=seed,
                   title=f"{dataset}: t-SNE of the {label} space (training faces)")  # fmt: skip
    means = write_au_heatmap(
        out_dir / f"heatmap-{name}.png", values, vectors.names, labels,
        prototypes=prototype_matrix(), title=f"{dataset}: {label} dimensions per emotion",
    )  # fmt: skip
    return {"prototype_correlation": prototype_correlation(means, vectors.names,
                                                           prototype_matrix())}  # fmt: skip


def run(params: Params, root: Path, *, dataset: str) -> dict[str, Any]:
    """Write `reports/<dataset>/aux_analysis.json` and the figures in `reports/<dataset>/aux/`."""
    splits = load_splits(params, root, dataset)
    spaces = _spaces(params, root, dataset)
    knn = params.knn.model_copy(update={"recall_sample": 0})  # agreement only: no recall check
    summary: dict[str, Any] = {"k": knn.k, "backends": {}}
    figures = [params.aux.backend] + [label for label in spaces if label.endswith("@0.0")]
    with atomic_path(root / "reports" / dataset / "aux") as out_dir:
        out_dir.mkdir()
        for label, vectors in spaces.items():
            threads = params.base.threads
            _, report = graph_of(vectors, splits, knn, threads=threads, seed=params.base.seed)
            keep = ("dimensions", "in_graph", "label_agreement", "chance_agreement",
                    "neighbour_kl", "random_pair_kl")  # fmt: skip
            summary["backends"][label] = {key: report[key] for key in keep if key in report}
            if label in figures:
                summary["backends"][label].update(
                    _figures(out_dir, label, vectors, splits, dataset, params.base.seed)
                )
            logger.info("%s %s: label agreement %.3f (chance %.3f)", dataset, label,
                        report["label_agreement"], report["chance_agreement"])  # fmt: skip
    write_json(root / "reports" / dataset / "aux_analysis.json", summary)
    return summary


STAGE = StageSpec(
    name="aux-analysis",
    deps=("stages/aux_analysis.py", "stages/aux_labels.py", "stages/knn.py", "stages/study.py",
          "lightfer/au", "lightfer/knn.py", "data/{dataset}/faces", "data/{dataset}/prepared",
          "data/{dataset}/aux.parquet"),
    outs=("reports/{dataset}/aux", "reports/{dataset}/aux_analysis.json"),
    params=("base.seed", "train.val_fraction", "aux", "knn", "study.noise"),
    run=run,
)  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(stage_main(STAGE))
