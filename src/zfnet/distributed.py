"""Multi-GPU and multi-node training through ``torchrun`` (PyTorch DistributedDataParallel).

``torchrun --nproc_per_node=N -m zfnet train ...`` sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`setup` then joins the process group (NCCL on CUDA, gloo on CPU) and picks this process's
device. Only rank 0 writes files (and holds the run folder's lock). Without those variables everything
runs in one process.

Collectives time out after ``ZFNET_DIST_TIMEOUT`` seconds (default 1800): a process whose peer died or
hangs stops with an error instead of waiting for ever.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from ._validate import env_seconds

__all__ = ["DistContext", "setup", "teardown", "resolve_device", "collective_timeout", "left_process_group",
           "is_main_process"]


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

    @property
    def collective_device(self) -> torch.device:
        """Where a collective's tensors must be: this process's GPU with NCCL, else the CPU (gloo)."""
        if self.distributed and dist.get_backend() == "nccl":
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def all_reduce_sum(self, t: torch.Tensor) -> torch.Tensor:
        """Sum ``t`` over all processes (in place); a no-op in one process."""
        if self.distributed:
            moved = t.to(self.collective_device)
            dist.all_reduce(moved)
            t.copy_(moved.to(t.device))
        return t

    def any(self, flag: bool) -> bool:
        """Whether ``flag`` is true on any process, so that all of them take the same branch."""
        if not self.distributed:
            return bool(flag)
        return bool(self.all_reduce_sum(torch.tensor([float(bool(flag))]))[0] > 0)


def is_main_process() -> bool:
    """Whether this process is rank 0 of a ``torchrun`` job, or runs alone (the one that writes files)."""
    return os.environ.get("RANK", "0").strip() in ("", "0")


def collective_timeout() -> timedelta:
    """How long a collective waits for the other processes: ``ZFNET_DIST_TIMEOUT`` seconds, else 1800."""
    return timedelta(seconds=env_seconds("ZFNET_DIST_TIMEOUT", 1800))


def resolve_device(name: str = "auto", local_rank: int | None = None) -> torch.device:
    """``"auto"`` is CUDA when available, else CPU; ``"cuda"`` without a GPU is an error.

    ``"cuda"`` is GPU ``local_rank`` (default: ``LOCAL_RANK`` under ``torchrun``, else 0).
    """
    if local_rank is None:
        local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
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
    if device.startswith("cuda:") and int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1) > 1:
        raise ValueError(f"--device {device} would put every process of this torchrun job on one GPU; give "
                         "--device cuda (or auto): each process then takes its own (LOCAL_RANK)")
    dev = resolve_device(device, local_rank)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo", timeout=collective_timeout())
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, device=dev)


def teardown(ctx: DistContext) -> None:
    """Leave the process group, if one was joined."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


@contextmanager
def left_process_group() -> Iterator[None]:
    """Leave any process group joined inside the block when it ends (a command's whole run), even on an error."""
    try:
        yield
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
