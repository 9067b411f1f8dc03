"""Cost benchmark of the student, the LDG and a baseline: the paper's Table 3 and beyond.

Table 3 of the seed paper (after Zhao et al., AAAI 2021, https://github.com/zengqunzhao/
EfficientFace) compares EfficientFace with the ResNet-50 LDG by parameters, FLOPs, GPU
batches/s at batch 16, CPU images/s at batch 1 and inference memory. `run_benchmark`
measures those for any registered models, in eager PyTorch (EfficientFace also computed as
the official code computes it, `lightfer.models.official_forward`) and on the deployment
runtimes (`lightfer.bench_runtimes`: ONNX Runtime fp32 and int8, OpenVINO fp32, bf16 and
int8), with each runtime's agreement with the fp32 PyTorch model when a trained checkpoint
and its test faces are given, and evaluates the targets (`lightfer.bench_targets`); it
returns a plain JSON-able dict, which `format_markdown` renders. Every model is measured in
the same process and run, so only same-run ratios are meaningful across machines.

How speed is measured (see `measure_throughput`): after a warm-up, the variants run in
rounds; each round visits every variant once, in a freshly shuffled order, for a block of
about `block_seconds`; a variant's figure is the median over rounds of its per-block rate.
Interleaving matters on shared machines whose speed drifts by tens of percent within
minutes. Each thread count is one such timing group. A square fp32 GEMM runs as one more
variant: its rate is the machine's attainable FLOP rate, against which each runtime's
FLOP-bound fraction is reported. The other processes' CPU use during each group is
recorded too: on two cores, one busy process makes 2-thread PyTorch figures worthless.

Device speed (`measure_device_speed`, `format_device_speed`): training-step and inference
batches/s of models on one device (a GPU, or the CPU with tiny sizes in tests), AMP off and
on, in the memory format training uses there, all variants in one interleaved run, with the
first model's same-run speed ratio to the others. `run_benchmark` runs it on the first CUDA
device at its largest batch size; `scripts/gpu_check.sh` at batches 16 and 64.

How memory is measured, two ways, both for one batch-1 inference:

* `measure_tensor_memory` ("tensors"): parameter and buffer bytes plus the peak bytes of
  op outputs alive at the same time, counted by a `TorchDispatchMode`. This is the model's
  own footprint, comparable across machines; kernel workspaces and runtime caches are not
  tensors and are not counted.
* `measure_memory` ("eager", "onnx_fp32", "onnx_int8"): the peak resident-set growth of a
  fresh subprocess that imports the runtime, runs a trivial operation on it (so thread
  pools and libraries are already resident), resets the kernel's peak-RSS counter, then
  loads the model and runs the inference. It adds what the runtime allocates per model
  (oneDNN's per-shape kernels and caches, ONNX Runtime's pre-packed weights and arena),
  i.e. what a deployment pays.
"""

from __future__ import annotations

import concurrent.futures
import functools
import itertools
import json
import logging
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import onnxruntime
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from lightfer.bench_runtimes import (
    deployment_runtimes,
    export_runtimes,
    measure_agreement,
    runtime_forward,
)
from lightfer.bench_targets import AGREEMENT_BOUND, TARGETS, evaluate_targets, group_key, ratio
from lightfer.labels import NUM_CLASSES
from lightfer.models import create_model, recalibrate_batchnorm
from lightfer.models.efficientface import EfficientFace
from lightfer.models.official_forward import official_style_forward
from lightfer.tables import markdown_table
from lightfer.training.config import TrainConfig
from lightfer.training.device_options import DeviceOptions, resolve_device_options
from lightfer.training.loop import build_optimizer

__all__ = [
    "OFFICIAL_EAGER",
    "TARGETS",
    "count_flops",
    "count_parameters",
    "evaluate_targets",
    "format_device_speed",
    "format_markdown",
    "measure_device_speed",
    "measure_memory",
    "measure_tensor_memory",
    "measure_throughput",
    "run_benchmark",
]

logger = logging.getLogger(__name__)

OFFICIAL_EAGER = "eager_official"  # EfficientFace computed as the official code does
_GEMM_SIZE = 1024
_MB = 1024 * 1024
# Training crops that calibrate the benchmark's int8 files: ranges settle within a few dozen
# faces, and calibrating at 224 px costs about 0.1 s a face.
_CALIBRATION_FACES = 32


