"""Cost benchmark of the student, the LDG and a baseline: the paper's Table 3 and beyond.

Table 3 of the seed paper (after Zhao et al., AAAI 2021, https://github.com/zengqunzhao/
EfficientFace) compares EfficientFace with the ResNet-50 LDG by parameters, FLOPs, GPU
batches/s at batch 16, CPU images/s at batch 1 and inference memory. `run_benchmark`
measures those for any registered models, in eager PyTorch and on the deployment path
(ONNX Runtime fp32 and int8), and returns a plain JSON-able dict; `format_markdown` renders
it. Every model is measured in the same process and run, so only same-run ratios are
meaningful across machines.

How speed is measured (see `measure_throughput`): after a warm-up, the variants run in
rounds; each round visits every variant once, in a freshly shuffled order, for a block of
about `block_seconds`; a variant's figure is the median over rounds of its per-block rate.
Interleaving matters on shared machines whose speed drifts by tens of percent within
minutes. A square fp32 GEMM runs as one more variant: its rate is the machine's attainable
FLOP rate, against which the deployment path's FLOP-bound fraction is reported.

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

import numpy as np
import onnxruntime
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from lightfer.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    CalibrationBatches,
    export_onnx,
    inference_session,
    quantize_int8,
)
from lightfer.models import create_model, recalibrate_batchnorm

__all__ = [
    "RUNTIMES",
    "TARGETS",
    "count_flops",
    "count_parameters",
    "evaluate_targets",
    "format_markdown",
    "measure_memory",
    "measure_tensor_memory",
    "measure_throughput",
    "run_benchmark",
]

logger = logging.getLogger(__name__)

RUNTIMES = ("eager", "onnx_fp32", "onnx_int8")
_FP32_RUNTIMES = ("eager", "onnx_fp32")
_GEMM_SIZE = 1024
_MB = 1024 * 1024

# The speed and memory targets: (description, numerator, denominator, bound, kind).
# "model/runtime/b<batch>" names a CPU throughput (runtime "deployment": the faster of ONNX
# fp32 and int8); "memory:<model>/<measure>" a memory figure (measure "tensors", or a runtime
# for RSS growth). kind ">=" means ratio >= bound, "<=" ratio <= bound.
TARGETS: dict[str, tuple[str, str, str, float, str]] = {
    "ef_vs_resnet50_eager": (
        "EfficientFace eager >= 4x ResNet-50 eager (batch 1)",
        "efficientface/eager/b1", "resnet50/eager/b1", 4.0, ">=",
    ),
    "ef_vs_shufflenet_eager": (
        "EfficientFace eager >= 0.8x ShuffleNetV2 x1.0 eager (batch 1)",
        "efficientface/eager/b1", "shufflenet_v2_x1_0/eager/b1", 0.8, ">=",
    ),
    "ef_deployment_vs_eager": (
        "EfficientFace deployment (best of ONNX fp32/int8) >= 3.5x its eager (batch 1)",
        "efficientface/deployment/b1", "efficientface/eager/b1", 3.5, ">=",
    ),
    "ef_vs_resnet50_memory_tensors": (
        "EfficientFace weights + peak activations <= 1/3 of ResNet-50's",
        "memory:efficientface/tensors", "memory:resnet50/tensors", 1 / 3, "<=",
    ),
    "ef_vs_resnet50_memory_rss_eager": (
        "EfficientFace eager peak RSS growth <= 1/3 of ResNet-50's",
        "memory:efficientface/eager", "memory:resnet50/eager", 1 / 3, "<=",
    ),
    "ef_vs_resnet50_memory_rss_onnx": (
        "EfficientFace ONNX Runtime fp32 peak RSS growth <= 1/3 of ResNet-50's",
        "memory:efficientface/onnx_fp32", "memory:resnet50/onnx_fp32", 1 / 3, "<=",
    ),
}  # fmt: skip


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


def _rss_kb(field: str) -> int:
    """Return a `/proc/self/status` memory field (VmRSS, VmHWM) in KiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:"))


def _tiny_onnx_model() -> bytes:
    """A one-node ONNX graph, to initialise ONNX Runtime before measuring a model."""
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("a", "b")]
    graph = helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "relu", io[:1], io[1:])
    return helper.make_model(graph).SerializeToString()


