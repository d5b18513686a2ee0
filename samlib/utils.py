"""Small helpers shared by all chapters: devices, seeding, mixed precision and image normalisation."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from samlib.errors import InvalidInputError

__all__ = [
    "as_uint8_rgb",
    "autocast_context",
    "count_parameters",
    "default_device",
    "resolve_device",
    "seed_everything",
]


def default_device() -> torch.device:
    """The best available device: CUDA, then Apple MPS, then CPU."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_device(device: str | torch.device | None, default: torch.device | None = None) -> torch.device:
    """``device`` as a :class:`torch.device`; None means ``default`` (if given) or :func:`default_device`.

    The one place samlib turns a user's device argument into a device: every entry point calls it, so
    an unknown name gets the same clear error everywhere.
    """
    if device is None:
        return default if default is not None else default_device()
    try:
        return torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InvalidInputError(
            f"Unknown device {device!r}: use 'cpu', 'cuda', 'cuda:0', 'mps' or None (auto)."
        ) from e


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def count_parameters(module: torch.nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters of ``module`` (only those with ``requires_grad`` if ``trainable_only``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)


@contextlib.contextmanager
def autocast_context(device: str | torch.device | None) -> Iterator[None]:
    """bfloat16 autocast on CUDA, a no-op elsewhere.

    bf16 keeps fp32's exponent range, so SAM's attention needs no loss scaling; CPU autocast is
    skipped because it is slower than fp32 on most CPUs.
    """
    dev = resolve_device(device)
    ctx: contextlib.AbstractContextManager[Any]
    if dev.type == "cuda":
        ctx = torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    else:
        ctx = contextlib.nullcontext()
    with ctx:
        yield


def as_uint8_rgb(image: Any) -> np.ndarray:
    """Validate an image and return it as a contiguous (H, W, 3) uint8 RGB array.

    Accepted: (H, W) grey, (H, W, 1), (H, W, 3) RGB and (H, W, 4) RGBA (alpha dropped); dtype uint8,
    bool, any integer type with values in [0, 255], or float with values in [0, 1]. Anything else
    (e.g. 16-bit satellite counts) raises :class:`InvalidInputError` saying how to convert it.
    """
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL image
        image = np.asarray(image.convert("RGB"))
    arr = np.asarray(image)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    elif arr.ndim == 3 and arr.shape[-1] == 4:
        arr = arr[..., :3]
    elif not (arr.ndim == 3 and arr.shape[-1] == 3):
        raise InvalidInputError(
            f"Expected an image of shape (H, W, 3) (or (H, W) grey / (H, W, 4) RGBA), got {arr.shape}. "
            "Channels must be last: for a (3, H, W) array use image.transpose(1, 2, 0)."
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise InvalidInputError(f"The image is empty (shape {arr.shape}).")
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        return np.ascontiguousarray(arr.astype(np.uint8) * 255)
    if np.issubdtype(arr.dtype, np.integer):
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 255:
            raise InvalidInputError(
                f"Integer image of dtype {arr.dtype} has values in [{lo}, {hi}], outside [0, 255]. "
                "Rescale it to uint8 first, e.g. with a 2-98 percentile stretch."
            )
        return np.ascontiguousarray(arr.astype(np.uint8))
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all():
            raise InvalidInputError("Float image contains NaN or infinite values.")
        lo_f, hi_f = float(arr.min()), float(arr.max())
        if lo_f < 0.0 or hi_f > 1.0:
            raise InvalidInputError(
                f"Float image has values in [{lo_f:.4g}, {hi_f:.4g}]; float images must be in [0, 1]. "
                "Divide by 255 (if it holds 0..255 values) or convert to uint8."
            )
        return np.ascontiguousarray(np.round(arr * 255.0).astype(np.uint8))
    raise InvalidInputError(f"Unsupported image dtype {arr.dtype}: use uint8, or float in [0, 1].")
