"""OpenVINO export (fp32, bf16, int8) of trained models, and its reader, for CPU deployment.

`export_openvino` writes an OpenVINO IR pair, `<name>.xml` (the graph) and `<name>.bin` (the
weights), converted from the ONNX export (`lightfer.export.export_onnx`), so both runtimes
deploy the same graph. The precisions:

* fp32: float32 weights, run in float32.
* bf16: the same float32 file, run with OpenVINO's bfloat16 inference-precision hint
  (`INFERENCE_PRECISION_HINT`), recorded in the file. Only where the CPU has bfloat16
  instructions (AVX512_BF16 or AMX; `cpu_supports_bf16`).
* int8: post-training quantisation by NNCF (`nncf.quantize`, min-max ranges without bias
  correction), calibrated on image batches the caller supplies, as
  `lightfer.export.quantize_int8` is for ONNX Runtime.

The file carries `lightfer.export.inference_metadata` in its runtime info (section
`lightfer`), with the precision, so `lightfer predict --model model.xml` and
`lightfer.models.inference.load_for_inference` run it on its own (`load_openvino`).

OpenVINO's CPU plugin runs float32 models in bfloat16 by default on CPUs that have it; the
fp32 and int8 files therefore pin the float32 hint, so that "fp32" means float32 arithmetic.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor, nn

from lightfer.errors import CheckpointError, ExportError
from lightfer.export import CalibrationBatches, export_onnx, read_inference_metadata
from lightfer.io import atomic_path

__all__ = [
    "PRECISIONS",
    "cpu_supports_bf16",
    "export_openvino",
    "load_openvino",
    "openvino_forward",
    "require_bf16",
]

logger = logging.getLogger(__name__)

PRECISIONS = ("fp32", "bf16", "int8")
# OpenVINO's INFERENCE_PRECISION_HINT per precision: int8 layers run as int8 whatever the
# hint; the hint sets the precision of the layers NNCF leaves in floating point.
_HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}
_SECTION = "lightfer"  # runtime-info section of the metadata
_PRECISION_KEY = "precision"
_REMEDY = "`lightfer export CHECKPOINT --runtime openvino --out MODEL.xml`"


def _openvino() -> Any:
    """Import OpenVINO lazily: it takes a second, and most commands never need it."""
    import openvino

    return openvino


def cpu_supports_bf16() -> bool:
    """Whether OpenVINO's CPU plugin computes in bfloat16 here (AVX512_BF16 or AMX)."""
    core = _openvino().Core()
    return "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def require_bf16(path: str | Path) -> None:
    """Refuse a bf16 export of `path` on a CPU that would silently run it in float32.

    Raises:
        ExportError: the CPU has no bfloat16 instructions.
    """
    if not cpu_supports_bf16():
        raise ExportError(
            f"OpenVINO bf16 was asked for {path}, but this CPU has no bfloat16 instructions "
            f"(OpenVINO's OPTIMIZATION_CAPABILITIES lack BF16: no AVX512_BF16 or AMX), so it "
            f"would silently run in float32; export fp32 or int8 here, or export bf16 on a "
            f"CPU that has them"
        )


def _bin_path(xml: Path) -> Path:
    return xml.with_suffix(".bin")


