"""Cutting images into tiles and putting them back together.

SAM resizes every input to its encoder size, so a tile is seen magnified: GeoSAM's 256-px aerial tiles
go into ViT-H's 1024-px input (x4), which is what makes narrow sidewalks resolvable.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from samlib.errors import InvalidInputError

__all__ = [
    "MaskPiece",
    "Window",
    "crop_to_multiple",
    "densest_window",
    "from_tiles",
    "mask_piece",
    "merge_tile_pieces",
    "paint_labels",
    "sliding_windows",
    "tile_all",
    "to_tiles",
    "untile_all",
]


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


# --- Sliding windows over rasters of any size, and merging masks predicted per window ------------------


@dataclass(frozen=True)
class Window:
    """One tile of a sliding-window pass over a raster, and the part of it that it owns.

    Attributes:
      row (int), col (int): top-left pixel of the tile in the raster.
      height (int), width (int): tile size (smaller than the tile size only for a raster smaller than it).
      core (tuple[int, int, int, int]): (row0, col0, row1, col1), end-exclusive, the pixels this tile
        writes: neighbours split their overlap in the middle, so every raster pixel has one owner and
        the halo (the rest of the overlap) is cropped when writing.
    """

    row: int
    col: int
    height: int
    width: int
    core: tuple[int, int, int, int]

    def contains(self, row0: float, col0: float, row1: float, col1: float) -> bool:
        """Whether the pixel rectangle [row0, row1) x [col0, col1) lies inside this tile."""
        return (
            self.row <= row0
            and self.col <= col0
            and row1 <= self.row + self.height
            and col1 <= self.col + self.width
        )


def _starts(size: int, tile: int, stride: int) -> list[int]:
    if size <= tile:
        return [0]
    starts = list(range(0, size - tile, stride))
    return starts + [size - tile]  # the last tile ends at the edge


def _cores(starts: list[int], tile: int, size: int) -> list[tuple[int, int]]:
    ends = [min(s + tile, size) for s in starts]
    bounds = [0] + [(starts[k + 1] + ends[k]) // 2 for k in range(len(starts) - 1)] + [size]
    return [(bounds[k], bounds[k + 1]) for k in range(len(starts))]


def sliding_windows(height: int, width: int, tile: int, overlap: int) -> list[Window]:
    """Tiles of ``tile`` x ``tile`` px, neighbours overlapping by at least ``overlap`` px, covering a
    ``height`` x ``width`` raster (row-major; the last row/column of tiles is moved back to end at the
    raster's edge, so no tile is padded).
    """
    if height < 1 or width < 1:
        raise InvalidInputError(f"raster size must be >= 1 x 1, got {height} x {width}.")
    if tile < 1 or not 0 <= overlap < tile:
        raise InvalidInputError(
            f"need tile >= 1 and 0 <= overlap < tile, got tile={tile}, overlap={overlap}."
        )
    rows, cols = _starts(height, tile, tile - overlap), _starts(width, tile, tile - overlap)
    row_cores, col_cores = _cores(rows, tile, height), _cores(cols, tile, width)
    return [
        Window(r, c, min(tile, height - r), min(tile, width - c), (rc[0], cc[0], rc[1], cc[1]))
        for r, rc in zip(rows, row_cores, strict=True)
        for c, cc in zip(cols, col_cores, strict=True)
    ]


@dataclass
class MaskPiece:
    """One mask in raster coordinates, stored as the crop of its bounding box.

    Attributes:
      row (int), col (int): top-left pixel of ``mask`` in the raster.
      mask (np.ndarray): (h, w) bool.
      score (float): the model's predicted IoU (or another confidence).
      tile (int): index of the window it was predicted in (-1 when merged from several).
      complete (bool): False when it touches an edge of its tile that is not the raster's edge (the
        object may continue in the neighbouring tile).
    """

    row: int
    col: int
    mask: np.ndarray
    score: float
    tile: int = -1
    complete: bool = True

    @property
    def bounds(self) -> tuple[int, int, int, int]:
        """(row0, col0, row1, col1), end-exclusive."""
        return self.row, self.col, self.row + self.mask.shape[0], self.col + self.mask.shape[1]

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def window(self, row0: int, col0: int, row1: int, col1: int) -> np.ndarray:
        """This mask on the raster rectangle [row0, row1) x [col0, col1): (row1 - row0, col1 - col0) bool."""
        out = np.zeros((row1 - row0, col1 - col0), dtype=bool)
        r0, c0, r1, c1 = self.bounds
        ir0, ic0, ir1, ic1 = max(r0, row0), max(c0, col0), min(r1, row1), min(c1, col1)
        if ir0 < ir1 and ic0 < ic1:
            out[ir0 - row0 : ir1 - row0, ic0 - col0 : ic1 - col0] = self.mask[
                ir0 - r0 : ir1 - r0, ic0 - c0 : ic1 - c0
            ]
        return out


def mask_piece(
    mask: np.ndarray, window: Window, raster_shape: tuple[int, int], score: float, tile: int = -1
) -> MaskPiece | None:
    """A tile-sized (h, w) bool ``mask`` as a :class:`MaskPiece` in raster coordinates (None if empty);
    ``complete`` says whether it stays off the tile's inner edges."""
    m = np.asarray(mask, dtype=bool)
    rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
    if rows.size == 0:
        return None
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    height, width = raster_shape
    touches = (
        (r0 == 0 and window.row > 0)
        or (c0 == 0 and window.col > 0)
        or (r1 == m.shape[0] and window.row + window.height < height)
        or (c1 == m.shape[1] and window.col + window.width < width)
    )
    return MaskPiece(
        window.row + r0, window.col + c0, m[r0:r1, c0:c1].copy(), float(score), tile, not touches
    )


