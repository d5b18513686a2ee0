"""Prompt generation from masks: boxes, points and SAM-style correction clicks.

Every point is returned as (x, y) = (column, row) pixel coordinates, float64, the convention of
:class:`segment_anything.SamPredictor`; boxes are (x0, y0, x1, y1) with inclusive max pixel indices
(as SAM's own ``batched_mask_to_box``). Masks are (H, W) bool or 0/1 arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from samlib.errors import InvalidInputError
from samlib.metrics import mask_iou_matrix

__all__ = [
    "ForegroundPoint",
    "box_from_mask",
    "calibrate_negative_prompts",
    "sample_instance_points",
    "cluster_foreground_point",
    "center_point",
    "check_box",
    "correction_point",
    "jitter_box",
    "sample_fg_bg_points",
    "sample_points",
]


def _mask(mask: Any, name: str = "mask") -> np.ndarray:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise InvalidInputError(f"{name} must be a 2-D (H, W) mask, got shape {arr.shape}.")
    if arr.dtype != np.bool_:
        if np.issubdtype(arr.dtype, np.floating) and not np.isin(arr, (0.0, 1.0)).all():
            raise InvalidInputError(
                f"{name} is a float array with values other than 0/1: threshold it first."
            )
        arr = arr != 0
    return arr


def _nonempty(mask: np.ndarray, name: str) -> np.ndarray:
    if not mask.any():
        raise InvalidInputError(f"{name} is empty (no foreground pixel): no prompt can be made from it.")
    return mask


def check_box(box: Any, ordered: bool = False) -> np.ndarray:
    """One box argument, checked: the validation every single-box entry point shares.

    Arguments:
      box (Any): (4,) (x0, y0, x1, y1) pixels, anything ``np.asarray`` takes.
      ordered (bool): also require x0 <= x1 and y0 <= y1 (callers that clip or reorder first leave it off).

    Returns:
      (np.ndarray): the box as a (4,) float64 array.
    """
    b = np.asarray(box, dtype=np.float64)
    if b.shape != (4,) or not np.isfinite(b).all():
        raise InvalidInputError(f"box must be 4 finite numbers (x0, y0, x1, y1), got {np.asarray(box)!r}.")
    if ordered and (b[2] < b[0] or b[3] < b[1]):
        raise InvalidInputError(f"box must be (x0, y0, x1, y1) with x0 <= x1, y0 <= y1, got {b.tolist()}.")
    return b


def box_from_mask(mask: Any) -> np.ndarray:
    """Tight box around the foreground: (4,) float64 (x0, y0, x1, y1), inclusive pixel indices."""
    m = _nonempty(_mask(mask), "mask")
    rows = np.flatnonzero(m.any(axis=1))
    cols = np.flatnonzero(m.any(axis=0))
    return np.array([cols[0], rows[0], cols[-1], rows[-1]], dtype=np.float64)


def jitter_box(
    box: Any,
    rng: np.random.Generator,
    scale: float = 0.1,
    image_shape: tuple[int, ...] | None = None,
    max_shift: float | None = 20.0,
) -> np.ndarray:
    """Perturb a box as in SAM's training: each coordinate gets Gaussian noise with standard deviation
    ``scale`` x the box side (width for x, height for y), clipped to +-``max_shift`` pixels.

    Arguments:
      box: (4,) (x0, y0, x1, y1).
      image_shape: (H, W, ...) to clip the result to the image; None: no clipping.

    Returns:
      (np.ndarray): (4,) float64 box, with x0 <= x1 and y0 <= y1.
    """
    b = check_box(box)
    if scale < 0:
        raise InvalidInputError(f"scale must be >= 0, got {scale}.")
    w, h = abs(b[2] - b[0]), abs(b[3] - b[1])
    noise = rng.normal(0.0, 1.0, size=4) * scale * np.array([w, h, w, h])
    if max_shift is not None:
        noise = np.clip(noise, -max_shift, max_shift)
    out = b + noise
    out = np.array([min(out[0], out[2]), min(out[1], out[3]), max(out[0], out[2]), max(out[1], out[3])])
    if image_shape is not None:
        height, width = image_shape[0], image_shape[1]
        out[[0, 2]] = np.clip(out[[0, 2]], 0, width - 1)
        out[[1, 3]] = np.clip(out[[1, 3]], 0, height - 1)
    return out


def _distance_inside(mask: np.ndarray) -> np.ndarray:
    """Euclidean distance of each foreground pixel to the nearest background pixel or image border."""
    # A 1-pixel background frame makes the image border count as a boundary too, so points keep
    # away from the edge where a mask is cut off by the tile.
    padded = np.pad(mask.astype(np.uint8), 1)
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    return dist[1:-1, 1:-1]


def _deepest(mask: np.ndarray, rng: np.random.Generator | None) -> np.ndarray:
    dist = _distance_inside(mask)
    best = dist.max()
    ys, xs = np.nonzero(dist == best)
    i = 0 if rng is None else int(rng.integers(len(xs)))
    return np.array([xs[i], ys[i]], dtype=np.float64)


def center_point(mask: Any) -> np.ndarray:
    """The foreground point farthest from the mask boundary (distance transform): (2,) (x, y).

    Unlike the centroid it always lies inside the mask, also for rings, L-shapes and roads. Ties go to
    the first pixel in row-major order, so the result is deterministic.
    """
    return _deepest(_nonempty(_mask(mask), "mask"), None)


def sample_points(mask: Any, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` points drawn uniformly from the foreground pixels: (n, 2) (x, y).

    Without replacement when the mask has at least ``n`` pixels, otherwise with replacement.
    """
    if n < 0:
        raise InvalidInputError(f"n must be >= 0, got {n}.")
    m = _nonempty(_mask(mask), "mask")
    ys, xs = np.nonzero(m)
    idx = rng.choice(len(xs), size=n, replace=n > len(xs))
    return np.stack([xs[idx], ys[idx]], axis=1).astype(np.float64)


