"""Small helpers shared by all chapters: devices, seeding, mixed precision and image normalisation."""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from samlib.errors import InvalidInputError

__all__ = [
    "as_uint8_rgb",
    "autocast_context",
    "check_finite_weights",
    "count_parameters",
    "default_device",
    "resolve_device",
    "seed_everything",
    "stretch_to_uint8",
    "torch_load_safe",
    "torch_save_atomic",
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
    if not isinstance(device, (str, torch.device)):
        raise InvalidInputError(
            f"device must be a string such as 'cpu' or 'cuda', a torch.device or None, got "
            f"{type(device).__name__}."
        )
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise InvalidInputError(
            f"Unknown device {device!r}: use 'cpu', 'cuda', 'cuda:0', 'mps' or None (auto)."
        ) from e
    # Checked here, not at the first .to(dev): torch then fails deep inside with an AssertionError.
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise InvalidInputError(
                f"device={device!r}, but CUDA is not available on this machine: use 'cpu' or None (auto)."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise InvalidInputError(
                f"device={device!r}, but only {torch.cuda.device_count()} CUDA device(s) exist."
            )
    if dev.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise InvalidInputError(f"device={device!r}, but Apple MPS is not available: use 'cpu' or None.")
    return dev


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global random generators."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # also seeds every CUDA device


def check_finite_weights(state_dict: Mapping[str, Any], source: str) -> None:
    """Raise :class:`InvalidInputError` if any floating-point tensor of ``state_dict`` holds NaN or inf.

    A diverged training run saves such weights; a model built from them predicts NaN scores and empty
    masks without any error, so they are refused at load time instead.
    """
    bad, total, names = 0, 0, []
    for key, value in state_dict.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            total += value.numel()
            n_bad = int((~torch.isfinite(value)).sum())
            if n_bad:
                bad += n_bad
                names.append(str(key))
    if bad:
        raise InvalidInputError(
            f"The weights in {source} are not finite: {bad} of {total} values are NaN or infinite "
            f"(in {len(names)} tensors, e.g. {names[0]}). The training run that wrote them diverged; "
            "use an earlier checkpoint or train again with a smaller learning rate."
        )


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


# PIL modes that hold 8-bit channels: converting them to RGB loses nothing but alpha / the palette.
_PIL_8BIT_MODES = frozenset({"1", "L", "LA", "La", "P", "PA", "RGB", "RGBA", "RGBa", "RGBX", "CMYK", "YCbCr"})

STRETCH_PERCENTILES = (2.0, 98.0)
"""Default percentiles of :func:`stretch_to_uint8`: the usual display stretch of remote-sensing tools."""


def stretch_to_uint8(
    image: Any, percentiles: tuple[float, float] = STRETCH_PERCENTILES, per_band: bool = True
) -> np.ndarray:
    """Map imagery of any numeric range (16-bit counts, reflectance floats) to uint8 by a percentile stretch.

    Each band's ``percentiles[0]`` percentile goes to 0 and its ``percentiles[1]`` percentile to 255
    (linearly, values beyond are clipped); NaN and infinite values are ignored when computing the
    percentiles and become 0. A band with a single value maps to 0. This is the "2-98 % stretch" of GIS
    tools: it keeps the image's contrast whatever its bit depth, where dropping the low byte (``a >> 8``)
    or clipping at 255 destroys it.

    Arguments:
      image (np.ndarray): (H, W) or (H, W, C) numeric array.
      percentiles (tuple[float, float]): low and high percentile, 0 <= low < high <= 100.
      per_band (bool): stretch each band on its own (True) or all bands with one range (False, keeps
        the colour balance).

    Returns:
      (np.ndarray): uint8 array of the same shape.
    """
    arr = np.asarray(image)
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise InvalidInputError(
            f"stretch_to_uint8 needs a numeric (integer or float) array, got {arr.dtype}."
        )
    lo_p, hi_p = (float(p) for p in percentiles)
    if not 0.0 <= lo_p < hi_p <= 100.0:
        raise InvalidInputError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}.")
    if arr.ndim not in (2, 3) or arr.size == 0:
        raise InvalidInputError(
            f"stretch_to_uint8 needs an (H, W) or (H, W, C) image, got shape {arr.shape}."
        )
    data = arr.astype(np.float64)
    bands = data[..., None] if data.ndim == 2 else data
    out = np.zeros(bands.shape, np.uint8)
    groups = [slice(i, i + 1) for i in range(bands.shape[-1])] if per_band else [slice(None)]
    for sl in groups:
        band = bands[..., sl]
        finite = band[np.isfinite(band)]
        if finite.size == 0:
            continue
        lo, hi = np.percentile(finite, [lo_p, hi_p])
        if hi <= lo:
            continue
        scaled = (np.nan_to_num(band, nan=lo, posinf=hi, neginf=lo) - lo) * (255.0 / (hi - lo))
        out[..., sl] = np.clip(np.round(scaled), 0, 255).astype(np.uint8)
    return out[..., 0] if arr.ndim == 2 else out


def as_uint8_rgb(image: Any) -> np.ndarray:
    """Validate an image and return it as a contiguous (H, W, 3) uint8 RGB array.

    Accepted: (H, W) grey, (H, W, 1), (H, W, 3) RGB and (H, W, 4) RGBA (alpha dropped); dtype
    uint8, bool, any integer type with values in [0, 255], or float with values in [0, 1]. PIL images
    with 8-bit channels are converted to RGB; 16-bit and float PIL images ("I;16", "I", "F") are read
    as arrays and follow the array rules. Anything else (16-bit satellite counts, a 4-band RGBN raster)
    raises :class:`InvalidInputError` saying how to convert it (:func:`stretch_to_uint8`, after
    selecting three bands), so that no value is ever truncated.
    """
    if hasattr(image, "convert") and hasattr(image, "mode"):  # PIL image
        # convert("RGB") of a 16-bit or float image clips it to 0..255: read the values instead.
        image = np.asarray(image.convert("RGB") if image.mode in _PIL_8BIT_MODES else image)
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().numpy()
    try:
        arr = np.asarray(image)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"image must be an array, got {type(image).__name__}: {e}") from e
    if arr.dtype == object or not (
        arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise InvalidInputError(
            f"Unsupported image dtype {arr.dtype}: use uint8, or float in [0, 1] "
            "(samlib.utils.stretch_to_uint8 converts other ranges)."
        )
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    elif arr.ndim == 3 and arr.shape[-1] == 4:
        # RGBA in display range; 16-bit RGBN counts fail the range check below (alpha is never a NIR band
        # there), and the message says to select bands.
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
                "Rescale it to uint8 first, e.g. samlib.utils.stretch_to_uint8(image) (a 2-98 percentile "
                "stretch); for a 4-band (e.g. RGBN) raster select the three bands to show first."
            )
        return np.ascontiguousarray(arr.astype(np.uint8))
    if not np.isfinite(arr).all():
        raise InvalidInputError("Float image contains NaN or infinite values.")
    lo_f, hi_f = float(arr.min()), float(arr.max())
    if lo_f < 0.0 or hi_f > 1.0:
        raise InvalidInputError(
            f"Float image has values in [{lo_f:.4g}, {hi_f:.4g}]; float images must be in [0, 1]. "
            "Divide by 255 (if it holds 0..255 values) or use samlib.utils.stretch_to_uint8(image)."
        )
    return np.ascontiguousarray(np.round(arr * 255.0).astype(np.uint8))


