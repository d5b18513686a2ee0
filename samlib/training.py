"""A small, generic training loop shared by the chapters' fine-tuning methods.

Every method in the book that trains something (GeoSAM's mask decoder, the planetary domain decoder,
PointSAM's LoRA adapters, ...) trains a few parameters on top of cached image embeddings. What differs
is how a batch becomes a loss; that is the caller's ``loss_fn``. What is shared lives here: AdamW with
linear warmup and cosine decay, seeded batch order, bf16 autocast on CUDA, gradient clipping and a
tqdm progress bar. Under ``torchrun`` :func:`fit` trains data-parallel (:mod:`samlib.distributed`).

Long runs (the chapters' full settings) can keep what they train in a *resume folder*:
:func:`resume_file` names a file by a digest of everything that decides the result (data, starting
weights, hyper-parameters), :func:`save_trained` writes the trained weights there as soon as they exist
and :func:`load_trained` puts them back, so a run that is interrupted and started again skips what it
has already trained and scores what an uninterrupted run would.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from samlib import distributed
from samlib.errors import InvalidInputError, TrainingDivergedError
from samlib.utils import autocast_context, resolve_device, torch_load_safe, torch_save_atomic

__all__ = ["cosine_with_warmup", "fingerprint", "fit", "load_trained", "resume_file", "save_trained"]


def fingerprint(*parts: Any) -> str:
    """sha256 over tensors and arrays (dtype, shape and bytes), modules (their state dicts) and JSON-able
    values, in order: two calls agree exactly when every part does."""
    digest = hashlib.sha256()

    def add(part: Any) -> None:
        if isinstance(part, nn.Module):
            for name, value in part.state_dict().items():
                digest.update(name.encode())
                add(value)
            return
        if isinstance(part, torch.Tensor):
            part = part.detach().cpu()
            part = (part.float() if part.dtype == torch.bfloat16 else part).numpy()  # numpy has no bfloat16
        if isinstance(part, np.ndarray):
            digest.update(f"{part.dtype}{part.shape}".encode())
            digest.update(np.ascontiguousarray(part).tobytes())
        elif isinstance(part, (list, tuple)) and any(isinstance(p, (np.ndarray, torch.Tensor)) for p in part):
            for p in part:
                add(p)
        else:
            digest.update(json.dumps(part, sort_keys=True).encode())
        digest.update(b"\0")

    for p in parts:
        add(p)
    return digest.hexdigest()


def resume_file(folder: str | Path | None, name: str, *parts: Any) -> Path | None:
    """``folder / f"{name}_{digest}.pt"`` with the :func:`fingerprint` of ``parts`` (the folder is
    created), or None when ``folder`` is None (nothing is saved or resumed).

    The digest is bit-exact: float inputs computed with another number of CPU threads (or on another
    device) can differ in their last bits; then they get another file and the network is trained again.
    """
    if folder is None:
        return None
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    return out / f"{name}_{fingerprint(*parts)[:16]}.pt"


def save_trained(
    path: Path | None, modules: Mapping[str, nn.Module | None], history: list[float], seconds: float
) -> None:
    """Write the state dicts of ``modules`` (None entries skipped), the loss history and the training
    time to ``path`` atomically (no-op when ``path`` is None)."""
    if path is None:
        return
    states = {
        k: {n: v.detach().cpu() for n, v in m.state_dict().items()}
        for k, m in modules.items()
        if m is not None
    }
    torch_save_atomic(
        {"modules": states, "history": [float(h) for h in history], "seconds": float(seconds)}, path
    )


def load_trained(path: Path, modules: Mapping[str, nn.Module | None]) -> tuple[list[float], float]:
    """Load a :func:`save_trained` file into ``modules`` (in place) and return (history, seconds).

    Raises:
      InvalidInputError: the file is unreadable or does not hold these modules; the message says to
        delete it so that the run trains them again.
    """
    doc = torch_load_safe(path, expected="weights saved by samlib.training.save_trained")
    try:
        for key, module in modules.items():
            if module is not None:
                module.load_state_dict(doc["modules"][key])
        return [float(h) for h in doc["history"]], float(doc["seconds"])
    except (KeyError, TypeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise InvalidInputError(
            f"{path} does not hold the trained {', '.join(modules)} this run expects ({type(e).__name__}: "
            f"{first}); delete it (or its resume folder) to train again."
        ) from e


def cosine_with_warmup(step: int, total: int, warmup: int, floor: float = 0.0) -> float:
    """Learning-rate factor: linear warmup over ``warmup`` steps, then cosine decay to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


