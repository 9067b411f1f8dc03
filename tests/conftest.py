"""Shared fixtures: the project root and a tiny, fast copy of the project's params."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

PROJECT_ROOT = Path(__file__).resolve().parents[1]


def default_params() -> dict[str, Any]:
    """The project's params.yaml as a mapping."""
    return yaml.safe_load((PROJECT_ROOT / "params.yaml").read_text())


def tiny_params(**datasets: dict[str, Any]) -> dict[str, Any]:
    """params.yaml with a synthetic dataset small enough for a test (about 1 s to render)."""
    params = copy.deepcopy(default_params())
    synthetic = params["datasets"]["synthetic"]
    synthetic.update(n_train=40, n_test=20, n_subjects=10)
    params["datasets"] = datasets or {"synthetic": synthetic}
    kinds = {name: spec.get("kind") for name, spec in params["datasets"].items()}
    params["study"]["datasets"] = [name for name, kind in kinds.items() if kind == "synthetic"]
    params["base"]["threads"] = 1
    return params


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip the tests marked `gpu` where CUDA is not available, and say so."""
    gpu_items = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu_items:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False here")
    for item in gpu_items:
        item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """One intra-op thread for every test: the two cores are shared, and small ops crawl
    when threads are oversubscribed. Imported lazily, since many tests never use torch."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def write_params(tmp_path: Path):
    """Write a params mapping to `tmp_path/params.yaml` and return its path."""

    def write(params: dict[str, Any], name: str = "params.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(params, sort_keys=False))
        return path

    return write
