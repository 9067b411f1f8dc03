"""Checkpoint files: the project's format, and import of the official EfficientFace files.

The project's checkpoint is a `torch.save`d dict with the model's `state_dict` plus what is
needed to use or resume it (layout below). Reading always goes through
`torch.load(weights_only=True)`, so a file can hold tensors and plain containers only;
`save_checkpoint` checks that before writing, and writes atomically
(`lightfer.io.atomic_path`: temporary sibling, fsync, `os.replace`).

Layout written by `save_checkpoint` (version 1)::

    format        "lightfer.checkpoint"
    version       1
    arch          registry name, e.g. "efficientface"
    state_dict    the unwrapped model's state_dict
    classes       class names in output order
    image_size    square input side in pixels
    mean, std     per-channel normalisation applied to [0, 1] RGB images
    dataset       dataset name or None
    epoch         last completed epoch (resume at epoch + 1) or None
    optimizer     optimizer.state_dict() or None
    lr_scheduler  lr_scheduler.state_dict() or None

Official files (https://github.com/zengqunzhao/EfficientFace, MIT licence) are
`{'state_dict': ...}` saved from `DataParallel`, so every key starts with `module.`: the
MS-Celeb-1M pre-trained EfficientFace and ResNet-50 have a 12,666-way `fc`, the trained FER
models a 7-way `fc` whose classes are `OFFICIAL_CLASS_ORDER`. A bare state_dict is read the
same way. `load_pretrained` loads any of these into a registry model: a head of the model's
size is loaded only when the class orders agree (otherwise `ClassOrderMismatchError`), a
head of another size is replaced by the model's new one and the backbone is loaded.
"""

from __future__ import annotations

import logging
import math
import pickle
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from lightfer.errors import CheckpointError, ClassOrderMismatchError
from lightfer.io import atomic_path

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "OFFICIAL_CLASS_ORDER",
    "Checkpoint",
    "check_class_order",
    "check_inference_metadata",
    "load_checkpoint",
    "load_pretrained",
    "save_checkpoint",
    "strip_wrapper_prefixes",
]

logger = logging.getLogger(__name__)

FORMAT = "lightfer.checkpoint"
FORMAT_VERSION = 1

# The output order of upstream's trained 7-class models (and of AffectNet's labels).
OFFICIAL_CLASS_ORDER: tuple[str, ...] = (
    "neutral",
    "happiness",
    "sadness",
    "surprise",
    "fear",
    "disgust",
    "anger",
)

# Every registered model names its classifier `fc`, as upstream and torchvision do.
_HEAD_PREFIX = "fc."
# Prefixes added by DataParallel / DistributedDataParallel and by torch.compile.
_WRAPPER_PREFIXES = ("module.", "_orig_mod.")
# Types torch.load(weights_only=True) accepts inside a checkpoint, besides containers.
_SAFE_LEAVES = (Tensor, torch.Size, torch.dtype, str, int, float, bool, type(None))


