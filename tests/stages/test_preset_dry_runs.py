"""Paper-scale dry runs: each dataset preset, applied as a user applies it, runs the whole DAG.

For each of `presets/*.yaml`, a copy of the project gets a small dataset in that dataset's
real on-disk layout (images of real size; CAER-S frames with a face MTCNN finds), then
`lightfer params preset NAME`, then the user's own dry-run override: one optimiser step per
epoch, one epoch per training run, one seed, one thread per process (the tests run two at a
time), a cheap benchmark, no AU-noise study (it needs a synthetic dataset). Everything
else is the preset's: 224-pixel crops, the ResNet-50 LDG, EfficientFace, the batch sizes
(the dataset holds a full batch), optimisers, schedules, class-balanced resampling and
data-loader workers. So a shape, memory, schema or preset mistake fails here, in minutes
on two CPU cores, not hours into a run on a GPU server.

Each run's wall time and peak memory (the largest resident set of any process in `dvc
repro`'s tree) are printed (`pytest -s`) and collected in `<pytest's base temporary
folder>/preset_dry_runs.json`.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from lightfer.labels import CLASSES
from lightfer.models.checkpoint import load_checkpoint
from tests.conftest import PROJECT_ROOT
from tests.data.fixtures import (
    AffectRow,
    FerRow,
    astronaut_frame,
    build_affectnet_csv,
    build_caers,
    build_fer2013_csvs,
    build_rafdb,
    grey_face,
    landmark_string,
    rendered_face,
)
from tests.test_pipeline import ENV, _make_project

# Minutes, not seconds, on two CPU cores: EfficientFace's step at batch 128 and the LDG's
# soft labels for every face are the bulk of it.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

PRESETS = sorted(p.stem for p in (PROJECT_ROOT / "presets").glob("*.yaml"))
RESULTS_FILE = "preset_dry_runs.json"
TEST_PER_CLASS = 2

# Codes of each dataset's label files, in canonical class order (neutral, happiness,
# sadness, surprise, fear, disgust, anger).
RAFDB_CODES = (7, 4, 5, 1, 2, 3, 6)
FERPLUS_VOTE_COLUMNS = (0, 1, 3, 2, 6, 5, 4)  # columns: neutral, happiness, surprise, ...
CAERS_FOLDERS = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger")


def _rafdb(root: Path, n_train: int) -> dict[str, Any]:
    """Aligned 100-pixel faces, as RAF-DB ships them."""
    names = [(f"train_{i + 1:05d}.jpg", RAFDB_CODES[i % 7]) for i in range(n_train)]
    names += [(f"test_{i + 1:04d}.jpg", RAFDB_CODES[i % 7]) for i in range(7 * TEST_PER_CLASS)]
    build_rafdb(root, names, image=lambda name: rendered_face(name, 100).image)
    return {"kind": "rafdb", "root": str(root)}


def _ferplus(root: Path, n_train: int) -> dict[str, Any]:
    """The CSV pair of 48-pixel grey faces, with a clear majority of votes per image."""

    def row(usage: str, index: int) -> FerRow:
        votes = [0] * 10
        votes[FERPLUS_VOTE_COLUMNS[index % 7]] = 8
        votes[FERPLUS_VOTE_COLUMNS[(index + 1) % 7]] = 2
        return FerRow(usage, f"fer{index:07d}.png", tuple(votes))

    n_test = 7 * TEST_PER_CLASS
    rows = [row("Training", i) for i in range(n_train)]
    rows += [row("PublicTest", n_train + i) for i in range(n_test)]
    rows += [row("PrivateTest", n_train + n_test + i) for i in range(n_test)]
    build_fer2013_csvs(root, rows, image=grey_face)
    return {"kind": "ferplus", "root": str(root)}


def _caers(root: Path, n_train: int) -> dict[str, Any]:
    """256-pixel frames around a real face, detected by MTCNN in `align`."""
    build_caers(root, CAERS_FOLDERS, math.ceil(n_train / 7), ("train",), image=astronaut_frame)
    build_caers(root, CAERS_FOLDERS, TEST_PER_CLASS, ("test",), image=astronaut_frame)
    return {"kind": "caers", "root": str(root)}


def _affectnet(root: Path, n_train: int) -> dict[str, Any]:
    """256-pixel scenes with the face box and 68 landmarks in the CSV, as AffectNet has."""

    def row(folder: str, index: int) -> AffectRow:
        path = f"{folder}/{index:05d}.jpg"
        face = rendered_face(path, 256)
        x0, y0, x1, y1 = face.box.tolist()
        box = (x0, y0, x1 - x0, y1 - y0)
        return AffectRow(path, index % 7, box=box, landmarks=landmark_string(face.landmarks))

    files = {
        "training.csv": [row("1", i) for i in range(n_train)],
        "validation.csv": [row("2", i) for i in range(7 * TEST_PER_CLASS)],
    }
    build_affectnet_csv(root, files, image=lambda path: rendered_face(path, 256).image)
    return {"kind": "affectnet", "root": str(root)}


DATASETS: dict[str, Callable[[Path, int], dict[str, Any]]] = {
    "rafdb": _rafdb,
    "ferplus": _ferplus,
    "caers": _caers,
    "affectnet": _affectnet,
}


def _train_images(train: dict[str, Any]) -> int:
    """Training images for a full batch of either model once validation is held out.

    Validation takes `round(val_fraction * n)` of each class's n images, so every class
    gets enough images for that to be at least one (a run without validation writes no
    validation curve, which the report stage needs).
    """
    batch = max(train[model]["train"]["batch_size"] for model in ("ldg", "ef"))
    fraction = train["val_fraction"]
    for_val = math.ceil(0.5 / fraction) + 1 if fraction else 0
    per_class = max(math.ceil(batch / (1 - fraction) / 7) + 1, for_val)
    return 7 * per_class


def _dry_run(raw: dict[str, Any], name: str, dataset: dict[str, Any]) -> dict[str, Any]:
    """The user's own edits after the preset: their dataset, and a run of minutes."""
    raw["datasets"] = {name: dataset}
    raw["base"]["threads"] = 1  # the tests run two at a time on two cores
    raw["study"]["datasets"] = []
    raw["train"]["seeds"] = [0]
    for model in ("ldg", "ef"):
        raw["train"][model]["train"].update(epochs=1, max_steps_per_epoch=1)
    cheap = {"batch_sizes": [1], "repeats": 1, "block_seconds": 0.05}
    raw["bench"].update(cheap, models=["efficientface"], onnx=False, int8=False, memory=False)
    raw["bench"].update(openvino=False, threads=[1])
    raw["bench"]["agreement"]["dataset"] = name  # the checkpoint this run trains
    return raw


