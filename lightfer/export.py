"""ONNX export and int8 static quantisation of trained models, for CPU deployment.

`export_onnx` writes an ONNX model with a dynamic batch axis and a fixed square input size
(EfficientFace's quadrant cut and modulator pooling are resolved for that size), then checks
ONNX Runtime's outputs against PyTorch's (`verify_onnx`). `quantize_int8` turns it into a
QDQ int8 model with ONNX Runtime's static quantisation, calibrated on image batches the
caller supplies. Both write atomically (`lightfer.io.atomic_path`).

The ONNX file takes normalised float32 images `input` `(N, 3, S, S)` and returns `logits`
`(N, num_classes)`; the normalisation and class names can be stored in its metadata.
`inference_metadata` gives the `lightfer.`-prefixed `metadata_props` that make a file usable
on its own by `lightfer.predict`; `read_inference_metadata` reads them back.

Export uses PyTorch's TorchScript-based exporter (`dynamo=False`): the torch.export-based
one needs the `onnxscript` package, which is not a project dependency.

An untrained model's eval-mode activations collapse towards zero, which makes any output
comparison vacuous: recalibrate batch norm first (`lightfer.models.recalibrate_batchnorm`)
or export trained weights.
"""

from __future__ import annotations

import itertools
import json
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from torch import Tensor, nn

from lightfer.errors import ExportError
from lightfer.io import atomic_path
from lightfer.models.checkpoint import check_inference_metadata
from lightfer.onnx_session import INPUT_NAME, OUTPUT_NAME
from lightfer.onnx_session import inference_session as onnx_session

__all__ = [
    "INPUT_NAME",
    "OUTPUT_NAME",
    "CalibrationBatches",
    "export_onnx",
    "inference_metadata",
    "inference_session",
    "quantize_int8",
    "read_inference_metadata",
    "verify_forward",
    "verify_onnx",
]

logger = logging.getLogger(__name__)


CalibrationBatches = Iterable[Tensor | np.ndarray] | Callable[[], Iterable[Tensor | np.ndarray]]

# `metadata_props` keys written by `inference_metadata`; values are JSON.
_META_KEYS = {
    "classes": "lightfer.classes",
    "image_size": "lightfer.image_size",
    "mean": "lightfer.mean",
    "std": "lightfer.std",
}


def inference_metadata(
    *, classes: Sequence[str], image_size: int, mean: Sequence[float], std: Sequence[float]
) -> dict[str, str]:
    """The `metadata` for `export_onnx` that lets `lightfer.predict` run the file on its own.

    Args:
        classes: class names in output order (checkpoints record them).
        image_size: square input side of the exported graph.
        mean: per-channel normalisation mean of [0, 1] RGB inputs.
        std: per-channel normalisation standard deviation.

    Returns:
        JSON strings under `lightfer.classes`, `lightfer.image_size`, `lightfer.mean` and
        `lightfer.std`.
    """
    return {
        _META_KEYS["classes"]: json.dumps([str(c) for c in classes]),
        _META_KEYS["image_size"]: json.dumps(int(image_size)),
        _META_KEYS["mean"]: json.dumps([float(m) for m in mean]),
        _META_KEYS["std"]: json.dumps([float(s) for s in std]),
    }


def read_inference_metadata(
    props: Mapping[str, str],
    *,
    source: str | Path,
    kind: str = "ONNX model",
    remedy: str = "export_onnx(..., metadata=inference_metadata(classes=..., image_size=..., "
    "mean=..., std=...)) using its checkpoint's values",
) -> dict[str, object]:
    """Parse what `inference_metadata` wrote, e.g. from a session's `custom_metadata_map`.

    Args:
        props: the model's metadata_props as a mapping.
        source: the file they come from, for the message.
        kind: what the file is, for the message ("ONNX model", "OpenVINO model").
        remedy: how to write a file with the metadata, for the message.

    Returns:
        `classes` (tuple of str), `image_size` (int), `mean` and `std` (tuples of 3 floats).

    Raises:
        ExportError: a key is missing or is not JSON.
        CheckpointError: a value is unusable (`check_inference_metadata`: e.g. a zero std).
    """
    missing = [key for key in _META_KEYS.values() if key not in props]
    if missing:
        raise ExportError(
            f"{kind} {source} does not record {', '.join(missing)}, which prediction needs "
            f"(class order, input size, normalisation); re-export it with {remedy}"
        )
    try:
        values = {name: json.loads(props[key]) for name, key in _META_KEYS.items()}
    except ValueError as err:
        raise ExportError(
            f"{kind} {source} has malformed lightfer metadata ({err}); re-export it with {remedy}"
        ) from err
    classes, image_size, mean, std = check_inference_metadata(**values, source=f"{kind} {source}")
    return {"classes": classes, "image_size": image_size, "mean": mean, "std": std}


