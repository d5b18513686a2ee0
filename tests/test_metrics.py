"""Metrics against hand-computed cases, including the empty-mask conventions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from samlib import metrics
from samlib.errors import InvalidInputError

# 3x4 masks: pred has 4 pixels, gt has 3, overlap 2 -> tp=2, fp=2, fn=1, tn=7.
PRED = np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]], dtype=bool)
GT = np.array([[0, 1, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=bool)
EMPTY = np.zeros((3, 4), dtype=bool)


def test_confusion_iou_dice_by_hand() -> None:
    assert metrics.confusion_counts(PRED, GT) == (2, 2, 1, 7)
    assert metrics.iou(PRED, GT) == pytest.approx(2 / 5)
    assert metrics.dice(PRED, GT) == pytest.approx(4 / 7)
    assert metrics.iou(PRED.astype(np.uint8) * 255, GT.astype(float)) == pytest.approx(2 / 5)


def test_empty_mask_conventions() -> None:
    assert metrics.iou(EMPTY, EMPTY) == 1.0
    assert metrics.dice(EMPTY, EMPTY) == 1.0
    assert metrics.iou(EMPTY, GT) == 0.0
    assert metrics.dice(PRED, EMPTY) == 0.0
    s = metrics.binary_scores(EMPTY, EMPTY)
    assert s == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "accuracy": 1.0, "iou": 1.0}
    s = metrics.binary_scores(EMPTY, GT)  # nothing predicted, something missed
    assert s["precision"] == 0.0 and s["recall"] == 0.0 and s["f1"] == 0.0
    assert s["accuracy"] == pytest.approx(9 / 12)
    s = metrics.binary_scores(PRED, EMPTY)  # false alarms on an empty image
    assert s["precision"] == 0.0 and s["recall"] == 0.0 and s["iou"] == 0.0


def test_invalid_inputs() -> None:
    with pytest.raises(InvalidInputError, match="same shape"):
        metrics.iou(PRED, GT[:2])
    with pytest.raises(InvalidInputError, match="threshold"):
        metrics.iou(np.full((3, 4), 0.7), GT)


def test_overall_iou_weighs_pixels() -> None:
    big_pred = np.ones((10, 10), dtype=bool)
    big_gt = np.ones((10, 10), dtype=bool)
    big_gt[0] = False  # 90 / 100
    # image 1: 2/5; image 2: 90/100 -> cumulative (2 + 90) / (5 + 100)
    assert metrics.overall_iou([PRED, big_pred], [GT, big_gt]) == pytest.approx(92 / 105)
    assert metrics.overall_iou([EMPTY], [EMPTY]) == 1.0
    with pytest.raises(ValueError):
        metrics.overall_iou([PRED], [GT, GT])


def test_binary_scores_micro_vs_macro() -> None:
    pred2 = np.ones((2, 2), dtype=bool)
    gt2 = np.array([[1, 0], [0, 0]], dtype=bool)  # tp=1 fp=3 fn=0 tn=0
    micro = metrics.binary_scores([PRED, pred2], [GT, gt2], average="micro")
    # pooled: tp=3, fp=5, fn=1, tn=7
    assert micro["precision"] == pytest.approx(3 / 8)
    assert micro["recall"] == pytest.approx(3 / 4)
    assert micro["f1"] == pytest.approx(6 / 12)
    assert micro["accuracy"] == pytest.approx(10 / 16)
    assert micro["iou"] == pytest.approx(3 / 9)
    macro = metrics.binary_scores([PRED, pred2], [GT, gt2], average="macro")
    assert macro["precision"] == pytest.approx((2 / 4 + 1 / 4) / 2)
    assert macro["recall"] == pytest.approx((2 / 3 + 1.0) / 2)
    assert macro["f1"] == pytest.approx((4 / 7 + 2 / 5) / 2)
    assert macro["accuracy"] == pytest.approx((9 / 12 + 1 / 4) / 2)
    assert macro["iou"] == pytest.approx((2 / 5 + 1 / 4) / 2)
    with pytest.raises(InvalidInputError, match="average"):
        metrics.binary_scores(PRED, GT, average="weighted")


def test_per_class_and_mean_iou() -> None:
    gt = np.array([[0, 0, 1], [1, 2, 3]])
    pred = np.array([[0, 1, 1], [1, 2, 2]])
    # ignore_index=3 drops the last pixel (gt 3, pred 2):
    # class 0: tp1 fp0 fn1 -> 1/2; class 1: tp2 fp1 fn0 -> 2/3; class 2: tp1 fp0 fn0 -> 1;
    # class 3 (ignored) and class 4 (absent) -> NaN
    ious = metrics.per_class_iou(pred, gt, num_classes=5, ignore_index=3)
    np.testing.assert_allclose(ious[:3], [1 / 2, 2 / 3, 1.0])
    assert math.isnan(ious[3]) and math.isnan(ious[4])
    assert metrics.mean_iou(pred, gt, 5, ignore_index=3) == pytest.approx((1 / 2 + 2 / 3 + 1.0) / 3)
    # without ignore: class 2 gets a false positive -> 1/2; class 3 has fn=1 -> 0
    ious = metrics.per_class_iou(pred, gt, num_classes=4)
    np.testing.assert_allclose(ious, [1 / 2, 2 / 3, 1 / 2, 0.0])
    cm = metrics.confusion_matrix(pred, gt, 4)
    assert cm.sum() == 6 and cm[3, 2] == 1
    with pytest.raises(InvalidInputError, match="outside"):
        metrics.per_class_iou(pred, gt, num_classes=3)
    assert math.isnan(metrics.mean_iou(np.array([5]), np.array([5]), 6, ignore_index=5))


def test_precision_at_iou() -> None:
    out = metrics.precision_at_iou([0.95, 0.5, 0.65, 0.2])
    assert out == {"P@0.5": 0.75, "P@0.6": 0.5, "P@0.7": 0.25, "P@0.8": 0.25, "P@0.9": 0.25}
    assert metrics.precision_at_iou(np.array([0.3]), thresholds=(0.25,)) == {"P@0.25": 1.0}
    with pytest.raises(InvalidInputError):
        metrics.precision_at_iou([])
