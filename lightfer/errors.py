"""Exceptions that carry a message meant for the user.

Every message says what failed, which value or file caused it, where the code looked and
what to try. The CLI and the stage entry points print a `LightferError` without a
traceback and exit with status 1; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class LightferError(Exception):
    """Base class of the errors a user can act on."""


class ParamsError(LightferError):
    """`params.yaml` is missing, unparsable, or does not match the schema."""


class DatasetError(LightferError):
    """A dataset root, label file or manifest is missing or malformed."""


class StageOutputError(LightferError):
    """A stage input produced by an earlier stage is missing or inconsistent."""


class ImageReadError(LightferError):
    """An image file is missing, empty, truncated, undecodable or too large.

    `status` is a short machine-readable reason recorded per sample in stage outputs;
    `frame` is, for a video cut short, the first frame that could not be decoded.
    """

    def __init__(self, path: object, status: str, detail: str, frame: int | None = None) -> None:
        super().__init__(f"{path}: {detail}")
        self.path = path
        self.status = status
        self.frame = frame


class UnknownModelError(LightferError):
    """A model name is not in the registry of `lightfer.models`."""


class CheckpointError(LightferError):
    """A checkpoint is missing, unreadable, of an unknown layout, or does not fit the model."""


class ClassOrderMismatchError(CheckpointError):
    """A checkpoint's class names or their order differ from the run's."""


class ExportError(LightferError):
    """An exported ONNX model disagrees with PyTorch, or quantisation could not run."""


class AuxLabelError(LightferError):
    """An auxiliary-label source (OpenFace, MLCR, a landmark model) is missing or malformed."""


class DeviceError(LightferError):
    """A requested torch device (e.g. `cuda` on a machine without a GPU) is not available."""


class OutputPathError(LightferError):
    """An output path cannot be written: a directory, under a file, or in a read-only folder."""
