"""Morphological clean-up (samlib.postprocess) on hand-made masks."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from samlib.errors import InvalidInputError
from samlib.postprocess import (
    clean_label_map,
    clean_mask,
    closing,
    dilate,
    erode,
    kernel,
    opening,
    remove_small_components,
)


def _n_components(mask: np.ndarray) -> int:
    return cv2.connectedComponents(mask.astype(np.uint8), connectivity=8)[0] - 1


def _road_with_speck_and_gap() -> np.ndarray:
    m = np.zeros((40, 60), bool)
    m[15:22, 2:28] = True  # a horizontal road, 7 px wide ...
    m[15:22, 30:58] = True  # ... broken by a 2-pixel gap at x = 28, 29
    m[5, 45] = True  # an isolated one-pixel speck
    return m


def test_erosion_drops_a_speck_and_opening_keeps_the_road() -> None:
    m = _road_with_speck_and_gap()
    assert not erode(m, 3)[5, 45]
    opened = opening(m, 3)
    assert not opened[5, 45]
    assert opened[15:22, 5:25].all()  # the road body survives with its width
    assert abs(int(opened.sum()) - int(m.sum())) < 0.1 * m.sum()


def test_closing_reconnects_a_broken_path() -> None:
    m = _road_with_speck_and_gap()
    m[5, 45] = False
    assert _n_components(m) == 2
    closed = closing(m, 5)
    assert _n_components(closed) == 1
    assert closed[16:21, 28:30].all()  # the elliptical kernel rounds the corners
    assert closing(m, 5, shape="rect")[15:22, 28:30].all()
    assert not closing(m, 1)[15:22, 28:30].any()  # kernel 1: no change


def test_clean_mask_removes_speck_and_closes_gap() -> None:
    m = _road_with_speck_and_gap()
    out = clean_mask(m, erode_kernel=3, dilate_kernel=3, close_kernel=5)
    assert not out[5, 45]
    assert _n_components(out) == 1
    assert m[5, 45], "the input must not be modified"


def test_dilate_grows_by_the_kernel_radius() -> None:
    m = np.zeros((11, 11), bool)
    m[5, 5] = True
    assert dilate(m, 3, shape="rect").sum() == 9
    assert dilate(m, 5, shape="rect").sum() == 25


def test_remove_small_components_keeps_large_ones() -> None:
    m = np.zeros((20, 20), bool)
    m[1:3, 1:3] = True  # 4 px
    m[10:16, 10:16] = True  # 36 px
    out = remove_small_components(m, min_area=5)
    assert not out[1:3, 1:3].any() and out[10:16, 10:16].all()
    np.testing.assert_array_equal(remove_small_components(m, 0), m)


def test_clean_label_map_never_steals_from_other_classes() -> None:
    labels = np.zeros((30, 30), np.int64)
    labels[10:15, 0:13] = 1
    labels[10:15, 17:30] = 1  # road broken by a 4-pixel gap ...
    labels[10:15, 13:17] = 2  # ... that another class occupies
    labels[2, 2] = 1  # a road speck
    out = clean_label_map(labels, classes=(1,), erode_kernel=3, dilate_kernel=3, close_kernel=7, shape="rect")
    assert out[2, 2] == 0  # speck removed -> background
    assert (out[10:15, 13:17] == 2).all()  # the closing did not take class 2's pixels
    labels[10:15, 13:17] = 0  # now the gap is background: it is closed
    out = clean_label_map(labels, classes=(1,), erode_kernel=3, dilate_kernel=3, close_kernel=7, shape="rect")
    assert (out[10:15, 13:17] == 1).all()


def test_clean_label_map_per_class_overrides() -> None:
    labels = np.zeros((20, 20), np.int64)
    labels[5, 2:18] = 3  # a 1-pixel-wide stripe: erosion would erase it
    assert (clean_label_map(labels, erode_kernel=3) == 0).all()
    kept = clean_label_map(labels, erode_kernel=3, per_class={3: {"erode_kernel": 1, "dilate_kernel": 1}})
    assert (kept[5, 2:18] == 3).all()


def test_invalid_inputs() -> None:
    with pytest.raises(InvalidInputError):
        kernel(3, "hexagon")
    with pytest.raises(InvalidInputError):
        erode(np.zeros((2, 2, 2)), 3)
    with pytest.raises(InvalidInputError):
        clean_mask(np.array([[0.2, 0.9]]))
    with pytest.raises(InvalidInputError):
        clean_label_map(np.zeros((4, 4), np.int64), erode_kernal=3)
    assert kernel(1) is None
