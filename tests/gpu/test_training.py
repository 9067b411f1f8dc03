"""Training on CUDA: AMP steps, pinned batches copied asynchronously, ONNX export after."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from lightfer.export import INPUT_NAME, OUTPUT_NAME, export_onnx, inference_session
from lightfer.labels import CLASSES, NUM_CLASSES
from lightfer.losses import build_regime
from lightfer.models import create_model, recalibrate_batchnorm
from lightfer.models.checkpoint import save_checkpoint
from lightfer.training.config import TrainConfig
from lightfer.training.data import Batch, FaceDataset, make_loader
from lightfer.training.device_options import resolve_device_options
from lightfer.training.loop import build_optimizer, train_one_epoch
from tests.gpu.inputs import IMAGE_SIZE, images

pytestmark = pytest.mark.gpu

MEAN, STD = (0.5, 0.4, 0.35), (0.25, 0.22, 0.2)
STEPS = TrainConfig(optimizer="adam", lr=1e-3)  # memorises one batch within a few steps


def _batch(size: int = 16) -> Batch:
    labels = torch.arange(size) % NUM_CLASSES
    return Batch(images(size, seed=4), labels, torch.arange(size))


def _train(model, options, device, batch, *, steps):
    """`steps` optimiser steps of `train_one_epoch` on one batch; the loss of each."""
    optimizer = build_optimizer(model, STEPS)
    scaler = torch.amp.GradScaler(device.type, enabled=options.grad_scaler)
    regime = build_regime("sll")
    losses = []
    for step in range(steps):
        metrics = train_one_epoch(
            model,
            regime,
            optimizer,
            [batch],
            device,
            epoch=step + 1,
            scaler=scaler,
            options=options,
            progress=False,
        )
        losses.append(metrics["loss"])
    return losses, scaler


@pytest.mark.parametrize("amp", ["float16", "bfloat16"])
@pytest.mark.parametrize("name", ["efficientface", "resnet50"])
def test_amp_steps_are_finite_and_lower_the_loss(name, amp, cuda):
    options = resolve_device_options(TrainConfig(amp=amp), cuda)
    assert options.channels_last and options.grad_scaler == (amp == "float16")
    torch.manual_seed(0)
    model = options.prepare(create_model(name), cuda)
    losses, scaler = _train(model, options, cuda, _batch(), steps=8)
    assert all(math.isfinite(loss) for loss in losses), losses
    assert losses[-1] < losses[0], f"{name} under {amp}: the loss did not fall: {losses}"
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert next(model.parameters()).is_cuda
    if options.grad_scaler:
        assert 0 < scaler.get_scale() < math.inf


def test_pinned_batches_reach_the_gpu_unchanged(cuda):
    options = resolve_device_options(TrainConfig(), cuda)
    assert options.pin_memory, "pin_memory: auto must pin on CUDA"
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, size=(24, 48, 48, 3), dtype=np.uint8)
    labels = np.arange(24) % NUM_CLASSES
    dataset = FaceDataset(crops, np.arange(24), labels, mean=MEAN, std=STD, image_size=64)
    loader = make_loader(
        dataset, batch_size=8, train=False, num_workers=2, pin_memory=options.pin_memory
    )
    batches = list(loader)
    assert len(batches) == 3
    for batch in batches:
        assert batch.images.is_pinned() and batch.labels.is_pinned()
        moved = batch.to(cuda, channels_last=options.channels_last)  # non_blocking copies
        torch.cuda.synchronize()
        assert moved.images.is_cuda
        assert moved.images.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(moved.images.cpu(), batch.images)
        assert torch.equal(moved.labels.cpu(), batch.labels)


def test_onnx_export_of_a_cuda_trained_model_matches_pytorch_on_the_cpu(cuda, tmp_path):
    options = resolve_device_options(TrainConfig(), cuda)  # AMP and channels-last: auto
    torch.manual_seed(0)
    model = options.prepare(create_model("efficientface"), cuda)
    _train(model, options, cuda, _batch(), steps=3)
    recalibrate_batchnorm(model, [images(8, seed=s).to(cuda) for s in (5, 6)])
    path = save_checkpoint(
        tmp_path / "ef.pt",
        model,
        arch="efficientface",
        classes=CLASSES,
        image_size=IMAGE_SIZE,
        mean=MEAN,
        std=STD,
        epoch=3,
    )
    on_cpu = create_model("efficientface", pretrained=path).eval()
    x = images(4, seed=7)
    with torch.inference_mode():
        expected = on_cpu(x).numpy()
        on_gpu = model.eval()(x.to(cuda, memory_format=torch.channels_last)).float().cpu()
    # The checkpoint carries the CUDA-trained weights (TF32 convolutions on the GPU side).
    scale = float(np.abs(expected).max())
    assert scale > 1e-3 and expected.std(0).mean() > 1e-3 * scale
    assert float(np.abs(on_gpu.numpy() - expected).max()) <= 1e-2 * scale
    onnx_path = export_onnx(on_cpu, tmp_path / "ef.onnx", image_size=IMAGE_SIZE)  # checks too
    got = inference_session(onnx_path).run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    np.testing.assert_allclose(got, expected, rtol=1e-3, atol=1e-4 * scale)