def sample_fg_bg_points(
    prob_map: Any,
    n_fg: int,
    n_bg: int,
    rng: np.random.Generator,
    fg_thresh: float = 0.5,
    bg_thresh: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background points from a probability map (e.g. a weak model's output).

    Foreground pixels have ``prob >= fg_thresh``; background pixels ``prob < bg_thresh`` (default:
    ``fg_thresh``; use a lower value to draw background only where the map is confident).

    Returns:
      (np.ndarray, np.ndarray): coords (n_fg + n_bg, 2) (x, y), foreground first, and labels
        (n_fg + n_bg,) int64 (1 = foreground, 0 = background), ready for ``PromptPredictor.predict``.
    """
    prob = np.asarray(prob_map)
    if prob.ndim != 2:
        raise InvalidInputError(f"prob_map must be 2-D (H, W), got shape {prob.shape}.")
    prob = prob.astype(np.float64)
    if not np.isfinite(prob).all():
        raise InvalidInputError("prob_map contains NaN or infinite values.")
    bg_t = fg_thresh if bg_thresh is None else bg_thresh
    if bg_t > fg_thresh:
        raise InvalidInputError(f"bg_thresh ({bg_t}) must not exceed fg_thresh ({fg_thresh}).")
    parts: list[np.ndarray] = []
    for region, n, what, rule in (
        (prob >= fg_thresh, n_fg, "foreground", f">= {fg_thresh}"),
        (prob < bg_t, n_bg, "background", f"< {bg_t}"),
    ):
        if n == 0:
            parts.append(np.zeros((0, 2)))
            continue
        if not region.any():
            raise InvalidInputError(
                f"No {what} pixel (prob {rule}) to sample {n} points from: adjust the thresholds."
            )
        parts.append(sample_points(region, n, rng))
    coords = np.concatenate(parts, axis=0)
    labels = np.concatenate([np.ones(n_fg, dtype=np.int64), np.zeros(n_bg, dtype=np.int64)])
    return coords, labels


def correction_point(pred: Any, gt: Any, rng: np.random.Generator | None = None) -> tuple[np.ndarray, int]:
    """Next click of SAM's iterative training: a point in the error between ``pred`` and ``gt``.

    The larger error set (by pixel count) is chosen: false negatives give a positive click (label 1),
    false positives a negative one (label 0). The click is the pixel deepest inside that set (distance
    transform), ties broken by ``rng`` (first in row-major order if None).

    Returns:
      (np.ndarray, int): point (2,) (x, y) and its label.

    Raises:
      InvalidInputError: if ``pred`` equals ``gt`` (no error to correct) or the shapes differ.
    """
    p, g = _mask(pred, "pred"), _mask(gt, "gt")
    if p.shape != g.shape:
        raise InvalidInputError(f"pred and gt must have the same shape, got {p.shape} and {g.shape}.")
    fn, fp = g & ~p, p & ~g
    n_fn, n_fp = int(fn.sum()), int(fp.sum())
    if n_fn == 0 and n_fp == 0:
        raise InvalidInputError("pred equals gt: there is no error region to place a correction click in.")
    if n_fn >= n_fp:
        return _deepest(fn, rng), 1
    return _deepest(fp, rng), 0


def sample_instance_points(masks: Any, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """PointSAM's point labels: ``k`` positives drawn uniformly inside each instance, ``k`` negatives
    drawn uniformly outside it (anywhere in the image that is not this instance).

    Arguments:
      masks (np.ndarray): (N, H, W) instance masks, none empty and none covering the whole image.
      k (int): points of each sign per instance, >= 1.
      rng (np.random.Generator): the draw (with replacement only when a region has fewer than ``k``
        pixels).

    Returns:
      (np.ndarray, np.ndarray): coords (N, 2k, 2) float64 (x, y), positives first, and labels (N, 2k)
        int64 (1 = positive, 0 = negative), ready for ``PromptPredictor.predict_batch``.
    """
    stack = np.asarray(masks)
    if stack.ndim != 3:
        raise InvalidInputError(f"masks must be (N, H, W), got shape {stack.shape}.")
    if k < 1:
        raise InvalidInputError(f"k must be >= 1, got {k}.")
    coords = np.zeros((stack.shape[0], 2 * k, 2), np.float64)
    for i, m in enumerate(stack):
        inside = _mask(m, f"masks[{i}]")
        if inside.all():
            raise InvalidInputError(f"masks[{i}] covers the whole image: no negative point can be drawn.")
        coords[i, :k] = sample_points(inside, k, rng)
        coords[i, k:] = sample_points(~inside, k, rng)
    labels = np.tile(np.r_[np.ones(k, np.int64), np.zeros(k, np.int64)], (stack.shape[0], 1))
    return coords, labels


def calibrate_negative_prompts(
    pred_masks: Any,
    coords: np.ndarray,
    labels: np.ndarray,
    rng: np.random.Generator,
    iou_threshold: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Negative prompt calibration (PointSAM, Liu et al. 2024): in crowded scenes a click on one object
    often yields a mask that spills into its neighbour. For every instance whose predicted mask overlaps
    another instance's predicted mask with IoU > ``iou_threshold``, its negatives are redrawn from its
    own negatives plus the positive points of the instances it overlaps, so the next decoding is told
    where the neighbours are. Positives and non-overlapping instances are left as they are.

    Arguments:
      pred_masks (np.ndarray): (N, H, W) masks predicted from ``coords`` / ``labels``, one per instance.
      coords (np.ndarray): (N, P, 2) (x, y) points of each instance.
      labels (np.ndarray): (N, P) labels, 1 = positive, 0 = negative (each row keeps its count of each).
      rng (np.random.Generator): draws the new negatives (without replacement).
      iou_threshold (float): overlap above which two instances count as confused.

    Returns:
      (np.ndarray, np.ndarray): calibrated coords (N, P, 2) float64 and the unchanged labels (N, P).
    """
    c = np.asarray(coords, dtype=np.float64)
    lab = np.asarray(labels)
    masks = np.asarray(pred_masks)
    if c.ndim != 3 or c.shape[2] != 2 or lab.shape != c.shape[:2]:
        raise InvalidInputError(f"coords must be (N, P, 2) and labels (N, P), got {c.shape} and {lab.shape}.")
    if masks.ndim != 3 or masks.shape[0] != c.shape[0]:
        raise InvalidInputError(f"pred_masks must be (N, H, W) with N = {c.shape[0]}, got {masks.shape}.")
    ious = mask_iou_matrix(masks)
    np.fill_diagonal(ious, 0.0)
    out = c.copy()
    for i in range(c.shape[0]):
        neighbours = np.flatnonzero(ious[i] > iou_threshold)
        negative_slots = np.flatnonzero(lab[i] == 0)
        if len(neighbours) == 0 or len(negative_slots) == 0:
            continue
        foreign = [c[j][lab[j] == 1] for j in neighbours]
        pool = np.concatenate([c[i][negative_slots], *foreign], axis=0)
        pick = rng.choice(len(pool), size=len(negative_slots), replace=len(pool) < len(negative_slots))
        out[i, negative_slots] = pool[pick]
    return out, lab.copy()


# ------------------------------------------------------------------ clustering-based foreground point


_COLOUR_SPACES = {
    "rgb": None,
    "lab": cv2.COLOR_RGB2LAB,
    "hsv": cv2.COLOR_RGB2HSV,
    "ycrcb": cv2.COLOR_RGB2YCrCb,
}


@dataclass
class ForegroundPoint:
    """What :func:`cluster_foreground_point` found in a box crop.

    Attributes:
      point (np.ndarray): (2,) float64 (x, y) in image pixels: the chosen region's centroid, or its
        distance-transform maximum when the centroid falls outside it.
      regions (np.ndarray): (h, w) int32 region labels over the crop (0 = no region).
      clusters (np.ndarray): (h, w) int32 KMeans cluster of each crop pixel (0 .. k - 1).
      solidity (np.ndarray): (R,) float64 area / convex-hull area of regions 1 .. R.
      area (np.ndarray): (R,) int64 pixel count of regions 1 .. R.
      chosen (int): the chosen region's label (1-based).
      origin (tuple[int, int]): (x0, y0) of the crop in the image.
    """

    point: np.ndarray
    regions: np.ndarray
    clusters: np.ndarray
    solidity: np.ndarray
    area: np.ndarray
    chosen: int
    origin: tuple[int, int]

    def region_mask(self, image_shape: tuple[int, ...]) -> np.ndarray:
        """(H, W) bool mask of the chosen region in image coordinates."""
        out = np.zeros(image_shape[:2], dtype=bool)
        x0, y0 = self.origin
        h, w = self.regions.shape
        out[y0 : y0 + h, x0 : x0 + w] = self.regions == self.chosen
        return out


def _crop_slices(box: Any, shape: tuple[int, ...], margin: int = 0) -> tuple[slice, slice]:
    b = check_box(box)
    h, w = shape[:2]
    x0, y0 = int(np.clip(np.floor(b[0]) - margin, 0, w - 1)), int(np.clip(np.floor(b[1]) - margin, 0, h - 1))
    x1, y1 = int(np.clip(np.ceil(b[2]) + margin, 0, w - 1)), int(np.clip(np.ceil(b[3]) + margin, 0, h - 1))
    if x1 < x0 or y1 < y0:
        raise InvalidInputError(f"box {b.tolist()} must satisfy x0 <= x1 and y0 <= y1.")
    return slice(y0, y1 + 1), slice(x0, x1 + 1)


def _split_touching(binary: np.ndarray, crop_rgb: np.ndarray, peak_fraction: float) -> np.ndarray:
    """Split one cluster's pixels into regions: connected components, with touching blobs separated by
    a watershed from the distance-transform peaks. Returns int32 labels (0 = outside the cluster)."""
    b8 = binary.astype(np.uint8)
    dist = cv2.distanceTransform(b8, cv2.DIST_L2, 5)
    n_cc, cc = cv2.connectedComponents(b8, connectivity=8)
    # Markers: the cores of each component (distance above a share of that component's maximum).
    sure = np.zeros_like(b8)
    for c in range(1, n_cc):
        comp = cc == c
        sure[comp & (dist >= peak_fraction * dist[comp].max())] = 1
    n_markers, markers = cv2.connectedComponents(sure, connectivity=8)
    markers = markers + 1  # 1 = outside the cluster, 2.. = cores, 0 = to be flooded
    markers[(b8 > 0) & (sure == 0)] = 0
    markers = cv2.watershed(np.ascontiguousarray(crop_rgb), markers.astype(np.int32))
    labels = np.where(markers >= 2, markers - 1, 0).astype(np.int32)
    labels[b8 == 0] = 0  # watershed's dams (-1) stay 0: a one-pixel seam between split blobs
    return labels


def _solidity(region: np.ndarray) -> float:
    contours, _ = cv2.findContours(region.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    if not contours:
        return 0.0
    hull = cv2.convexHull(np.concatenate(contours))
    hull_area = float(cv2.contourArea(hull))
    # contourArea measures polygons through pixel centres; a one-pixel-wide line has area ~0
    return float(min(1.0, region.sum() / max(hull_area + cv2.arcLength(hull, True) / 2 + 1, 1.0)))


def cluster_foreground_point(
    image: Any,
    box: Any,
    n_clusters: int = 2,
    colour_space: str = "lab",
    min_area_fraction: float = 0.05,
    min_relative_area: float = 0.3,
    peak_fraction: float = 0.5,
    max_pixels: int = 4096,
    seed: int = 0,
) -> ForegroundPoint:
    """PSLG-SAM's clustering-based foreground point generator (CFPG): one positive point for SAM from
    the pixels inside a box, without any learned model.

    1. Crop the image to the box and cluster its pixels into ``n_clusters`` colours with KMeans++
       (scikit-learn; in ``colour_space``).
    2. Split each cluster into regions: connected components, and touching blobs separated by an OpenCV
       watershed seeded at the distance-transform peaks (above ``peak_fraction`` of each component's
       maximum).
    3. Among regions with at least ``min_area_fraction`` of the crop and ``min_relative_area`` of the
       largest region, take the most convex (highest solidity = area / convex-hull area; ties: the
       larger).
    4. Return its centroid, or its distance-transform maximum if the centroid falls outside it.

    The rule assumes the referred object is the most compact colour region in its box: a compact
    background patch (a box corner, a shadow) beats a concave object (an L-shaped building).

    Arguments:
      image (Any): (H, W, 3) uint8 RGB.
      box (Any): (4,) (x0, y0, x1, y1) pixels.
      n_clusters (int): KMeans k (the paper: 2, object vs background).
      colour_space (str): "lab", "rgb", "hsv" or "ycrcb".
      min_area_fraction (float): smallest region, as a share of the crop.
      min_relative_area (float): smallest region, as a share of the largest region.
      peak_fraction (float): watershed marker threshold on the distance transform, in (0, 1].
      max_pixels (int): KMeans is fitted on at most this many pixels (a seeded subsample), then
        predicts every pixel.
      seed (int): KMeans seed (and subsample).

    Returns:
      (ForegroundPoint): the point and the regions behind it.
    """
    from sklearn.cluster import KMeans  # lazy: scikit-learn costs ~0.5 s to import

    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise InvalidInputError(f"image must be (H, W, 3) uint8 RGB, got {img.dtype} {img.shape}.")
    if colour_space not in _COLOUR_SPACES:
        raise InvalidInputError(
            f"colour_space must be one of {sorted(_COLOUR_SPACES)}, got {colour_space!r}."
        )
    if n_clusters < 2:
        raise InvalidInputError(f"n_clusters must be >= 2, got {n_clusters}.")
    if not 0 < peak_fraction <= 1:
        raise InvalidInputError(f"peak_fraction must be in (0, 1], got {peak_fraction}.")
    rows, cols = _crop_slices(box, img.shape)
    crop = np.ascontiguousarray(img[rows, cols])
    h, w = crop.shape[:2]
    origin = (cols.start, rows.start)
    code = _COLOUR_SPACES[colour_space]
    feats = (crop if code is None else cv2.cvtColor(crop, code)).reshape(-1, 3).astype(np.float32)
    rng = np.random.default_rng(seed)
    if len(np.unique(feats, axis=0)) < n_clusters:  # a flat crop: the whole box is one region
        clusters = np.zeros((h, w), np.int32)
    else:
        fit = feats if len(feats) <= max_pixels else feats[rng.choice(len(feats), max_pixels, replace=False)]
        km = KMeans(n_clusters=n_clusters, init="k-means++", n_init=3, random_state=seed).fit(fit)
        clusters = km.predict(feats).reshape(h, w).astype(np.int32)
    regions = np.zeros((h, w), np.int32)
    for c in range(int(clusters.max()) + 1):
        labels = _split_touching(clusters == c, crop, peak_fraction)
        regions[labels > 0] = labels[labels > 0] + regions.max()
    n_regions = int(regions.max())
    area = np.bincount(regions.ravel(), minlength=n_regions + 1)[1:].astype(np.int64)
    solidity = np.array([_solidity(regions == r) for r in range(1, n_regions + 1)], np.float64)
    big = (area >= min_area_fraction * h * w) & (area >= min_relative_area * area.max())
    if not big.any():
        big = area == area.max()
    score = np.where(big, solidity, -1.0)
    best = np.flatnonzero(score == score.max())
    chosen = int(best[np.argmax(area[best])]) + 1
    region = regions == chosen
    ys, xs = np.nonzero(region)
    cx, cy = int(round(xs.mean())), int(round(ys.mean()))
    if not region[cy, cx]:
        cx, cy = (int(v) for v in _deepest(region, None))
    point = np.array([cx + origin[0], cy + origin[1]], np.float64)
    return ForegroundPoint(point, regions, clusters, solidity, area, chosen, origin)
