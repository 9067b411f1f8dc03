"""The AU stages end to end on a tiny synthetic dataset: aux-labels, knn, train-ef-au,
study, study-summary and aux-analysis."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from lightfer.errors import AuxLabelError, ParamsError
from lightfer.labels import CLASSES
from lightfer.models.checkpoint import load_checkpoint
from lightfer.params import load_params, validate_params
from stages import (
    align,
    aux_analysis,
    aux_labels,
    evaluate,
    knn,
    prepare,
    soft_labels,
    study,
    study_summary,
    train_ef,
    train_ef_au,
    train_ldg,
)
from tests.conftest import tiny_params

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    raw = tiny_params()
    raw["train"]["seeds"] = [0]
    raw["train"]["regimes"] = ["ldl"]
    for model in ("ldg", "ef"):
        raw["train"][model]["train"].update(epochs=1, batch_size=16)
    raw["knn"] = {"k": 4, "recall_sample": 20}
    raw["study"] = {"datasets": ["synthetic"], "noise": [0.0, 2.0]}
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(root / "params.yaml")
    for stage in (prepare, align, aux_labels, train_ldg, soft_labels, knn):
        stage.run(params, root, dataset="synthetic")
    train_ef.run(params, root, dataset="synthetic", regime="ldl", seed=0)
    train_ef_au.run(params, root, dataset="synthetic", seed=0)
    for noise in params.study.noise:
        study.run(params, root, dataset="synthetic", noise=noise, seed=0)
    evaluate.run(params, root, dataset="synthetic")
    study_summary.run(params, root, dataset="synthetic")
    aux_analysis.run(params, root, dataset="synthetic")
    return root, params


def test_aux_labels_give_every_face_a_named_vector_or_a_status(project):
    root, _ = project
    vectors = aux_labels.read_aux(aux_labels.aux_path(root, "synthetic"))
    assert vectors.backend == "geometry" and vectors.names[0].endswith("_geo")
    assert len(vectors) == 60 and vectors.ok.all()  # synthetic faces come with 68 landmarks
    report = json.loads((root / "reports/synthetic/aux.json").read_text())
    assert report["ok"] == 60 and report["skipped"] == 0


def test_knn_graph_covers_the_training_faces_with_weights_in_unit_range(project):
    root, _ = project
    graph = knn.read_graph(root, "synthetic")
    assert graph.indices.shape == (len(graph.rows), 4)
    assert set(graph.indices.ravel()) <= set(graph.rows)  # neighbours are training faces
    assert not (graph.indices == graph.rows[:, None]).any()  # self excluded
    assert ((graph.weights > 0) & (graph.weights <= 1)).all()
    report = json.loads((root / "reports/synthetic/knn.json").read_text())
    assert 0 <= report["label_agreement"] <= 1 and report["recall_at_k"] >= 0.9
    assert (root / "data/synthetic/knn/ngt").is_dir()


def test_ldl_au_model_and_its_evaluation(project):
    root, _ = project
    checkpoint = load_checkpoint(root / "models/synthetic/ef-ldl_au-seed0.pt")
    assert checkpoint.arch == "efficientface" and checkpoint.classes == CLASSES
    history = (root / "reports/synthetic/train/ef-ldl_au-seed0.csv").read_text()
    assert "train_loss_au_kl" in history.splitlines()[0]
    table = json.loads((root / "reports/synthetic/evaluate.json").read_text())["table"]
    assert set(table) == {"ldg", "ef-ldl", "ef-ldl_au"}


def test_study_runs_and_summary_table(project):
    root, _ = project
    run = json.loads((root / "reports/synthetic/study/noise2.0-seed0.json").read_text())
    assert run["noise"] == 2.0 and 0 <= run["test"]["accuracy"] <= 1
    assert (root / "models/study/synthetic/noise0.0-seed0.pt").is_file()
    rows = json.loads((root / "reports/synthetic/study.json").read_text())["rows"]
    assert [(r["aux"], r["noise"]) for r in rows] == [
        ("none (ldl)", None), ("geometry", None), ("oracle", 0.0), ("oracle", 2.0),
    ]  # fmt: skip
    clean, noisy = rows[2], rows[3]
    # Noise makes AU neighbours less likely to share a label (the study's premise).
    assert clean["label_agreement"] > noisy["label_agreement"]
    table = (root / "reports/synthetic/study.md").read_text()
    assert "| ldl_au | oracle | 2 |" in table


def test_aux_analysis_compares_backends_and_draws_the_figures(project):
    root, _ = project
    summary = json.loads((root / "reports/synthetic/aux_analysis.json").read_text())
    assert set(summary["backends"]) == {"geometry", "landmarks", "oracle@0.0", "oracle@2.0"}
    clean = summary["backends"]["oracle@0.0"]
    assert clean["prototype_correlation"] > 0.3  # true AUs follow the EMFACS prototypes
    for name in ("tsne-geometry", "heatmap-geometry", "tsne-oracle-0.0", "heatmap-oracle-0.0"):
        assert (root / f"reports/synthetic/aux/{name}.png").stat().st_size > 5000


def test_oracle_backend_and_study_are_refused_for_real_datasets(tmp_path):
    for split in ("train", "test"):
        (tmp_path / split).mkdir()
    folders = {str(i): name for i, name in enumerate(CLASSES)}
    raw = tiny_params()
    raw["datasets"]["real"] = {"kind": "imagefolder", "root": str(tmp_path), "classes": folders}
    raw["aux"] = {"backend": "oracle"}
    with pytest.raises(ParamsError, match=r"'oracle' needs true AUs.*use geometry for real"):
        validate_params(raw)
    raw["aux"] = {"backend": "geometry"}
    raw["study"] = {"datasets": ["real"]}
    with pytest.raises(ParamsError, match=r"study\.datasets: real is not a synthetic dataset"):
        validate_params(raw)


def test_openface_backend_without_binary_says_what_to_do(project, monkeypatch):
    _, params = project
    monkeypatch.setenv("PATH", "/nonexistent")
    aux = params.aux.model_copy(update={"backend": "openface"})
    with pytest.raises(AuxLabelError, match="openface_csv_dir"):
        aux_labels.annotate(aux, manifest=None, crops=None, faces=None, dataset="x", seed=0)


def test_noise_levels_draw_independent_noise_shared_by_seeds(project):
    _, params = project
    seeds = {study.noise_seed(params, noise) for noise in (0.0, 0.5, 1.5)}
    assert len(seeds) == 3
    assert np.isfinite(study.noise_seed(params, 0.5))


def test_every_declared_output_of_the_au_stages_is_written(project):
    """What dvc.yaml promises: DVC fails a stage whose declared output is missing."""
    root, params = project
    for spec in (aux_labels, knn, train_ef_au, study, study_summary, aux_analysis):
        for run in spec.STAGE.expand_all(params):
            missing = [out for out in run.outs if not (root / out).exists()]
            assert not missing, (run.name, missing)
