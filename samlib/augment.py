"""Weak (geometric) and strong (photometric) image augmentations for self-training.

Teacher-student methods such as PointSAM show the teacher a weakly augmented image and the student a
strongly augmented copy of the same view: the flip is shared (so the teacher's pseudo-label lines up
with the student's prediction), the photometric changes are the student's alone. Photometric operations
never move pixels, so masks and point prompts need no change; the flip is applied to them explicitly.

Images are (H, W, 3) uint8 RGB; points are (..., 2) (x, y) pixels; masks are (..., H, W).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import cv2
import numpy as np
from PIL import Image, ImageEnhance, ImageOps

from samlib.errors import InvalidInputError

__all__ = [
    "ORDER_KEEPING_OPS",
    "PHOTOMETRIC_OPS",
    "hflip_image",
    "hflip_masks",
    "hflip_points",
    "random_shadow",
    "strong_augment",
]


def _rgb(image: np.ndarray) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise InvalidInputError(
            f"image must be (H, W, 3) uint8 RGB, got shape {arr.shape} dtype {arr.dtype}: "
            "convert it with samlib.utils.as_uint8_rgb first."
        )
    return arr


def hflip_image(image: np.ndarray) -> np.ndarray:
    """Mirror an (H, W, 3) image left-right."""
    return np.ascontiguousarray(_rgb(image)[:, ::-1])


def hflip_masks(masks: np.ndarray) -> np.ndarray:
    """Mirror (..., H, W) masks left-right."""
    return np.ascontiguousarray(np.asarray(masks)[..., ::-1])


def hflip_points(points: np.ndarray, width: int) -> np.ndarray:
    """Mirror (..., 2) (x, y) pixel points of an image ``width`` pixels wide: x -> width - 1 - x."""
    out = np.array(points, dtype=np.float64, copy=True)
    if out.shape[-1:] != (2,):
        raise InvalidInputError(f"points must have shape (..., 2) as (x, y), got {out.shape}.")
    out[..., 0] = (width - 1) - out[..., 0]
    return out


def random_shadow(
    image: np.ndarray, rng: np.random.Generator, strength: tuple[float, float] = (0.4, 0.8)
) -> np.ndarray:
    """Darken a random quadrilateral (a cast shadow or cloud shade) by a factor drawn from ``strength``."""
    img = _rgb(image)
    h, w = img.shape[:2]
    corners = np.stack([rng.uniform(0, w, 4), rng.uniform(0, h, 4)], axis=1).astype(np.int32)
    region = np.zeros((h, w), np.uint8)
    cv2.fillPoly(region, [cv2.convexHull(corners)], 1)
    factor = rng.uniform(*strength)
    out = img.astype(np.float32)
    out[region > 0] *= factor
    return np.clip(out, 0, 255).astype(np.uint8)


def _pil(op: Callable[[Image.Image, np.random.Generator], Image.Image]) -> Callable[..., np.ndarray]:
    return lambda image, rng: np.asarray(op(Image.fromarray(image), rng))


PHOTOMETRIC_OPS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    "posterize": _pil(lambda im, rng: ImageOps.posterize(im, int(rng.integers(3, 7)))),
    "equalize": _pil(lambda im, rng: ImageOps.equalize(im)),
    "sharpen": _pil(lambda im, rng: ImageEnhance.Sharpness(im).enhance(rng.uniform(1.2, 2.5))),
    "solarize": _pil(lambda im, rng: ImageOps.solarize(im, int(rng.integers(160, 250)))),
    "brightness": _pil(lambda im, rng: ImageEnhance.Brightness(im).enhance(rng.uniform(0.6, 1.4))),
    "contrast": _pil(lambda im, rng: ImageEnhance.Contrast(im).enhance(rng.uniform(0.6, 1.4))),
    "shadow": random_shadow,
}
"""The strong augmentation's photometric operations (PointSAM's list), each ``(image, rng) -> image``."""

ORDER_KEEPING_OPS: tuple[str, ...] = ("posterize", "sharpen", "brightness", "contrast", "shadow")
"""The operations of :data:`PHOTOMETRIC_OPS` that keep the brightness order of a scene's large parts: all
but ``solarize`` (inverts the brightest pixels -- in SAR, the ships) and ``equalize`` (stretches the dark
sea's speckle to the full range). Chapter 02 measures the difference on SAR ships."""


def strong_augment(
    image: np.ndarray, rng: np.random.Generator, n_ops: int = 2, ops: Sequence[str] | None = None
) -> np.ndarray:
    """``n_ops`` distinct operations of :data:`PHOTOMETRIC_OPS`, drawn at random and applied in turn.

    Arguments:
      image (np.ndarray): (H, W, 3) uint8 RGB (already weakly augmented, e.g. flipped).
      rng (np.random.Generator): draws the operations and their magnitudes.
      n_ops (int): how many operations, 0 to the number of operations to draw from.
      ops (Sequence[str] | None): the names to draw from (None: all of :data:`PHOTOMETRIC_OPS`).

    Returns:
      (np.ndarray): (H, W, 3) uint8 RGB, same geometry as ``image``.
    """
    img = _rgb(image)
    names = list(PHOTOMETRIC_OPS) if ops is None else list(ops)
    unknown = sorted(set(names) - set(PHOTOMETRIC_OPS))
    if unknown:
        raise InvalidInputError(f"unknown photometric op(s) {unknown}; known: {sorted(PHOTOMETRIC_OPS)}.")
    if not 0 <= n_ops <= len(names):
        raise InvalidInputError(f"n_ops must be in [0, {len(names)}] (the ops to draw from), got {n_ops}.")
    for i in rng.choice(len(names), size=n_ops, replace=False):
        img = np.ascontiguousarray(PHOTOMETRIC_OPS[names[int(i)]](img, rng), dtype=np.uint8)
    return img