def count_parameters(model: nn.Module) -> int:
    """Return the number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_flops(model: nn.Module, image_size: int) -> int:
    """Return the FLOPs of one eval-mode forward pass on one image (2 FLOPs per MAC).

    Counted by `torch.utils.flop_counter.FlopCounterMode`, which counts convolutions and
    matrix products only (not batch norm, activations or pooling), as the papers do.
    """
    was_training = model.training
    counter = FlopCounterMode(display=False)
    with torch.inference_mode(), counter:
        model.eval()(torch.zeros(1, 3, image_size, image_size))
    model.train(was_training)
    return int(counter.get_total_flops())


def measure_throughput(
    variants: Mapping[str, Callable[[], object]],
    *,
    repeats: int,
    block_seconds: float,
    warmup_calls: int = 3,
    seed: int = 0,
) -> dict[str, list[float]]:
    """Time callables interleaved in shuffled blocks and return each one's calls per second.

    Args:
        variants: name -> a callable doing one unit of work (e.g. one batch inference).
        repeats: rounds; each round runs every variant once for one block.
        block_seconds: minimum duration of a block; a block runs at least one call.
        warmup_calls: untimed calls per variant before the first round.
        seed: seed of the block order.

    Returns:
        name -> the per-block rates in calls/s, in round order (take the median).
    """
    order = list(variants)
    rng = random.Random(seed)
    for name in order:
        for _ in range(warmup_calls):
            variants[name]()
    rates: dict[str, list[float]] = {name: [] for name in order}
    for _ in range(repeats):
        rng.shuffle(order)
        for name in order:
            call, calls = variants[name], 0
            start = time.perf_counter()
            while True:
                call()
                calls += 1
                elapsed = time.perf_counter() - start
                if elapsed >= block_seconds:
                    break
            rates[name].append(calls / elapsed)
    return rates


class _LiveTensorBytes(TorchDispatchMode):
    """Tracks the bytes of tensor storages created by ops and still referenced, and their peak.

    Each op output's storage is counted once while any tensor viewing it is alive (a
    storage is keyed by its data pointer and reference-counted over the tensor objects
    that were returned by ops).
    """

    def __init__(self) -> None:
        super().__init__()
        self._live: dict[int, list[int]] = {}  # data_ptr -> [nbytes, live tensor objects]
        self.current = 0
        self.peak = 0

    def __torch_dispatch__(
        self,
        func: Callable[..., Any],
        types: Sequence[type],
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        for leaf in tree_leaves(out):
            if isinstance(leaf, torch.Tensor):
                self._track(leaf)
        return out

    def _track(self, tensor: torch.Tensor) -> None:
        storage = tensor.untyped_storage()
        key = storage.data_ptr()
        if key == 0:
            return
        entry = self._live.get(key)
        if entry is None:
            entry = self._live[key] = [storage.nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        weakref.finalize(tensor, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._live[key]
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._live[key]


def measure_tensor_memory(model: nn.Module, *, image_size: int) -> dict[str, float]:
    """Count the tensor bytes of one eval-mode batch-1 inference: weights plus peak activations.

    Activations are op outputs alive at the same time, tracked with a `TorchDispatchMode`;
    kernel-internal workspaces and the runtime's caches are not tensors and are not counted
    (`measure_memory` counts them).

    Returns:
        `{"mb": total, "weights_mb", "input_mb", "activations_mb"}` in MiB.
    """
    was_training = model.training
    x = torch.zeros(1, 3, image_size, image_size)
    tracker = _LiveTensorBytes()
    with torch.inference_mode(), tracker:
        model.eval()(x)
    model.train(was_training)
    weights, inputs = _state_bytes(model) / _MB, x.numel() * x.element_size() / _MB
    activations = tracker.peak / _MB
    total = weights + inputs + activations
    return {"mb": total, "weights_mb": weights, "input_mb": inputs, "activations_mb": activations}


def measure_memory(
    runtime: str, target: str | Path, *, image_size: int, num_threads: int = 1, repeats: int = 1
) -> dict[str, Any]:
    """Measure the peak RSS growth of loading one model and running batch-1 inference.

    Each measurement is a fresh subprocess (see the module docstring for what is counted).
    Linux only: it reads `/proc/self/status`.

    Args:
        runtime: "eager" (then `target` is a registry name) or "onnx" (an `.onnx` file).
        target: the model name or ONNX file.
        image_size: square input side.
        num_threads: intra-op threads of the runtime.
        repeats: subprocesses; the median growth is reported (it varies by well under
            1 MiB between subprocesses, so one is usually enough).

    Returns:
        `{"mb": median growth in MiB, "samples_mb": [...], "peak_reset": bool}`;
        `peak_reset` is False where the kernel refused to reset the peak counter, in which
        case the growth is measured from the interpreter's own earlier peak (a lower bound).

    Raises:
        RuntimeError: the subprocess failed (its stderr is included).
    """
    if runtime not in ("eager", "onnx"):
        raise ValueError(f"runtime must be 'eager' or 'onnx', got {runtime!r}")
    samples, peak_reset = [], True
    code = "import sys; from lightfer.memory_probe import probe; probe(*sys.argv[1:])"
    with tempfile.TemporaryDirectory(prefix="lightfer-memory-") as scratch:
        out = Path(scratch) / "probe.json"
        for _ in range(repeats):
            args = [runtime, str(target), str(image_size), str(num_threads), str(out)]
            done = subprocess.run(
                [sys.executable, "-c", code, *args], capture_output=True, text=True
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"memory probe for {runtime} {target} failed (exit {done.returncode}): "
                    f"{done.stderr.strip()[-2000:]}"
                )
            report = json.loads(out.read_text())
            samples.append(report["growth_kb"] / 1024)
            peak_reset = peak_reset and report["peak_reset"]
    return {"mb": statistics.median(samples), "samples_mb": samples, "peak_reset": peak_reset}


def _state_bytes(model: nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in model.state_dict().values())


def _synthetic_batches(
    image_size: int, *, count: int, batch_size: int, seed: int
) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shape = (batch_size, 3, image_size, image_size)
    return [torch.randn(shape, generator=generator) for _ in range(count)]


def _eager_call(model: Callable[[torch.Tensor], object], x: torch.Tensor) -> Callable[[], object]:
    def call() -> object:
        with torch.inference_mode():
            return model(x)

    return call


def _gemm_call() -> Callable[[], object]:
    a = torch.randn(_GEMM_SIZE, _GEMM_SIZE)
    b = torch.randn(_GEMM_SIZE, _GEMM_SIZE)
    return lambda: torch.mm(a, b)


# What `measure_device_speed` times: a training step, an eval-mode inference.
_DEVICE_MODES = ("train", "infer")


def _synchronize(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU never waits)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_options(
    device: torch.device, *, amp: bool, channels_last: bool | None
) -> DeviceOptions:
    """The options a training run resolves on `device`, with AMP forced off or on.

    On CUDA, AMP on is what `amp: auto` picks there (bfloat16 where the GPU has it, else
    float16 with a gradient scaler); on the CPU, where `auto` is off, it is bfloat16 autocast.
    `channels_last` None is what `channels_last: auto` picks.
    """
    on = "auto" if device.type == "cuda" else "bfloat16"
    config = TrainConfig(
        amp=on if amp else "off",
        channels_last="auto" if channels_last is None else channels_last,
    )
    return resolve_device_options(config, device)


def _train_step_call(
    model: nn.Module, options: DeviceOptions, device: torch.device, x: torch.Tensor
) -> Callable[[], object]:
    """One optimiser step of `model` on `x`, as `train_one_epoch` takes one (its default
    optimiser, autocast, the scaler when the options want one), waited for."""
    optimizer = build_optimizer(model, TrainConfig())
    scaler = torch.amp.GradScaler(device.type, enabled=options.grad_scaler)
    labels = torch.arange(len(x), device=device) % NUM_CLASSES

    def call() -> object:
        optimizer.zero_grad(set_to_none=True)
        with options.autocast(device):
            loss = F.cross_entropy(model(x), labels)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        _synchronize(device)
        return loss

    return call


def _infer_call(
    model: nn.Module, options: DeviceOptions, device: torch.device, x: torch.Tensor
) -> Callable[[], object]:
    """One eval-mode forward of `model` on `x` under the options' autocast, waited for."""

    def call() -> object:
        with torch.inference_mode(), options.autocast(device):
            out = model(x)
        _synchronize(device)
        return out

    return call


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else _cpu_name()


