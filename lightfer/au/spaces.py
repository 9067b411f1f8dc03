"""The auxiliary spaces of a dataset against its emotions (the paper's Sec. 4.5).

For the configured backend, and for the others that need no outside tool (landmark
geometry, normalised landmarks, and on synthetic data the oracle at each study noise
level), the neighbour label agreement of the training faces' K-NN graph: the number that
predicts whether the AU term can help. For the configured backend (and the clean oracle
where there is one), a t-SNE map coloured by label (Fig. 9) and the mean of each dimension
per emotion beside the EMFACS prototypes.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from lightfer import catalog
from lightfer.au import OK, AuxVectors
from lightfer.au.analysis import prototype_correlation, write_au_heatmap, write_tsne_map
from lightfer.au.annotate import aligned_landmarks, oracle_vectors
from lightfer.au.geometry import geometry_aux
from lightfer.au.landmarks import landmark_aux
from lightfer.au.store import read_aux
from lightfer.data.synthetic.generator import prototype_matrix
from lightfer.faces.cache import load_face_cache
from lightfer.knn import training_graph
from lightfer.manifest import read_manifest
from lightfer.params import Params
from lightfer.splits import Splits

__all__ = ["analyse_spaces", "aux_spaces"]

logger = logging.getLogger(__name__)

# Backends computed from what the dataset already has (no outside tool or file).
_SELF_CONTAINED = ("geometry", "landmarks")
_REPORTED = (
    "dimensions",
    "in_graph",
    "label_agreement",
    "chance_agreement",
    "neighbour_kl",
    "random_pair_kl",
)


def aux_spaces(params: Params, root: Path, dataset: str, splits: Splits) -> dict[str, AuxVectors]:
    """The auxiliary spaces to compare, keyed by a label ("geometry", "oracle@0.5", ...)."""
    manifest = read_manifest(catalog.manifest_path(root, dataset))
    crops, faces = load_face_cache(splits.cache)
    stored = read_aux(
        catalog.aux_path(root, dataset), sample_ids=splits.sample_ids, cache=splits.cache
    )
    spaces = {params.aux.backend: stored}
    wanted = [backend for backend in _SELF_CONTAINED if backend not in spaces]
    if wanted:  # one landmark pass (dlib, where the dataset has none) serves both backends
        points, ok = aligned_landmarks(crops, faces, predict=params.aux.predict_landmarks)
        for backend in wanted:
            spaces[backend] = (geometry_aux if backend == "geometry" else landmark_aux)(points, ok)
    if "aus" in manifest.table.column_names:
        for noise in params.study.noise:
            spaces[f"oracle@{noise}"] = oracle_vectors(
                params.aux,
                noise=noise,
                manifest=manifest,
                crops=crops,
                faces=faces,
                dataset=dataset,
                base_seed=params.base.seed,
            )
    return spaces


def _figures(
    figures_dir: Path, label: str, vectors: AuxVectors, splits: Splits, dataset: str, seed: int
) -> dict[str, Any]:
    rows = splits.train[vectors.status[splits.train] == OK]
    values, labels = vectors.values[rows], splits.labels[rows]
    name = label.replace("@", "-")
    write_tsne_map(
        figures_dir / f"tsne-{name}.png",
        values,
        labels,
        seed=seed,
        title=f"{dataset}: t-SNE of the {label} space (training faces)",
    )
    means = write_au_heatmap(
        figures_dir / f"heatmap-{name}.png",
        values,
        vectors.names,
        labels,
        prototypes=prototype_matrix(),
        title=f"{dataset}: {label} dimensions per emotion",
    )
    return {
        "prototype_correlation": prototype_correlation(means, vectors.names, prototype_matrix())
    }


def analyse_spaces(
    params: Params, root: Path, *, dataset: str, splits: Splits, figures_dir: Path
) -> dict[str, Any]:
    """Compare the dataset's auxiliary spaces; draw the figures into `figures_dir`.

    Returns:
        `{"k": K, "backends": {label: agreement figures (and prototype correlation)}}`.
    """
    knn = params.knn.model_copy(update={"recall_sample": 0})  # agreement only: no recall check
    summary: dict[str, Any] = {"k": knn.k, "backends": {}}
    spaces = aux_spaces(params, root, dataset, splits)
    figures = [params.aux.backend] + [label for label in spaces if label.endswith("@0.0")]
    for label, vectors in spaces.items():
        _, report = training_graph(
            vectors,
            splits,
            knn=knn,
            threads=params.base.threads,
            seed=params.base.seed,
        )
        summary["backends"][label] = {key: report[key] for key in _REPORTED if key in report}
        if label in figures:
            summary["backends"][label].update(
                _figures(figures_dir, label, vectors, splits, dataset, params.base.seed)
            )
        logger.info(
            "%s %s: label agreement %.3f (chance %.3f)",
            dataset,
            label,
            report["label_agreement"],
            report["chance_agreement"],
        )
    return summary
