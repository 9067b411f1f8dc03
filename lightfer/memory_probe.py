"""The body of `lightfer.bench.measure_memory`'s subprocesses: one model, one inference.

A module of its own, importing only what the measured runtime needs: an ONNX Runtime probe
never imports torch, so it starts in a fraction of a second rather than several (the
benchmark runs one probe per model and runtime). Linux only: it reads `/proc/self/status`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

__all__ = ["probe"]


def _rss_kb(field: str) -> int:
    """Return a `/proc/self/status` memory field (VmRSS, VmHWM) in KiB."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(f"{field}:"))


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS counter (VmHWM) to the current RSS; False if refused."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _eager(target: str, image_size: int, threads: int) -> tuple[int, bool]:
    import torch
    import torch.nn.functional as F

    from lightfer.models import create_model

    torch.set_num_threads(threads)
    x = torch.randn(1, 3, image_size, image_size)
    with torch.inference_mode():  # the runtime's own start-up, not counted
        F.conv2d(torch.ones(1, 3, 8, 8), torch.ones(4, 3, 3, 3))
    peak_reset = _reset_peak()
    before = _rss_kb("VmRSS")
    model = create_model(target).eval()
    with torch.inference_mode():
        model(x)
    return _rss_kb("VmHWM") - before, peak_reset


def _onnx(target: str, image_size: int, threads: int) -> tuple[int, bool]:
    import numpy as np
    from onnx import TensorProto, helper

    from lightfer.onnx_session import INPUT_NAME, inference_session

    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 4]) for n in ("a", "b")]
    graph = helper.make_graph([helper.make_node("Relu", ["a"], ["b"])], "relu", io[:1], io[1:])
    tiny = inference_session(helper.make_model(graph).SerializeToString(), num_threads=threads)
    tiny.run(None, {"a": np.ones((1, 4), np.float32)})  # the runtime's own start-up
    x = np.random.default_rng(0).standard_normal((1, 3, image_size, image_size), np.float32)
    peak_reset = _reset_peak()
    before = _rss_kb("VmRSS")
    inference_session(target, num_threads=threads).run(None, {INPUT_NAME: x})
    return _rss_kb("VmHWM") - before, peak_reset


def probe(runtime: str, target: str, image_size: str, num_threads: str, out: str) -> None:
    """Measure one model's peak RSS growth and write it as JSON to `out`.

    Args (strings, from the command line): runtime "eager" (`target` a registry name) or
    "onnx" (`target` an `.onnx` file), the input side, the runtime's threads, the output.
    """
    measure = _eager if runtime == "eager" else _onnx
    growth, peak_reset = measure(target, int(image_size), int(num_threads))
    Path(out).write_text(json.dumps({"growth_kb": growth, "peak_reset": peak_reset}))


if __name__ == "__main__":
    probe(*sys.argv[1:])