def torch_save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save(obj, path)`` so that a reader never sees a half-written file: the object goes to a
    temporary file beside ``path`` first, then ``os.replace`` swaps it in (atomic on one file system). The
    folder must exist; a failed write leaves ``path`` as it was and no temporary file behind.
    """
    out = Path(path)
    tmp = out.with_name(out.name + ".tmp")
    try:
        torch.save(obj, tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)  # no-op after a successful replace
    return out


def torch_load_safe(path: str | Path, expected: str = "a file written by samlib") -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)``, with one clear error for any failure.

    ``weights_only=True`` reads tensors, numbers, strings and containers only: a file that needs anything
    else (a pickled object, which could run code on loading) is refused instead of executed.

    Arguments:
      path (str | Path): the file.
      expected (str): what the file should be, for the error message (e.g. "a LoRA adapter file written
        by samlib.adapters.save_adapters").

    Raises:
      InvalidInputError: the file is missing, truncated, not a torch file, or needs more than weights.
    """
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"{p} does not exist (expected {expected}).")
    try:
        return torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors come in many types: report them as one clear error
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise InvalidInputError(
            f"could not read {p} with torch.load(weights_only=True) ({type(e).__name__}: {first}); "
            f"expected {expected}. Re-create it with the samlib call that writes it."
        ) from e
