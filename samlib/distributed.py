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

A loop that calls the model's parts directly (PointSAM's LoRA trainer) can do without DDP: it sums the
trainable gradients itself (:func:`sum_gradients`), starts from rank 0's weights
(:func:`broadcast_parameters`), and gets the whole global batch's per-item tensors back in batch order
(:func:`all_gather_shards`) where a loss couples the items of a batch.
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
    "all_gather_shards",
    "all_reduce_sum",
    "all_reduce_sum_tensor",
    "broadcast_parameters",
    "broadcast_int",
    "global_count",
    "init_from_env",
    "is_distributed",
    "is_main_process",
    "launched_by_torchrun",
    "rank",
    "rank_device",
    "session",
    "shard",
    "sum_gradients",
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


def rank_device(device: torch.device) -> torch.device:
    """The device this process should use for ``device``: under torchrun a CUDA device becomes this rank's
    ``cuda:LOCAL_RANK`` (the current device :func:`session` set), so no two ranks share one GPU; anything
    else (CPU, one process) is returned unchanged."""
    if is_distributed() and device.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return device


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


def all_reduce_sum_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A detached copy of ``tensor`` summed over ranks, in its own dtype (the copy alone: bit-identical)."""
    out = tensor.detach().clone()
    if is_distributed():
        dist.all_reduce(out)
    return out


def broadcast_parameters(params: Sequence[torch.Tensor]) -> None:
    """Copy rank 0's values of ``params`` into every rank's (in place; nothing alone)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for p in params:
            dist.broadcast(p.data, src=0)


def sum_gradients(params: Sequence[torch.Tensor]) -> None:
    """Replace every rank's gradients of ``params`` by their sum over ranks (one flat all-reduce).

    A parameter without a gradient on this rank counts as zero and gets the sum too. The caller writes
    each rank's loss so that the sum is the global batch's gradient (nothing alone).
    """
    if not is_distributed() or not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.detach().reshape(-1) for g in grads])
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone()
        offset += n


def all_gather_shards(pieces: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """The inverse of :func:`shard` for tensors: every item of the global batch, in batch order.

    Arguments:
      pieces (Sequence[torch.Tensor]): this rank's items (those of ``shard(range(n))``), each (n_i, ...)
        with the same trailing shape and dtype on every rank; ``n_i`` may differ, every rank has one or more.

    Returns:
      (list[torch.Tensor]): the ``n`` items of all ranks; this rank's own items are the given tensors
      themselves (gradients flow into them), the others are received copies (constants). Alone: ``pieces``.
    """
    if not is_distributed():
        return list(pieces)
    if not pieces:
        raise ValueError("all_gather_shards needs at least one item on every rank.")
    world, me = world_size(), rank()
    device = _comm_device()
    n = round(all_reduce_sum([len(pieces)])[0])
    per_rank = [len(range(r, n, world)) for r in range(world)]
    most = max(per_rank)
    rows = torch.zeros(most, dtype=torch.int64, device=device)
    rows[: len(pieces)] = torch.tensor([len(p) for p in pieces], dtype=torch.int64)
    all_rows = [torch.empty_like(rows) for _ in range(world)]
    dist.all_gather(all_rows, rows)
    longest = max(int(r.sum()) for r in all_rows)
    local = torch.cat([p.detach().reshape(len(p), -1) for p in pieces]).to(device)
    padded = torch.zeros(longest, local.shape[1], dtype=local.dtype, device=device)
    padded[: len(local)] = local
    received = [torch.empty_like(padded) for _ in range(world)]
    dist.all_gather(received, padded)
    out: list[torch.Tensor | None] = [None] * n
    for r in range(world):
        counts = [int(c) for c in all_rows[r][: per_rank[r]]]
        start = 0
        for j, c in enumerate(counts):
            b = r + j * world
            if r == me:
                out[b] = pieces[j]
            else:
                out[b] = received[r][start : start + c].to(pieces[0].device).reshape(c, *pieces[0].shape[1:])
            start += c
    return [t for t in out if t is not None]


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
