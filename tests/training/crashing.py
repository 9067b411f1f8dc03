"""A loader that raises part-way through an epoch: a kill, simulated in-process."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any


class Crash(RuntimeError):
    """Raised by `CrashingLoader` where a killed run would have stopped."""


class CrashingLoader:
    """The wrapped training loader, raising `Crash` at batch `batch` of epoch `epoch`."""

    def __init__(self, loader: Any, epoch: int, batch: int = 2) -> None:
        self.loader, self.epoch, self.batch = loader, epoch, batch

    def __len__(self) -> int:
        return len(self.loader)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.loader, name)

    def __iter__(self) -> Iterator[Any]:
        for index, batch in enumerate(self.loader):
            if self.loader.sampler.epoch == self.epoch and index == self.batch:
                raise Crash
            yield batch
