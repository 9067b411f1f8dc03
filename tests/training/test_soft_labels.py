"""Soft labels from a frozen LDG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightfer.errors import StageOutputError
from lightfer.faces.cache import load_face_cache
from lightfer.models import create_model
from lightfer.splits import usable_rows
from lightfer.training.config import AugmentConfig
from lightfer.training.data import FaceDataset, make_loader
from lightfer.training.loop import evaluate
from lightfer.training.soft_labels import (
    OnlineSoftLabels,
    predict_soft_labels,
    read_soft_labels,
    write_soft_labels,
)
from tests.training.cache import write_face_cache

CPU = torch.device("cpu")


def test_soft_labels_fill_served_rows_and_temperature_flattens(tmp_path):
    crops, table = load_face_cache(write_face_cache(tmp_path, n_train=14, n_test=7))
    rows = usable_rows(table, "test")
    dataset = FaceDataset(
        crops,
        rows,
        table.column("label").to_numpy(),
        mean=(0.3,) * 3,
        std=(0.2,) * 3,
        image_size=32,
    )
    loader = make_loader(dataset, batch_size=4, train=False)
    torch.manual_seed(0)
    ldg = create_model("resnet18")
    before = {k: v.clone() for k, v in ldg.state_dict().items()}
    soft = predict_soft_labels(ldg, loader, CPU, num_rows=len(crops))
    assert soft.shape == (21, 7) and np.isnan(soft[:14]).all()
    assert np.allclose(soft[rows].sum(1), 1, atol=1e-5)
    assert np.allclose(soft[rows], evaluate(ldg, loader, CPU)["probs"])
    assert all(torch.equal(before[k], v) for k, v in ldg.state_dict().items())
    flat = predict_soft_labels(ldg, loader, CPU, num_rows=len(crops), temperature=100.0)
    assert np.ptp(flat[rows], 1).max() < np.ptp(soft[rows], 1).max()
    with pytest.raises(ValueError, match="temperature 0 must be positive"):
        predict_soft_labels(ldg, loader, CPU, num_rows=len(crops), temperature=0)


def test_online_soft_labels_score_the_augmented_batch_the_student_sees(tmp_path):
    crops, table = load_face_cache(write_face_cache(tmp_path, n_train=16, n_test=4))
    rows = usable_rows(table, "train")
    dataset = FaceDataset(
        crops,
        rows,
        table.column("label").to_numpy(),
        mean=(0.3,) * 3,
        std=(0.2,) * 3,
        image_size=32,
        augment=AugmentConfig(),
    )
    loader = make_loader(dataset, batch_size=4, train=True, seed=3)
    torch.manual_seed(0)
    ldg = create_model("resnet18").eval()
    online = OnlineSoftLabels(loader, ldg, CPU, temperature=2.0)
    assert len(online) == len(loader) and online.sampler is loader.sampler
    for plain, scored in zip(loader, online, strict=True):
        torch.testing.assert_close(scored.images, plain.images)
        with torch.no_grad():
            expected = torch.softmax(ldg(plain.images) / 2.0, dim=1)
        torch.testing.assert_close(scored.soft, expected)


def test_stored_soft_labels_are_read_back_by_sample_id_from_their_ldg_only(tmp_path):
    ldg = tmp_path / "ldg.pt"
    ldg.write_bytes(b"weights")
    ids = np.array(["a", "b", "c", "d"], dtype=object)
    soft = np.random.default_rng(0).dirichlet(np.ones(7), size=4).astype(np.float32)
    path = tmp_path / "soft_labels.parquet"
    write_soft_labels(path, soft, ids, rows=np.array([0, 2, 3]), ldg=ldg)
    required = np.array([True, False, True, True])
    read = read_soft_labels(path, ldg=ldg, sample_ids=ids, cache=tmp_path, required=required)
    np.testing.assert_array_equal(read[[0, 2, 3]], soft[[0, 2, 3]])
    assert np.isnan(read[1]).all()
    order = np.array([3, 1, 0, 2])
    moved = read_soft_labels(
        path, ldg=ldg, sample_ids=ids[order], cache=tmp_path, required=required[order]
    )
    np.testing.assert_array_equal(moved, read[order])
    with pytest.raises(StageOutputError, match=r"has no row for 1 samples of the face cache"):
        read_soft_labels(path, ldg=ldg, sample_ids=ids, cache=tmp_path)
    ldg.write_bytes(b"other weights")
    with pytest.raises(StageOutputError, match="re-run the soft-labels stage"):
        read_soft_labels(path, ldg=ldg, sample_ids=ids, cache=tmp_path, required=required)