class _Stateful(Protocol):
    def state_dict(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint as read by `load_checkpoint`; metadata the file lacks is None.

    Attributes:
        path: the file it was read from.
        source: "lightfer" for the project's format, "official" for upstream's files and
            bare state_dicts.
        state_dict: weights with wrapper prefixes (`module.`) removed.
        arch: registry name of the architecture, None for official files.
        classes: class names in output order; for official files `OFFICIAL_CLASS_ORDER`
            when the head has 7 outputs, else None (e.g. the 12,666 MS-Celeb-1M identities).
        image_size, mean, std, dataset, epoch: see the module docstring.
        optimizer, lr_scheduler: their state_dicts, for resuming.
    """

    path: Path
    source: str
    state_dict: dict[str, Tensor] = field(repr=False)
    arch: str | None = None
    classes: tuple[str, ...] | None = None
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    dataset: str | None = None
    epoch: int | None = None
    optimizer: dict[str, Any] | None = field(default=None, repr=False)
    lr_scheduler: dict[str, Any] | None = field(default=None, repr=False)

    @property
    def head_size(self) -> int | None:
        """Outputs of the checkpoint's classifier, None when it has none."""
        weight = self.state_dict.get(f"{_HEAD_PREFIX}weight")
        return None if weight is None else int(weight.shape[0])


def strip_wrapper_prefixes(state_dict: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Remove the `module.` (DataParallel) and `_orig_mod.` (torch.compile) key prefixes."""
    out = {}
    for key, value in state_dict.items():
        while key.startswith(_WRAPPER_PREFIXES):
            key = key.split(".", 1)[1]
        out[key] = value
    return out


def _unwrap(model: nn.Module) -> nn.Module:
    """Return the model inside (Distributed)DataParallel (`.module`) and torch.compile wrappers."""
    for attribute in ("module", "_orig_mod"):
        inner = getattr(model, attribute, None)
        if isinstance(inner, nn.Module):
            return _unwrap(inner)
    return model


def _check_safe(value: Any, where: str, path: Path) -> None:
    """Raise if `value` holds something torch.load(weights_only=True) would refuse."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str | int):
                raise CheckpointError(
                    f"cannot save checkpoint {path}: key {key!r} in {where} is a "
                    f"{type(key).__name__}; use str or int keys"
                )
            _check_safe(item, f"{where}[{key!r}]", path)
    elif isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_safe(item, f"{where}[{i}]", path)
    elif not isinstance(value, _SAFE_LEAVES):
        raise CheckpointError(
            f"cannot save checkpoint {path}: {where} is a {type(value).__module__}."
            f"{type(value).__qualname__}, which torch.load(weights_only=True) refuses; convert "
            f"it to a tensor, number, string or container of those"
        )


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    *,
    arch: str,
    classes: Sequence[str],
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    dataset: str | None = None,
    epoch: int | None = None,
    optimizer: _Stateful | None = None,
    lr_scheduler: _Stateful | None = None,
) -> Path:
    """Write a model and its metadata to `path` atomically, in the project's format.

    Args:
        path: destination file; its directory is created if missing.
        model: the model; a `DataParallel`/`DistributedDataParallel` or `torch.compile`
            wrapper is removed, so keys never carry `module.`.
        arch: registry name that rebuilds the model (`lightfer.models.create_model`).
        classes: class names in output order; must have one name per classifier output.
        image_size: square input side the model was trained at.
        mean: per-channel normalisation mean of [0, 1] RGB inputs.
        std: per-channel normalisation standard deviation.
        dataset: name of the training dataset.
        epoch: last completed epoch.
        optimizer: saved with its `state_dict()` for resuming.
        lr_scheduler: saved with its `state_dict()` for resuming.

    Returns:
        The path written.

    Raises:
        CheckpointError: the class list does not fit the classifier, the metadata is
            unusable (`check_inference_metadata`), or the optimizer or scheduler state holds
            objects `torch.load(weights_only=True)` cannot read.
    """
    path = Path(path)
    model = _unwrap(model)
    head = getattr(model, "num_classes", None)
    if head is not None and head != len(classes):
        raise CheckpointError(
            f"cannot save checkpoint {path}: the model has {head} outputs but {len(classes)} "
            f"class names were given ({', '.join(classes)})"
        )
    payload: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "arch": arch,
        # Contiguous whatever memory format trained it (channels-last on GPUs), so that
        # other code, the official repository's included, reads plain NCHW weights.
        "state_dict": {k: v.contiguous() for k, v in model.state_dict().items()},
        "classes": list(classes),
        "image_size": int(image_size),
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "dataset": dataset,
        "epoch": None if epoch is None else int(epoch),
        "optimizer": None if optimizer is None else optimizer.state_dict(),
        "lr_scheduler": None if lr_scheduler is None else lr_scheduler.state_dict(),
    }
    check_inference_metadata(
        classes=payload["classes"],
        image_size=payload["image_size"],
        mean=payload["mean"],
        std=payload["std"],
        source=f"cannot save checkpoint {path}: it",
    )
    _check_safe(payload, "the checkpoint", path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    logger.info("saved %s checkpoint (epoch %s) to %s", arch, epoch, path)
    return path


def _read(path: Path) -> Any:
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist or is not a file")
    if path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes); copy or create it again")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if "global" in str(err).lower():  # a class or function the safe unpickler refuses
            raise CheckpointError(
                f"checkpoint {path} holds Python objects that torch.load(weights_only=True) "
                f"refuses to unpickle for safety. If you trust the file, load it with "
                f"weights_only=False and re-save only its state_dict. Detail: {err}"
            ) from err
        raise _corrupted(path, err) from err
    except Exception as err:  # garbage bytes fail anywhere in unpickling (struct.error, ...)
        raise _corrupted(path, err) from err


def _corrupted(path: Path, err: Exception) -> CheckpointError:
    return CheckpointError(
        f"checkpoint {path} is truncated or corrupted and cannot be read "
        f"({type(err).__name__}: {err}); copy or download it again, or re-create it"
    )


def _is_state_dict(value: Any) -> bool:
    return (
        isinstance(value, Mapping)
        and len(value) > 0
        and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in value.items())
    )


# The input sides a model may record; anything outside is a corrupted or foreign value.
_IMAGE_SIZES = range(16, 4097)
# Keys a project checkpoint must hold; the others (dataset, epoch, optimizer, lr_scheduler)
# are optional.
_REQUIRED = ("arch", "state_dict", "classes", "image_size", "mean", "std")


