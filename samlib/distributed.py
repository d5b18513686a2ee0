"""Data-parallel training under ``torchrun``: the few helpers samlib's training loops share.

Launched as ``torchrun --nproc_per_node=N -m samlib.teaching train ...``, every process sees RANK,
WORLD_SIZE and LOCAL_RANK in its environment; :func:`session` then joins the process group (NCCL when
CUDA is available, one GPU per process; gloo on CPU). Without those variables nothing here does
anything: one process trains exactly as before.

How the loops use it: every rank draws the same *global* batch from the same seeded generator and
keeps its part of it (:func:`shard`); the model is wrapped in DistributedDataParallel (:func:`wrap`),
which averages the gradients over ranks; losses are written as a sum over the rank's items scaled by
``world_size / global_count`` (:func:`global_count`), so the averaged gradient is the gradient of the
global batch's mean, the same as a single process would compute. Only rank 0 writes checkpoints, logs
and progress bars (:func:`is_main_process`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

__all__ = [
    "all_reduce_sum",
    "broadcast_int",
    "global_count",
    "init_from_env",
    "is_distributed",
    "is_main_process",
    "launched_by_torchrun",
    "rank",
    "session",
    "shard",
    "world_size",
    "wrap",
]

T = TypeVar("T")


def launched_by_torchrun() -> bool:
    """True when the environment describes a multi-process job (WORLD_SIZE > 1, RANK set)."""
    return "RANK" in os.environ and int(os.environ.get("WORLD_SIZE", "1")) > 1


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main_process() -> bool:
    """Rank 0 (or the only process): the one that writes checkpoints, logs and progress bars."""
    return rank() == 0


def init_from_env() -> bool:
    """Join the process group described by torchrun's environment; True if this call initialised it.

    NCCL with ``cuda:LOCAL_RANK`` as the current device when CUDA is available, gloo otherwise. A no-op
    (False) without torchrun's variables or when a group already exists.
    """
    if not launched_by_torchrun() or not dist.is_available() or dist.is_initialized():
        return False
    if torch.cuda.is_available():
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        torch.cuda.set_device(local_rank)
        dist.init_process_group("nccl", device_id=torch.device("cuda", local_rank))
    else:
        dist.init_process_group("gloo")
    return True


@contextlib.contextmanager
def session() -> Iterator[None]:
    """Run a training entry point inside the process group (if torchrun started one).

    Every rank leaves through a barrier, so none goes on (or exits) while rank 0 still writes its
    checkpoint; a group created here is then destroyed in any case, one the caller created stays up.
    """
    owned = init_from_env()
    try:
        yield
        if is_distributed():
            dist.barrier()
    finally:
        if owned:
            dist.destroy_process_group()


def shard(items: Sequence[T]) -> list[T]:
    """This rank's part of a global batch: items ``rank, rank + world, ...`` (all of them alone)."""
    return list(items[rank() :: world_size()])


def _comm_device() -> torch.device:
    if is_distributed() and dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Sum of ``values`` over ranks (float64; the values themselves when alone)."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_comm_device())
    dist.all_reduce(t)
    return [float(v) for v in t.cpu()]


def global_count(n: int) -> int:
    """The number of loss terms over all ranks (``n`` alone)."""
    return round(all_reduce_sum([n])[0])


def broadcast_int(value: int) -> int:
    """Rank 0's ``value`` on every rank (e.g. a step count fitted to rank 0's timing)."""
    if not is_distributed():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=_comm_device())
    dist.broadcast(t, src=0)
    return int(t.item())


def wrap(module: nn.Module, find_unused_parameters: bool = True) -> nn.Module:
    """``module`` in DistributedDataParallel when distributed, else ``module`` itself.

    ``find_unused_parameters`` defaults to True: SAM's prompt encoder and decoder leave different
    parameters without gradient at different steps (no box, no mask input, single-mask output only);
    DDP then leaves a parameter unused on every rank without gradient, as a single process does.
    """
    if not is_distributed():
        return module
    first: Any = next(module.parameters(), None)
    device_ids = None
    if first is not None and first.device.type == "cuda":
        device_ids = [first.device.index if first.device.index is not None else torch.cuda.current_device()]
    return nn.parallel.DistributedDataParallel(
        module, device_ids=device_ids, find_unused_parameters=find_unused_parameters
    )