def inference_session(path: str | Path, *, num_threads: int | None = None) -> ort.InferenceSession:
    """Open an ONNX model on ONNX Runtime's CPU provider with all graph optimisations.

    Args:
        path: the `.onnx` file.
        num_threads: intra-op threads; defaults to `torch.get_num_threads()`, so that
            PyTorch and ONNX Runtime are compared on the same number of cores.

    Returns:
        The session (`lightfer.onnx_session.inference_session`).
    """
    return onnx_session(path, num_threads=num_threads or torch.get_num_threads())


def verify_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    image_size: int,
    batch_size: int = 3,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> float:
    """Check that ONNX Runtime reproduces the eval-mode PyTorch model on a random batch.

    Args:
        model: the PyTorch model (evaluated in eval mode; its mode is restored).
        path: the exported `.onnx` file.
        image_size: input side the file was exported for.
        batch_size: batch used for the check; differs from the export batch by default, to
            exercise the dynamic batch axis.
        rtol: relative tolerance on the logits.
        atol: absolute tolerance on the logits.

    Returns:
        The largest absolute difference between the two runtimes' logits.

    Raises:
        ExportError: the logits differ beyond the tolerances.
    """
    session = inference_session(path)
    return verify_forward(
        model,
        lambda x: session.run([OUTPUT_NAME], {INPUT_NAME: x})[0],
        source=f"ONNX model {path}",
        image_size=image_size,
        batch_size=batch_size,
        rtol=rtol,
        atol=atol,
    )


def verify_forward(
    model: nn.Module,
    forward: Callable[[np.ndarray], np.ndarray],
    *,
    source: str,
    image_size: int,
    batch_size: int = 3,
    rtol: float = 1e-3,
    atol: float = 1e-4,
) -> float:
    """Check that a deployed model's `forward` (numpy batch to logits) reproduces PyTorch.

    The batch is seeded normal noise `(batch_size, 3, S, S)`; see `verify_onnx` for the
    arguments. `source` names the deployed file in the message.

    Returns:
        The largest absolute difference between the logits.

    Raises:
        ExportError: the shapes differ, or the logits differ beyond the tolerances.
    """
    x = torch.randn(
        batch_size, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)
    )
    was_training = model.training
    with torch.inference_mode():
        expected = model.eval()(x.to(_device(model))).cpu().numpy()
    model.train(was_training)
    got = forward(x.numpy())
    if got.shape != expected.shape:
        raise ExportError(
            f"{source} returns logits of shape {got.shape} for a {tuple(x.shape)} "
            f"batch, PyTorch {expected.shape}; the export is not faithful for this model"
        )
    max_diff = float(np.abs(got - expected).max())
    if not np.allclose(got, expected, rtol=rtol, atol=atol):
        raise ExportError(
            f"{source} disagrees with PyTorch on a {tuple(x.shape)} batch: largest "
            f"logit difference {max_diff:.3g} exceeds atol={atol} + rtol={rtol}; the export "
            f"is not faithful for this model"
        )
    return max_diff


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    image_size: int = 224,
    opset_version: int = 17,
    metadata: Mapping[str, str] | None = None,
    check: bool = True,
) -> Path:
    """Export a model to ONNX with a dynamic batch axis and check it against PyTorch.

    Args:
        model: a registry model; exported in eval mode (its mode is restored afterwards).
        path: destination `.onnx` file.
        image_size: the square input side the exported graph accepts.
        opset_version: ONNX opset.
        metadata: strings stored in the model's `metadata_props`, e.g. `classes`, `mean`,
            `std` (read back with `onnx.load(path).metadata_props`).
        check: run `verify_onnx` before the file is committed.

    Returns:
        The path written.

    Raises:
        ExportError: ONNX Runtime's outputs differ from PyTorch's (nothing is written).
    """
    path = Path(path)
    example = torch.randn(2, 3, image_size, image_size, device=_device(model))
    was_training = model.training
    model.eval()
    try:
        with atomic_path(path) as tmp:
            with warnings.catch_warnings():
                # Input-size arithmetic is traced as constants on purpose: the graph has a
                # fixed input size. The exporter also announces its own deprecation.
                warnings.simplefilter("ignore", torch.jit.TracerWarning)
                warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX")
                warnings.filterwarnings("ignore", message=".*feature will be removed")
                torch.onnx.export(
                    model,
                    (example,),
                    str(tmp),
                    dynamo=False,
                    input_names=[INPUT_NAME],
                    output_names=[OUTPUT_NAME],
                    dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
                    opset_version=opset_version,
                )
            proto = onnx.load(str(tmp))
            onnx.checker.check_model(proto)
            if metadata:
                onnx.helper.set_model_props(proto, dict(metadata))
                onnx.save(proto, str(tmp))
            if check:
                max_diff = verify_onnx(model, tmp, image_size=image_size)
                logger.info("ONNX Runtime matches PyTorch (max |diff| %.2g)", max_diff)
    finally:
        model.train(was_training)
    logger.info("exported %s at %dx%d to %s", type(model).__name__, image_size, image_size, path)
    return path


