"""`lightfer predict` without `--model`: the newest checkpoint `dvc repro` trained, or why not."""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import torch
from typer.testing import CliRunner

from lightfer.catalog import newest_expression_model
from lightfer.cli import app
from lightfer.labels import CLASSES
from lightfer.models import create_model
from lightfer.models.checkpoint import save_checkpoint


def _checkpoint(path: Path, mtime: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    save_checkpoint(
        path,
        create_model("efficientface"),
        arch="efficientface",
        classes=CLASSES,
        image_size=48,
        mean=(0.5, 0.5, 0.5),
        std=(0.25, 0.25, 0.25),
    )
    os.utime(path, (mtime, mtime))
    return path


def _touch(path: Path, mtime: float) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    os.utime(path, (mtime, mtime))


def test_the_newest_trained_model_is_chosen_not_the_ldg_or_the_study(tmp_path):
    models = tmp_path / "models"
    _touch(models / "rafdb" / "ef-ldl" / "seed0.pt", 100)
    _touch(models / "synthetic" / "ef-sll" / "seed1.pt", 200)
    _touch(models / "synthetic" / "ldg.pt", 300)
    _touch(models / "study" / "synthetic" / "noise0.1-seed0.pt", 400)
    _touch(models / "synthetic" / "notes.txt", 500)
    assert newest_expression_model(tmp_path) == models / "synthetic" / "ef-sll" / "seed1.pt"
    assert newest_expression_model(tmp_path / "elsewhere") is None


def test_predict_without_model_says_which_checkpoint_it_uses(tmp_path, monkeypatch):
    newest = _checkpoint(tmp_path / "models" / "synthetic" / "ef-ldl" / "seed0.pt", 200)
    _touch(tmp_path / "models" / "synthetic" / "ef-sll" / "seed0.pt", 100)  # older, unreadable
    photo = tmp_path / "blank.png"
    assert cv2.imwrite(str(photo), np.full((64, 64, 3), 128, np.uint8))
    monkeypatch.chdir(tmp_path)
    args = ["predict", "blank.png", "--out", "rows.csv", "--threads", "1", "--no-progress"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    chosen = newest.relative_to(tmp_path)
    assert f"no --model given: using the newest trained checkpoint, {chosen}\n" in result.stderr
    assert "1 image(s)/frame(s) without a face" in result.stdout


def test_predict_without_model_or_checkpoints_says_where_models_come_from(tmp_path, monkeypatch):
    assert cv2.imwrite(str(tmp_path / "blank.png"), np.zeros((32, 32, 3), np.uint8))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["predict", "blank.png", "--out", "rows.csv"])
    assert result.exit_code == 1, result.output
    assert result.stderr.count("\n") == 1
    for part in ("no --model given", "`dvc repro` trains them into models/<dataset>/", ".xml"):
        assert part in result.stderr
    assert not (tmp_path / "rows.csv").exists()
