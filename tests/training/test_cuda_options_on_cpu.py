"""The GPU training path, forced on the CPU: channels-last, autocast, GradScaler, SyncBatchNorm.

A CUDA run makes these choices by itself (`auto`); here every one is forced so that the code
a GPU server runs is exercised on every machine, for each regime and each neighbour source,
through a crash and a resume, and through an ONNX export of the model it trains.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lightfer.export import export_onnx
from lightfer.faces.cache import load_face_cache
from lightfer.labels import CLASSES
from lightfer.losses import AUNeighbourKL, build_regime, ldl_au_regime
from lightfer.models import create_model
from lightfer.models.checkpoint import load_checkpoint
from lightfer.splits import usable_rows
from lightfer.training.config import AugmentConfig, TrainConfig
from lightfer.training.data import FaceDataset, make_loader
from lightfer.training.device_options import (
    DeviceOptionError,
    DeviceOptions,
    resolve_device_options,
)
from lightfer.training.loop import (
    BEST_FILE,
    HISTORY_FILE,
    STATE_FILE,
    ModelInfo,
    fit,
    load_training_state,
)
from lightfer.training.neighbours import NeighbourImages
from lightfer.training.soft_labels import OnlineSoftLabels
from tests.training.cache import random_soft_labels_and_graph, write_face_cache
from tests.training.crashing import Crash, CrashingLoader

CPU = torch.device("cpu")
MEAN, STD = (0.3, 0.3, 0.3), (0.2, 0.2, 0.2)
SIZE = 32
INFO = ModelInfo("efficientface", CLASSES, SIZE, MEAN, STD)
# What `auto` chooses for DDP on a CUDA GPU with bfloat16 (pin_memory: a warning on the CPU).
CUDA_CHOICES = dict(
    amp="bfloat16",
    grad_scaler=True,
    channels_last=True,
    sync_batchnorm=True,
    pin_memory=True,
    augment_on_device=True,
)
CONFIG = TrainConfig(
    epochs=2,
    batch_size=8,
    optimizer="adam",
    lr=3e-3,
    schedule="onecycle",
    num_workers=0,
    augment=AugmentConfig(crop="pad", padding=2),
    **CUDA_CHOICES,
)
# The AU term's three sources train longer: the slow tier runs them.
REGIMES = [
    "sll",
    "ldl",
    *(pytest.param(f"ldl_au-{s}", marks=pytest.mark.slow) for s in ("bank", "ldg", "batch")),
]

pytestmark = pytest.mark.filterwarnings("ignore:.*pin_memory.*:UserWarning")


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    crops, table = load_face_cache(write_face_cache(tmp_path_factory.mktemp("cache")))
    labels = table.column("label").to_numpy()
    train = usable_rows(table, "train")
    soft, *graph = random_soft_labels_and_graph(len(crops), train)
    return crops, labels, train, usable_rows(table, "test"), soft, graph


def _dataset(setup, rows, augment=None, on_device=False):
    crops, labels, _, _, soft, _ = setup
    return FaceDataset(
        crops,
        rows,
        labels,
        mean=MEAN,
        std=STD,
        image_size=SIZE,
        soft=soft,
        augment=augment,
        on_device=on_device,
    )


def _regime(name: str, setup):
    if not name.startswith("ldl_au"):
        return build_regime(name), None
    _, _, _, _, soft, (rows, weights) = setup
    source = name.split("-")[1]
    init = None if source == "batch" else torch.from_numpy(soft)
    term = AUNeighbourKL(rows, weights, source=source, init=init)
    return ldl_au_regime(1.0, term), term


def _fit(setup, name, out_dir, config=CONFIG, crash_in_epoch=None):
    _, _, train, test, _, (rows, _) = setup
    regime, term = _regime(name, setup)
    on_device = config.augment_on_device is True
    train_set = _dataset(setup, train, config.augment, on_device=on_device)
    loader = make_loader(
        train_set, batch_size=config.batch_size, train=True, seed=config.seed, pin_memory=True
    )
    if name == "ldl_au-batch":
        loader = NeighbourImages(loader, _dataset(setup, train), rows)
    if crash_in_epoch is not None:
        loader = CrashingLoader(loader, crash_in_epoch)
    val_set = _dataset(setup, test, on_device=on_device)
    torch.manual_seed(0)
    model = create_model("efficientface")
    summary = fit(
        model,
        regime,
        train_loader=loader,
        val_loader=make_loader(val_set, batch_size=16, train=False, pin_memory=True),
        config=config,
        info=INFO,
        out_dir=out_dir,
        device=CPU,
        progress=False,
    )
    return model, term, summary


@pytest.mark.parametrize("name", REGIMES)
def test_each_regime_trains_with_the_cuda_choices_and_resumes_exactly_after_a_crash(
    setup, tmp_path, name
):
    torch.set_num_threads(1)
    whole, whole_term, summary = _fit(setup, name, tmp_path / "whole")
    assert summary["device"] == (
        "cpu, amp bfloat16, grad-scaler on, channels-last on, sync-batchnorm on, pin-memory on, "
        "augment-on-device on"
    )
    assert any(isinstance(m, nn.SyncBatchNorm) for m in whole.modules())
    assert whole.conv1[0].weight.is_contiguous(memory_format=torch.channels_last)
    state = load_training_state(tmp_path / "whole" / STATE_FILE)
    assert state["scaler"] is not None and state["scaler"]["scale"] > 0
    history = (tmp_path / "whole" / HISTORY_FILE).read_text().splitlines()
    assert len(history) == 3 and "nan" not in history[2] and "inf" not in history[2]

    with pytest.raises(Crash):
        _fit(setup, name, tmp_path / "resumed", crash_in_epoch=2)
    assert load_training_state(tmp_path / "resumed" / STATE_FILE)["epoch"] == 1
    resumed, resumed_term, _ = _fit(setup, name, tmp_path / "resumed")
    for (key, a), b in zip(whole.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), key
    if whole_term is not None and whole_term.source == "bank":
        assert torch.equal(whole_term.state_dict()["bank"], resumed_term.state_dict()["bank"])
    assert (tmp_path / "whole" / HISTORY_FILE).read_bytes() == (
        tmp_path / "resumed" / HISTORY_FILE
    ).read_bytes()


def test_augmenting_on_the_device_trains_the_weights_of_the_cpu_path(setup, tmp_path):
    torch.set_num_threads(1)
    plain = CONFIG.model_copy(update=dict.fromkeys(CUDA_CHOICES, False) | {"amp": "off"})
    cpu, _, _ = _fit(setup, "ldl", tmp_path / "cpu", config=plain)
    moved = plain.model_copy(update={"augment_on_device": True})
    device, _, summary = _fit(setup, "ldl", tmp_path / "device", config=moved)
    assert summary["device"].endswith("augment-on-device on")
    for (key, a), b in zip(cpu.state_dict().items(), device.state_dict().values(), strict=True):
        assert torch.equal(a, b), key


def test_online_soft_labels_read_uint8_batches_finished_on_the_device(setup):
    _, _, train, _, _, _ = setup
    teacher = create_model("efficientface").eval()
    soft = []
    for on_device in (False, True):
        loader = make_loader(_dataset(setup, train, on_device=on_device), batch_size=8, train=False)
        batch = next(iter(OnlineSoftLabels(loader, teacher, CPU)))
        soft.append(batch.soft)
    torch.testing.assert_close(soft[0], soft[1])


@pytest.mark.slow
def test_float16_autocast_scales_the_loss_and_the_scale_resumes(setup, tmp_path):
    torch.set_num_threads(1)
    config = CONFIG.model_copy(update={"amp": "float16", "grad_scaler": "auto"})
    _, _, summary = _fit(setup, "ldl", tmp_path, config=config)
    assert summary["device"].startswith("cpu, amp float16, grad-scaler on")
    scaler = load_training_state(tmp_path / STATE_FILE)["scaler"]
    assert scaler is not None and np.isfinite(scaler["scale"])


def test_a_model_trained_channels_last_exports_to_onnx_that_matches_pytorch(setup, tmp_path):
    torch.set_num_threads(1)
    config = CONFIG.model_copy(update={"epochs": 1})
    _fit(setup, "sll", tmp_path, config=config)
    checkpoint = load_checkpoint(tmp_path / BEST_FILE)
    assert all(t.is_contiguous() for t in checkpoint.state_dict.values()), (
        "checkpoints are saved contiguous, whatever memory format trained them"
    )
    model = create_model("efficientface", pretrained=tmp_path / BEST_FILE, classes=CLASSES)
    export_onnx(model, tmp_path / "m.onnx", image_size=SIZE)  # raises if ONNX disagrees


def test_auto_choices_follow_the_device(monkeypatch):
    cpu = resolve_device_options(TrainConfig(), CPU, distributed=True)
    assert cpu == DeviceOptions(channels_last=True)  # faster on the CPU too
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    gpu = resolve_device_options(TrainConfig(), torch.device("cuda", 0), distributed=True)
    assert gpu == DeviceOptions(
        channels_last=True,
        amp_dtype=torch.bfloat16,
        grad_scaler=False,
        sync_batchnorm=True,
        pin_memory=True,
        augment_on_device=True,
    )
    single = resolve_device_options(TrainConfig(), torch.device("cuda", 0))
    assert not single.sync_batchnorm
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    older = resolve_device_options(TrainConfig(), torch.device("cuda", 0))
    assert older.amp_dtype == torch.float16 and older.grad_scaler
    off = resolve_device_options(TrainConfig(amp=False, channels_last=False), torch.device("cuda"))
    assert off.amp_dtype is None and not off.channels_last and not off.grad_scaler


def test_choices_a_device_cannot_make_are_refused_with_the_switch_to_change(monkeypatch):
    with pytest.raises(DeviceOptionError, match="sync_batchnorm: true needs GPUs under DDP"):
        resolve_device_options(TrainConfig(sync_batchnorm=True), CPU, distributed=True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Tesla V100")
    with pytest.raises(DeviceOptionError, match="bfloat16 is not supported by Tesla V100"):
        resolve_device_options(TrainConfig(amp="bfloat16"), torch.device("cuda", 0))
    assert TrainConfig(amp=True).amp == "auto" and TrainConfig(amp=False).amp == "off"
