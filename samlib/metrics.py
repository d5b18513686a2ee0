"""Segmentation metrics on numpy masks.

Binary masks may be bool arrays, integer arrays (non-zero = foreground) or float arrays holding only 0
and 1; probability maps must be thresholded first (passing one is an error, not a silent threshold).

Empty-mask convention (one rule for every ratio): a ratio whose denominator is 0 scores 1.0 when the
prediction and the ground truth agree that there is nothing (both empty), and 0.0 otherwise. So an empty
prediction on an empty ground truth has IoU = Dice = precision = recall = F1 = 1.0, while an empty
prediction on a non-empty ground truth has precision 0.0 (no predicted positives, but something missed)
and recall 0.0.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from samlib.errors import InvalidInputError

__all__ = [
    "best_match_ious",
    "binary_scores",
    "box_iou",
    "confusion_counts",
    "confusion_matrix",
    "dice",
    "iou",
    "iou_from_confusion",
    "mean_iou",
    "object_scores",
    "overall_iou",
    "per_class_iou",
    "precision_at_iou",
    "referring_scores",
    "segmentation_scores",
    "semantic_scores",
]

DEFAULT_IOU_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)


def _as_binary(mask: Any, name: str) -> np.ndarray:
    arr = np.asarray(mask)
    if arr.dtype == np.bool_:
        return arr
    if np.issubdtype(arr.dtype, np.integer):
        return arr != 0
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isin(arr, (0.0, 1.0)).all():
            raise InvalidInputError(
                f"{name} is a float array with values other than 0 and 1: threshold it first "
                "(e.g. prob > 0.5)."
            )
        return arr != 0
    raise InvalidInputError(f"{name} must be a bool or 0/1 array, got dtype {arr.dtype}.")


def _pair(pred: Any, gt: Any) -> tuple[np.ndarray, np.ndarray]:
    p, g = _as_binary(pred, "pred"), _as_binary(gt, "gt")
    if p.shape != g.shape:
        raise InvalidInputError(f"pred and gt must have the same shape, got {p.shape} and {g.shape}.")
    return p, g


def _ratio(num: float, den: float, both_empty: bool) -> float:
    if den == 0:
        return 1.0 if both_empty else 0.0
    return float(num) / float(den)


def confusion_counts(pred: Any, gt: Any) -> tuple[int, int, int, int]:
    """Pixel counts (tp, fp, fn, tn) of a binary prediction against binary ground truth (same shape)."""
    p, g = _pair(pred, gt)
    tp = int(np.count_nonzero(p & g))
    fp = int(np.count_nonzero(p & ~g))
    fn = int(np.count_nonzero(~p & g))
    tn = int(p.size - tp - fp - fn)
    return tp, fp, fn, tn


def iou(pred: Any, gt: Any) -> float:
    """Intersection over union of two binary masks; 1.0 if both are empty."""
    tp, fp, fn, _ = confusion_counts(pred, gt)
    return _ratio(tp, tp + fp + fn, tp + fp + fn == 0)


def dice(pred: Any, gt: Any) -> float:
    """Dice coefficient (F1) 2|P∩G| / (|P| + |G|) of two binary masks; 1.0 if both are empty."""
    tp, fp, fn, _ = confusion_counts(pred, gt)
    return _ratio(2 * tp, 2 * tp + fp + fn, tp + fp + fn == 0)


def overall_iou(preds: Iterable[Any], gts: Iterable[Any]) -> float:
    """Cumulative intersection over cumulative union across images (large objects weigh more).

    1.0 if every mask is empty.
    """
    inter = union = 0
    count = 0
    for pred, gt in zip(preds, gts, strict=True):
        tp, fp, fn, _ = confusion_counts(pred, gt)
        inter += tp
        union += tp + fp + fn
        count += 1
    if count == 0:
        raise InvalidInputError("overall_iou needs at least one (pred, gt) pair.")
    return _ratio(inter, union, union == 0)


def precision_at_iou(
    ious: Sequence[float] | np.ndarray, thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS
) -> dict[str, float]:
    """Fraction of objects whose IoU is >= each threshold.

    Returns:
      (dict[str, float]): keys "P@0.5", "P@0.6", ... (strings, ready for
        :func:`samlib.results.write_results`).
    """
    arr = np.asarray(ious, dtype=np.float64).ravel()
    if arr.size == 0:
        raise InvalidInputError("precision_at_iou needs at least one IoU value.")
    if np.isnan(arr).any():
        raise InvalidInputError("ious contains NaN.")
    return {f"P@{t:g}": float(np.mean(arr >= t)) for t in thresholds}


def confusion_matrix(
    pred_labels: Any, gt_labels: Any, num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """(num_classes, num_classes) int64 matrix: entry [g, p] counts pixels of true class g predicted p.

    Pixels whose ground truth equals ``ignore_index`` are skipped. Sum matrices over images to get
    dataset-level scores with :func:`iou_from_confusion`.
    """
    p, g = np.asarray(pred_labels), np.asarray(gt_labels)
    if p.shape != g.shape:
        raise InvalidInputError(
            f"pred_labels and gt_labels must have the same shape, got {p.shape}, {g.shape}."
        )
    if num_classes < 1:
        raise InvalidInputError(f"num_classes must be >= 1, got {num_classes}.")
    if not (np.issubdtype(p.dtype, np.integer) and np.issubdtype(g.dtype, np.integer)):
        raise InvalidInputError(f"Label maps must be integer arrays, got {p.dtype} and {g.dtype}.")
    valid = np.ones(g.shape, dtype=bool) if ignore_index is None else g != ignore_index
    p, g = p[valid].astype(np.int64), g[valid].astype(np.int64)
    for arr, name in ((g, "gt_labels"), (p, "pred_labels")):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise InvalidInputError(
                f"{name} has labels outside [0, {num_classes}) (found {arr.min()}..{arr.max()}); "
                "set ignore_index for void pixels."
            )
    counts = np.bincount(g * num_classes + p, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU tp / (tp + fp + fn) from a confusion matrix; NaN for a class absent in both."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def per_class_iou(
    pred_labels: Any, gt_labels: Any, num_classes: int, ignore_index: int | None = None
) -> np.ndarray:
    """IoU of each class, shape (num_classes,); NaN for a class absent from both pred and gt."""
    return iou_from_confusion(confusion_matrix(pred_labels, gt_labels, num_classes, ignore_index))


def mean_iou(pred_labels: Any, gt_labels: Any, num_classes: int, ignore_index: int | None = None) -> float:
    """Mean of :func:`per_class_iou` over classes present in pred or gt (NaN if none is)."""
    ious = per_class_iou(pred_labels, gt_labels, num_classes, ignore_index)
    present = ious[~np.isnan(ious)]
    return float(present.mean()) if present.size else float("nan")


def _scores(tp: int, fp: int, fn: int, tn: int) -> dict[str, float]:
    empty = tp + fp + fn == 0
    total = tp + fp + fn + tn
    if total == 0:
        raise InvalidInputError("Cannot score an empty (zero-pixel) mask.")
    return {
        "precision": _ratio(tp, tp + fp, fn == 0),
        "recall": _ratio(tp, tp + fn, fp == 0),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, empty),
        "accuracy": (tp + tn) / total,
        "iou": _ratio(tp, tp + fp + fn, empty),
    }


def binary_scores(preds: Any, gts: Any, average: str = "micro") -> dict[str, float]:
    """Precision, recall, F1, accuracy and IoU of binary masks.

    Arguments:
      preds, gts: one (H, W) mask each, or sequences of masks (sizes may differ between images).
      average (str): "micro" pools the pixels of all images, then scores; "macro" scores each image,
        then averages (every image weighs the same).

    Returns:
      (dict[str, float]): keys "precision", "recall", "f1", "accuracy", "iou" (empty-mask convention in
        the module docstring).
    """
    if average not in ("micro", "macro"):
        raise InvalidInputError(f"average must be 'micro' or 'macro', got {average!r}.")
    if isinstance(preds, np.ndarray) and isinstance(gts, np.ndarray) and preds.ndim == 2:
        preds, gts = [preds], [gts]
    pairs = list(zip(preds, gts, strict=True))
    if not pairs:
        raise InvalidInputError("binary_scores needs at least one (pred, gt) pair.")
    counts = [confusion_counts(p, g) for p, g in pairs]
    if average == "micro":
        tp, fp, fn, tn = (sum(c[i] for c in counts) for i in range(4))
        return _scores(tp, fp, fn, tn)
    per_image = [_scores(*c) for c in counts]
    return {key: float(np.mean([s[key] for s in per_image])) for key in per_image[0]}


def segmentation_scores(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> dict[str, float]:
    """The paper's pixel metrics, pooled over all images (micro).

    Returns:
      dict with "miou" (mean of the landform IoU and the background IoU), "iou" (landform only), "f1",
      "accuracy", "precision", "recall" (landform class).
    """
    fg = binary_scores(list(preds), list(gts), average="micro")
    bg = binary_scores([~np.asarray(p, bool) for p in preds], [~np.asarray(g, bool) for g in gts], "micro")
    return {
        "miou": 0.5 * (fg["iou"] + bg["iou"]),
        "iou": fg["iou"],
        "f1": fg["f1"],
        "accuracy": fg["accuracy"],
        "precision": fg["precision"],
        "recall": fg["recall"],
    }


def _box_slices(box: np.ndarray, shape: tuple[int, int]) -> tuple[slice, slice]:
    x0, y0, x1, y1 = (float(v) for v in box)
    h, w = shape
    c0, c1 = int(np.clip(np.floor(x0), 0, w)), int(np.clip(np.ceil(x1), 0, w))
    r0, r1 = int(np.clip(np.floor(y0), 0, h)), int(np.clip(np.ceil(y1), 0, h))
    return slice(r0, max(r1, r0 + 1)), slice(c0, max(c1, c0 + 1))


def object_scores(
    preds: Sequence[np.ndarray] | np.ndarray,
    boxes: Sequence[np.ndarray] | np.ndarray,
    cover: float = 0.2,
    inside: float = 0.5,
    min_area: int = 16,
) -> dict[str, float]:
    """Object-level scores of binary masks against boxes (no true masks needed), pooled over images.

    * object recall: the fraction of boxes whose area the prediction covers by at least ``cover``;
    * object precision: the fraction of predicted connected components (8-connected, at least
      ``min_area`` pixels) with at least ``inside`` of their pixels inside the union of the boxes.

    Empty denominators follow :mod:`samlib.metrics`: 1.0 when nothing was to be found and nothing was
    predicted, else 0.0.

    Arguments:
      preds (Sequence[np.ndarray] | np.ndarray): one (H, W) mask or a sequence of them.
      boxes (Sequence[np.ndarray] | np.ndarray): one (K, 4) array per image (x0, y0, x1, y1).

    Returns:
      dict with "object_recall", "object_precision", "object_f1", "n_boxes", "n_components".
    """
    import cv2  # lazily: the rest of this module needs only numpy

    if isinstance(preds, np.ndarray) and preds.ndim == 2:
        preds, boxes = [preds], [np.asarray(boxes)]
    if len(preds) != len(boxes):
        raise InvalidInputError(f"got {len(preds)} masks for {len(boxes)} box arrays.")
    hits = n_boxes = good = n_comp = 0
    for pred, bxs in zip(preds, boxes, strict=True):
        p = np.asarray(pred).astype(bool)
        if p.ndim != 2:
            raise InvalidInputError(f"masks must be (H, W), got shape {p.shape}.")
        b = np.asarray(bxs, dtype=np.float64).reshape(-1, 4)
        covered = np.zeros(p.shape, bool)
        for box in b:
            sl = _box_slices(box, p.shape)
            covered[sl] = True
            n_boxes += 1
            hits += int(p[sl].mean() >= cover)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(p.astype(np.uint8), connectivity=8)
        for k in range(1, count):
            if stats[k, cv2.CC_STAT_AREA] < min_area:
                continue
            n_comp += 1
            good += int(covered[labels == k].mean() >= inside)
    recall = hits / n_boxes if n_boxes else (1.0 if n_comp == 0 else 0.0)
    precision = good / n_comp if n_comp else (1.0 if n_boxes == 0 else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "object_recall": float(recall),
        "object_precision": float(precision),
        "object_f1": float(f1),
        "n_boxes": float(n_boxes),
        "n_components": float(n_comp),
    }


def best_match_ious(candidates: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each target mask (K, H, W) the IoU of the best-matching candidate (M, H, W); 0 if M = 0."""
    t = np.asarray(targets, bool).reshape(len(targets), -1).astype(np.float32)
    if len(candidates) == 0:
        return np.zeros(len(t), np.float32)
    c = np.asarray(candidates, bool).reshape(len(candidates), -1).astype(np.float32)
    inter = t @ c.T
    union = t.sum(1)[:, None] + c.sum(1)[None] - inter
    return (inter / np.maximum(union, 1)).max(axis=1)


