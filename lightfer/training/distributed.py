"""Data-parallel training across processes: `torchrun --nproc_per_node=N -m stages.train_ef ...`.

`torchrun` starts N copies of the same entry point and tells each its place through the
`RANK`, `WORLD_SIZE` and `LOCAL_RANK` environment variables; `Distributed.from_environment`
reads them (a plain `python -m ...` run is rank 0 of 1, and nothing changes). Each rank
trains a `DistributedDataParallel` copy of the model on its part of every global batch (see
`lightfer.training.data.EpochBatchSampler`) and DDP averages the gradients, so a step trains
on the same global batch of `batch_size` samples as a single process would. Only rank 0
writes files. Backends: NCCL between GPUs (one per rank, `cuda:LOCAL_RANK`; batch norm is
synchronised across ranks by the `sync_batchnorm` switch, see
`lightfer.training.device_options`), gloo on the CPU (batch norm statistics stay per rank:
PyTorch's SyncBatchNorm runs only on GPUs).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

__all__ = ["Distributed"]


@dataclass(frozen=True)
class Distributed:
    """This process's place among the training processes.

    Attributes:
        rank: global rank (0 writes the outputs).
        world_size: number of processes.
        local_rank: rank on this machine (selects the GPU).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> Distributed:
        """The ranks `torchrun` set in the environment; rank 0 of 1 without them."""
        try:
            world_size = int(os.environ.get("WORLD_SIZE", "1"))
            rank = int(os.environ.get("RANK", "0"))
            local_rank = int(os.environ.get("LOCAL_RANK", str(rank)))
        except ValueError as err:
            raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers ({err})") from err
        return cls(rank=rank, world_size=world_size, local_rank=local_rank)

    @property
    def enabled(self) -> bool:
        """Whether there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Whether this process writes outputs, logs and progress bars."""
        return self.rank == 0

    def device(self) -> torch.device:
        """This rank's GPU when there are GPUs, else the CPU."""
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank % torch.cuda.device_count())
        return torch.device("cpu")

    def start(self, device: torch.device) -> bool:
        """Join the process group (NCCL on GPUs, gloo on the CPU) unless already joined.

        Returns:
            Whether this call created the group (the caller then calls `stop`).
        """
        if not self.enabled or dist.is_initialized():
            return False
        if device.type == "cuda":
            torch.cuda.set_device(device)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, rank=self.rank, world_size=self.world_size)
        return True

    def stop(self) -> None:
        """Leave the process group."""
        if dist.is_initialized():
            dist.destroy_process_group()

    def barrier(self) -> None:
        """Wait until every rank gets here (a no-op for one process)."""
        if self.enabled:
            dist.barrier()

    def sum(self, values: Tensor) -> Tensor:
        """`values` summed over the ranks (returned unchanged for one process)."""
        if self.enabled:
            values = values.clone()
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        return values

    def gather(self, values: Tensor) -> Tensor:
        """Every rank's `values` concatenated along dim 0, in rank order, on every rank.

        The ranks' first dimensions may differ (a global batch that does not split evenly);
        one process gets `values` back unchanged.
        """
        if not self.enabled:
            return values
        count = torch.tensor([len(values)], dtype=torch.int64, device=values.device)
        counts = [torch.empty_like(count) for _ in range(self.world_size)]
        dist.all_gather(counts, count)
        sizes = [int(n) for n in counts]
        padded = values.new_zeros((max(sizes), *values.shape[1:]))
        padded[: len(values)] = values
        parts = [torch.empty_like(padded) for _ in range(self.world_size)]
        dist.all_gather(parts, padded)
        return torch.cat([part[:n] for part, n in zip(parts, sizes, strict=True)])

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """`model` (already on `device`) wrapped for data-parallel training, if distributed."""
        if not self.enabled:
            return model
        if device.type == "cuda":
            return nn.parallel.DistributedDataParallel(model, device_ids=[device.index])
        return nn.parallel.DistributedDataParallel(model)


SINGLE = Distributed()
