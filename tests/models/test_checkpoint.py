"""Checkpoint save/load, official-file import, class-order refusal and damaged files."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from lightfer.errors import CheckpointError, ClassOrderMismatchError, LightferError
from lightfer.labels import CLASSES
from lightfer.models import create_model
from lightfer.models.checkpoint import (
    OFFICIAL_CLASS_ORDER,
    load_checkpoint,
    save_checkpoint,
    strip_wrapper_prefixes,
)

RAFDB_MEAN = (0.57535914, 0.44928582, 0.40079932)
RAFDB_STD = (0.20735591, 0.18981615, 0.18132027)


def _save(path, model, *, arch="efficientface", classes=CLASSES, **kwargs):
    return save_checkpoint(
        path,
        model,
        arch=arch,
        classes=classes,
        image_size=112,
        mean=RAFDB_MEAN,
        std=RAFDB_STD,
        **kwargs,
    )


def _official_file(path, model: nn.Module) -> None:
    """Write `model` as upstream's main.py does: DataParallel keys under 'state_dict'."""
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)


def _same_weights(a: nn.Module, b: nn.Module, *, skip_head: bool = False) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    keys = [k for k in sa if not (skip_head and k.startswith("fc."))]
    return all(torch.equal(sa[k], sb[k]) for k in keys)


# ---------------------------------------------------------------- project format


def test_round_trip_keeps_weights_metadata_and_training_state(tmp_path):
    model = create_model("efficientface")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=15, gamma=0.1)
    model(torch.randn(2, 3, 64, 64)).sum().backward()
    optimizer.step()
    scheduler.step()
    path = _save(
        tmp_path / "ef.pt",
        model,
        dataset="rafdb",
        epoch=4,
        optimizer=optimizer,
        lr_scheduler=scheduler,
    )

    checkpoint = load_checkpoint(path)
    assert (checkpoint.source, checkpoint.arch, checkpoint.classes) == (
        "lightfer",
        "efficientface",
        CLASSES,
    )
    assert (checkpoint.image_size, checkpoint.dataset, checkpoint.epoch) == (112, "rafdb", 4)
    assert checkpoint.mean == pytest.approx(RAFDB_MEAN)
    assert checkpoint.std == pytest.approx(RAFDB_STD)

    restored = create_model("efficientface", pretrained=path)
    assert _same_weights(model, restored)
    new_optimizer = torch.optim.SGD(restored.parameters(), lr=0.1, momentum=0.9)
    new_optimizer.load_state_dict(checkpoint.optimizer)
    momentum = new_optimizer.state_dict()["state"][0]["momentum_buffer"]
    assert torch.equal(momentum, optimizer.state_dict()["state"][0]["momentum_buffer"])
    assert checkpoint.lr_scheduler["last_epoch"] == 1


def test_wrapped_model_is_saved_without_prefixes(tmp_path):
    model = create_model("resnet18")
    path = _save(tmp_path / "ldg.pt", nn.DataParallel(model), arch="resnet18")
    assert not any(k.startswith("module.") for k in load_checkpoint(path).state_dict)


def test_save_refuses_class_list_of_wrong_length(tmp_path):
    with pytest.raises(CheckpointError, match="7 outputs but 3 class names"):
        _save(tmp_path / "ef.pt", create_model("efficientface"), classes=("a", "b", "c"))


def test_save_refuses_state_weights_only_loading_cannot_read(tmp_path):
    class Scheduler:
        def state_dict(self):
            return {"lr_lambda": lambda epoch: 0.1**epoch}

    path = tmp_path / "ef.pt"
    with pytest.raises(CheckpointError, match=r"lr_scheduler.*'lr_lambda'.*function"):
        _save(path, create_model("efficientface"), lr_scheduler=Scheduler())
    assert not path.exists()


def test_failed_write_leaves_previous_file_and_no_temporary(tmp_path, monkeypatch):
    path = _save(tmp_path / "ef.pt", create_model("efficientface"), epoch=1)

    def interrupted(obj, f):
        f.write_bytes(b"partial")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        _save(path, create_model("efficientface"), epoch=2)
    assert load_checkpoint(path).epoch == 1
    assert os.listdir(tmp_path) == ["ef.pt"]


# ---------------------------------------------------------------- official files