def measure_device_speed(
    models: Sequence[str] = ("efficientface", "resnet50"),
    *,
    device: str | torch.device = "cuda",
    image_size: int = 224,
    batch_sizes: Sequence[int] = (16, 64),
    channels_last: bool | None = None,
    repeats: int = 5,
    block_seconds: float = 0.5,
    warmup_calls: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Training and inference batches/s of models on one device, AMP off and on.

    Every combination of model, mode (a training step, an inference), batch size and AMP
    is one variant of a single `measure_throughput` run, so all are timed in the same
    process and interleaved rounds, and the models' ratios are same-run ratios. Each call
    waits for the device, so a figure is a whole step's rate. Training runs on a copy of
    each model in training mode with the optimiser `TrainConfig` defaults to; inference on
    a copy with batch norm recalibrated, in eval mode. Both take batches in the memory
    format a training run would (`lightfer.training.device_options`).

    Args:
        models: registry names; the first is compared with each of the others.
        device: where to run ("cuda", "cuda:1", "cpu").
        image_size: square input side.
        batch_sizes: batch sizes timed.
        channels_last: model and batches in channels-last memory; None: what training's
            `channels_last: auto` picks on `device` (on for CUDA).
        repeats: interleaved rounds (the median over them is reported).
        block_seconds: duration of one timed block.
        warmup_calls: untimed calls per variant first (CUDA kernel selection, allocator).
        seed: seeds weights, inputs and the block order.

    Returns:
        A JSON-able dict: `device` (its name), `device_type`, `image_size`, `batch_sizes`,
        `repeats`, `block_seconds`, `channels_last`, `amp_dtype` (AMP on's dtype),
        `models`, and `rows`: one per mode, batch and AMP (`mode`, `batch`, `amp`: "off"
        or the dtype), each with `batches_per_s` (model -> median), `blocks` (model ->
        per-round rates) and `ratios` (other model -> `{"value", "per_round"}` of the first
        model's speed over the other's).
    """
    device = torch.device(device)
    options = {
        amp: _device_options(device, amp=amp, channels_last=channels_last) for amp in (False, True)
    }
    memory_format = options[False].memory_format
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    calls: dict[str, Callable[[], object]] = {}
    for name in models:
        trained = options[False].prepare(create_model(name), device)
        inferred = options[False].prepare(_build(name, image_size, seed), device)
        for batch in batch_sizes:
            shape = (batch, 3, image_size, image_size)
            x = torch.randn(shape, generator=generator).to(device, memory_format=memory_format)
            for amp, option in options.items():
                calls[f"{name}/train/b{batch}/{amp}"] = _train_step_call(trained, option, device, x)
                calls[f"{name}/infer/b{batch}/{amp}"] = _infer_call(inferred, option, device, x)
    logger.info(
        "%s: timing %d variants x %d rounds of %.2f s", device, len(calls), repeats, block_seconds
    )
    rates = measure_throughput(
        calls, repeats=repeats, block_seconds=block_seconds, warmup_calls=warmup_calls, seed=seed
    )
    amp_dtype = str(options[True].amp_dtype).removeprefix("torch.")
    first, *others = models
    rows = []
    for mode, batch, amp in itertools.product(_DEVICE_MODES, batch_sizes, (False, True)):
        blocks = {name: rates[f"{name}/{mode}/b{batch}/{amp}"] for name in models}
        rows.append(
            {
                "mode": mode,
                "batch": batch,
                "amp": amp_dtype if amp else "off",
                "batches_per_s": {name: statistics.median(b) for name, b in blocks.items()},
                "blocks": blocks,
                "ratios": {other: ratio(blocks[first], blocks[other]) for other in others},
            }
        )
    return {
        "device": _device_name(device),
        "device_type": device.type,
        "image_size": image_size,
        "batch_sizes": list(batch_sizes),
        "repeats": repeats,
        "block_seconds": block_seconds,
        "channels_last": options[False].channels_last,
        "amp_dtype": amp_dtype,
        "models": list(models),
        "rows": rows,
    }


def format_device_speed(speed: Mapping[str, Any]) -> str:
    """Render `measure_device_speed` results as a Markdown paragraph and table.

    Returns:
        Markdown text ending with a newline.
    """
    first, *others = speed["models"]
    header = ["mode", "batch", "AMP"] + [f"{name} batch/s" for name in speed["models"]]
    header += [f"{first}/{other} (per-round range)" for other in others]
    rows = [
        [row["mode"], str(row["batch"]), row["amp"]]
        + [_fmt(row["batches_per_s"][name]) for name in speed["models"]]
        + [_ratio_cell(row["ratios"][other]) for other in others]
        for row in speed["rows"]
    ]
    size = speed["image_size"]
    intro = (
        f"Device speed on {speed['device']} ({speed['device_type']}), {size}x{size} input, "
        f"channels-last {'on' if speed['channels_last'] else 'off'}, AMP on = "
        f"{speed['amp_dtype']} autocast. train: one optimiser step; infer: one eval forward; "
        f"medians of {speed['repeats']} interleaved rounds of {speed['block_seconds']} s "
        "blocks in one process."
    )
    return f"{intro}\n\n{markdown_table(header, rows)}\n"


def run_benchmark(
    *,
    workdir: Path,
    models: Sequence[str] = ("efficientface", "resnet50", "shufflenet_v2_x1_0"),
    deployment_models: Sequence[str] = ("efficientface",),
    image_size: int = 224,
    batch_sizes: Sequence[int] = (1,),
    repeats: int = 5,
    block_seconds: float = 0.5,
    onnx: bool = True,
    int8: bool = True,
    openvino: bool = True,
    memory: bool = True,
    gpu: bool = True,
    threads: Sequence[int] = (1, 2),
    checkpoint: Path | None = None,
    faces: Path | None = None,
    agreement_limit: int = 256,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure parameters, FLOPs, CPU and GPU speed, inference memory and the deployment
    runtimes' agreement with PyTorch.

    Without `checkpoint`, models get random weights with batch norm recalibrated on
    synthetic images (speed does not depend on the weights, but collapsed activations
    would make the export checks and the int8 calibration vacuous), and int8 files are
    calibrated on synthetic images. With `checkpoint` (a trained model, e.g. EfficientFace)
    and `faces` (its dataset's face cache), the model of the checkpoint's architecture is
    the trained one, int8 files are calibrated on training faces, and each deployment
    runtime's agreement with it is measured on the test faces at the checkpoint's own input
    size (files exported at that size by the same recipes). The files are written to
    `workdir`.

    Args:
        workdir: an existing directory for the exported models.
        models: registry names; include "efficientface", "resnet50" and
            "shufflenet_v2_x1_0" to evaluate every target (`lightfer.bench_targets`).
        deployment_models: models also timed on the int8 and OpenVINO runtimes; the others
            on eager PyTorch and ONNX Runtime fp32 only.
        image_size: square input side of the timed models.
        batch_sizes: CPU batch sizes; GPU throughput uses the largest.
        repeats: interleaved rounds (the median over them is reported).
        block_seconds: duration of one timed block.
        onnx: also measure ONNX Runtime fp32.
        int8: also measure the int8 files (ONNX Runtime's needs `onnx`).
        openvino: also measure OpenVINO fp32, bf16 (where the CPU has it) and int8.
        memory: measure inference memory in subprocesses (a few seconds each).
        gpu: measure GPU batches/s when CUDA is available (otherwise a note says why not).
        threads: intra-op thread counts of PyTorch and the runtimes; each is one timing
            group (all variants interleaved); memory is measured at the first.
        checkpoint: a trained model file (`load_for_inference`), or None.
        faces: the face cache of the checkpoint's dataset (needed with `checkpoint`).
        agreement_limit: most test faces the agreement is measured on.
        seed: seeds weights, inputs and the block order.

    Returns:
        A JSON-able dict with keys `environment`, `settings`, `models` (params, FLOPs,
        sizes), `cpu` (`[model][runtime]["b<batch>-t<threads>"]` -> images/s median and
        blocks), `gemm` (`["gflops"]["b<batch>-t<threads>"]`, attainable fp32 rate per
        timing group), `flop_bound` (`[model]["bound_images_per_s"]` and
        `[model]["fraction"]`), `agreement` (None without a checkpoint), `gpu`, `memory`
        and `targets` (see `lightfer.bench_targets.evaluate_targets`).

    Raises:
        ValueError: int8 without a runtime to quantise for, `checkpoint` without `faces`
            (or the reverse), or a checkpoint whose architecture is not in `models`.
    """
    if int8 and not (onnx or openvino):
        raise ValueError("int8=True needs onnx=True or openvino=True, the runtimes it quantises")
    if (checkpoint is None) != (faces is None):
        raise ValueError("pass checkpoint and faces together: agreement needs both")
    trained = _load_trained(checkpoint, models) if checkpoint is not None else None
    deployment = deployment_runtimes(onnx=onnx, int8=int8, openvino=openvino)
    results: dict[str, Any] = {
        "environment": _environment(),
        "settings": {
            "models": list(models),
            "deployment_models": list(deployment_models),
            "image_size": image_size,
            "batch_sizes": list(batch_sizes),
            "repeats": repeats,
            "block_seconds": block_seconds,
            "deployment_runtimes": deployment,
            "threads": list(threads),
            "seed": seed,
        },
        "models": {},
        "cpu": {},
        "memory": {},
        "memory_methods": dict(_MEMORY_METHODS),
        "agreement": None,
    }
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads[0])
    try:
        torch.manual_seed(seed)
        built, files = {}, {}
        for name in models:
            is_trained = trained is not None and name == trained.arch
            built[name] = trained.module if is_trained else _build(name, image_size, seed)
            runtimes = [r for r in deployment if r == "onnx_fp32" or name in deployment_models]
            calibration = (
                _face_batches(trained, faces, "train", _CALIBRATION_FACES, image_size)
                if is_trained
                else _synthetic_batches(image_size, count=8, batch_size=4, seed=seed + 1)
            )
            results["models"][name], files[name] = _describe_and_export(
                name, built[name], runtimes, workdir, image_size, calibration
            )
            results["memory"][name] = {
                "tensors": measure_tensor_memory(built[name], image_size=image_size)
            }
        if trained is not None and deployment:
            results["agreement"] = _agreement(
                trained, faces, files[trained.arch], workdir, image_size, agreement_limit
            )
        _time_cpu(results, built, files, repeats=repeats, block_seconds=block_seconds, seed=seed)
        results["flop_bound"] = _flop_bound(results)
        results["gpu"] = _gpu_section(
            models,
            enabled=gpu,
            image_size=image_size,
            batch_size=max(batch_sizes),
            repeats=repeats,
            block_seconds=block_seconds,
            seed=seed,
        )
        if memory:
            _measure_memory(results, files, image_size=image_size, num_threads=threads[0])
        results["targets"] = evaluate_targets(results)
    finally:
        torch.set_num_threads(previous_threads)
    return results


_MEMORY_METHODS = {
    "tensors": "weights + input + peak bytes of live op outputs in one batch-1 eval forward "
    "(TorchDispatchMode accounting; excludes kernel workspaces and runtime caches), MiB",
    "rss": "peak RSS growth (VmHWM after minus VmRSS before) of a fresh subprocess that loads "
    "the model and runs one batch-1 inference after initialising the runtime, MiB (columns "
    "eager, onnx_fp32, onnx_int8)",
}
_MEMORY_RUNTIMES = ("onnx_fp32", "onnx_int8")  # besides eager: RSS measured in subprocesses


def _build(name: str, image_size: int, seed: int) -> nn.Module:
    """A registry model with batch norm recalibrated on synthetic images, in eval mode."""
    model = create_model(name)
    batches = _synthetic_batches(image_size, count=2, batch_size=4, seed=seed)
    return recalibrate_batchnorm(model, batches).eval()


def _load_trained(checkpoint: Path, models: Sequence[str]) -> Any:
    """The `InferenceModel` of a trained checkpoint whose architecture is benchmarked."""
    from lightfer.models.inference import load_for_inference

    trained = load_for_inference(checkpoint, classes=None)
    if trained.arch not in models:
        raise ValueError(
            f"checkpoint {checkpoint} is a {trained.arch or trained.source} model, which is "
            f"not among the benchmarked models ({', '.join(models)})"
        )
    return trained


def _face_batches(trained: Any, faces: Path, split: str, limit: int, image_size: int) -> Any:
    """Normalised batches of a split's faces, as the trained model takes them, at a size."""
    from lightfer.face_batches import cache_split, normalised_batches  # imports the params

    crops, rows = cache_split(faces, split, limit=limit)
    return normalised_batches(
        crops, rows, mean=trained.mean, std=trained.std, image_size=image_size
    )


def _agreement(
    trained: Any,
    faces: Path,
    timed: Mapping[str, Path],
    workdir: Path,
    image_size: int,
    limit: int,
) -> dict[str, Any]:
    """The deployment runtimes' agreement with the trained model on its test faces, at its
    own input size: the timed files when that is the timed size, else files exported at it."""
    size = trained.image_size
    files = dict(timed)
    if size != image_size:
        calibration = _face_batches(trained, faces, "train", _CALIBRATION_FACES, size)
        files = export_runtimes(
            trained.module,
            workdir / f"agreement-{trained.arch}-{size}",
            list(timed),
            image_size=size,
            calibration=calibration,
        )
    forwards = {
        runtime: runtime_forward(runtime, path, num_threads=torch.get_num_threads())
        for runtime, path in files.items()
    }
    test = _face_batches(trained, faces, "test", limit, size)
    return {
        "model": trained.arch,
        "checkpoint": str(trained.path),
        "faces": str(faces),
        "image_size": size,
        "runtimes": measure_agreement(trained.module, forwards, test),
    }


def _describe_and_export(
    name: str,
    model: nn.Module,
    runtimes: Sequence[str],
    workdir: Path,
    image_size: int,
    calibration: Any,
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Count a model's parameters and FLOPs and write its deployment files as requested."""
    info: dict[str, Any] = {
        "params": count_parameters(model),
        "mflops": count_flops(model, image_size) / 1e6,
        "weights_mb": _state_bytes(model) / _MB,
    }
    files = export_runtimes(
        model,
        workdir / f"{name}-{image_size}",
        runtimes,
        image_size=image_size,
        calibration=calibration,
    )
    for runtime, path in files.items():
        weights = path.with_suffix(".bin") if path.suffix == ".xml" else path
        info[f"{runtime}_mb"] = weights.stat().st_size / _MB
    return info, files


def _time_cpu(
    results: dict[str, Any],
    built: Mapping[str, nn.Module],
    files: Mapping[str, Mapping[str, Path]],
    *,
    repeats: int,
    block_seconds: float,
    seed: int,
) -> None:
    """Fill `results["cpu"]` and `results["gemm"]`: one interleaved run per thread count and
    batch size.

    Grouping keeps rounds short, so the variants compared by `TARGETS` (all at batch 1 and
    one thread count) run close together in time. Every group also times the GEMM. An
    EfficientFace is also timed as the official code computes it (`OFFICIAL_EAGER`).
    """
    settings = results["settings"]
    image_size = settings["image_size"]
    results["gemm"] = {"size": _GEMM_SIZE, "gflops": {}, "blocks": {}}
    results["others_cpu"] = {}
    for num_threads, batch in itertools.product(settings["threads"], settings["batch_sizes"]):
        torch.set_num_threads(num_threads)
        group = group_key(batch, num_threads)
        calls: dict[str, Callable[[], object]] = {"gemm": _gemm_call()}
        for name, model in built.items():
            x = torch.randn(batch, 3, image_size, image_size)
            calls[f"{name}/eager"] = _eager_call(model, x)
            if isinstance(model, EfficientFace):
                official = functools.partial(official_style_forward, model)
                calls[f"{name}/{OFFICIAL_EAGER}"] = _eager_call(official, x)
            for runtime, path in files[name].items():
                forward = runtime_forward(runtime, path, num_threads=num_threads, batch_size=batch)
                calls[f"{name}/{runtime}"] = functools.partial(forward, x.numpy())
        logger.info(
            "%s: timing %d variants x %d rounds of %.2f s",
            group,
            len(calls),
            repeats,
            block_seconds,
        )
        busy = _others_busy_seconds()
        start = time.perf_counter()
        rates = measure_throughput(calls, repeats=repeats, block_seconds=block_seconds, seed=seed)
        others = None if busy is None else _others_busy_seconds() - busy  # type: ignore[operator]
        results["others_cpu"][group] = (
            None if others is None else max(others, 0.0) / (time.perf_counter() - start)
        )
        gemm = [rate * 2 * _GEMM_SIZE**3 / 1e9 for rate in rates.pop("gemm")]
        results["gemm"]["gflops"][group] = statistics.median(gemm)
        results["gemm"]["blocks"][group] = gemm
        for key, per_call in rates.items():
            name, runtime = key.split("/")
            blocks = [rate * batch for rate in per_call]
            results["cpu"].setdefault(name, {}).setdefault(runtime, {})[group] = {
                "images_per_s": statistics.median(blocks),
                "blocks": blocks,
            }


def _measure_memory(
    results: dict[str, Any],
    files: Mapping[str, Mapping[str, Path]],
    *,
    image_size: int,
    num_threads: int,
) -> None:
    """Peak RSS growth of each model eager and on ONNX Runtime, one subprocess each.

    The subprocesses run as many at a time as there are cores for their threads: each
    measures its own peak, and most of their time is importing torch.
    """
    jobs = {}
    for name, model_files in files.items():
        jobs[name, "eager"] = ("eager", name)
        for runtime in _MEMORY_RUNTIMES:
            if runtime in model_files:
                jobs[name, runtime] = ("onnx", model_files[runtime])
    workers = max(1, _cpu_count() // num_threads)
    logger.info("memory: %d subprocesses, %d at a time", len(jobs), workers)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        measured = {
            key: pool.submit(
                measure_memory, kind, target, image_size=image_size, num_threads=num_threads
            )
            for key, (kind, target) in jobs.items()
        }
    for (name, runtime), future in measured.items():
        results["memory"][name][runtime] = future.result()


def _others_busy_seconds() -> float | None:
    """CPU seconds all processes but this one have used since boot (None off Linux).

    The machine's busy time (/proc/stat: user, nice, system, irq, softirq, steal) minus
    this process's own CPU time; its growth during a timing group is the other processes'
    load, which on a machine with few cores slows multi-threaded variants most.
    """
    try:
        with open("/proc/stat") as stat:
            fields = [int(v) for v in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    busy = (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    return busy - time.process_time()


def _environment() -> dict[str, Any]:
    import openvino

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__,
        "openvino": openvino.get_version(),
        "cpu": _cpu_name(),
        "logical_cpus": _cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
    except (OSError, StopIteration):
        return platform.processor()


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _flop_bound(results: Mapping[str, Any]) -> dict[str, Any]:
    """The fraction of the attainable fp32 FLOP rate (the GEMM of the same timing group)
    that each model's runtimes reach.

    int8 and bf16 run on other instructions (VNNI, AVX512_BF16) with a higher peak, so
    their fraction of the fp32 bound says how far they got past it, not how close to
    their own peak they are.
    """
    bound: dict[str, Any] = {}
    for name, info in results["models"].items():
        images = {
            group: gflops * 1e3 / info["mflops"]
            for group, gflops in results["gemm"]["gflops"].items()
        }
        fraction = {
            f"{runtime}/{group}": entry["images_per_s"] / images[group]
            for runtime, per_group in results["cpu"][name].items()
            for group, entry in per_group.items()
        }
        bound[name] = {"bound_images_per_s": images, "fraction": fraction}
    return bound


def _gpu_section(
    models: Sequence[str],
    *,
    enabled: bool,
    image_size: int,
    batch_size: int,
    repeats: int,
    block_seconds: float,
    seed: int,
) -> dict[str, Any]:
    """`measure_device_speed` on the first CUDA device at one batch size, or why not.

    `batches_per_s` is the paper's Table 3 figure: float32 inference batches/s.
    """
    if not enabled:
        return {"available": False, "note": "GPU throughput not requested (gpu=False)"}
    if not torch.cuda.is_available():
        return {"available": False, "note": "skipped: CUDA is not available on this machine"}
    speed = measure_device_speed(
        models,
        device="cuda",
        image_size=image_size,
        batch_sizes=(batch_size,),
        repeats=repeats,
        block_seconds=block_seconds,
        seed=seed,
    )
    fp32 = next(row for row in speed["rows"] if row["mode"] == "infer" and row["amp"] == "off")
    return {
        "available": True,
        "device": speed["device"],
        "batch_size": batch_size,
        "batches_per_s": fp32["batches_per_s"],
        "speed": speed,
    }


def _fmt(value: float | None, digits: int = 1) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:,.{digits}f}"
    )


def format_markdown(results: Mapping[str, Any]) -> str:
    """Render `run_benchmark` results as Markdown: cost, CPU speed and agreement, targets.

    Returns:
        Markdown text ending with a newline.
    """
    env, settings = results["environment"], results["settings"]
    groups = {
        group_key(b, n): f"b{b} {n}t"
        for n, b in itertools.product(settings["threads"], settings["batch_sizes"])
    }
    gpu = results.get("gpu", {})
    memory_columns = [
        m
        for m in ("tensors", "eager", *_MEMORY_RUNTIMES)
        if any(m in measured for measured in results["memory"].values())
    ]
    agreement = results.get("agreement") or {"model": None, "runtimes": {}}
    size = settings["image_size"]
    lines = [
        f"Input {size}x{size}; {env['cpu']}, {_thread_counts(settings['threads'])} of "
        f"{env['logical_cpus']}; torch {env['torch']}, onnxruntime {env['onnxruntime']}, "
        f"OpenVINO {env['openvino']}. Speeds are medians of {settings['repeats']} interleaved "
        f"blocks of {settings['block_seconds']} s, in one timing group per batch size and "
        "thread count (b<batch> <threads>t).",
        "",
        markdown_table(
            ["model", "params (M)", "MFLOPs", "GPU batch/s"]
            + [f"memory {m} (MiB)" for m in memory_columns],
            [
                [name, _fmt(info["params"] / 1e6, 2), _fmt(info["mflops"])]
                + [_fmt(gpu.get("batches_per_s", {}).get(name))]
                + [_fmt(results["memory"][name].get(m, {}).get("mb")) for m in memory_columns]
                for name, info in results["models"].items()
            ],
        ),
        "",
        markdown_table(
            ["model", "runtime"]
            + [f"CPU img/s {label}" for label in groups.values()]
            + [f"FLOP bound reached {label}" for label in groups.values()]
            + ["top-1 agreement with fp32", "max abs prob diff"],
            [
                [name, runtime]
                + [_fmt(per_group[g]["images_per_s"]) for g in groups]
                + [
                    _percent(results["flop_bound"][name]["fraction"].get(f"{runtime}/{g}"))
                    for g in groups
                ]
                + _agreement_cells(agreement, name, runtime)
                for name, per_runtime in results["cpu"].items()
                for runtime, per_group in per_runtime.items()
            ],
        ),
        "",
        _RUNTIME_LEGEND,
        _agreement_caption(agreement, size),
        f"Attainable fp32 FLOP rate (GEMM {results['gemm']['size']}^2 timed in each group), "
        "and the images/s it bounds: "
        + "; ".join(
            f"{label}: {_fmt(results['gemm']['gflops'][g])} GFLOP/s ("
            + ", ".join(
                f"{name} {_fmt(bound['bound_images_per_s'][g])}"
                for name, bound in results["flop_bound"].items()
            )
            + ")"
            for g, label in groups.items()
        )
        + ". int8 and bf16 run on instructions with a higher peak than fp32's, so their share "
        "of the fp32 bound can pass what fp32 could reach.",
        "Other processes' CPU use while each group was timed (cores): "
        + "; ".join(
            f"{label} {_fmt(results['others_cpu'].get(g), 2)}" for g, label in groups.items()
        )
        + ". Where it approaches the cores a group's threads leave free, that group's figures "
        "are unreliable (multi-threaded PyTorch slows down by orders of magnitude when a "
        "thread is descheduled).",
        f"GPU batch/s: float32 inference on {gpu['device']}, batch {gpu['batch_size']}."
        if gpu.get("available")
        else f"GPU: {gpu.get('note', 'not measured')}.",
    ]
    lines += [f"Memory {key}: {text}." for key, text in results["memory_methods"].items()]
    targets = results.get("targets", {})
    if targets:
        rows = [
            [
                entry["description"],
                entry.get("runtime") or "-",
                f"{entry['value']:.2f}",
                _round_range(entry["per_round"]),
                _percent(entry.get("flop_bound_share")),
                "yes" if entry["met"] else "**no**",
            ]
            for entry in targets.values()
        ]
        header = [
            "target",
            "runtime",
            "ratio of medians",
            "per-round ratios: median (min-max)",
            "its FLOP bound reached",
            "met",
        ]
        lines += [
            "",
            markdown_table(header, rows),
            "",
            f"deployment: the model's fastest deployment runtime whose top-1 agreement with "
            f"fp32 PyTorch is at least {AGREEMENT_BOUND:.0%} (any of them where agreement was "
            "not measured); runtime: the numerator's, whose share of the fp32 FLOP bound of "
            "its group is given.",
        ]
    if gpu.get("available"):
        lines += ["", format_device_speed(gpu["speed"]).rstrip("\n")]
    return "\n".join(lines) + "\n"


_RUNTIME_LEGEND = (
    "Runtimes: eager is this project's PyTorch forward; eager_official the same weights "
    "computed as the official EfficientFace code computes them (max pooling on NCHW maps, "
    "concatenate-then-shuffle units, expand_as gates: `lightfer.models.official_forward`), "
    "the baseline of the deployment targets; onnx_* run on ONNX Runtime (int8: static QDQ "
    "quantisation); openvino_* on OpenVINO (bf16: its bfloat16 inference-precision hint; "
    "int8: NNCF post-training quantisation), compiled for the timed batch size (static "
    "shapes). int8 files are calibrated on training faces of the agreement's dataset "
    "(synthetic images when there is none)."
)


def _thread_counts(threads: Sequence[int]) -> str:
    return f"{' and '.join(map(str, threads))} thread(s)"


def _agreement_cells(agreement: Mapping[str, Any], model: str, runtime: str) -> list[str]:
    measured = agreement["runtimes"].get(runtime) if agreement["model"] == model else None
    if measured is None:
        return ["-", "-"]
    return [f"{100 * measured['top1']:.1f}%", f"{measured['max_abs_prob_diff']:.3f}"]


def _agreement_caption(agreement: Mapping[str, Any], timed_size: int) -> str:
    if agreement["model"] is None:
        return (
            "Agreement: not measured (random weights); the bench stage measures it with a "
            "trained checkpoint and its dataset's test faces (bench.agreement)."
        )
    images = next(iter(agreement["runtimes"].values()), {}).get("images", 0)
    size = agreement["image_size"]
    where = (
        "the timed files"
        if size == timed_size
        else f"files exported at {size} px by the same recipes as the timed ones. Speed is "
        f"timed at {timed_size} px with the same weights; agreement is measured at the size "
        "the model was trained at, since on crops resized to another size its predictions "
        "can collapse towards one class (the synthetic 48-px model's do at 224 px), which "
        "would make agreement vacuous"
    )
    return (
        f"Agreement: each deployment runtime against the fp32 PyTorch {agreement['model']} "
        f"{agreement['checkpoint']} on {images} test faces of {agreement['faces']} (top-1: "
        f"same most probable class; max abs prob diff: the largest difference of any class "
        f"probability), at {size} px: {where}."
    )


def _round_range(per_round: Mapping[str, float]) -> str:
    if per_round["min"] == per_round["max"]:
        return "-"
    return f"{per_round['median']:.2f} ({per_round['min']:.2f}-{per_round['max']:.2f})"


def _ratio_cell(ratio: Mapping[str, Any]) -> str:
    """`value (min-max)` of a `_ratio`, the range left out when one round was timed."""
    spread = ratio["per_round"]
    if spread["min"] == spread["max"]:
        return f"{ratio['value']:.2f}"
    return f"{ratio['value']:.2f} ({spread['min']:.2f}-{spread['max']:.2f})"


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.0f}%"
