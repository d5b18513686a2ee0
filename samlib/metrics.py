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
    "binary_scores",
    "confusion_counts",
    "confusion_matrix",
    "dice",
    "dice_from_confusion",
    "iou",
    "iou_from_confusion",
    "mean_iou",
    "overall_iou",
    "per_class_iou",
    "precision_at_iou",
    "semantic_report_scores",
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


def dice_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class Dice 2 tp / (2 tp + fp + fn) from a confusion matrix; NaN for a class absent in both."""
    cm = np.asarray(cm, dtype=np.float64)
    tp = np.diag(cm)
    den = cm.sum(axis=0) + cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, 2 * tp / np.where(den > 0, den, 1), np.nan)


def semantic_report_scores(
    preds: Sequence[Any],
    gts: Sequence[Any],
    class_names: Sequence[str],
    ignore_index: int | None = None,
    background: int | None = None,
) -> dict[str, float]:
    """Semantic-segmentation scores of label maps: per-image ones and dataset-level ones.

    Predictions may use the extra label ``len(class_names)`` for "no class assigned" (e.g. pixels no
    detector box covered in a data set without a background class): it is never correct, so it counts
    as a miss for the true class, and it is not scored as a class of its own.

    Arguments:
      preds (Sequence[np.ndarray]): (H, W) integer label maps in [0, K] with K = len(class_names).
      gts (Sequence[np.ndarray]): (H, W) integer ground truth in [0, K) or ``ignore_index``.
      class_names (Sequence[str]): the K class names; keys of the per-class scores are
        ``iou_<name lower-cased>``.
      ignore_index (int | None): ground-truth label of pixels left out of every score.
      background (int | None): the background class, left out of ``iou_fg`` and ``dice_fg``.

    Returns:
      (dict[str, float]): "miou_report" — per image, the mean IoU over the classes present in the
        ground truth or the prediction, then the mean over images; "iou_fg" / "dice_fg" — the same
        without the background class; "miou" — the mean over classes of the IoU from one confusion
        matrix summed over all images; "iou_<class>" — that dataset-level IoU per class (classes absent
        from every ground truth and every prediction are left out).
    """
    k = len(class_names)
    if k < 1:
        raise InvalidInputError("class_names must name at least one class.")
    if background is not None and not 0 <= background < k:
        raise InvalidInputError(f"background must be a class id in [0, {k}), got {background}.")
    pairs = list(zip(preds, gts, strict=True))
    if not pairs:
        raise InvalidInputError("semantic_report_scores needs at least one (pred, gt) pair.")
    total = np.zeros((k + 1, k + 1), dtype=np.int64)
    image_miou: list[float] = []
    image_iou_fg: list[float] = []
    image_dice_fg: list[float] = []
    keep_fg = np.array([c != background for c in range(k)])
    for pred, gt in pairs:
        cm = confusion_matrix(pred, gt, k + 1, ignore_index)
        total += cm
        ious, dices = iou_from_confusion(cm)[:k], dice_from_confusion(cm)[:k]
        present = ~np.isnan(ious)
        if present.any():
            image_miou.append(float(ious[present].mean()))
        fg = present & keep_fg
        if fg.any():
            image_iou_fg.append(float(ious[fg].mean()))
            image_dice_fg.append(float(dices[fg].mean()))
    dataset_ious = iou_from_confusion(total)[:k]
    nan = float("nan")
    out = {
        "miou_report": float(np.mean(image_miou)) if image_miou else nan,
        "iou_fg": float(np.mean(image_iou_fg)) if image_iou_fg else nan,
        "dice_fg": float(np.mean(image_dice_fg)) if image_dice_fg else nan,
        "miou": float(np.nanmean(dataset_ious)) if (~np.isnan(dataset_ious)).any() else nan,
    }
    for name, value in zip(class_names, dataset_ious, strict=True):
        if not np.isnan(value):
            out[f"iou_{name.lower()}"] = float(value)
    return out