def semantic_scores(
    preds: Sequence[np.ndarray],
    gts: Sequence[np.ndarray],
    classes: Sequence[str],
    mean_over: Sequence[int] | None = None,
) -> dict[str, float]:
    """Dataset-level IoU per class (confusion matrix summed over images) and their mean.

    Arguments:
      classes: class names by label value, e.g. ``MOBILITY_CLASSES``.
      mean_over: label values averaged into ``miou`` (default: every class but 0, the background;
        classes absent from both predictions and ground truth are left out).

    Returns:
      (dict[str, float]): ``iou_<name>`` for each class present somewhere, and ``miou``.
    """
    if len(preds) != len(gts) or not preds:
        raise InvalidInputError(
            f"need as many predictions as ground truths (>= 1), got {len(preds)}, {len(gts)}."
        )
    n = len(classes)
    cm = sum(
        confusion_matrix(np.asarray(p, np.int64), np.asarray(g, np.int64), n)
        for p, g in zip(preds, gts, strict=True)
    )
    ious = iou_from_confusion(np.asarray(cm))
    out = {f"iou_{name}": float(v) for name, v in zip(classes, ious, strict=True) if np.isfinite(v)}
    keep = [i for i in (mean_over if mean_over is not None else range(1, n)) if np.isfinite(ious[i])]
    out["miou"] = float(np.mean(ious[keep])) if keep else 0.0
    return out


