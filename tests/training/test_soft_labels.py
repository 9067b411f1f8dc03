"""Soft labels from a frozen LDG."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lightfer.faces.cache import load_face_cache
from lightfer.models import create_model
from lightfer.training.config import AugmentConfig
from lightfer.training.data import FaceDataset, make_loader, usable_rows
from lightfer.training.loop import evaluate
from lightfer.training.soft_labels import OnlineSoftLabels, predict_soft_labels
from tests.training.cache import write_face_cache

CPU = torch.device("cpu")


def test_soft_labels_fill_served_rows_and_temperature_flattens(tmp_path):
    crops, table = load_face_cache(write_face_cache(tmp_path, n_train=14, n_test=7))
    rows = usable_rows(table, "test")
    dataset = FaceDataset(crops, rows, table.column("label").to_numpy(), mean=(0.3,) * 3,
                          std=(0.2,) * 3, image_size=32)  # fmt: skip
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
    dataset = FaceDataset(crops, rows, table.column("label").to_numpy(), mean=(0.3,) * 3,
                          std=(0.2,) * 3, image_size=32, augment=AugmentConfig())  # fmt: skip
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
