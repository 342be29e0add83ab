"""Data-parallel training across processes: how users scale pretraining past one machine.

`torchrun --nproc_per_node N autlearn pretrain ...` sets RANK/WORLD_SIZE/LOCAL_RANK and a
rendezvous address; the same command without torchrun is a world of one. The backend is
gloo on CPU and nccl on GPU. Each rank takes every N-th batch of one seeded plan, so N
processes see each example once per epoch and all ranks run the same number of steps.
"""
from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist
from torch import nn


@dataclasses.dataclass(frozen=True)
class World:
    """This process's place among the training processes."""

    rank: int = 0
    size: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        """The model as trained: DistributedDataParallel when there is more than one process."""
        if self.size == 1:
            return model
        ids = [self.device.index] if self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def sum(self, values: list[float]) -> list[float]:
        """Element-wise sum of `values` over all processes (the values themselves in a world of one)."""
        if self.size == 1:
            return values
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def barrier(self) -> None:
        if self.size > 1:
            dist.barrier()


def join_world() -> World:
    """Joins the process group that torchrun describes in the environment, if any."""
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size == 1:
        return World(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    if "MASTER_ADDR" not in os.environ or "RANK" not in os.environ:
        raise RuntimeError(f"WORLD_SIZE={size} but no RANK/MASTER_ADDR: start the command with torchrun")
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend, rank=rank, world_size=size)
    return World(rank=rank, size=size, device=device)


def leave_world(world: World) -> None:
    """Tears the process group down (a no-op for a world of one)."""
    if world.size > 1 and dist.is_initialized():
        dist.destroy_process_group()
