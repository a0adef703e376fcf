"""The loop's view of distributed training: rank, world size, DDP wrapping and reductions.

A single process is `DistContext()` (rank 0 of 1, no torch.distributed). Under Ray Train the
process group already exists (TorchTrainer sets it up); `DistContext.from_torch()` reads it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.distributed as tdist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @classmethod
    def from_torch(cls, device: torch.device) -> DistContext:
        if not (tdist.is_available() and tdist.is_initialized()):
            return cls(device=device)
        return cls(rank=tdist.get_rank(), world_size=tdist.get_world_size(), device=device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def wrap(self, model: nn.Module) -> nn.Module:
        """DDP over the model when distributed; the model itself otherwise."""
        if not self.distributed:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        # broadcast_buffers=False: the only buffers are the rotary tables, identical everywhere
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        if not self.distributed:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self._comm_device())
        tdist.all_reduce(t, op=tdist.ReduceOp.SUM)
        return t.tolist()

    def barrier(self) -> None:
        if self.distributed:
            tdist.barrier()

    def _comm_device(self) -> torch.device:
        # gloo reduces CPU tensors, nccl needs CUDA tensors
        return self.device if tdist.get_backend() == "nccl" else torch.device("cpu")
