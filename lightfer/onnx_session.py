"""ONNX Runtime sessions as the project opens them, and its exports' tensor names.

Torch-free, so that a process which only runs an ONNX model (the benchmark's memory probe)
does not pay for importing torch; `lightfer.export.inference_session` adds torch's thread
count as the default.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "inference_session"]

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def inference_session(model: str | Path | bytes, *, num_threads: int) -> ort.InferenceSession:
    """Open an ONNX model on ONNX Runtime's CPU provider with all graph optimisations.

    Args:
        model: the `.onnx` file, or a serialised model.
        num_threads: intra-op threads (one inter-op thread).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = num_threads
    options.inter_op_num_threads = 1
    source = model if isinstance(model, bytes) else str(model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
