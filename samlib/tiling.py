"""Cutting images into tiles and putting them back together.

SAM resizes every input to its encoder size, so a tile is seen magnified: GeoSAM's 256-px aerial tiles
go into ViT-H's 1024-px input (x4), which is what makes narrow sidewalks resolvable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from samlib.errors import InvalidInputError

__all__ = ["crop_to_multiple", "from_tiles", "tile_all", "to_tiles", "untile_all"]


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
