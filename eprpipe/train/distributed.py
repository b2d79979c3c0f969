"""Training on several processes (one per GPU, or CPU processes with gloo) under torchrun.

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE; a plain `python -m eprpipe` run sees none of
them and is one process of a world of one. Every process holds the whole (in-memory) dataset
and takes its share of each global batch; DistributedDataParallel averages the gradients, so
a step is the single-process step on the whole batch, and the rate term, which every process
computes identically from the same parameters and the same noise, is counted once.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

from eprpipe.errors import EprError


@dataclass(frozen=True)
class World:
    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """The one process that prints, saves checkpoints and writes the output file."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()


def current_world() -> World:
    """This process's place in the torchrun world (a world of one outside torchrun)."""
    if dist.is_available() and dist.is_initialized():
        return World(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return World()


def init_world(device: str) -> tuple[World, str]:
    """Join the torchrun world if there is one; returns it and this process's device.

    CUDA runs use NCCL and one GPU per process (`cuda:LOCAL_RANK`); CPU runs use gloo.
    """
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return World(), device
    if not dist.is_available():
        raise EprError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        if torch.cuda.device_count() <= local_rank:
            raise EprError(f"process {local_rank} needs GPU {local_rank}; this node has fewer")
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return current_world(), device


def share_positions(world: World) -> slice:
    """Which positions of a global batch this process takes: every size-th from its rank on."""
    return slice(world.rank, None, world.size)


def shard(indices: torch.Tensor, world: World) -> torch.Tensor:
    """This process's share of a global batch (or of anything drawn per batch position)."""
    return indices[share_positions(world)] if world.distributed else indices


def own_range(count: int, world: World) -> slice:
    """This process's contiguous share of `count` items to evaluate (all of them alone):
    evaluation splits the work instead of repeating it on every process."""
    return slice(count * world.rank // world.size, count * (world.rank + 1) // world.size)


def sum_over_processes(values: list[int], world: World, device: str | torch.device) -> list[int]:
    """Element-wise sums of integer counts over all processes (NCCL needs them on the GPU)."""
    if not world.distributed:
        return values
    total = torch.tensor(values, dtype=torch.int64, device=device)
    dist.all_reduce(total)
    return total.tolist()


def assemble(part: np.ndarray, count: int, world: World, device: str | torch.device) -> np.ndarray:
    """The int64 array of `count` items whose `own_range` each process computed as `part`.

    Every position belongs to one process and is zero elsewhere, so a sum puts them together.
    """
    whole = np.zeros(count, dtype=np.int64)
    whole[own_range(count, world)] = part
    if not world.distributed:
        return whole
    total = torch.from_numpy(whole).to(device)
    dist.all_reduce(total)
    return total.cpu().numpy()


def share_buffers(module: torch.nn.Module, world: World) -> None:
    """Give every process rank 0's buffers (BatchNorm statistics).

    Under DDP each process's last forward pass updated its statistics from its own examples;
    DDP would copy rank 0's at the next forward. Evaluation and the written file need them
    equal now, so that the processes' parts of an evaluation, and the file, agree.
    """
    if not world.distributed:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)
