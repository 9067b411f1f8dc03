"""Load any model file the project deploys, with its metadata validated, ready to run.

`load_for_inference` is the one reader of model files for inference: a lightfer checkpoint
(its architecture, class order, input size and normalisation are recorded), an official
EfficientFace file (none recorded: `arch` at `OFFICIAL_IMAGE_SIZE` pixels with RAF-DB's
mean and std and `OFFICIAL_CLASS_ORDER`, as upstream trains), or an ONNX or OpenVINO
(`.xml` with its `.bin`) export carrying `lightfer.export.inference_metadata`. Every
problem is a `LightferError` naming the file: missing, empty, corrupted, lacking metadata,
metadata that would silently corrupt the outputs (a zero std), another class order, or a
device that is not there.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lightfer.errors import CheckpointError, DeviceError
from lightfer.labels import CLASSES

__all__ = [
    "OFFICIAL_IMAGE_SIZE",
    "OFFICIAL_MEAN",
    "OFFICIAL_STD",
    "Forward",
    "InferenceModel",
    "load_for_inference",
    "resolve_device",
    "torch_forward",
]

logger = logging.getLogger(__name__)

# What upstream EfficientFace trains with; used for official files, which record nothing.
# Its training script hard-codes RAF-DB's channel statistics (not ImageNet's), whatever
# the dataset; a model trained with others still runs, slightly off its own statistics.
OFFICIAL_IMAGE_SIZE = 224
OFFICIAL_MEAN = (0.57535914, 0.44928582, 0.40079932)
OFFICIAL_STD = (0.20735591, 0.18981615, 0.18132027)

Forward = Callable[[np.ndarray], np.ndarray]

# Export files by suffix: what they are, and what runs them.
_EXPORTS = {
    ".onnx": ("ONNX", "ONNX Runtime's CPU provider"),
    ".xml": ("OpenVINO", "OpenVINO's CPU plugin"),
}


@dataclass(frozen=True, eq=False)
class InferenceModel:
    """A loaded model and what it takes to feed it.

    Attributes:
        path: the file.
        source: "lightfer", "official", "onnx" or "openvino".
        arch: registry name ("" for exports, whose graph is the model).
        classes: class names in output order.
        image_size: square input side in pixels.
        mean: per-channel normalisation mean of [0, 1] RGB.
        std: per-channel standard deviation, all above 0.
        forward: float32 `(N, 3, S, S)` normalised batch -> `(N, len(classes))` logits.
        module: the torch module (eval mode, on the device), None for exports.
    """

    path: Path
    source: str
    arch: str
    classes: tuple[str, ...]
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    forward: Forward
    module: object | None = None


def resolve_device(device: str) -> object:
    """The `torch.device` for `device`, once it is known to exist here.

    Raises:
        DeviceError: `device` is not a torch device name, or names a CUDA (or MPS) device
            this machine does not have.
    """
    import torch

    try:
        target = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise DeviceError(
            f"device {device!r} is not a torch device ({err}); use cpu, cuda or cuda:<index>"
        ) from None
    if target.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(
                f"device {device!r} was asked for, but torch sees no CUDA GPU here "
                f"(torch.cuda.is_available() is False); use --device cpu"
            )
        if target.index is not None and target.index >= count:
            raise DeviceError(
                f"device {device!r} does not exist: torch sees {count} CUDA GPU(s), "
                f"cuda:0..cuda:{count - 1}"
            )
    elif target.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceError(f"device {device!r} is not available here; use --device cpu")
    elif target.type not in ("cpu", "cuda", "mps"):
        raise DeviceError(f"device {device!r} is not supported; use cpu or cuda")
    return target


def torch_forward(model: object, device: str) -> Forward:
    """Eval-mode inference of a torch module on `device`, numpy in and out."""
    import torch

    target = resolve_device(device)
    model = model.to(target).eval()  # type: ignore[attr-defined]

    def forward(batch: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(batch).to(target)).float().cpu().numpy()

    return forward


def _check_model_file(path: Path) -> None:
    if not path.is_file():
        where = "a directory" if path.is_dir() else "not found"
        raise CheckpointError(
            f"model file {path} is {where}; pass a lightfer checkpoint (.pt), an official "
            f"EfficientFace file (.pth.tar), an ONNX export (.onnx) or an OpenVINO export "
            f"(.xml with its .bin)"
        )
    if path.stat().st_size == 0:
        raise CheckpointError(f"model file {path} is empty (0 bytes); copy or export it again")


def load_for_inference(
    path: str | os.PathLike[str],
    *,
    device: str = "cpu",
    arch: str = "efficientface",
    classes: Sequence[str] | None = CLASSES,
    threads: int | None = None,
) -> InferenceModel:
    """Load a model file for inference, refusing anything that would give wrong outputs.

    Args:
        path: a lightfer checkpoint, an official EfficientFace file, an `.onnx` export or
            an OpenVINO `.xml` export (its `.bin` beside it).
        device: torch device of a checkpoint's model (exports run on the CPU).
        arch: registry name used when the file does not record one (official files).
        classes: the class order the caller labels outputs with; a file recording
            another is refused. None accepts any recorded order (e.g. to export it).
        threads: ONNX Runtime's or OpenVINO's threads (default: torch's thread count).

    Returns:
        The model, its validated metadata and its forward function.

    Raises:
        CheckpointError: the file is missing, empty, unreadable, not a classifier of
            `classes`, does not fit the architecture, or records unusable metadata; an
            OpenVINO `.xml` has no `.bin` beside it.
        ClassOrderMismatchError: its classes differ from `classes` (names or order).
        ExportError: an ONNX or OpenVINO file lacks lightfer's metadata.
        DeviceError: `device` does not exist here, or an export is asked to run on a GPU.
    """
    path = Path(path)
    kind, runtime = _EXPORTS.get(path.suffix.lower(), ("", ""))
    if kind and device != "cpu":
        raise DeviceError(
            f"{kind} models run on {runtime}; got device {device!r}. Use --device cpu, "
            f"or the model's PyTorch checkpoint for {device}"
        )
    resolve_device(device)
    _check_model_file(path)
    if kind == "ONNX":
        model = _load_onnx(path, threads=threads, expected=classes)
    elif kind == "OpenVINO":
        model = _load_openvino(path, threads=threads, expected=classes)
    else:
        model = _load_torch(path, device=device, arch=arch, expected=classes)
    logger.info("model %s: %d px, mean %s, std %s", path, model.image_size, model.mean, model.std)
    return model


def _check_classes(found: Sequence[str], expected: Sequence[str] | None, source: str) -> None:
    if expected is not None:
        from lightfer.models.checkpoint import check_class_order

        check_class_order(found, expected, source=source)


def _load_torch(
    path: Path, *, device: str, arch: str, expected: Sequence[str] | None
) -> InferenceModel:
    from lightfer.models import create_model
    from lightfer.models.checkpoint import OFFICIAL_CLASS_ORDER, load_checkpoint

    checkpoint = load_checkpoint(path)
    if checkpoint.classes is None:
        raise CheckpointError(
            f"checkpoint {path} has a {checkpoint.head_size}-way classifier and no recorded "
            f"class order (a pre-training file such as the 12,666-way MS-Celeb-1M one?); use "
            f"a model trained on the emotions ({', '.join(CLASSES)}), e.g. a lightfer checkpoint"
        )
    if checkpoint.source == "official":
        logger.warning(
            "%s is an official checkpoint without metadata: using the official defaults "
            "(arch %s, %d px, mean %s and std %s, classes %s)",
            path,
            arch,
            OFFICIAL_IMAGE_SIZE,
            OFFICIAL_MEAN,
            OFFICIAL_STD,
            ", ".join(OFFICIAL_CLASS_ORDER),
        )
        size, mean, std = OFFICIAL_IMAGE_SIZE, OFFICIAL_MEAN, OFFICIAL_STD
    else:
        arch = checkpoint.arch or arch
        size, mean, std = checkpoint.image_size, checkpoint.mean, checkpoint.std
    classes = tuple(checkpoint.classes)
    _check_classes(classes, expected, f"checkpoint {path}")
    module = create_model(arch, num_classes=len(classes), pretrained=path, classes=classes)
    return InferenceModel(
        path=path,
        source=checkpoint.source,
        arch=arch,
        classes=classes,
        image_size=int(size),  # type: ignore[arg-type]
        mean=tuple(mean),  # type: ignore[arg-type]
        std=tuple(std),  # type: ignore[arg-type]
        forward=torch_forward(module, device),
        module=module,
    )


def _exported(
    path: Path, source: str, info: Mapping[str, object], forward: Callable[..., np.ndarray]
) -> InferenceModel:
    """An exported model (no arch) described by its file's lightfer metadata."""
    return InferenceModel(
        path=path,
        source=source,
        arch="",
        classes=info["classes"],  # type: ignore[arg-type]
        image_size=info["image_size"],  # type: ignore[arg-type]
        mean=info["mean"],  # type: ignore[arg-type]
        std=info["std"],  # type: ignore[arg-type]
        forward=forward,
    )


def _load_onnx(
    path: Path, *, threads: int | None, expected: Sequence[str] | None
) -> InferenceModel:
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    from lightfer.export import INPUT_NAME, OUTPUT_NAME, inference_session, read_inference_metadata

    try:
        session = inference_session(path, num_threads=threads)
    except (
        RuntimeError,
        ort_errors.Fail,
        ort_errors.InvalidProtobuf,
        ort_errors.InvalidGraph,
    ) as err:
        raise CheckpointError(
            f"ONNX model {path} cannot be opened by ONNX Runtime ({type(err).__name__}: "
            f"{' '.join(str(err).split())}); export it again with `lightfer export`"
        ) from err
    info = read_inference_metadata(session.get_modelmeta().custom_metadata_map, source=path)
    _check_classes(info["classes"], expected, f"ONNX model {path}")  # type: ignore[arg-type]

    def forward(batch: np.ndarray) -> np.ndarray:
        return session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    return _exported(path, "onnx", info, forward)


def _load_openvino(
    path: Path, *, threads: int | None, expected: Sequence[str] | None
) -> InferenceModel:
    from lightfer.openvino_export import load_openvino

    forward, info = load_openvino(path, num_threads=threads)
    _check_classes(info["classes"], expected, f"OpenVINO model {path}")  # type: ignore[arg-type]
    return _exported(path, "openvino", info, forward)
