"""Multi-GPU and multi-node training through ``torchrun`` (PyTorch DistributedDataParallel).

``torchrun --nproc_per_node=N -m zfnet train ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`setup` then joins the process group (NCCL on CUDA, gloo on CPU) and picks this process's
device. Only rank 0 writes files (and holds the run folder's lock). Without those variables everything
runs in one process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["DistContext", "setup", "teardown", "resolve_device"]


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank, the number of processes and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over all processes (in place); a no-op in one process."""
        if self.distributed:
            backend_device = torch.device("cuda", self.local_rank) if dist.get_backend() == "nccl" else "cpu"
            moved = t.to(backend_device)
            dist.all_reduce(moved)
            t.copy_(moved.to(t.device))
        return t

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any process, so that all of them take the same branch."""
        if not self.distributed:
            return bool(flag)
        return bool(self.all_reduce_sum(torch.tensor([float(bool(flag))]))[0] > 0)


def resolve_device(name: str = "auto", local_rank: int = 0) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; ``"cuda"`` without a GPU is an error."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError("--device cuda was asked for, but no CUDA GPU is available")
        return torch.device("cuda", local_rank) if name == "cuda" else torch.device(name)
    if name != "cpu":
        raise ValueError(f"unknown device {name!r}; valid: auto, cpu, cuda, cuda:N")
    return torch.device("cpu")


def setup(device: str = "auto") -> DistContext:
    """Join the process group when launched by ``torchrun``; otherwise a single-process context."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistContext(device=resolve_device(device))
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def teardown(ctx: DistContext) -> None:
    """Leave the process group, if one was joined."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
