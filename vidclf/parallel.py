"""Training on several processes or machines with PyTorch's own launcher, ``torchrun``.

torchrun starts one process per device and sets ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
without it every function here is the one-process case (a no-op or the identity). Every rank
plans the same seeded split, takes its share of the decoding and of each epoch's clips
(``DistributedSampler``), and sees the same gathered metrics, so all ranks make the same
choices; only rank 0 prints, checkpoints and writes files.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn

T = TypeVar("T")
U = TypeVar("U")


def rank() -> int:
    return int(os.environ.get("RANK", 0))


def world() -> int:
    return int(os.environ.get("WORLD_SIZE", 1))


def is_main() -> bool:
    return rank() == 0


@contextmanager
def session(device: torch.device) -> Iterator[torch.device]:
    """The process group for this run (NCCL on CUDA, gloo on the CPU), and this rank's device."""
    if world() == 1:
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        yield device
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    if world() > 1:
        dist.barrier()


def share(items: Sequence[T]) -> Sequence[T]:
    """This rank's share of a list (every world()-th item from its rank on)."""
    return items[rank() :: world()]


def gather(value: T) -> list[T]:
    """Every rank's ``value`` (picklable), in rank order."""
    if world() == 1:
        return [value]
    out: list[T] = [None] * world()  # type: ignore[list-item]
    dist.all_gather_object(out, value)
    return out


def shared_map(function: Callable[[Sequence[T]], list[U]], items: Sequence[T]) -> list[U]:
    """``function`` over every item, each rank computing it for its share (``function`` takes
    and returns a list, so it may use a pool); every rank gets every result, in item order."""
    shares = gather(function(share(items)))
    out: list[U] = [None] * len(items)  # type: ignore[list-item]
    for rank_, results in enumerate(shares):
        out[rank_ :: world()] = results
    return out


def total(*values: float) -> list[float]:
    """The sums over all ranks."""
    if world() == 1:
        return list(values)
    tensor = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(tensor)
    return tensor.tolist()


def same_buffers(module: nn.Module) -> None:
    """Rank 0's buffers on every rank: each rank's BatchNorm statistics ran over its own
    batches, and validation (split between the ranks) and the checkpoint need one model."""
    if world() > 1:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    """DistributedDataParallel around ``module`` (gradients averaged over the ranks), or the
    module itself in a one-process run."""
    if world() == 1:
        return module
    ids = [device.index] if device.type == "cuda" else None
    # Buffers are made the same once an epoch (same_buffers), not at every step.
    return nn.parallel.DistributedDataParallel(module, device_ids=ids, forward_sync_buffers=False)
