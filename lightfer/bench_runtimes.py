"""The benchmark's deployment runtimes: their files, their forwards, their agreement with PyTorch.

A deployment runtime is a file and the engine that runs it on the CPU: ONNX Runtime fp32 and
static int8 (`lightfer.export`), OpenVINO fp32, bf16 and NNCF int8
(`lightfer.openvino_export`). `export_runtimes` writes a model's files by the recipes
`lightfer export` uses, `runtime_forward` opens one with a number of threads, and
`measure_agreement` compares their outputs with the fp32 PyTorch model's on real faces.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from lightfer.export import (
    INPUT_NAME,
    OUTPUT_NAME,
    CalibrationBatches,
    export_onnx,
    inference_session,
    quantize_int8,
)

if TYPE_CHECKING:
    from lightfer.face_batches import FaceBatches

__all__ = [
    "DEPLOYMENT_RUNTIMES",
    "Forward",
    "deployment_runtimes",
    "export_runtimes",
    "measure_agreement",
    "runtime_forward",
]

logger = logging.getLogger(__name__)

DEPLOYMENT_RUNTIMES = (
    "onnx_fp32",
    "onnx_int8",
    "openvino_fp32",
    "openvino_bf16",
    "openvino_int8",
)

Forward = Callable[[np.ndarray], np.ndarray]


def deployment_runtimes(*, onnx: bool, int8: bool, openvino: bool) -> list[str]:
    """The deployment runtimes to measure, in `DEPLOYMENT_RUNTIMES` order.

    bf16 is left out on a CPU without bfloat16 instructions, where OpenVINO would run the
    file in float32 (a log line says so).
    """
    wanted = {
        "onnx_fp32": onnx,
        "onnx_int8": onnx and int8,
        "openvino_fp32": openvino,
        "openvino_bf16": openvino,
        "openvino_int8": openvino and int8,
    }
    if openvino:
        from lightfer.openvino_export import cpu_supports_bf16

        if not cpu_supports_bf16():
            logger.info("OpenVINO bf16 not measured: this CPU has no bfloat16 instructions")
            wanted["openvino_bf16"] = False
    return [runtime for runtime in DEPLOYMENT_RUNTIMES if wanted[runtime]]


def export_runtimes(
    model: nn.Module,
    stem: Path,
    runtimes: Sequence[str],
    *,
    image_size: int,
    calibration: CalibrationBatches,
) -> dict[str, Path]:
    """Write `model`'s file for each runtime, named `<stem>-<runtime>.onnx` or `.xml`.

    Args:
        model: the eval-mode model.
        stem: path prefix of the files.
        runtimes: names from `DEPLOYMENT_RUNTIMES`; onnx_int8 needs onnx_fp32.
        image_size: input side of the graphs.
        calibration: the int8 files' calibration batches (a callable or a re-iterable).

    Returns:
        runtime -> file.
    """
    from lightfer.openvino_export import export_openvino

    files: dict[str, Path] = {}
    for runtime in runtimes:
        precision = runtime.split("_")[1]
        if runtime == "onnx_fp32":
            files[runtime] = export_onnx(
                model, Path(f"{stem}-{runtime}.onnx"), image_size=image_size
            )
        elif runtime == "onnx_int8":
            files[runtime] = quantize_int8(
                files["onnx_fp32"], Path(f"{stem}-{runtime}.onnx"), calibration
            )
        elif runtime == "openvino_bf16" and "openvino_fp32" in files:
            # The same graph and float32 weights; bf16 is the hint `runtime_forward` compiles
            # it with (what `lightfer export --bf16` records in its copy).
            files[runtime] = files["openvino_fp32"]
        else:
            files[runtime] = export_openvino(
                model,
                Path(f"{stem}-{runtime}.xml"),
                image_size=image_size,
                precision=precision,
                calibration=calibration if precision == "int8" else None,
                onnx=files.get("onnx_fp32"),
            )
    return files


def runtime_forward(
    runtime: str, path: Path, *, num_threads: int, batch_size: int | None = None
) -> Forward:
    """The forward of a runtime's file (a float32 NCHW batch to logits) on `num_threads`.

    `batch_size` fixes OpenVINO's batch axis, as a deployment that always sends one size
    would (faster); ONNX Runtime gains nothing from it here and keeps the dynamic axis.
    """
    engine, precision = runtime.split("_")
    if engine == "onnx":
        session = inference_session(path, num_threads=num_threads)
        return lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    from lightfer.openvino_export import openvino_forward

    return openvino_forward(
        path, precision=precision, num_threads=num_threads, batch_size=batch_size
    )


def measure_agreement(
    model: nn.Module, forwards: Mapping[str, Forward], batches: FaceBatches
) -> dict[str, dict[str, Any]]:
    """Each runtime's agreement with the fp32 PyTorch model on the same normalised faces.

    Returns:
        runtime -> `top1` (share of faces whose most probable class is PyTorch's),
        `max_abs_prob_diff` (the largest absolute difference of any class probability,
        over all faces and classes) and `images`.
    """
    reference, outputs = [], {runtime: [] for runtime in forwards}
    with torch.inference_mode():
        for batch in batches():
            reference.append(torch.softmax(model(batch).double(), dim=1).numpy())
            x = np.ascontiguousarray(batch.numpy())
            for runtime, forward in forwards.items():
                logits = torch.from_numpy(forward(x)).double()
                outputs[runtime].append(torch.softmax(logits, dim=1).numpy())
    expected = np.concatenate(reference)
    agreement = {}
    for runtime, parts in outputs.items():
        got = np.concatenate(parts)
        agreement[runtime] = {
            "top1": float((got.argmax(axis=1) == expected.argmax(axis=1)).mean()),
            "max_abs_prob_diff": float(np.abs(got - expected).max()),
            "images": len(expected),
        }
    return agreement