def _probe_memory(runtime: str, target: str, image_size: str, num_threads: str, out: str) -> None:
    """Body of the `measure_memory` subprocess; writes its measurement as JSON to `out`."""
    threads = int(num_threads)
    torch.set_num_threads(threads)
    x = torch.randn(1, 3, int(image_size), int(image_size))
    if runtime == "eager":
        with torch.inference_mode():
            F.conv2d(torch.ones(1, 3, 8, 8), torch.ones(4, 3, 3, 3))
    else:
        tiny = onnxruntime.InferenceSession(_tiny_onnx_model(), providers=["CPUExecutionProvider"])
        tiny.run(None, {"a": np.ones((1, 4), np.float32)})
    try:  # writing 5 resets the kernel's peak-RSS counter (VmHWM) to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
        peak_reset = True
    except OSError:
        peak_reset = False
    before = _rss_kb("VmRSS")
    if runtime == "eager":
        model = create_model(target).eval()
        with torch.inference_mode():
            model(x)
    else:
        inference_session(target, num_threads=threads).run(None, {INPUT_NAME: x.numpy()})
    growth = _rss_kb("VmHWM") - before
    Path(out).write_text(json.dumps({"growth_kb": growth, "peak_reset": peak_reset}))


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
    code = "import sys; from lightfer.bench import _probe_memory; _probe_memory(*sys.argv[1:])"
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


