"""The training stages end to end on a tiny synthetic dataset: LDG, soft labels, EF, evaluate."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from lightfer.errors import StageOutputError
from lightfer.labels import CLASSES
from lightfer.models.checkpoint import load_checkpoint
from lightfer.params import load_params
from lightfer.splits import load_splits
from lightfer.training.run import cached_soft_labels
from stages import (
    align,
    aux_labels,
    evaluate,
    knn,
    prepare,
    soft_labels,
    train_ef,
    train_ef_au,
    train_ldg,
)
from tests.conftest import PROJECT_ROOT, tiny_params
from tests.stages.face_cache import reorder_face_cache

pytestmark = pytest.mark.slow

# dvc.yaml's command of train-ef@synthetic-sll, after `python`.
TRAIN_EF_SLL = ["-m", "stages.train_ef", "--dataset", "synthetic", "--regime", "sll"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("project")
    raw = tiny_params()
    raw["train"]["seeds"] = [0]
    for model in ("ldg", "ef"):
        raw["train"][model]["train"].update(epochs=2, batch_size=16)
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(root / "params.yaml")
    for stage in (prepare, align, train_ldg, soft_labels, aux_labels, knn):
        stage.run(params, root, dataset="synthetic")
    for regime in ("sll", "ldl"):
        train_ef.run(params, root, dataset="synthetic", regime=regime)
    train_ef_au.run(params, root, dataset="synthetic")
    summary = evaluate.run(params, root, dataset="synthetic")
    return root, params, summary


def test_every_model_is_a_checkpoint_with_its_class_order(trained):
    root, _, _ = trained
    for name, arch in (("ldg", "resnet18"), ("ef-sll/seed0", "efficientface")):
        checkpoint = load_checkpoint(root / f"models/synthetic/{name}.pt")
        assert checkpoint.arch == arch
        assert checkpoint.classes == CLASSES
        assert checkpoint.image_size == 48
    assert not any((root / ".runs").iterdir()), "finished runs leave no resumable state"


def stored_soft_labels(params, root):
    return cached_soft_labels(root, "synthetic", load_splits(params, root, "synthetic"))


def test_soft_labels_cover_every_face_and_report_confidence(trained):
    root, params, _ = trained
    soft = stored_soft_labels(params, root)
    np.testing.assert_allclose(soft.sum(1), 1.0, atol=1e-5)
    report = json.loads((root / "reports/synthetic/soft_labels.json").read_text())
    assert set(report) >= {"mean_top_probability_train", "mean_top_probability_held_out"}


def test_soft_labels_from_another_ldg_are_refused(trained):
    root, params, _ = trained
    ldg = root / "models/synthetic/ldg.pt"
    original = ldg.read_bytes()
    try:
        ldg.write_bytes(original + b"\0")
        with pytest.raises(StageOutputError, match="re-run the soft-labels stage"):
            stored_soft_labels(params, root)
    finally:
        ldg.write_bytes(original)


def test_a_reordered_face_cache_is_joined_to_its_own_soft_labels(trained, tmp_path):
    """Soft labels are keyed by sample_id: a cache in another order gets each sample's own
    distribution back, in the new order (realigned, not refused: the ids say which is which)."""
    root, params, _ = trained
    project = tmp_path / "project"
    shutil.copytree(root, project, ignore=shutil.ignore_patterns(".runs"))
    order = np.random.default_rng(0).permutation(60)
    reorder_face_cache(project / "data/synthetic/faces", order)
    original = stored_soft_labels(params, root)
    np.testing.assert_array_equal(stored_soft_labels(params, project), original[order])


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda table: table.slice(1), "has no row for 1 samples of the face cache"),
        (
            lambda table: table.set_column(0, "sample_id", pa.array(["elsewhere"] * len(table))),
            "repeats sample_ids",
        ),
        (
            lambda table: table.set_column(
                0, "sample_id", pa.array(["x/" + i for i in table.column(0).to_pylist()])
            ),
            "holds 60 sample_ids that the face cache",
        ),
    ],
)
def test_soft_labels_of_other_samples_are_refused_naming_both_files(
    trained, tmp_path, edit, message
):
    root, params, _ = trained
    project = tmp_path / "project"
    shutil.copytree(root, project, ignore=shutil.ignore_patterns(".runs"))
    path = project / "data/synthetic/soft_labels.parquet"
    table = pq.read_table(path)
    pq.write_table(edit(table).replace_schema_metadata(table.schema.metadata), path)
    with pytest.raises(StageOutputError, match=message) as refused:
        stored_soft_labels(params, project)
    assert str(path) in str(refused.value)
    assert str(project / "data/synthetic/faces") in str(refused.value)


def test_evaluate_writes_the_table_and_confusion_matrices(trained):
    root, _, summary = trained
    assert set(summary["runs"]) == {"ldg", "ef-sll-seed0", "ef-ldl-seed0", "ef-ldl_au-seed0"}
    for run in summary["runs"].values():
        assert 0.0 <= run["accuracy"] <= 1.0
        assert run["kl_divergence"] >= 0.0
        assert sum(map(sum, run["confusion_matrix"])) == summary["test_samples"] == 20
    assert set(summary["table"]) == {"ldg", "ef-sll", "ef-ldl", "ef-ldl_au"}
    table = (root / "reports/synthetic/table2.md").read_text()
    assert "| EF LDL | 1 |" in table
    assert (root / "reports/synthetic/confusion/ef-ldl-seed0.png").stat().st_size > 1000
    metrics = json.loads((root / "reports/synthetic/train/ef-sll/seed0.json").read_text())
    assert metrics["selected_by"] == "val_accuracy"
    assert "comparability_only_best_test_accuracy" in metrics


def test_a_killed_training_stage_resumes_to_the_same_model(trained, tmp_path):
    """kill -9 during `train-ef`, start it again: the model equals an uninterrupted run's."""
    root, _, _ = trained
    project = tmp_path / "project"
    shutil.copytree(root, project, ignore=shutil.ignore_patterns("ef-*", ".runs"))
    command = [sys.executable, *TRAIN_EF_SLL, "--params", str(project / "params.yaml")]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    proc = subprocess.Popen(command, cwd=project, env=env, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not list(project.glob(".runs/train-ef@synthetic-sll-0/*/last.pt")):
        assert proc.poll() is None, "the stage ended before its first checkpoint"
        assert time.monotonic() < deadline
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (project / "models/synthetic/ef-sll/seed0.pt").exists()
    subprocess.run(command, cwd=project, env=env, check=True, stderr=subprocess.DEVNULL)
    resumed = (project / "models/synthetic/ef-sll/seed0.pt").read_bytes()
    assert resumed == (root / "models/synthetic/ef-sll/seed0.pt").read_bytes()
    for name in ("curves/ef-sll/seed0.csv", "train/ef-sll/seed0.json"):
        assert (project / "reports/synthetic" / name).read_bytes() == (
            root / "reports/synthetic" / name
        ).read_bytes()


def test_seeds_trained_in_parallel_equal_seeds_trained_one_by_one(trained, tmp_path):
    """`train.workers: 2` on 2 threads trains each seed in a 1-thread process: the models
    are those of 1-thread runs one after another (only the wall time changes)."""
    root, _, _ = trained
    weights = {}
    for workers, threads in ((2, 2), (1, 1)):
        project = tmp_path / f"workers{workers}"
        shutil.copytree(root, project, ignore=shutil.ignore_patterns("ef-*", ".runs"))
        raw = yaml.safe_load((project / "params.yaml").read_text())
        raw["train"].update(seeds=[0, 1], workers=workers)
        raw["base"]["threads"] = threads
        (project / "params.yaml").write_text(yaml.safe_dump(raw))
        summaries = train_ef.run(
            load_params(project / "params.yaml"), project, dataset="synthetic", regime="sll"
        )
        assert list(summaries) == ["ef-sll-seed0", "ef-sll-seed1"]
        weights[workers] = [
            load_checkpoint(project / f"models/synthetic/ef-sll/seed{seed}.pt").state_dict
            for seed in (0, 1)
        ]
    for parallel, sequential in zip(weights[2], weights[1], strict=True):
        assert parallel.keys() == sequential.keys()
        for name, tensor in parallel.items():
            assert torch.equal(tensor, sequential[name]), name
    assert not torch.equal(weights[2][0]["fc.weight"], weights[2][1]["fc.weight"])


def test_train_ef_runs_data_parallel_under_torchrun(trained, tmp_path):
    """The stage's own entry point under `torchrun --nproc_per_node=2` (gloo on the CPU)."""
    root, _, _ = trained
    project = tmp_path / "project"
    shutil.copytree(root, project, ignore=shutil.ignore_patterns("ef-*", ".runs"))
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    params_file = ["--params", str(project / "params.yaml")]
    command = [sys.executable, *torchrun, *TRAIN_EF_SLL, *params_file]
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "OMP_NUM_THREADS": "1"}
    subprocess.run(command, cwd=project, env=env, check=True, capture_output=True, timeout=300)
    checkpoint = load_checkpoint(project / "models/synthetic/ef-sll/seed0.pt")
    assert checkpoint.arch == "efficientface" and checkpoint.classes == CLASSES
    assert not any((project / ".runs").iterdir())
    ours = json.loads((project / "reports/synthetic/train/ef-sll/seed0.json").read_text())
    single = json.loads((root / "reports/synthetic/train/ef-sll/seed0.json").read_text())
    assert ours.keys() == single.keys() and ours["epochs_completed"] == 2
    history = [
        (project / "reports/synthetic/curves/ef-sll/seed0.csv").read_text().splitlines(),
        (root / "reports/synthetic/curves/ef-sll/seed0.csv").read_text().splitlines(),
    ]
    assert history[0][0] == history[1][0]  # the same columns, one row per epoch
    column = history[0][0].split(",").index("train_loss")
    first = [float(lines[1].split(",")[column]) for lines in history]
    # Same global batches; only batch norm sees half a batch per rank on the CPU.
    assert first[0] == pytest.approx(first[1], rel=0.1)