def _run(args: list[str], root: Path, log: Path) -> tuple[int, float, float]:
    """Run `args` in `root` with output to `log`: exit status, seconds and peak RSS (MB).

    `os.wait4` gives the child's resource usage with that of every descendant it waited
    for: `ru_maxrss` is the largest resident set among them (KiB on Linux).
    """
    start = time.perf_counter()
    with log.open("w") as out:
        proc = subprocess.Popen(args, cwd=root, env=ENV, stdout=out, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024


def _check(args: list[str], root: Path) -> str:
    proc = subprocess.run(args, cwd=root, env=ENV, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str, dict], Path]:
    """Record one preset's figures in the shared JSON file; returns the file."""
    path = tmp_path_factory.getbasetemp() / RESULTS_FILE
    collected: dict[str, Any] = {}

    def record(name: str, figures: dict[str, Any]) -> Path:
        collected[name] = figures
        path.write_text(json.dumps(collected, indent=2, sort_keys=True) + "\n")
        return path

    return record


@pytest.mark.parametrize("name", PRESETS)
def test_preset_runs_the_whole_dag_at_paper_scale(name: str, tmp_path: Path, results):
    root = _make_project(tmp_path / "project", {})
    shutil.copy(PROJECT_ROOT / "params.yaml", root / "params.yaml")  # comments and all
    shutil.copytree(PROJECT_ROOT / "presets", root / "presets")
    applied = _check(["lightfer", "params", "preset", name], root)
    assert "applied preset" in applied

    params_file = root / "params.yaml"
    raw = yaml.safe_load(params_file.read_text())
    n_train = _train_images(raw["train"])
    dataset = DATASETS[name](tmp_path / name, n_train)
    params_file.write_text(yaml.safe_dump(_dry_run(raw, name, dataset), sort_keys=False))
    _check(["lightfer", "params"], root)

    stages = _check(["dvc", "stage", "list", "--all", "--names-only"], root).split()
    log = tmp_path / "repro.log"
    code, seconds, peak_mb = _run(["dvc", "repro"], root, log)
    text = log.read_text()
    assert code == 0, text[-6000:]
    batches = {model: raw["train"][model]["train"]["batch_size"] for model in ("ldg", "ef")}
    figures = {"wall_s": round(seconds, 1), "peak_rss_mb": round(peak_mb)}
    figures.update(stages=len(stages), train_images=n_train, batch_sizes=batches)
    where = results(name, figures)
    print(
        f"\n{name}: dvc repro of {len(stages)} stages in {seconds:.1f} s, "
        f"peak RSS {peak_mb:.0f} MB ({where})"
    )

    assert sorted(re.findall(r"Running stage '([^']+)'", text)) == sorted(stages)
    assert json.loads(_check(["dvc", "status", "--json"], root)) == {}
    lock = yaml.safe_load((root / "dvc.lock").read_text())["stages"]
    assert sorted(lock) == sorted(stages)
    for stage, entry in lock.items():
        for out in entry.get("outs", []):
            assert (root / out["path"]).exists(), f"{stage} did not write {out['path']}"

    align = json.loads((root / "reports" / name / "align.json").read_text())
    assert align["ok"] == align["total"], align
    for model, arch in (("ldg", "resnet50"), ("ef-ldl/seed0", "efficientface")):
        checkpoint = load_checkpoint(root / "models" / name / f"{model}.pt")
        assert (checkpoint.arch, checkpoint.image_size) == (arch, 224)
        assert tuple(checkpoint.classes) == CLASSES
    summary = json.loads((root / "reports" / name / "train" / "ldg.json").read_text())
    assert summary["epochs_completed"] == 1
