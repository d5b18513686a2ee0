"""Cutting images into tiles and putting them back together.

SAM resizes every input to its encoder size, so a tile is seen magnified: GeoSAM's 256-px aerial tiles
go into ViT-H's 1024-px input (x4), which is what makes narrow sidewalks resolvable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from samlib.errors import InvalidInputError

__all__ = ["crop_to_multiple", "densest_window", "from_tiles", "tile_all", "to_tiles", "untile_all"]


def to_tiles(array: np.ndarray, tile: int, channels_first: bool = False) -> list[np.ndarray]:
    """Non-overlapping ``tile`` x ``tile`` windows in row-major order; a remainder at the right/bottom
    edge is dropped (crop the array to a multiple of ``tile`` to keep everything).

    Arguments:
      array: (H, W), (H, W, C) or, with ``channels_first``, (C, H, W).
    """
    arr = np.asarray(array)
    if tile < 1 or arr.ndim not in (2, 3):
        raise InvalidInputError(f"need tile >= 1 and a 2-D or 3-D array, got tile={tile}, shape {arr.shape}.")
    h, w = (arr.shape[1:3] if channels_first else arr.shape[:2]) if arr.ndim == 3 else arr.shape
    out = []
    for y in range(0, h - tile + 1, tile):
        for x in range(0, w - tile + 1, tile):
            out.append(
                arr[:, y : y + tile, x : x + tile]
                if channels_first and arr.ndim == 3
                else arr[y : y + tile, x : x + tile]
            )
    return out


def from_tiles(tiles: Sequence[np.ndarray], rows: int, cols: int) -> np.ndarray:
    """Inverse of :func:`to_tiles` for (t, t) or (t, t, C) tiles: one (rows * t, cols * t[, C]) array."""
    if len(tiles) != rows * cols:
        raise InvalidInputError(f"need rows * cols = {rows * cols} tiles, got {len(tiles)}.")
    return np.concatenate(
        [np.concatenate(list(tiles[r * cols : (r + 1) * cols]), axis=1) for r in range(rows)], axis=0
    )


def crop_to_multiple(array: np.ndarray, tile: int) -> np.ndarray:
    """``array`` (H, W[, C]) cropped at the right/bottom to a whole number of ``tile`` x ``tile`` tiles."""
    arr = np.asarray(array)
    if tile < 1 or arr.ndim not in (2, 3):
        raise InvalidInputError(f"need tile >= 1 and a 2-D or 3-D array, got tile={tile}, shape {arr.shape}.")
    return arr[: arr.shape[0] - arr.shape[0] % tile, : arr.shape[1] - arr.shape[1] % tile]


def tile_all(arrays: Sequence[np.ndarray], tile: int, channels_first: bool = False) -> list[np.ndarray]:
    """:func:`to_tiles` of every array, concatenated: image 0's tiles first, row-major within each."""
    return [t for a in arrays for t in to_tiles(a, tile, channels_first)]


def untile_all(tiles: Sequence[np.ndarray], shape: tuple[int, int], tile: int) -> list[np.ndarray]:
    """Inverse of :func:`tile_all` for images that all have (H, W) ``shape`` (multiples of ``tile``)."""
    rows, cols = shape[0] // tile, shape[1] // tile
    n = rows * cols
    if n == 0 or len(tiles) % n:
        raise InvalidInputError(f"{len(tiles)} tiles are not a whole number of {rows} x {cols} images.")
    return [from_tiles(tiles[i : i + n], rows, cols) for i in range(0, len(tiles), n)]


def densest_window(mask: np.ndarray, size: int | None, stride: int | None = None) -> tuple[slice, slice]:
    """The ``size`` x ``size`` window of ``mask`` that holds the most foreground pixels.

    Used to evaluate on crops that contain the class at all: a fixed corner of a sparse road tile
    can hold no road, and then every method scores zero. Choosing the window from the ground truth
    selects *where* to look, not what to predict; say so wherever the score is reported.

    Arguments:
      mask (np.ndarray): (H, W) foreground mask (bool or 0/1).
      size (int | None): window side in pixels; None, or a size at least as large as the mask,
        gives the whole mask.
      stride (int | None): step between candidate windows; None: ``size // 8`` (at least 1).

    Returns:
      (tuple[slice, slice]): row and column slices of the window; ties go to the top-left one.
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise InvalidInputError(f"densest_window needs a 2-D mask, got shape {m.shape}.")
    h, w = m.shape
    if size is None or (size >= h and size >= w):
        return slice(0, h), slice(0, w)
    if size < 1:
        raise InvalidInputError(f"window size must be >= 1, got {size}.")
    size_y, size_x = min(size, h), min(size, w)
    step = stride or max(1, size // 8)
    # integral image: the sum of any window in O(1)
    integral = np.pad(np.cumsum(np.cumsum(m.astype(np.int64), 0), 1), ((1, 0), (1, 0)))
    ys = np.unique(np.r_[np.arange(0, h - size_y + 1, step), h - size_y])
    xs = np.unique(np.r_[np.arange(0, w - size_x + 1, step), w - size_x])
    y0, x0 = ys[:, None], xs[None, :]
    sums = (
        integral[y0 + size_y, x0 + size_x]
        - integral[y0, x0 + size_x]
        - integral[y0 + size_y, x0]
        + integral[y0, x0]
    )
    iy, ix = np.unravel_index(int(np.argmax(sums)), sums.shape)
    y, x = int(ys[iy]), int(xs[ix])
    return slice(y, y + size_y), slice(x, x + size_x)
