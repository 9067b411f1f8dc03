"""The per-dataset presets reproduce METHOD.md's hyper-parameter table and pass the schema."""

from __future__ import annotations

import copy

import pytest
import yaml

from lightfer.params import validate_params
from tests.conftest import PROJECT_ROOT, default_params

# METHOD.md: (epochs, batch size, optimiser, schedule) of EfficientFace and of the LDG.
TABLE = {
    "rafdb": {"ef": (100, 128, "radam", "plateau"), "ldg": (100, 16, "sgd", "step")},
    "ferplus": {"ef": (100, 128, "radam", "step"), "ldg": (100, 16, "sgd", "step")},
    "caers": {"ef": (350, 128, "radam", "onecycle"), "ldg": (300, 64, "adam", "onecycle")},
    "affectnet": {"ef": (20, 16, "sgd", "step"), "ldg": (100, 16, "sgd", "step")},
}


def _merge(base: dict, update: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


@pytest.mark.parametrize("name", sorted(TABLE))
def test_preset_matches_method_table(name):
    preset = yaml.safe_load((PROJECT_ROOT / "presets" / f"{name}.yaml").read_text())
    params = validate_params(_merge(default_params(), preset))
    assert params.align.crop_size == 224
    for model, (epochs, batch_size, optimizer, schedule) in TABLE[name].items():
        train = getattr(params.train, model).train
        assert (train.epochs, train.batch_size, train.optimizer, train.schedule) == (
            epochs, batch_size, optimizer, schedule,
        )  # fmt: skip
        assert train.lr == 0.001
    assert params.train.ldg.arch == "resnet50"
    assert params.train.ef.train.balanced == (name == "affectnet")


def test_every_preset_is_tested():
    assert sorted(p.stem for p in (PROJECT_ROOT / "presets").glob("*.yaml")) == sorted(TABLE)