def export_openvino(
    model: nn.Module,
    path: str | Path,
    *,
    image_size: int,
    metadata: Mapping[str, str] | None = None,
    precision: str = "fp32",
    calibration: CalibrationBatches | None = None,
    onnx: Path | None = None,
) -> Path:
    """Export a model to an OpenVINO IR pair (`path` and its `.bin`) in one precision.

    Args:
        model: a registry model; exported in eval mode (its mode is restored).
        path: destination `.xml`; the weights go to the same name with `.bin`.
        image_size: the square input side of the graph (the batch axis is dynamic).
        metadata: `lightfer.export.inference_metadata(...)`, stored in the runtime info;
            without it the file is for measurements only (`load_openvino` refuses it).
        precision: "fp32", "bf16" or "int8".
        calibration: int8 only: batches of normalised images `(N, 3, S, S)` as tensors or
            arrays, or a callable returning them (faces like those the model will see).
        onnx: `model`'s ONNX export at `image_size` to convert (`export_onnx`'s output);
            by default the model is exported here.

    Returns:
        `path`. Both files are written atomically, the weights first; an fp32 file is
        committed only once OpenVINO reproduces PyTorch's logits (`verify_forward`).

    Raises:
        ExportError: an unknown precision, bf16 on a CPU without it, int8 without
            calibration batches, or an fp32 file that disagrees with PyTorch.
    """
    from lightfer.export import verify_forward

    ov = _openvino()
    path = Path(path)
    if path.suffix.lower() != ".xml":
        raise ExportError(f"{path}: an OpenVINO model is an .xml file (with its .bin beside it)")
    if precision not in PRECISIONS:
        raise ExportError(f"OpenVINO precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "bf16":
        require_bf16(path)
    samples = _calibration_samples(calibration, path) if precision == "int8" else None
    with tempfile.TemporaryDirectory(prefix="lightfer-openvino-", dir=path.parent) as scratch:
        if onnx is None:
            scratch_onnx = Path(scratch) / "model.onnx"
            onnx = export_onnx(model, scratch_onnx, image_size=image_size, check=False)
        ov_model = ov.convert_model(onnx)
        if samples is not None:
            ov_model = _quantize(ov_model, samples)
        for key, value in (metadata or {}).items():
            ov_model.set_rt_info(value, [_SECTION, key.removeprefix(f"{_SECTION}.")])
        ov_model.set_rt_info(precision, [_SECTION, _PRECISION_KEY])
        # Read by compile_model itself, so that other OpenVINO tools run the file as intended.
        ov_model.set_rt_info(_HINTS[precision], ["runtime_options", "INFERENCE_PRECISION_HINT"])
        staged = Path(scratch) / "model.xml"
        ov.save_model(ov_model, staged, compress_to_fp16=False)
        if precision == "fp32":
            forward = openvino_forward(staged, precision=precision)
            difference = verify_forward(
                model, forward, source=f"OpenVINO model {path}", image_size=image_size
            )
            logger.info("OpenVINO matches PyTorch (max |diff| %.2g)", difference)
        with atomic_path(path) as xml_tmp, atomic_path(_bin_path(path)) as bin_tmp:
            _bin_path(staged).replace(bin_tmp)  # committed first (the inner block)
            staged.replace(xml_tmp)
    logger.info("exported %s to OpenVINO %s at %s", type(model).__name__, precision, path)
    return path


def _calibration_samples(calibration: CalibrationBatches | None, path: Path) -> list[np.ndarray]:
    """One-image float32 arrays from the calibration batches (NNCF counts samples)."""
    batches: Iterable[Tensor | np.ndarray] = (
        () if calibration is None else calibration() if callable(calibration) else calibration
    )
    samples = []
    for batch in batches:
        array = batch.detach().cpu().numpy() if isinstance(batch, Tensor) else np.asarray(batch)
        samples += [np.ascontiguousarray(image[None], dtype=np.float32) for image in array]
    if not samples:
        raise ExportError(
            f"OpenVINO int8 quantisation of {path} got no calibration batch; pass an iterable "
            f"(or a callable returning one) of (N, 3, S, S) normalised image batches"
        )
    return samples


def _quantize(ov_model: Any, samples: list[np.ndarray]) -> Any:
    """NNCF's post-training quantisation, its progress bars (printed on stdout) silenced."""
    # NNCF imports torch's extension builder, which warns that CUDA is absent on CPU hosts.
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    import nncf

    nncf.set_log_level(logging.ERROR)
    # No bias correction: it doubled the time (7 s to 3.4 s for EfficientFace at 224 px
    # here) and did not move the int8 model's top-1 agreement with PyTorch (92.3% with it,
    # 92.8% without, on 600 synthetic test faces at 48 px).
    advanced = nncf.AdvancedQuantizationParameters(disable_bias_correction=True)
    with contextlib.redirect_stdout(io.StringIO()):
        return nncf.quantize(
            ov_model,
            nncf.Dataset(samples),
            subset_size=len(samples),
            advanced_parameters=advanced,
        )


def openvino_forward(
    path: str | Path,
    *,
    precision: str,
    num_threads: int | None = None,
    batch_size: int | None = None,
) -> Callable[[np.ndarray], np.ndarray]:
    """Compile an IR file for the CPU and return its forward: a float32 batch to logits.

    Args:
        path: the `.xml` file.
        precision: the file's precision (its inference-precision hint is applied).
        num_threads: OpenVINO's inference threads; default `torch.get_num_threads()`,
            so that PyTorch and OpenVINO are compared on the same number of cores.
        batch_size: compile for this batch size only (static shapes: 15-20% faster at
            batch 1 here, for a caller that always sends one size); None: any batch.
    """
    import torch

    ov = _openvino()
    core = ov.Core()
    model = core.read_model(str(path))
    if batch_size is not None:
        shape = model.input(0).get_partial_shape()
        shape[0] = batch_size
        model.reshape(shape)
    config = {
        "INFERENCE_PRECISION_HINT": _HINTS[precision],
        "INFERENCE_NUM_THREADS": num_threads or torch.get_num_threads(),
        "PERFORMANCE_HINT": "LATENCY",
    }
    request = core.compile_model(model, "CPU", config).create_infer_request()

    def forward(batch: np.ndarray) -> np.ndarray:
        request.infer({0: batch})
        return request.get_output_tensor(0).data.copy()

    return forward


def load_openvino(
    path: str | Path, *, num_threads: int | None = None
) -> tuple[Callable[[np.ndarray], np.ndarray], dict[str, object]]:
    """Read an IR file written by `export_openvino`: its forward and its metadata.

    A bf16 file on a CPU without bfloat16 runs in float32 (a warning says so): the outputs
    are then, if anything, closer to PyTorch's.

    Returns:
        The forward (see `openvino_forward`) and `read_inference_metadata`'s dict with
        `precision` added.

    Raises:
        CheckpointError: the `.bin` beside it is missing, or OpenVINO cannot read the pair.
        ExportError: the file lacks lightfer's metadata (`read_inference_metadata`).
    """
    ov = _openvino()
    path = Path(path)
    weights = _bin_path(path)
    if not weights.is_file():
        raise CheckpointError(
            f"OpenVINO model {path} has no weights file {weights} beside it; an OpenVINO "
            f"model is the .xml and .bin pair export writes: copy both, or export again with "
            f"{_REMEDY}"
        )
    try:
        model = ov.Core().read_model(str(path))
    except RuntimeError as err:
        raise CheckpointError(
            f"OpenVINO model {path} cannot be read by OpenVINO "
            f"({' '.join(str(err).split())[:300]}); export it again with {_REMEDY}"
        ) from err
    props = {
        f"{_SECTION}.{key}": model.get_rt_info([_SECTION, key]).astype(str)
        for key in ("classes", "image_size", "mean", "std", _PRECISION_KEY)
        if model.has_rt_info([_SECTION, key])
    }
    info = read_inference_metadata(props, source=path, kind="OpenVINO model", remedy=_REMEDY)
    precision = props.get(f"{_SECTION}.{_PRECISION_KEY}", "fp32")
    if precision not in PRECISIONS:
        raise ExportError(
            f"OpenVINO model {path} records precision {precision!r}, not one of "
            f"{', '.join(PRECISIONS)}; export it again with {_REMEDY}"
        )
    if precision == "bf16" and not cpu_supports_bf16():
        logger.warning("%s is a bf16 model; this CPU has no bfloat16: it runs in float32", path)
        precision = "fp32"
    info["precision"] = precision
    return openvino_forward(path, precision=precision, num_threads=num_threads), info
