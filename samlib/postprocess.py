"""Morphological clean-up of predicted masks and label maps (OpenCV).

GeoSAM (Sultan et al., arXiv 2311.11319) post-processes its per-class masks with *erosion* to drop
isolated specks and *dilation* to reconnect broken paths. The same operations help every chapter whose
predictions are noisy or fragmented, so they live here:

* :func:`erode`, :func:`dilate`, :func:`opening`, :func:`closing` -- the basic operators on a binary mask,
  with a square, elliptical or cross-shaped kernel of odd size ``k`` (``k <= 1`` means "do nothing").
* :func:`remove_small_components` -- drop connected components smaller than ``min_area`` pixels.
* :func:`clean_mask` -- GeoSAM's recipe on one mask: erode, dilate, close, drop small components.
* :func:`clean_label_map` -- :func:`clean_mask` per class of an (H, W) label map; pixels a class loses
  become background, and a class only grows into background (it never takes pixels from another class).
* :func:`grabcut_refine` -- PSLG-SAM's boundary refinement: OpenCV GrabCut started from a mask's
  eroded core and dilated surround, repeated until the boundary settles.

Masks are (H, W) bool or 0/1 arrays; every function returns a new bool array and leaves its input alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from samlib.errors import InvalidInputError
from samlib.prompts import check_box

__all__ = [
    "Refinement",
    "clean_label_map",
    "clean_mask",
    "closing",
    "dilate",
    "erode",
    "grabcut_refine",
    "kernel",
    "opening",
    "remove_small_components",
]

_SHAPES = {"ellipse": cv2.MORPH_ELLIPSE, "rect": cv2.MORPH_RECT, "cross": cv2.MORPH_CROSS}


def _binary(mask: Any) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise InvalidInputError(f"mask must be 2-D (H, W), got shape {arr.shape}.")
    if arr.dtype != np.bool_:
        if np.issubdtype(arr.dtype, np.floating) and not np.isin(arr, (0.0, 1.0)).all():
            raise InvalidInputError("mask is a float array with values other than 0/1: threshold it first.")
        arr = arr != 0
    return arr


def kernel(size: int, shape: str = "ellipse") -> np.ndarray | None:
    """A ``size`` x ``size`` uint8 structuring element, or None for ``size <= 1`` (identity)."""
    if not isinstance(size, (int, np.integer)) or isinstance(size, bool):
        raise InvalidInputError(f"kernel size must be an integer, got {size!r}.")
    if shape not in _SHAPES:
        raise InvalidInputError(f"kernel shape must be one of {sorted(_SHAPES)}, got {shape!r}.")
    if size <= 1:
        return None
    return cv2.getStructuringElement(_SHAPES[shape], (int(size), int(size)))


def _morph(op: int, mask: Any, size: int, shape: str, iterations: int = 1) -> np.ndarray:
    m = _binary(mask)
    k = kernel(size, shape)
    if k is None or iterations < 1:
        return m.copy()
    # BORDER_REPLICATE: a road leaving the tile is not eroded from the image edge inwards.
    out = cv2.morphologyEx(m.astype(np.uint8), op, k, iterations=iterations, borderType=cv2.BORDER_REPLICATE)
    return out.astype(bool)


def erode(mask: Any, size: int = 3, shape: str = "ellipse", iterations: int = 1) -> np.ndarray:
    """Shrink the foreground by the kernel: specks smaller than the kernel disappear."""
    return _morph(cv2.MORPH_ERODE, mask, size, shape, iterations)


def dilate(mask: Any, size: int = 3, shape: str = "ellipse", iterations: int = 1) -> np.ndarray:
    """Grow the foreground by the kernel: gaps narrower than the kernel are bridged."""
    return _morph(cv2.MORPH_DILATE, mask, size, shape, iterations)


def opening(mask: Any, size: int = 3, shape: str = "ellipse") -> np.ndarray:
    """Erosion then dilation: removes specks and thin spurs, keeps the size of what survives."""
    return _morph(cv2.MORPH_OPEN, mask, size, shape)


def closing(mask: Any, size: int = 5, shape: str = "ellipse") -> np.ndarray:
    """Dilation then erosion: fills gaps and holes narrower than the kernel, keeps the outline."""
    return _morph(cv2.MORPH_CLOSE, mask, size, shape)


def remove_small_components(mask: Any, min_area: int, connectivity: int = 8) -> np.ndarray:
    """Drop connected components with fewer than ``min_area`` pixels (``min_area <= 1``: no change)."""
    m = _binary(mask)
    if connectivity not in (4, 8):
        raise InvalidInputError(f"connectivity must be 4 or 8, got {connectivity}.")
    if min_area <= 1 or not m.any():
        return m.copy()
    n, labels, stats, _ = cv2.connectedComponentsWithStats(m.astype(np.uint8), connectivity=connectivity)
    keep = np.zeros(n, dtype=bool)
    keep[1:] = stats[1:, cv2.CC_STAT_AREA] >= min_area
    return keep[labels]


def clean_mask(
    mask: Any,
    erode_kernel: int = 3,
    dilate_kernel: int = 3,
    close_kernel: int = 5,
    min_area: int = 0,
    shape: str = "ellipse",
) -> np.ndarray:
    """GeoSAM's post-processing of one binary mask, in this order:

    1. erosion with ``erode_kernel`` -- isolated specks (and anything thinner than the kernel) vanish;
    2. dilation with ``dilate_kernel`` -- what survived regains its width (equal kernels: an opening);
    3. closing with ``close_kernel`` -- breaks in a path narrower than the kernel are bridged;
    4. removal of components smaller than ``min_area`` pixels.

    A kernel size of 0 or 1 skips that step. Structures thinner than ``erode_kernel`` are erased by
    step 1, so keep it small (or 1) for classes such as crosswalk stripes.
    """
    m = erode(mask, erode_kernel, shape)
    m = dilate(m, dilate_kernel, shape)
    m = closing(m, close_kernel, shape)
    return remove_small_components(m, min_area)


def clean_label_map(
    label_map: Any,
    classes: Iterable[int] | None = None,
    background: int = 0,
    per_class: Mapping[int, Mapping[str, Any]] | None = None,
    **defaults: Any,
) -> np.ndarray:
    """Apply :func:`clean_mask` to each class of an (H, W) integer label map.

    Arguments:
      classes: the labels to clean, in order (default: every label present except ``background``).
      per_class: keyword overrides of :func:`clean_mask` for some labels, e.g. ``{3: {"erode_kernel": 1}}``.
      **defaults: keyword arguments of :func:`clean_mask` for all cleaned classes.

    Returns:
      (np.ndarray): a new label map. Pixels removed from a class become ``background``; pixels added to
        a class are taken only from ``background`` (classes are processed in the given order).
    """
    labels = np.asarray(label_map)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise InvalidInputError(f"label_map must be a 2-D integer array, got {labels.dtype} {labels.shape}.")
    bad = set(defaults) - {"erode_kernel", "dilate_kernel", "close_kernel", "min_area", "shape"}
    if bad:
        raise InvalidInputError(f"unknown clean_mask argument(s) {sorted(bad)}.")
    todo = (
        [int(c) for c in np.unique(labels) if c != background]
        if classes is None
        else [int(c) for c in classes]
    )
    out = labels.copy()
    for c in todo:
        kwargs = {**defaults, **dict((per_class or {}).get(c, {}))}
        before = labels == c
        after = clean_mask(before, **kwargs)
        out[before & ~after] = background
        out[after & ~before & (out == background)] = c
    return out


# ------------------------------------------------------------------ GrabCut boundary refinement


@dataclass
class Refinement:
    """The result of :func:`grabcut_refine`.

    Attributes:
      mask (np.ndarray): (H, W) bool refined mask.
      passes (int): GrabCut passes run.
      changed (list[float]): share of the uncertain band's pixels that flipped, per pass.
    """

    mask: np.ndarray
    passes: int
    changed: list[float]


def grabcut_refine(
    image: Any,
    mask: Any,
    box: Any | None = None,
    points: Any | None = None,
    band: int | None = None,
    band_fraction: float = 0.15,
    margin: int = 8,
    max_passes: int = 5,
    tol: float = 0.02,
    iterations: int = 2,
    point_radius: int = 2,
    seed: int = 0,
) -> Refinement:
    """PSLG-SAM's mask boundary iterative optimisation (MBO): GrabCut started from a mask.

    Each pass builds a trimap from the current mask -- eroded by ``band`` pixels = sure foreground,
    outside the mask dilated by ``band`` = sure background, the band between = probable foreground
    (inside the mask) or probable background (outside) -- marks ``points`` (discs of ``point_radius``)
    sure foreground, and runs ``cv2.grabCut(..., cv2.GC_INIT_WITH_MASK)`` for ``iterations`` on the crop
    of ``box`` (or the mask's box) grown by ``margin`` + ``band``. The next pass re-centres the band on
    the new boundary; passes stop when fewer than ``tol`` of the band's pixels flip, or after
    ``max_passes``. Pixels outside the crop keep their input value. A pass that empties the mask or
    drops a point is rejected (the previous mask is returned).

    Arguments:
      image (Any): (H, W, 3) uint8 RGB.
      mask (Any): (H, W) bool initial mask (e.g. SAM's).
      box (Any | None): (4,) (x0, y0, x1, y1) to work in; None: the mask's own box.
      points (Any | None): (N, 2) (x, y) sure-foreground points.
      band (int | None): half-width of the uncertain band in pixels; None: ``band_fraction`` x the
        square root of the mask area, clipped to [2, 15].
      band_fraction (float): see ``band``.
      margin (int): extra pixels around the box.
      max_passes (int): most GrabCut passes.
      tol (float): stop when the flipped share of band pixels falls below this.
      iterations (int): GrabCut iterations per pass.
      point_radius (int): radius of the sure-foreground disc at each point.
      seed (int): seeds OpenCV's global RNG (``cv2.setRNGSeed``) before the first pass. GrabCut starts
        its colour models with k-means++ drawn from that RNG, so without it a mask would depend on
        every OpenCV draw made before in the process.

    Returns:
      (Refinement): the mask, the passes run and the flipped share per pass.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InvalidInputError(f"image must be (H, W, 3) uint8 RGB, got {img.dtype} {img.shape}.")
    m = _binary(mask)
    if m.shape != img.shape[:2]:
        raise InvalidInputError(f"mask shape {m.shape} must match the image's {img.shape[:2]}.")
    if max_passes < 1 or iterations < 1:
        raise InvalidInputError(f"max_passes and iterations must be >= 1, got {max_passes}, {iterations}.")
    if not m.any():
        return Refinement(m.copy(), 0, [])
    width = band if band is not None else int(np.clip(round(band_fraction * np.sqrt(m.sum())), 2, 15))
    if width < 1:
        raise InvalidInputError(f"band must be >= 1 pixel, got {width}.")
    if box is None:
        ys, xs = np.nonzero(m)
        box = (xs.min(), ys.min(), xs.max(), ys.max())
    b = check_box(box, ordered=True)
    h, w = m.shape
    pad = margin + width
    x0, y0 = int(max(0, np.floor(b[0]) - pad)), int(max(0, np.floor(b[1]) - pad))
    x1, y1 = int(min(w - 1, np.ceil(b[2]) + pad)), int(min(h - 1, np.ceil(b[3]) + pad))
    crop = np.ascontiguousarray(img[y0 : y1 + 1, x0 : x1 + 1])
    current = m[y0 : y1 + 1, x0 : x1 + 1].copy()
    pts = np.zeros((0, 2)) if points is None else np.asarray(points, dtype=np.float64).reshape(-1, 2)
    pts_local = [(int(round(px)) - x0, int(round(py)) - y0) for px, py in pts]
    pts_local = [(px, py) for px, py in pts_local if 0 <= px <= x1 - x0 and 0 <= py <= y1 - y0]
    k = kernel(2 * width + 1)
    assert k is not None  # width >= 1 gives a kernel of at least 3 x 3
    cv2.setRNGSeed(seed)
    changed: list[float] = []
    passes = 0
    for _ in range(max_passes):
        c8 = current.astype(np.uint8)
        sure_fg = cv2.erode(c8, k) > 0
        maybe = cv2.dilate(c8, k) > 0
        trimap = np.full(current.shape, cv2.GC_BGD, np.uint8)
        trimap[maybe] = cv2.GC_PR_BGD
        trimap[current] = cv2.GC_PR_FGD
        trimap[sure_fg] = cv2.GC_FGD
        for px, py in pts_local:
            cv2.circle(trimap, (px, py), point_radius, int(cv2.GC_FGD), -1)
        uncertain = (trimap == cv2.GC_PR_FGD) | (trimap == cv2.GC_PR_BGD)
        if not uncertain.any() or not (trimap == cv2.GC_BGD).any():
            break  # nothing to decide, or no background sample for GrabCut's colour model
        bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
        try:
            cv2.grabCut(crop, trimap, None, bgd, fgd, iterations, cv2.GC_INIT_WITH_MASK)  # type: ignore[call-overload]
        except cv2.error:
            break  # e.g. a colour model without samples: keep the last good mask
        new = (trimap == cv2.GC_FGD) | (trimap == cv2.GC_PR_FGD)
        if not new.any() or any(not new[py, px] for px, py in pts_local):
            break
        passes += 1
        flipped = float(np.count_nonzero((new != current) & uncertain)) / float(uncertain.sum())
        changed.append(flipped)
        current = new
        if flipped < tol:
            break
    out = m.copy()
    out[y0 : y1 + 1, x0 : x1 + 1] = current
    return Refinement(out, passes, changed)