def test_online_soft_labels_train_the_ldl_regime(trained, tmp_path):
    root, _, _ = trained
    project = tmp_path / "project"
    shutil.copytree(root, project, ignore=shutil.ignore_patterns("ef-*", ".runs"))
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["soft_labels"]["mode"] = "online"
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    (project / "data/synthetic/soft_labels.parquet").unlink()  # online needs no cache
    summaries = train_ef.run(
        load_params(project / "params.yaml"), project, dataset="synthetic", regime="ldl"
    )
    assert summaries["ef-ldl-seed0"]["epochs_completed"] == 2
    assert load_checkpoint(project / "models/synthetic/ef-ldl/seed0.pt").arch == "efficientface"


def test_cross_fitted_soft_labels_come_from_ldgs_that_never_saw_the_image(trained, tmp_path):
    root, _, _ = trained
    project = tmp_path / "project"
    shutil.copytree(root, project, ignore=shutil.ignore_patterns(".runs"))
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["soft_labels"]["folds"] = 2
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    params = load_params(project / "params.yaml")
    summary = soft_labels.run(params, project, dataset="synthetic")
    assert summary["folds"] == 2
    crossed = stored_soft_labels(params, project)
    plain = stored_soft_labels(params, root)
    np.testing.assert_allclose(crossed.sum(1), 1.0, atol=1e-5)
    splits = load_splits(params, project, "synthetic")
    held_out = np.concatenate([splits.val, splits.test])
    np.testing.assert_allclose(crossed[held_out], plain[held_out], atol=1e-6)
    assert not np.allclose(crossed[splits.train], plain[splits.train], atol=1e-3)
    assert not any((project / ".runs").iterdir())