def check_inference_metadata(
    *, classes: Any, image_size: Any, mean: Any, std: Any, source: str | Path
) -> tuple[tuple[str, ...], int, tuple[float, ...], tuple[float, ...]]:
    """Validate what inference needs from a model file, and return it typed.

    A standard deviation of zero (or a non-finite value) would turn every input into NaN
    or infinity and every prediction into an arbitrary class, so it is refused here rather
    than discovered in the outputs.

    Args:
        classes: class names in output order (unique, non-empty strings).
        image_size: square input side, an integer in 16..4096.
        mean: three finite per-channel means.
        std: three finite, positive per-channel standard deviations.
        source: the file, for the message.

    Returns:
        `(classes, image_size, mean, std)` as tuples of str, int and floats.

    Raises:
        CheckpointError: naming `source`, the field and the value.
    """
    problems = []
    names = tuple(classes) if isinstance(classes, list | tuple) else ()
    if (
        not names
        or not all(isinstance(c, str) and c for c in names)
        or len(set(names)) < len(names)
    ):
        problems.append(f"classes {classes!r} (expected unique class names)")
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int)
        or image_size not in _IMAGE_SIZES
    ):
        problems.append(f"image_size {image_size!r} (expected an integer in 16..4096)")
    values: dict[str, tuple[float, ...]] = {}
    for name, given in (("mean", mean), ("std", std)):
        try:
            numbers = tuple(float(v) for v in given)
        except (TypeError, ValueError):
            numbers = ()
        positive = name != "std" or all(v > 0 for v in numbers)
        if len(numbers) != 3 or not all(math.isfinite(v) for v in numbers) or not positive:
            rule = "three finite values" + (" above 0" if name == "std" else "")
            problems.append(f"{name} {given!r} (expected {rule})")
        values[name] = numbers
    if problems:
        raise CheckpointError(
            f"{source} records unusable metadata: {'; '.join(problems)}; re-save it from "
            f"its training run with the dataset's normalisation"
        )
    return names, int(image_size), values["mean"], values["std"]


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read a project checkpoint, an official EfficientFace/LDG file or a bare state_dict.

    Nothing is checked against a model or a class order here; `load_pretrained` does that.

    Args:
        path: the file.

    Returns:
        The weights (on CPU, prefixes removed) and whatever metadata the file records.

    Raises:
        CheckpointError: the file is missing, truncated or corrupted, holds objects that
            `weights_only` loading refuses, has a layout none of the above, or is a project
            checkpoint lacking a key or recording unusable metadata
            (`check_inference_metadata`).
    """
    path = Path(path)
    raw = _read(path)
    if isinstance(raw, Mapping) and raw.get("format") == FORMAT:
        if raw.get("version") != FORMAT_VERSION:
            raise CheckpointError(
                f"checkpoint {path} has format version {raw.get('version')!r}; this lightfer "
                f"reads version {FORMAT_VERSION}; use the lightfer release that wrote it"
            )
        absent = [key for key in _REQUIRED if key not in raw]
        if absent:
            raise CheckpointError(
                f"checkpoint {path} is a lightfer checkpoint without {', '.join(absent)}; "
                f"it was not written by save_checkpoint, or was edited; re-save it"
            )
        if not isinstance(raw["arch"], str) or not _is_state_dict(raw["state_dict"]):
            raise CheckpointError(
                f"checkpoint {path} records arch {raw['arch']!r} and a state_dict of type "
                f"{type(raw['state_dict']).__name__}; expected a registry name and a mapping "
                f"of tensors; re-save it with save_checkpoint"
            )
        classes, image_size, mean, std = check_inference_metadata(
            classes=raw["classes"],
            image_size=raw["image_size"],
            mean=raw["mean"],
            std=raw["std"],
            source=f"checkpoint {path}",
        )
        return Checkpoint(
            path=path,
            source="lightfer",
            state_dict=strip_wrapper_prefixes(raw["state_dict"]),
            arch=raw["arch"],
            classes=classes,
            image_size=image_size,
            mean=mean,
            std=std,
            dataset=raw.get("dataset"),
            epoch=raw.get("epoch"),
            optimizer=raw.get("optimizer"),
            lr_scheduler=raw.get("lr_scheduler"),
        )
    weights = raw.get("state_dict") if isinstance(raw, Mapping) else None
    if weights is None and _is_state_dict(raw):
        weights = raw
    if not _is_state_dict(weights):
        found = sorted(map(str, raw))[:10] if isinstance(raw, Mapping) else type(raw).__name__
        raise CheckpointError(
            f"checkpoint {path} has an unknown layout (top level: {found}); expected a "
            f"lightfer checkpoint, an official {{'state_dict': ...}} file or a bare state_dict"
        )
    state_dict = strip_wrapper_prefixes(weights)
    head = state_dict.get(f"{_HEAD_PREFIX}weight")
    official_head = head is not None and head.shape[0] == len(OFFICIAL_CLASS_ORDER)
    return Checkpoint(
        path=path,
        source="official",
        state_dict=state_dict,
        classes=OFFICIAL_CLASS_ORDER if official_head else None,
    )


def check_class_order(
    found: Sequence[str] | None, expected: Sequence[str], *, source: str | Path
) -> None:
    """Refuse class names that differ from the run's, in names or in order.

    Args:
        found: the class names recorded with the weights (None: not recorded).
        expected: the run's class names, in output order.
        source: the file or object the names come from, for the message.

    Raises:
        ClassOrderMismatchError: `found` is None or differs from `expected`.
    """
    if found is None:
        raise ClassOrderMismatchError(
            f"{source} does not record its class order, so its {len(expected)}-way classifier "
            f"cannot be matched to this run's classes ({', '.join(expected)}); re-save it with "
            f"lightfer.models.checkpoint.save_checkpoint(classes=...)"
        )
    if tuple(found) != tuple(expected):
        raise ClassOrderMismatchError(
            f"{source} was trained with classes ({', '.join(found)}) but this run uses "
            f"({', '.join(expected)}); its outputs would be mislabelled. Map the dataset to "
            f"the checkpoint's order, or fine-tune from it with a new classifier"
        )


def _key_report(model: nn.Module, weights: Mapping[str, Tensor], *, skip_head: bool) -> str:
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    if skip_head:
        missing = [k for k in missing if not k.startswith(_HEAD_PREFIX)]
    unexpected = [k for k in weights if k not in expected]
    reshaped = [
        f"{k} {tuple(v.shape)} (model {tuple(expected[k].shape)})"
        for k, v in weights.items()
        if k in expected and v.shape != expected[k].shape
    ]
    problems = []
    for label, keys in (("missing", missing), ("unexpected", unexpected), ("shape", reshaped)):
        if keys:
            more = f" and {len(keys) - 3} more" if len(keys) > 3 else ""
            problems.append(f"{len(keys)} {label}: {', '.join(keys[:3])}{more}")
    return "; ".join(problems)


def load_pretrained(
    model: nn.Module,
    path: str | Path,
    *,
    arch: str,
    classes: Sequence[str] | None,
) -> Checkpoint:
    """Load a checkpoint's weights into `model` in place, with every key accounted for.

    If the checkpoint's classifier has the model's number of outputs, it is loaded too and
    its class order must equal `classes`. Otherwise (e.g. the 12,666-way MS-Celeb-1M head)
    the backbone is loaded and the model keeps its own freshly initialised classifier.

    Args:
        model: a registry model, e.g. from `lightfer.models.create_model`.
        path: a file `load_checkpoint` reads.
        arch: the model's registry name; must match the checkpoint's when it records one.
        classes: the run's class names in output order; None only when the model's head is
            not a class list (the classifier is then loaded without an order check, with a
            warning).

    Returns:
        The checkpoint, for its metadata.

    Raises:
        CheckpointError: unreadable file, another architecture, or keys or shapes that do
            not fit the model (the message lists them).
        ClassOrderMismatchError: the classifier would be loaded but its classes differ
            from `classes` or are unknown.
    """
    checkpoint = load_checkpoint(path)
    if checkpoint.arch is not None and checkpoint.arch != arch:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} holds a {checkpoint.arch!r} model, not {arch!r}; "
            f"create the model with create_model({checkpoint.arch!r}, ...)"
        )
    num_classes = getattr(model, "num_classes", None)
    load_head = checkpoint.head_size is not None and checkpoint.head_size == num_classes
    if load_head and classes is not None:
        check_class_order(checkpoint.classes, classes, source=f"checkpoint {checkpoint.path}")
    elif load_head:
        logger.warning("loading the classifier of %s without a class-order check", path)
    weights = checkpoint.state_dict
    if not load_head:
        weights = {k: v for k, v in weights.items() if not k.startswith(_HEAD_PREFIX)}
    problems = _key_report(model, weights, skip_head=not load_head)
    if problems:
        raise CheckpointError(
            f"checkpoint {checkpoint.path} does not fit {arch!r} ({problems}); is it a "
            f"checkpoint of another architecture or width?"
        )
    model.load_state_dict(weights, strict=load_head)
    if not load_head:
        logger.info(
            "loaded the backbone of %s into %s; its %s-way classifier was replaced by a new "
            "%s-way one",
            checkpoint.path,
            arch,
            checkpoint.head_size,
            num_classes,
        )
    return checkpoint