# ------------------------------------------------------------------------------------- referring


def referring_scores(
    preds: Sequence[Any], gts: Sequence[Any], thresholds: Sequence[float] = DEFAULT_IOU_THRESHOLDS
) -> dict[str, float]:
    """The referring-segmentation (RRSIS) protocol: each (sentence, mask) pair is one sample.

    Arguments:
      preds (Sequence[Any]): (H, W) binary masks, one per sentence (sizes may differ between samples).
      gts (Sequence[Any]): the matching true masks.
      thresholds (Sequence[float]): IoU thresholds of the precision scores.

    Returns:
      (dict[str, float]): "miou" (mean of the per-sample IoU), "oiou" (cumulative intersection over
        cumulative union: large objects weigh more), and "p50", "p60", ... (share of samples with IoU
        >= 0.5, 0.6, ...).
    """
    if len(preds) != len(gts):
        raise InvalidInputError(f"need one prediction per ground truth, got {len(preds)} and {len(gts)}.")
    if len(preds) == 0:
        raise InvalidInputError("referring_scores needs at least one sample.")
    ious = np.array([iou(p, g) for p, g in zip(preds, gts)])
    out = {"miou": float(ious.mean()), "oiou": overall_iou(preds, gts)}
    for t in thresholds:
        out[f"p{round(100 * t)}"] = float(np.mean(ious >= t))
    return out


def box_iou(a: Any, b: Any) -> np.ndarray:
    """IoU of boxes (x0, y0, x1, y1) as continuous coordinates, row by row.

    Arguments:
      a (Any): (4,) or (N, 4).
      b (Any): (4,) or (N, 4) (broadcast against ``a``).

    Returns:
      (np.ndarray): (N,) float64 (a 0-d array for two single boxes).
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape[-1] != 4 or y.shape[-1] != 4:
        raise InvalidInputError(f"boxes must have 4 coordinates, got shapes {x.shape} and {y.shape}.")
    iw = np.clip(np.minimum(x[..., 2], y[..., 2]) - np.maximum(x[..., 0], y[..., 0]), 0, None)
    ih = np.clip(np.minimum(x[..., 3], y[..., 3]) - np.maximum(x[..., 1], y[..., 1]), 0, None)
    inter = iw * ih
    area = lambda z: np.clip(z[..., 2] - z[..., 0], 0, None) * np.clip(z[..., 3] - z[..., 1], 0, None)  # noqa: E731
    union = area(x) + area(y) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)
