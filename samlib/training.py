"""A small, generic training loop shared by the chapters' fine-tuning methods.

Every method in the book that trains something (GeoSAM's mask decoder, the planetary domain decoder,
PointSAM's LoRA adapters, ...) trains a few parameters on top of cached image embeddings. What differs
is how a batch becomes a loss; that is the caller's ``loss_fn``. What is shared lives here: AdamW with
linear warmup and cosine decay, seeded batch order, bf16 autocast on CUDA, gradient clipping and a
tqdm progress bar.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np
import torch
from tqdm.auto import tqdm

from samlib.errors import InvalidInputError
from samlib.utils import autocast_context, resolve_device

__all__ = ["fit", "cosine_with_warmup"]


def cosine_with_warmup(step: int, total: int, warmup: int, floor: float = 0.0) -> float:
    """Learning-rate factor: linear warmup over ``warmup`` steps, then cosine decay to ``floor``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


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
    """
    params = [p for p in parameters if p.requires_grad]
    if not params:
        raise InvalidInputError("fit() got no trainable parameters: unfreeze the part you want to train.")
    if n_items < 1 or steps < 1 or batch_size < 1:
        raise InvalidInputError(
            f"need n_items, steps and batch_size >= 1, got {n_items}, {steps}, {batch_size}."
        )
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: cosine_with_warmup(s, steps, warmup))
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_items)
    cursor = 0
    history: list[float] = []
    dev = resolve_device(device, default=params[0].device)
    bar = tqdm(range(steps), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        if cursor + batch_size > len(order):  # a new epoch, reshuffled
            order = np.concatenate([order[cursor:], rng.permutation(n_items)])
            cursor = 0
        batch = order[cursor : cursor + batch_size]
        cursor += batch_size
        with autocast_context(dev):
            loss = loss_fn(batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"loss became {loss.item()} at step {len(history)}; lower the learning rate."
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(params, grad_clip)
        opt.step()
        sched.step()
        history.append(loss.item())
        bar.set_postfix(loss=f"{history[-1]:.4f}")
    return history