@pytest.mark.parametrize("name", ["efficientface", "resnet18"])
def test_official_seven_class_file_loads_strictly(tmp_path, name):
    source = create_model(name)
    _official_file(tmp_path / "trained.pth.tar", source)
    checkpoint = load_checkpoint(tmp_path / "trained.pth.tar")
    assert (checkpoint.source, checkpoint.classes) == ("official", OFFICIAL_CLASS_ORDER)
    assert _same_weights(source, create_model(name, pretrained=tmp_path / "trained.pth.tar"))


@pytest.mark.parametrize("name", ["efficientface", "resnet18"])
def test_ms_celeb_pretrained_file_loads_backbone_with_new_head(tmp_path, name):
    source = create_model(name, num_classes=12_666)
    _official_file(tmp_path / "Pretrained.tar", source)
    model = create_model(name, pretrained=tmp_path / "Pretrained.tar")
    assert model.num_classes == 7
    assert _same_weights(source, model, skip_head=True)
    assert load_checkpoint(tmp_path / "Pretrained.tar").classes is None


def test_bare_state_dict_with_compile_prefix_loads(tmp_path):
    source = create_model("efficientface")
    torch.save({f"_orig_mod.{k}": v for k, v in source.state_dict().items()}, tmp_path / "b.pt")
    assert _same_weights(source, create_model("efficientface", pretrained=tmp_path / "b.pt"))


def test_strip_wrapper_prefixes():
    weights = {"module.fc.bias": torch.zeros(1), "module._orig_mod.conv1.weight": torch.zeros(1)}
    assert list(strip_wrapper_prefixes(weights)) == ["fc.bias", "conv1.weight"]


# ---------------------------------------------------------------- refusals


def test_class_order_mismatch_is_refused(tmp_path):
    swapped = ("happiness", "neutral", *CLASSES[2:])
    path = _save(tmp_path / "ef.pt", create_model("efficientface"), classes=swapped)
    with pytest.raises(ClassOrderMismatchError, match=r"happiness, neutral.*neutral, happiness"):
        create_model("efficientface", pretrained=path)


def test_other_class_order_is_accepted_when_the_run_uses_it(tmp_path):
    swapped = ("happiness", "neutral", *CLASSES[2:])
    path = _save(tmp_path / "ef.pt", create_model("efficientface"), classes=swapped)
    assert create_model("efficientface", pretrained=path, classes=swapped).num_classes == 7


def test_official_order_differs_from_a_custom_run_order(tmp_path):
    _official_file(tmp_path / "trained.pth.tar", create_model("efficientface"))
    custom = tuple(reversed(OFFICIAL_CLASS_ORDER))
    with pytest.raises(ClassOrderMismatchError):
        create_model("efficientface", pretrained=tmp_path / "trained.pth.tar", classes=custom)


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    path = _save(tmp_path / "r18.pt", create_model("resnet18"), arch="resnet18")
    with pytest.raises(CheckpointError, match="holds a 'resnet18' model, not 'efficientface'"):
        create_model("efficientface", pretrained=path)


def test_foreign_official_file_lists_key_problems(tmp_path):
    _official_file(tmp_path / "r18.tar", create_model("resnet18"))
    with pytest.raises(CheckpointError, match=r"does not fit 'efficientface' \(\d+ missing: "):
        create_model("efficientface", pretrained=tmp_path / "r18.tar")


# ---------------------------------------------------------------- damaged files


def test_truncated_file_gives_clear_error_naming_it(tmp_path):
    path = _save(tmp_path / "ef.pt", create_model("efficientface"))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"ef\.pt is truncated or corrupted") as info:
        load_checkpoint(path)
    assert isinstance(info.value, LightferError)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all"])
def test_garbage_file_gives_clear_error(tmp_path, content):
    path = tmp_path / "junk.pth"
    path.write_bytes(content)
    with pytest.raises(
        CheckpointError, match=r"junk\.pth is (truncated or corrupted|empty \(0 bytes\))"
    ):
        load_checkpoint(path)


def test_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.pt does not exist"):
        load_checkpoint(tmp_path / "nope.pt")


def test_pickled_objects_are_refused_not_executed(tmp_path):
    torch.save({"state_dict": create_model("efficientface")}, tmp_path / "module.pt")
    with pytest.raises(CheckpointError, match="weights_only=True"):
        load_checkpoint(tmp_path / "module.pt")


def test_unknown_layout(tmp_path):
    torch.save({"weights": [1, 2, 3]}, tmp_path / "odd.pt")
    with pytest.raises(CheckpointError, match=r"unknown layout \(top level: \['weights'\]\)"):
        load_checkpoint(tmp_path / "odd.pt")