class _BatchReader(CalibrationDataReader):
    """Feeds calibration batches to ONNX Runtime's quantiser as float32 arrays."""

    def __init__(self, batches: Iterable[Tensor | np.ndarray]) -> None:
        self._batches: Iterator[Tensor | np.ndarray] = iter(batches)
        self.count = 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        if batch is None:
            return None
        self.count += 1
        array = batch.detach().cpu().numpy() if isinstance(batch, Tensor) else np.asarray(batch)
        return {INPUT_NAME: np.ascontiguousarray(array, dtype=np.float32)}


def quantize_int8(
    onnx_path: str | Path,
    path: str | Path,
    calibration: CalibrationBatches,
    *,
    per_channel: bool = True,
) -> Path:
    """Quantise an exported model to int8 (static, QDQ format) with a calibration set.

    The float model is first pre-processed (shape inference, batch-norm folding) as ONNX
    Runtime recommends; activation ranges are then the min/max observed on `calibration`.
    Weights are int8 (per output channel by default), activations uint8.

    Args:
        onnx_path: a float model written by `export_onnx`.
        path: destination of the int8 model.
        calibration: batches of normalised images `(N, 3, S, S)` as tensors or arrays, or a
            callable returning them. Representative images matter: ranges calibrated on
            noise give a fast but inaccurate model.
        per_channel: one weight scale per output channel rather than per tensor.

    Returns:
        The path written.

    Raises:
        ExportError: `calibration` yields no batch.
    """
    batches = iter(calibration() if callable(calibration) else calibration)
    first = next(batches, None)
    if first is None:
        raise ExportError(
            f"int8 quantisation of {onnx_path} got no calibration batch; pass an iterable "
            f"(or a callable returning one) of (N, 3, S, S) normalised image batches"
        )
    reader = _BatchReader(itertools.chain([first], batches))
    path = Path(path)
    with tempfile.TemporaryDirectory(prefix="lightfer-quant-") as scratch:
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared))
        with atomic_path(path) as tmp:
            quantize_static(
                str(prepared),
                str(tmp),
                reader,
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                calibrate_method=CalibrationMethod.MinMax,
            )
    logger.info(
        "quantised %s to int8 at %s (%d calibration batches)", onnx_path, path, reader.count
    )
    return path
