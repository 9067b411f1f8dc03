"""study: ldl_au with oracle AUs of known noise, one run per noise level and seed.

The paper found no gain from the AU term on RAF-DB and FER+ and blamed noisy automatic AU
annotations. On the synthetic dataset the true AUs are known, so each run here gives the
term the true AUs plus Gaussian noise of a set size (the `oracle` backend), builds the
neighbour graph on them, trains EfficientFace in the ldl_au regime with the main DAG's
settings, and scores it on the test split. `study-summary` sets the runs beside the main
DAG's ldl runs (the same seeds, no AU term) and its ldl_au runs on the configured backend.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lightfer.faces.cache import load_face_cache
from lightfer.io import write_json
from lightfer.manifest import read_manifest
from lightfer.params import Params
from lightfer.training.data import derive_seed
from stages.align import faces_dir
from stages.aux_labels import annotate
from stages.common import StageSpec, stage_main
from stages.evaluate import test_metrics
from stages.knn import graph_of
from stages.prepare import MANIFEST, prepared_dir
from stages.train_ef_au import train_au
from stages.training import load_splits


def run_name(noise: float, seed: int) -> str:
    return f"noise{noise}-seed{seed}"  # as DVC names the matrix outputs (noise0.0-seed0)


def noise_seed(params: Params, noise: float) -> int:
    """The seed of a noise level's draw: the same for every training seed, so the seeds of
    one level differ in training only."""
    return derive_seed(params.base.seed, 0xA0, round(noise * 1000))


def run(params: Params, root: Path, *, dataset: str, noise: float, seed: int) -> dict[str, Any]:
    """Write `models/study/<dataset>/<run>.pt` and `reports/<dataset>/study/<run>.{json,csv}`."""
    splits = load_splits(params, root, dataset)
    manifest = read_manifest(prepared_dir(root, dataset) / MANIFEST)
    crops, faces = load_face_cache(faces_dir(root, dataset))
    aux = params.aux.model_copy(update={"backend": "oracle", "oracle_noise": noise})
    vectors = annotate(
        aux, manifest=manifest, crops=crops, faces=faces, dataset=dataset,
        seed=noise_seed(params, noise),
    )  # fmt: skip
    graph, graph_report = graph_of(
        vectors, splits, params.knn, threads=params.base.threads, seed=params.base.seed
    )
    name = run_name(noise, seed)
    reports = root / "reports" / dataset / "study"
    model_path = root / "models" / "study" / dataset / f"{name}.pt"
    training = train_au(
        params, root, run=STAGE.expand(dataset=dataset, noise=noise, seed=seed),
        dataset=dataset, name=name, seed=seed, splits=splits, graph=graph,
        model_path=model_path, report_stem=reports / name,
    )  # fmt: skip
    metrics = test_metrics(params, splits, model_path)
    metrics.pop("confusion_matrix")
    summary = {"noise": noise, "seed": seed, "graph": graph_report, "training": training,
               "test": metrics}  # fmt: skip
    write_json(reports / f"{name}.json", summary)
    return summary


STAGE = StageSpec(
    name="study",
    deps=("stages/study.py", "stages/aux_labels.py", "stages/train_ef_au.py", "stages/train_ef.py",
          "stages/training.py", "stages/fingerprint.py", "stages/soft_labels.py",
          "stages/knn.py", "stages/evaluate.py", "lightfer/training", "lightfer/losses.py",
          "lightfer/models", "lightfer/knn.py", "lightfer/au", "data/{dataset}/faces",
          "data/{dataset}/prepared", "data/{dataset}/soft_labels.parquet",
          "models/{dataset}/ldg.pt"),
    outs=("models/study/{dataset}/noise{noise}-seed{seed}.pt",
          "reports/{dataset}/study/noise{noise}-seed{seed}.csv",
          "reports/{dataset}/study/noise{noise}-seed{seed}.json"),
    params=("base.seed", "align.crop_size", "train.val_fraction", "train.ef", "soft_labels",
            "knn", "au_loss"),
    run=run,
    axes=("dataset", "noise", "seed"),
    sources=(("dataset", lambda params: list(params.study.datasets)),),
)  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(stage_main(STAGE))
