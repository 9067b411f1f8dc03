"""The per-dataset presets reproduce docs/method.md's hyper-parameter table and pass the schema;
`lightfer params preset` merges one into a params file."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lightfer.cli import app
from lightfer.params import load_params, validate_params
from lightfer.presets import merge
from tests.conftest import PROJECT_ROOT, default_params

# docs/method.md: (epochs, batch size, optimiser, schedule) of EfficientFace and of the LDG.
TABLE = {
    "rafdb": {"ef": (100, 128, "radam", "plateau"), "ldg": (100, 16, "sgd", "step")},
    "ferplus": {"ef": (100, 128, "radam", "step"), "ldg": (100, 16, "sgd", "step")},
    "caers": {"ef": (350, 128, "radam", "onecycle"), "ldg": (300, 64, "adam", "onecycle")},
    "affectnet": {"ef": (20, 16, "sgd", "step"), "ldg": (100, 16, "sgd", "step")},
}
RAFDB_KEYS = 23  # the values presets/rafdb.yaml sets
SEEDS = {"rafdb": 5, "ferplus": 5, "caers": 2, "affectnet": 2}  # the results table's runs


@pytest.mark.parametrize("name", sorted(TABLE))
def test_preset_matches_method_table(name):
    preset = yaml.safe_load((PROJECT_ROOT / "presets" / f"{name}.yaml").read_text())
    params = validate_params(merge(default_params(), preset))
    assert params.align.crop_size == 224
    for model, (epochs, batch_size, optimizer, schedule) in TABLE[name].items():
        train = getattr(params.train, model).train
        assert (train.epochs, train.batch_size, train.optimizer, train.schedule) == (
            epochs, batch_size, optimizer, schedule,
        )  # fmt: skip
        assert train.lr == 0.001
    assert params.train.ldg.arch == "resnet50"
    assert params.train.ef.train.balanced == (name == "affectnet")
    assert len(params.train.seeds) == SEEDS[name]


def test_every_preset_is_tested():
    assert sorted(p.stem for p in (PROJECT_ROOT / "presets").glob("*.yaml")) == sorted(TABLE)


def _preset(name: str) -> dict:
    return yaml.safe_load((PROJECT_ROOT / "presets" / f"{name}.yaml").read_text())


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project folder with the repository's params.yaml (comments included) and presets."""
    shutil.copy(PROJECT_ROOT / "params.yaml", tmp_path / "params.yaml")
    shutil.copytree(PROJECT_ROOT / "presets", tmp_path / "presets")
    return tmp_path


def _preset_cli(*args: str):
    return CliRunner().invoke(app, ["params", "preset", *args])


def test_merge_updates_mappings_and_replaces_the_rest():
    base = {"a": {"b": 1, "c": [1, 2], "d": {"e": 1}}, "f": 1}
    update = {"a": {"c": [3], "d": {"g": 2}}, "h": {"i": 1}}
    expected = {"a": {"b": 1, "c": [3], "d": {"e": 1, "g": 2}}, "f": 1, "h": {"i": 1}}
    assert merge(base, update) == expected
    assert base == {"a": {"b": 1, "c": [1, 2], "d": {"e": 1}}, "f": 1}


def test_applying_a_preset_merges_it_and_prints_each_change(project: Path):
    file = project / "params.yaml"
    result = _preset_cli("rafdb", "--file", str(file))
    assert result.exit_code == 0, result.output
    counts = re.search(
        rf"{re.escape(str(file))}: applied preset rafdb: (\d+) key\(s\) changed, (\d+) already set",
        result.stdout,
    )
    assert counts and sum(map(int, counts.groups())) == RAFDB_KEYS, result.stdout
    assert "  align.crop_size: 48 -> 224\n" in result.stdout
    assert "  train.ldg.train.momentum: (not set) -> 0.9\n" in result.stdout
    assert "  train.ldg.train.augment.crop: none -> resized\n" in result.stdout
    assert "comments were dropped" in result.stderr
    written = yaml.safe_load(file.read_text())
    assert written == merge(default_params(), _preset("rafdb"))
    assert load_params(file).train.ldg.arch == "resnet50"
    assert "regimes: [sll, ldl]" in file.read_text()  # short lists stay on one line
    assert not [p.name for p in project.iterdir() if p.name.startswith(".")]  # no temporaries

    again = _preset_cli("rafdb", "--file", str(file))
    assert again.exit_code == 0, again.output
    assert f"already has preset rafdb's {RAFDB_KEYS} setting(s); unchanged" in again.stdout


def test_dry_run_writes_nothing(project: Path):
    file = project / "params.yaml"
    before = file.read_text()
    result = _preset_cli("affectnet", "--file", str(file), "--dry-run")
    assert result.exit_code == 0, result.output
    assert "would apply (--dry-run, nothing written) preset affectnet" in result.stdout
    assert "train.ef.train.balanced: (not set) -> true" in result.stdout
    assert file.read_text() == before


def test_an_unknown_preset_lists_the_available_ones(project: Path):
    result = _preset_cli("raf", "--file", str(project / "params.yaml"))
    assert result.exit_code == 1
    assert "no preset 'raf' in" in result.stderr
    assert "available: affectnet, caers, ferplus, rafdb" in result.stderr
    result = _preset_cli("rafdb", "--file", str(project / "params.yaml"), "--presets", "nowhere")
    assert result.exit_code == 1
    assert "nowhere (no such folder); available: none" in result.stderr


def test_a_preset_that_breaks_the_schema_writes_nothing(project: Path):
    file = project / "params.yaml"
    before = file.read_text()
    (project / "presets" / "typo.yaml").write_text("align:\n  crop_sise: 224\n")
    result = _preset_cli("typo", "--file", str(file))
    assert result.exit_code == 1
    assert f"{file} with preset typo is invalid:" in result.stderr
    assert "align.crop_sise: unknown key; did you mean 'crop_size'?" in result.stderr
    assert file.read_text() == before


def test_without_a_command_params_still_validates(project: Path):
    result = CliRunner().invoke(app, ["params", "--file", str(project / "params.yaml")])
    assert result.exit_code == 0, result.output
    assert "valid (1 dataset(s): synthetic)" in result.stdout