def _eager_call(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def call() -> object:
        with torch.inference_mode():
            return model(x)

    return call


def _onnx_call(path: Path, x: np.ndarray, num_threads: int) -> Callable[[], object]:
    session = inference_session(path, num_threads=num_threads)
    return lambda: session.run([OUTPUT_NAME], {INPUT_NAME: x})


def _gemm_call() -> Callable[[], object]:
    a = torch.randn(_GEMM_SIZE, _GEMM_SIZE)
    b = torch.randn(_GEMM_SIZE, _GEMM_SIZE)
    return lambda: torch.mm(a, b)


def _gpu_throughput(
    models: Mapping[str, nn.Module], *, image_size: int, batch_size: int, repeats: int,
    block_seconds: float,
) -> dict[str, Any]:  # fmt: skip
    """Batches/s of each model on the first CUDA device, interleaved like the CPU figures."""
    device = torch.device("cuda")
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    calls = {}
    for name, model in models.items():
        on_gpu = model.to(device)

        def call(model: nn.Module = on_gpu) -> object:
            with torch.inference_mode():
                out = model(x)
            torch.cuda.synchronize()
            return out

        calls[name] = call
    rates = measure_throughput(calls, repeats=repeats, block_seconds=block_seconds, warmup_calls=10)
    for model in models.values():
        model.cpu()
    return {
        "available": True,
        "device": torch.cuda.get_device_name(device),
        "batch_size": batch_size,
        "batches_per_s": {name: statistics.median(r) for name, r in rates.items()},
        "blocks": rates,
    }


def _blocks(results: Mapping[str, Any], key: str) -> list[float] | None:
    """Per-round values of a CPU throughput ("model/runtime/b1"), or a memory figure
    ("memory:model/measure") as a one-element list; None if it was not measured."""
    if key.startswith("memory:"):
        model, measure = key.removeprefix("memory:").split("/")
        entry = results["memory"].get(model, {}).get(measure)
        return None if entry is None else [entry["mb"]]
    model, runtime, batch = key.split("/")
    per_runtime = results["cpu"].get(model, {})
    candidates = ("onnx_fp32", "onnx_int8") if runtime == "deployment" else (runtime,)
    entries = [per_runtime[r][batch] for r in candidates if batch in per_runtime.get(r, {})]
    if not entries:
        return None
    return max(entries, key=lambda entry: entry["images_per_s"])["blocks"]


def evaluate_targets(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Evaluate `TARGETS` on `run_benchmark` results; targets whose inputs are absent are skipped.

    `value` is the ratio of the two same-run medians. For speed targets, whose variants ran
    in the same rounds, `per_round` also gives the median, min and max of the per-round
    ratios: their spread shows how much the machine's drift can move the value.

    Returns:
        target key -> `{"description", "value", "bound", "met", "per_round"}`.
    """
    evaluated = {}
    for key, (description, numerator, denominator, bound, kind) in TARGETS.items():
        num, den = _blocks(results, numerator), _blocks(results, denominator)
        if num is None or den is None:
            continue
        value = statistics.median(num) / statistics.median(den)
        ratios = [n / d for n, d in zip(num, den, strict=True)]
        evaluated[key] = {
            "description": description,
            "value": value,
            "bound": bound,
            "met": value >= bound if kind == ">=" else value <= bound,
            "per_round": {
                "median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            },
        }  # fmt: skip
    return evaluated


def run_benchmark(
    *,
    workdir: Path,
    models: Sequence[str] = ("efficientface", "resnet50", "shufflenet_v2_x1_0"),
    image_size: int = 224,
    batch_sizes: Sequence[int] = (1, 16),
    repeats: int = 7,
    block_seconds: float = 1.0,
    onnx: bool = True,
    int8: bool = True,
    memory: bool = True,
    gpu: bool = True,
    num_threads: int = 1,
    calibration: CalibrationBatches | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Measure parameters, FLOPs, CPU and GPU speed and inference memory of registered models.

    Models get random weights with batch norm recalibrated on synthetic images (speed does
    not depend on the weights, but collapsed activations would make the ONNX check and the
    int8 calibration vacuous). The ONNX and int8 files are written to `workdir`.

    Args:
        workdir: an existing directory for the exported models.
        models: registry names; include "efficientface", "resnet50" and
            "shufflenet_v2_x1_0" to evaluate `TARGETS`.
        image_size: square input side.
        batch_sizes: CPU batch sizes; GPU throughput uses the largest.
        repeats: interleaved rounds (the median over them is reported).
        block_seconds: duration of one timed block.
        onnx: also measure ONNX Runtime fp32.
        int8: also measure the int8 model (needs `onnx`).
        memory: measure inference memory in subprocesses (a few seconds each).
        gpu: measure GPU batches/s when CUDA is available (otherwise a note says why not).
        num_threads: intra-op threads for PyTorch and ONNX Runtime. 1 by default: on a
            shared machine multi-threaded timings are erratic; pass the core count for
            whole-machine figures.
        calibration: int8 calibration batches (see `lightfer.export.quantize_int8`), used
            for every model: a callable, or a re-iterable such as a list. Defaults to
            synthetic images, fine for speed but not for accuracy.
        seed: seeds weights, inputs and the block order.

    Returns:
        A JSON-able dict with keys `environment`, `settings`, `models` (params, FLOPs,
        sizes), `cpu` (`[model][runtime]["b<batch>"]` -> images/s median and blocks),
        `gemm` (`["gflops"]["b<batch>"]`, attainable fp32 rate per timing group),
        `flop_bound` (`[model]["bound_images_per_s"]` and `[model]["fraction"]`), `gpu`,
        `memory` and `targets` (see `evaluate_targets`).
    """
    if int8 and not onnx:
        raise ValueError("int8=True needs onnx=True: the int8 model is quantised from the ONNX one")
    runtimes = [r for r, on in zip(RUNTIMES, (True, onnx, int8), strict=True) if on]
    results: dict[str, Any] = {
        "environment": _environment(num_threads),
        "settings": {
            "models": list(models), "image_size": image_size, "batch_sizes": list(batch_sizes),
            "repeats": repeats, "block_seconds": block_seconds, "runtimes": runtimes,
            "num_threads": num_threads, "seed": seed,
        },
        "models": {}, "cpu": {}, "memory": {}, "memory_methods": dict(_MEMORY_METHODS),
    }  # fmt: skip
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        torch.manual_seed(seed)
        built, files = {}, {}
        for name in models:
            built[name] = _build(name, image_size, seed)
            results["models"][name], files[name] = _describe_and_export(
                name, built[name], runtimes, workdir, image_size, calibration, seed
            )
            results["memory"][name] = {
                "tensors": measure_tensor_memory(built[name], image_size=image_size)
            }
        _time_cpu(results, built, files, repeats=repeats, block_seconds=block_seconds, seed=seed)
        results["flop_bound"] = _flop_bound(results)
        results["gpu"] = _gpu_section(
            built, gpu, image_size, max(batch_sizes), repeats, block_seconds
        )
        if memory:
            for name in models:
                results["memory"][name]["eager"] = measure_memory(
                    "eager", name, image_size=image_size, num_threads=num_threads
                )
                for runtime, path in files[name].items():
                    results["memory"][name][runtime] = measure_memory(
                        "onnx", path, image_size=image_size, num_threads=num_threads
                    )
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


def _build(name: str, image_size: int, seed: int) -> nn.Module:
    """A registry model with batch norm recalibrated on synthetic images, in eval mode."""
    model = create_model(name)
    batches = _synthetic_batches(image_size, count=2, batch_size=4, seed=seed)
    return recalibrate_batchnorm(model, batches).eval()


def _describe_and_export(
    name: str, model: nn.Module, runtimes: Sequence[str], workdir: Path, image_size: int,
    calibration: CalibrationBatches | None, seed: int,
) -> tuple[dict[str, Any], dict[str, Path]]:  # fmt: skip
    """Count a model's parameters and FLOPs and write its ONNX/int8 files as requested."""
    info: dict[str, Any] = {
        "params": count_parameters(model),
        "mflops": count_flops(model, image_size) / 1e6,
        "weights_mb": _state_bytes(model) / _MB,
    }
    files: dict[str, Path] = {}
    if "onnx_fp32" in runtimes:
        files["onnx_fp32"] = export_onnx(
            model, workdir / f"{name}-{image_size}.onnx", image_size=image_size
        )
    if "onnx_int8" in runtimes:
        batches = calibration
        if batches is None:
            batches = _synthetic_batches(image_size, count=8, batch_size=4, seed=seed + 1)
        files["onnx_int8"] = quantize_int8(
            files["onnx_fp32"], workdir / f"{name}-{image_size}-int8.onnx", batches
        )
    for runtime, path in files.items():
        info[f"{runtime}_mb"] = path.stat().st_size / _MB
    return info, files


def _time_cpu(
    results: dict[str, Any], built: Mapping[str, nn.Module],
    files: Mapping[str, Mapping[str, Path]], *, repeats: int, block_seconds: float, seed: int,
) -> None:  # fmt: skip
    """Fill `results["cpu"]` and `results["gemm"]`: one interleaved run per batch size.

    Grouping by batch size keeps rounds short, so the variants compared by `TARGETS` (all at
    batch 1) run close together in time. Every group also times the GEMM.
    """
    settings = results["settings"]
    image_size, num_threads = settings["image_size"], settings["num_threads"]
    results["gemm"] = {"size": _GEMM_SIZE, "gflops": {}, "blocks": {}}
    for batch in settings["batch_sizes"]:
        calls: dict[str, Callable[[], object]] = {"gemm": _gemm_call()}
        for name, model in built.items():
            x = torch.randn(batch, 3, image_size, image_size)
            calls[f"{name}/eager"] = _eager_call(model, x)
            for runtime, path in files[name].items():
                calls[f"{name}/{runtime}"] = _onnx_call(path, x.numpy(), num_threads)
        logger.info(
            "batch %d: timing %d variants x %d rounds of %.1f s",
            batch, len(calls), repeats, block_seconds,
        )  # fmt: skip
        rates = measure_throughput(calls, repeats=repeats, block_seconds=block_seconds, seed=seed)
        gemm = [rate * 2 * _GEMM_SIZE**3 / 1e9 for rate in rates.pop("gemm")]
        results["gemm"]["gflops"][f"b{batch}"] = statistics.median(gemm)
        results["gemm"]["blocks"][f"b{batch}"] = gemm
        for key, per_call in rates.items():
            name, runtime = key.split("/")
            blocks = [rate * batch for rate in per_call]
            results["cpu"].setdefault(name, {}).setdefault(runtime, {})[f"b{batch}"] = {
                "images_per_s": statistics.median(blocks), "blocks": blocks,
            }  # fmt: skip


def _environment(num_threads: int) -> dict[str, Any]:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(
                line.split(":", 1)[1].strip() for line in info if line.startswith("model name")
            )
    except (OSError, StopIteration):
        pass
    return {
        "python": platform.python_version(), "torch": torch.__version__,
        "onnxruntime": onnxruntime.__version__, "cpu": cpu, "logical_cpus": _cpu_count(),
        "num_threads": num_threads,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }  # fmt: skip


def _cpu_count() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _flop_bound(results: Mapping[str, Any]) -> dict[str, Any]:
    """The fraction of the attainable fp32 FLOP rate (the GEMM of the same timing group)
    that each model's fp32 runtimes reach.

    int8 runs on other instructions (VNNI) with a higher peak, so it gets no fraction.
    """
    bound: dict[str, Any] = {}
    for name, info in results["models"].items():
        images = {
            batch: gflops * 1e3 / info["mflops"]
            for batch, gflops in results["gemm"]["gflops"].items()
        }
        fraction = {
            f"{runtime}/{batch}": entry["images_per_s"] / images[batch]
            for runtime in _FP32_RUNTIMES
            for batch, entry in results["cpu"][name].get(runtime, {}).items()
        }
        bound[name] = {"bound_images_per_s": images, "fraction": fraction}
    return bound


def _gpu_section(
    built: Mapping[str, nn.Module], enabled: bool, image_size: int, batch_size: int,
    repeats: int, block_seconds: float,
) -> dict[str, Any]:  # fmt: skip
    if not enabled:
        return {"available": False, "note": "GPU throughput not requested (gpu=False)"}
    if not torch.cuda.is_available():
        return {"available": False, "note": "skipped: CUDA is not available on this machine"}
    return _gpu_throughput(
        built, image_size=image_size, batch_size=batch_size, repeats=repeats,
        block_seconds=block_seconds,
    )  # fmt: skip


def _fmt(value: float | None, digits: int = 1) -> str:
    return (
        "-"
        if value is None or (isinstance(value, float) and math.isnan(value))
        else f"{value:,.{digits}f}"
    )


def format_markdown(results: Mapping[str, Any]) -> str:
    """Render `run_benchmark` results as Markdown: cost, CPU speed and target tables.

    Returns:
        Markdown text ending with a newline.
    """
    env, settings = results["environment"], results["settings"]
    batches = [f"b{b}" for b in settings["batch_sizes"]]
    gpu = results.get("gpu", {})
    memory_columns = ["tensors", *settings["runtimes"]]
    lines = [
        f"Input {settings['image_size']}x{settings['image_size']}; {env['cpu']}, "
        f"{settings['num_threads']} thread(s) of {env['logical_cpus']}; torch {env['torch']}, "
        f"onnxruntime {env['onnxruntime']}. Speeds are medians of {settings['repeats']} "
        f"interleaved blocks of {settings['block_seconds']} s.",
        "",
        _table(
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
        _table(
            ["model", "runtime"]
            + [f"CPU img/s {b}" for b in batches]
            + [f"FLOP bound reached {b}" for b in batches],
            [
                [name, runtime]
                + [_fmt(per_batch[b]["images_per_s"]) for b in batches]
                + [
                    _percent(results["flop_bound"][name]["fraction"].get(f"{runtime}/{b}"))
                    for b in batches
                ]
                for name, per_runtime in results["cpu"].items()
                for runtime, per_batch in per_runtime.items()
            ],
        ),
        "",
        f"Attainable fp32 FLOP rate (GEMM {results['gemm']['size']}^2 timed in each batch "
        "group), and the images/s it bounds: "
        + "; ".join(
            f"{b}: {_fmt(results['gemm']['gflops'][b])} GFLOP/s ("
            + ", ".join(
                f"{name} {_fmt(bound['bound_images_per_s'][b])}"
                for name, bound in results["flop_bound"].items()
            )
            + ")"
            for b in batches
        )
        + ".",
        f"GPU: {gpu['device']}, batch {gpu['batch_size']}."
        if gpu.get("available")
        else f"GPU: {gpu.get('note', 'not measured')}.",
    ]
    lines += [f"Memory {key}: {text}." for key, text in results["memory_methods"].items()]
    targets = results.get("targets", {})
    if targets:
        rows = [
            [
                entry["description"],
                f"{entry['value']:.2f}",
                _round_range(entry["per_round"]),
                "yes" if entry["met"] else "**no**",
            ]
            for entry in targets.values()
        ]
        header = ["target", "ratio of medians", "per-round ratios: median (min-max)", "met"]
        lines += ["", _table(header, rows)]
    return "\n".join(lines) + "\n"


def _round_range(per_round: Mapping[str, float]) -> str:
    if per_round["min"] == per_round["max"]:
        return "-"
    return f"{per_round['median']:.2f} ({per_round['min']:.2f}-{per_round['max']:.2f})"


def _percent(fraction: float | None) -> str:
    return "-" if fraction is None else f"{100 * fraction:.0f}%"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)