def merge_tile_pieces(
    pieces: Sequence[MaskPiece], windows: Sequence[Window], iou_threshold: float = 0.5
) -> list[MaskPiece]:
    """Masks predicted tile by tile -> one mask per object, without duplicates or seams.

    Two masks from different tiles are the same object when their IoU *on the overlap of their tiles*
    (the only pixels both tiles saw) exceeds ``iou_threshold`` - NMS on the overlap. A group of such
    masks becomes the highest-scoring complete member (one that stays off its tile's inner edges: the
    tile saw the whole object), or, when every member is cut by a tile edge (an object larger than the
    overlap), their union, which runs across the border without a seam. Masks within one tile are left
    as the per-tile generator gave them.

    Arguments:
      pieces (Sequence[MaskPiece]): masks with ``tile`` set to their window's index.
      windows (Sequence[Window]): the windows they were predicted in.
      iou_threshold (float): overlap IoU above which two masks are one object.

    Returns:
      (list[MaskPiece]): merged masks, sorted by decreasing score.
    """
    n = len(pieces)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    bounds = np.array([p.bounds for p in pieces], dtype=np.int64).reshape(-1, 4)
    for i in range(n):
        wi = windows[pieces[i].tile]
        cand = np.flatnonzero(
            (bounds[:, 0] < bounds[i, 2])
            & (bounds[i, 0] < bounds[:, 2])
            & (bounds[:, 1] < bounds[i, 3])
            & (bounds[i, 1] < bounds[:, 3])
        )
        for j in cand[cand > i]:
            if pieces[j].tile == pieces[i].tile:
                continue
            wj = windows[pieces[j].tile]
            r0, c0 = max(wi.row, wj.row), max(wi.col, wj.col)
            r1, c1 = min(wi.row + wi.height, wj.row + wj.height), min(wi.col + wi.width, wj.col + wj.width)
            if r0 >= r1 or c0 >= c1:
                continue
            a, b = pieces[i].window(r0, c0, r1, c1), pieces[j].window(r0, c0, r1, c1)
            union = np.logical_or(a, b).sum()
            if union and np.logical_and(a, b).sum() / union > iou_threshold:
                parent[find(int(j))] = find(i)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(find(i), []).append(i)
    merged = []
    for members in groups.values():
        complete = [pieces[i] for i in members if pieces[i].complete]
        if complete or len(members) == 1:
            merged.append(max(complete or [pieces[members[0]]], key=lambda p: p.score))
            continue
        r0, c0 = bounds[members, 0].min(), bounds[members, 1].min()
        r1, c1 = bounds[members, 2].max(), bounds[members, 3].max()
        union_mask = np.zeros((int(r1 - r0), int(c1 - c0)), dtype=bool)
        for i in members:
            union_mask |= pieces[i].window(int(r0), int(c0), int(r1), int(c1))
        score = float(np.mean([pieces[i].score for i in members]))
        merged.append(MaskPiece(int(r0), int(c0), union_mask, score, -1, False))
    return sorted(merged, key=lambda p: -p.score)


def paint_labels(pieces: Sequence[MaskPiece], row0: int, col0: int, row1: int, col1: int) -> np.ndarray:
    """Label raster of the rectangle [row0, row1) x [col0, col1): piece k gets label k + 1, larger
    pieces painted first so that smaller ones stay visible where masks overlap; 0 = background.

    Returns:
      (np.ndarray): (row1 - row0, col1 - col0) uint32.
    """
    out = np.zeros((row1 - row0, col1 - col0), dtype=np.uint32)
    if not pieces:
        return out
    b = np.array([p.bounds for p in pieces], dtype=np.int64)
    hits = np.flatnonzero((b[:, 0] < row1) & (row0 < b[:, 2]) & (b[:, 1] < col1) & (col0 < b[:, 3]))
    for k in sorted(hits.tolist(), key=lambda k: -pieces[k].area):  # areas only of the pieces here
        out[pieces[k].window(row0, col0, row1, col1)] = k + 1
    return out
