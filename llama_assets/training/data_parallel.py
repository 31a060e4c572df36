"""Data parallelism (DDP) for the recipe: every helper is a no-op without a process group.

Under torchrun (see distributed.py) each rank runs the same recipe: the model is
wrapped in DistributedDataParallel, every global micro-batch is cut into one
slice per rank, DDP averages the gradients, and the step's loss is averaged
over ranks. Only rank 0 writes checkpoints; the others wait at a barrier.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist

from llama_assets.training.device import cuda_index


def data_parallel() -> tuple[int, int]:
    """(rank, world size) of the torch.distributed process group; (0, 1) without one."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def wrap_model(model: torch.nn.Module, device: torch.device, seed: int) -> torch.nn.Module:
    """`model` in DistributedDataParallel under a process group; `model` itself otherwise.

    Every rank built the same LoRA init from the same seed; from here on each
    rank draws its own dropout masks (seed + rank).
    """
    rank, world = data_parallel()
    if world == 1:
        return model
    if rank:
        torch.manual_seed(seed + rank)
    return torch.nn.parallel.DistributedDataParallel(
        model, device_ids=[cuda_index(device)] if device.type == "cuda" else None
    )


def rank_slice(batch: torch.Tensor) -> torch.Tensor:
    """This rank's equal share of a global micro-batch (all of it on one process)."""
    rank, world = data_parallel()
    if world == 1:
        return batch
    per_rank = batch.shape[0] // world
    return batch[rank * per_rank : (rank + 1) * per_rank]


def mean_over_ranks(value: torch.Tensor) -> torch.Tensor:
    """`value` averaged over all ranks, in place (unchanged on one process)."""
    world = data_parallel()[1]
    if world > 1:
        dist.all_reduce(value)
        value /= world
    return value


def any_rank(flag: bool, device: torch.device) -> bool:
    """True when `flag` is true on any rank (so all ranks checkpoint and stop together)."""
    if data_parallel()[1] == 1:
        return flag
    backend_device = device if dist.get_backend() == "nccl" else torch.device("cpu")
    value = torch.tensor([float(flag)], device=backend_device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_from_ranks(obj: Any) -> list[Any]:
    """`obj` of every rank, in rank order (`[obj]` on one process)."""
    world = data_parallel()[1]
    if world == 1:
        return [obj]
    gathered: list[Any] = [None] * world
    dist.all_gather_object(gathered, obj)
    return gathered


def barrier() -> None:
    """Wait for every rank (a no-op on one process)."""
    if data_parallel()[1] > 1:
        dist.barrier()
