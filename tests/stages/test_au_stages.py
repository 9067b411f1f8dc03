"""The AU stages end to end on a tiny synthetic dataset: aux-labels, knn, train-ef-au,
study, study-summary and aux-analysis."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import yaml

from lightfer import catalog
from lightfer.au.annotate import annotate, noise_seed
from lightfer.au.store import read_aux
from lightfer.errors import AuxLabelError, ParamsError
from lightfer.knn import read_graph
from lightfer.labels import CLASSES
from lightfer.models.checkpoint import load_checkpoint
from lightfer.params import load_params, validate_params
from lightfer.splits import load_splits
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
from tests.stages.dvc_stages import dvc_stages
from tests.stages.face_cache import reorder_face_cache

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
    raw["study"] = {"datasets": ["synthetic"], "noise": [0.0, 2.0], "seeds": [0]}
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(root / "params.yaml")
    for stage in (prepare, align, aux_labels, train_ldg, soft_labels, knn):
        stage.run(params, root, dataset="synthetic")
    train_ef.run(params, root, dataset="synthetic", regime="ldl")
    train_ef_au.run(params, root, dataset="synthetic")
    study.run(params, root, dataset="synthetic")  # both noise levels
    evaluate.run(params, root, dataset="synthetic")
    study_summary.run(params, root, dataset="synthetic")
    aux_analysis.run(params, root, dataset="synthetic")
    return root, params


def test_aux_labels_give_every_face_a_named_vector_or_a_status(project):
    root, params = project
    splits = load_splits(params, root, "synthetic")
    aux_file = catalog.aux_path(root, "synthetic")
    vectors = read_aux(aux_file, sample_ids=splits.sample_ids, cache=splits.cache)
    assert vectors.backend == "geometry" and vectors.names[0].endswith("_geo")
    assert len(vectors) == 60 and vectors.ok.all()  # synthetic faces come with 68 landmarks
    report = json.loads((root / "reports/synthetic/aux.json").read_text())
    assert report["ok"] == 60 and report["skipped"] == 0


def test_knn_graph_covers_the_training_faces_with_weights_in_unit_range(project):
    root, params = project
    splits = load_splits(params, root, "synthetic")
    graph_file = catalog.graph_path(root, "synthetic")
    graph = read_graph(graph_file, sample_ids=splits.sample_ids, cache=splits.cache)
    assert graph.indices.shape == (len(graph.rows), 4)
    assert set(graph.indices.ravel()) <= set(graph.rows)  # neighbours are training faces
    assert not (graph.indices == graph.rows[:, None]).any()  # self excluded
    assert ((graph.weights > 0) & (graph.weights <= 1)).all()
    report = json.loads((root / "reports/synthetic/knn.json").read_text())
    assert 0 <= report["label_agreement"] <= 1 and report["recall_at_k"] >= 0.9
    assert (root / "data/synthetic/knn/ngt").is_dir()


def test_a_uniform_kernel_graph_reports_no_sigma(project, tmp_path):
    root, params = project
    copy = tmp_path / "project"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".runs", "models", "reports"))
    uniform = params.model_copy(update={"knn": params.knn.model_copy(update={"kernel": "uniform"})})
    knn.run(uniform, copy, dataset="synthetic")
    report = json.loads((copy / "reports/synthetic/knn.json").read_text())
    assert report["kernel"] == "uniform" and report["sigma"] is None


def test_aux_vectors_and_graph_follow_a_reordered_face_cache_by_sample_id(project, tmp_path):
    root, params = project
    copy = tmp_path / "project"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns(".runs", "models", "reports"))
    order = np.random.default_rng(0).permutation(60)
    reorder_face_cache(copy / "data/synthetic/faces", order)
    joined = {}
    for where in (root, copy):
        splits = load_splits(params, where, "synthetic")
        ids = dict(sample_ids=splits.sample_ids, cache=splits.cache)
        vectors = read_aux(catalog.aux_path(where, "synthetic"), **ids)
        graph = read_graph(catalog.graph_path(where, "synthetic"), **ids)
        named = splits.sample_ids
        edges = {named[r]: list(named[graph.indices[i]]) for i, r in enumerate(graph.rows)}
        joined[where] = vectors, edges, splits
    (before, graph_before, splits), (after, graph_after, reordered) = joined.values()
    np.testing.assert_array_equal(after.values, before.values[order])
    np.testing.assert_array_equal(reordered.sample_ids, splits.sample_ids[order])
    assert graph_after == graph_before  # each sample keeps its own neighbours


def test_ldl_au_model_and_its_evaluation(project):
    root, _ = project
    checkpoint = load_checkpoint(root / "models/synthetic/ef-ldl_au/seed0.pt")
    assert checkpoint.arch == "efficientface" and checkpoint.classes == CLASSES
    history = (root / "reports/synthetic/curves/ef-ldl_au/seed0.csv").read_text()
    assert "train_loss_au_kl" in history.splitlines()[0]
    table = json.loads((root / "reports/synthetic/evaluate.json").read_text())["table"]
    assert set(table) == {"ldg", "ef-ldl", "ef-ldl_au"}


def test_study_runs_and_summary_table(project):
    root, _ = project
    run = json.loads((root / "reports/synthetic/study/noise2.0-seed0.json").read_text())
    assert run["noise"] == 2.0 and 0 <= run["test"]["accuracy"] <= 1
    assert (root / "models/study/synthetic/noise0.0-seed0.pt").is_file()
    rows = json.loads((root / "reports/synthetic/study.json").read_text())["rows"]
    expected = [("none (ldl)", None), ("geometry", None), ("oracle", 0.0), ("oracle", 2.0)]
    assert [(r["aux"], r["noise"]) for r in rows] == expected
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
        annotate(aux, manifest=None, crops=None, faces=None, dataset="x", seed=0)


def test_noise_levels_draw_independent_noise_shared_by_seeds(project):
    _, params = project
    seeds = {noise_seed(params.base.seed, noise) for noise in (0.0, 0.5, 1.5)}
    assert len(seeds) == 3
    assert np.isfinite(noise_seed(params.base.seed, 0.5))


def test_every_declared_output_of_the_au_stages_is_written(project, tmp_path):
    """What dvc.yaml promises: DVC fails a stage whose declared output is missing."""
    root, _ = project
    au_stages = {"aux-labels", "knn", "train-ef-au", "study", "study-summary", "aux-analysis"}
    stages = [s for s in dvc_stages(tmp_path, root / "params.yaml") if s.stage in au_stages]
    assert {stage.stage for stage in stages} == au_stages
    for stage in stages:
        missing = [out for out in stage.outs if not (root / out).exists()]
        assert not missing, (stage.name, missing)
