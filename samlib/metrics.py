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
    "dice_from_confusion",
    "semantic_report_scores",
    "best_match_ious",
    "binary_scores",
    "mask_iou_matrix",
    "rotated_box",
    "rotated_box_iou",
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
MAX_CLASSES = 4096
"""Most classes a confusion matrix may have (4096 ** 2 int64 entries = 128 MiB)."""


def _as_label_map(labels: Any, name: str) -> np.ndarray:
    """An integer label map; floats are accepted only when they hold whole numbers (never truncated)."""
    try:
        arr = np.asarray(labels)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{name} must be an integer label map: {e}") from e
    if arr.dtype == np.bool_:
        return arr.astype(np.int64)
    if np.issubdtype(arr.dtype, np.integer):
        return arr
    if np.issubdtype(arr.dtype, np.floating):
        if not np.isfinite(arr).all() or not np.array_equal(arr, np.round(arr)):
            raise InvalidInputError(
                f"{name} is a float array with non-integer values: pass class ids (e.g. probs.argmax(0)), "
                "not probabilities."
            )
        return arr.astype(np.int64)
    raise InvalidInputError(f"{name} must be an integer label map, got dtype {arr.dtype}.")


def _as_binary(mask: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(mask)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{name} must be a bool or 0/1 array: {e}") from e
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


def _strict_pairs(a: Iterable[Any], b: Iterable[Any], name_a: str, name_b: str) -> list[tuple[Any, Any]]:
    """``list(zip(a, b))``, or :class:`InvalidInputError` when the lengths differ."""
    try:
        left, right = list(a), list(b)
    except TypeError as e:
        raise InvalidInputError(f"{name_a} and {name_b} must be sequences of masks: {e}") from e
    if len(left) != len(right):
        raise InvalidInputError(
            f"{name_a} and {name_b} must have the same length, got {len(left)} and {len(right)}."
        )
    return list(zip(left, right, strict=True))


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
    for pred, gt in _strict_pairs(preds, gts, "preds", "gts"):
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
    try:
        arr = np.asarray(ious, dtype=np.float64).ravel()
        thr = np.asarray(thresholds, dtype=np.float64).ravel()
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"ious and thresholds must be numbers: {e}") from e
    if arr.size == 0:
        raise InvalidInputError("precision_at_iou needs at least one IoU value.")
    if np.isnan(arr).any():
        raise InvalidInputError("ious contains NaN.")
    if arr.min() < 0.0 or arr.max() > 1.0:
        raise InvalidInputError(f"ious must be in [0, 1], got values in [{arr.min():.4g}, {arr.max():.4g}].")
    if thr.size == 0 or not np.isfinite(thr).all() or thr.min() < 0.0 or thr.max() > 1.0:
        raise InvalidInputError(
            f"thresholds must be a non-empty list of numbers in [0, 1], got {list(thresholds)}."
        )
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
    if isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)):
        raise InvalidInputError(f"num_classes must be an integer, got {num_classes!r}.")
    if not 1 <= num_classes <= MAX_CLASSES:
        raise InvalidInputError(
            f"num_classes must be in [1, {MAX_CLASSES}], got {num_classes} (the confusion matrix has "
            "num_classes ** 2 entries)."
        )
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
    pairs = list(_strict_pairs(preds, gts, "preds", "gts"))
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
    pairs = _strict_pairs(preds, gts, "preds", "gts")
    preds, gts = [p for p, _ in pairs], [g for _, g in pairs]
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
    preds = [_as_binary(p, "preds") for p in preds]
    try:
        boxes = [np.asarray(b, dtype=np.float64).reshape(-1, 4) for b in boxes]
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"boxes must be (K, 4) arrays of (x0, y0, x1, y1): {e}") from e
    if any(not np.isfinite(b).all() for b in boxes):
        raise InvalidInputError("boxes contain NaN or infinite coordinates.")
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
    t_masks, c_masks = _as_binary(targets, "targets"), _as_binary(candidates, "candidates")
    if t_masks.ndim != 3 or c_masks.ndim != 3:
        raise InvalidInputError(
            f"targets and candidates must be (K, H, W) and (M, H, W) masks, got {t_masks.shape} and "
            f"{c_masks.shape}."
        )
    t = t_masks.reshape(len(t_masks), -1).astype(np.float32)
    if len(c_masks) == 0:
        return np.zeros(len(t), np.float32)
    if c_masks.shape[1:] != t_masks.shape[1:]:
        raise InvalidInputError(f"candidates are {c_masks.shape[1:]} masks, targets {t_masks.shape[1:]}.")
    c = c_masks.reshape(len(c_masks), -1).astype(np.float32)
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
        confusion_matrix(_as_label_map(p, "preds"), _as_label_map(g, "gts"), n)
        for p, g in zip(preds, gts, strict=True)
    )
    ious = iou_from_confusion(np.asarray(cm))
    out = {f"iou_{name}": float(v) for name, v in zip(classes, ious, strict=True) if np.isfinite(v)}
    keep = [i for i in (mean_over if mean_over is not None else range(1, n)) if np.isfinite(ious[i])]
    out["miou"] = float(np.mean(ious[keep])) if keep else 0.0
    return out


def mask_iou_matrix(masks: Any) -> np.ndarray:
    """Pairwise IoU of N masks: (N, N) float64, symmetric, 1.0 on the diagonal (also for empty masks).

    Arguments:
      masks (np.ndarray): (N, H, W) binary masks.
    """
    stack = np.asarray(masks)
    if stack.ndim != 3:
        raise InvalidInputError(f"masks must be (N, H, W), got shape {stack.shape}.")
    flat = _as_binary(stack, "masks").reshape(stack.shape[0], -1).astype(np.float64)
    inter = flat @ flat.T
    area = flat.sum(1)
    union = area[:, None] + area[None, :] - inter
    out = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    np.fill_diagonal(out, 1.0)
    return out


def rotated_box(mask: Any) -> tuple[tuple[float, float], tuple[float, float], float] | None:
    """The minimum-area rotated rectangle around a mask's pixels (``cv2.minAreaRect``), None if empty.

    Returns:
      ((cx, cy), (w, h), angle_degrees) in pixel units, each pixel counted as a unit square.
    """
    import cv2

    m = _as_binary(mask, "mask")
    if m.ndim != 2:
        raise InvalidInputError(f"mask must be (H, W), got shape {m.shape}.")
    ys, xs = np.nonzero(m)
    if len(xs) == 0:
        return None
    # the four corners of every pixel, so a one-pixel-wide object still has an area
    corners = np.concatenate([np.stack([xs + dx, ys + dy], 1) for dx in (0, 1) for dy in (0, 1)])
    (cx, cy), (w, h), angle = cv2.minAreaRect(corners.astype(np.float32))
    return (float(cx), float(cy)), (float(w), float(h)), float(angle)


def rotated_box_iou(
    a: tuple[tuple[float, float], tuple[float, float], float] | None,
    b: tuple[tuple[float, float], tuple[float, float], float] | None,
) -> float:
    """IoU of two rotated rectangles as :func:`rotated_box` returns them (0.0 when either is None)."""
    import cv2

    if a is None or b is None:
        return 0.0
    area_a, area_b = a[1][0] * a[1][1], b[1][0] * b[1][1]
    kind, points = cv2.rotatedRectangleIntersection(a, b)
    if kind == cv2.INTERSECT_NONE or points is None or len(points) < 3:
        return 0.0
    inter = float(cv2.contourArea(cv2.convexHull(points)))
    union = area_a + area_b - inter
    return inter / union if union > 0 else 0.0


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