class _LossModule(nn.Module):
    """``loss_fn`` as a module owning ``params``, so DistributedDataParallel can wrap it."""

    def __init__(
        self, params: list[torch.nn.Parameter], loss_fn: Callable[[np.ndarray], torch.Tensor]
    ) -> None:
        super().__init__()
        self.params = nn.ParameterList(params)  # the caller's tensors themselves, not copies
        self.loss_fn = loss_fn

    def forward(self, batch: np.ndarray) -> torch.Tensor:
        return self.loss_fn(batch)


def fit(
    parameters: Iterable[torch.nn.Parameter],
    loss_fn: Callable[[np.ndarray], torch.Tensor],
    n_items: int,
    steps: int,
    batch_size: int = 4,
    lr: float = 1e-4,
    weight_decay: float = 1e-4,
    warmup: int = 0,
    seed: int = 0,
    device: torch.device | str | None = None,
    grad_clip: float | None = 1.0,
    desc: str = "fine-tune",
    progress: bool = True,
) -> list[float]:
    """Minimise ``loss_fn`` over mini-batches of item indices with AdamW and a cosine schedule.

    Arguments:
      parameters (Iterable[torch.nn.Parameter]): the trainable parameters (everything else stays as it
        is: freeze it beforehand).
      loss_fn (Callable): maps an index array (batch_size,) into ``range(n_items)`` to a scalar loss.
      n_items (int): number of training items (images, or image-prompt pairs).
      steps (int): optimisation steps; batches are drawn by epochs of a seeded permutation.
      device (torch.device | str | None): enables bf16 autocast when it is a CUDA device.

    Returns:
      (list[float]): the loss of every step.

    Under ``torchrun --nproc_per_node=N`` every rank draws the same global batch of ``batch_size``
    items and computes ``loss_fn`` on its share (items ``rank::N``); DDP averages the gradients and each
    rank's loss is weighted by its share, so when ``loss_fn`` is the mean of per-item losses (and an
    item's loss does not depend on the others in its batch) the steps and the returned history equal
    the single-process run's. Call it on every rank with the same arguments.
    """
    with distributed.session():
        return _fit(parameters, loss_fn, n_items, steps, batch_size, lr, weight_decay, warmup, seed,
                    device, grad_clip, desc, progress)  # fmt: skip


def _fit(
    parameters: Iterable[torch.nn.Parameter],
    loss_fn: Callable[[np.ndarray], torch.Tensor],
    n_items: int,
    steps: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    warmup: int,
    seed: int,
    device: torch.device | str | None,
    grad_clip: float | None,
    desc: str,
    progress: bool,
) -> list[float]:
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise InvalidInputError("fit() got no trainable parameters: unfreeze the part you want to train.")
    if n_items < 1 or steps < 1 or batch_size < 1:
        raise InvalidInputError(
            f"need n_items, steps and batch_size >= 1, got {n_items}, {steps}, {batch_size}."
        )
    for name, value in (("lr", lr), ("weight_decay", weight_decay)):
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or not math.isfinite(value)
            or value < 0
        ):
            raise InvalidInputError(f"{name} must be a finite number >= 0, got {value!r}.")
    if lr == 0:
        raise InvalidInputError("lr must be > 0.")
    if warmup < 0:
        raise InvalidInputError(f"warmup must be >= 0 steps, got {warmup}.")
    world = distributed.world_size()
    if batch_size < world:
        raise InvalidInputError(f"batch_size ({batch_size}) must be >= the {world} processes.")
    model = distributed.wrap(_LossModule(params, loss_fn))  # the loss function itself when alone
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, steps, warmup))
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_items)
    cursor = 0
    history: list[float] = []
    dev = resolve_device(device, default=params[0].device)
    bar = tqdm(range(steps), desc=desc, disable=not (progress and distributed.is_main_process()), leave=False)
    for _ in bar:
        if cursor + batch_size > len(order):  # a new epoch, reshuffled
            order = np.concatenate([order[cursor:], rng.permutation(n_items)])
            cursor = 0
        batch = order[cursor : cursor + batch_size]
        cursor += batch_size
        mine = batch[distributed.rank() :: world]  # this rank's share (all of it when alone)
        share = len(mine) / len(batch)
        with autocast_context(dev):
            loss = model(mine)
        value = distributed.all_reduce_sum([loss.item() * share])[0]  # the global batch's mean
        if not math.isfinite(value):
            raise TrainingDivergedError(
                f"loss became {value} at step {len(history)}; lower the learning rate."
            )
        opt.zero_grad(set_to_none=True)
        (loss * (share * world) if world > 1 else loss).backward()  # DDP divides the sum by world
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        sched.step()
        history.append(value)
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    return history
