"""Prompt generation: boxes, deepest points, sampling and correction clicks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samlib import postprocess, prompts
from samlib.errors import InvalidInputError


def rect(h: int, w: int, y0: int, y1: int, x0: int, x1: int) -> np.ndarray:
    m = np.zeros((h, w), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


def test_box_from_mask_is_xyxy_inclusive() -> None:
    m = rect(20, 30, 3, 8, 5, 12)  # rows 3..7, cols 5..11
    np.testing.assert_array_equal(prompts.box_from_mask(m), [5, 3, 11, 7])
    with pytest.raises(InvalidInputError, match="empty"):
        prompts.box_from_mask(np.zeros((4, 4)))


def test_center_point_inside_non_convex_shape() -> None:
    # A thick "L": the centroid of the L falls outside it, the deepest point does not.
    m = rect(40, 40, 0, 40, 0, 10) | rect(40, 40, 30, 40, 0, 40)
    ys, xs = np.nonzero(m)
    assert not m[int(round(ys.mean())), int(round(xs.mean()))]
    x, y = prompts.center_point(m)
    assert m[int(y), int(x)]
    # A 21 x 21 square: the deepest pixel is its centre.
    x, y = prompts.center_point(rect(21, 21, 0, 21, 0, 21))
    assert (x, y) == (10, 10)
    # Touching the image border counts as a boundary: a band along the top edge
    x, y = prompts.center_point(rect(30, 30, 0, 9, 0, 30))
    assert y == 4


def test_sample_points_uniform_from_mask(rng: np.random.Generator) -> None:
    m = rect(10, 10, 2, 4, 3, 8)
    pts = prompts.sample_points(m, 5, rng)
    assert pts.shape == (5, 2)
    assert all(m[int(y), int(x)] for x, y in pts)
    assert len({tuple(p) for p in pts}) == 5  # without replacement when possible
    assert prompts.sample_points(rect(5, 5, 0, 1, 0, 1), 3, rng).tolist() == [[0, 0]] * 3
    with pytest.raises(InvalidInputError, match="empty"):
        prompts.sample_points(np.zeros((3, 3)), 1, rng)


def test_sample_fg_bg_points(rng: np.random.Generator) -> None:
    prob = np.zeros((10, 10))
    prob[:, :5] = 0.9
    prob[:, 5:7] = 0.3
    coords, labels = prompts.sample_fg_bg_points(prob, 3, 4, rng, fg_thresh=0.5, bg_thresh=0.1)
    assert coords.shape == (7, 2) and labels.tolist() == [1, 1, 1, 0, 0, 0, 0]
    assert (coords[:3, 0] < 5).all()  # foreground columns
    assert (coords[3:, 0] >= 7).all()  # background only where confident (prob < 0.1)
    with pytest.raises(InvalidInputError, match="No foreground"):
        prompts.sample_fg_bg_points(np.zeros((4, 4)), 1, 1, rng)
    coords, labels = prompts.sample_fg_bg_points(np.zeros((4, 4)), 0, 2, rng)
    assert labels.tolist() == [0, 0]


def test_jitter_box(rng: np.random.Generator) -> None:
    box = np.array([10.0, 20.0, 50.0, 40.0])
    np.testing.assert_array_equal(prompts.jitter_box(box, rng, scale=0.0), box)
    shifts = np.array([prompts.jitter_box(box, rng) - box for _ in range(2000)])
    # std = 10% of the side: 4 px in x (width 40), 2 px in y (height 20)
    assert shifts[:, 0].std() == pytest.approx(4.0, rel=0.1)
    assert shifts[:, 1].std() == pytest.approx(2.0, rel=0.1)
    big = prompts.jitter_box(np.array([0.0, 0.0, 1000.0, 1000.0]), rng, scale=1.0)
    assert np.abs(big - [0, 0, 1000, 1000]).max() <= 20.0  # max_shift
    clipped = prompts.jitter_box(np.array([0.0, 0.0, 63.0, 63.0]), rng, scale=0.5, image_shape=(64, 64))
    assert clipped.min() >= 0 and clipped.max() <= 63
    assert clipped[0] <= clipped[2] and clipped[1] <= clipped[3]


def test_check_box_is_shared_by_the_single_box_entry_points(rng: np.random.Generator) -> None:
    np.testing.assert_array_equal(prompts.check_box([1, 2, 3, 4]), [1.0, 2.0, 3.0, 4.0])
    assert prompts.check_box((5, 5, 1, 1)).dtype == np.float64  # order is checked only when asked
    for bad in ([1, 2, 3], [0, 0, np.nan, 1], np.zeros((1, 4))):
        with pytest.raises(InvalidInputError, match="4 finite numbers"):
            prompts.check_box(bad)
    with pytest.raises(InvalidInputError, match="x0 <= x1"):
        prompts.check_box((5, 5, 1, 1), ordered=True)
    # the callers raise the same errors
    with pytest.raises(InvalidInputError, match="4 finite numbers"):
        prompts.jitter_box([0, 0, np.inf, 1], rng)
    img, m = np.zeros((8, 8, 3), np.uint8), rect(8, 8, 2, 6, 2, 6)
    with pytest.raises(InvalidInputError, match="x0 <= x1"):
        postprocess.grabcut_refine(img, m, box=(6, 6, 2, 2))


def test_correction_point(rng: np.random.Generator) -> None:
    gt = rect(30, 30, 5, 25, 5, 25)
    pred = rect(30, 30, 5, 25, 5, 12)  # misses a 20x13 block: false negatives dominate
    (x, y), label = prompts.correction_point(pred, gt, rng)
    assert label == 1 and gt[int(y), int(x)] and not pred[int(y), int(x)]
    assert 15 <= x <= 21  # deep inside the missed block (cols 12..24), not on its edge
    pred2 = gt | rect(30, 30, 0, 30, 26, 30)  # adds a false-positive band
    (x, y), label = prompts.correction_point(pred2, gt, rng)
    assert label == 0 and pred2[int(y), int(x)] and not gt[int(y), int(x)]
    with pytest.raises(InvalidInputError, match="no error region"):
        prompts.correction_point(gt, gt, rng)
    with pytest.raises(InvalidInputError, match="same shape"):
        prompts.correction_point(gt, gt[:10], rng)


def test_plots_smoke(tmp_path: Path, rng: np.random.Generator) -> None:
    """The shared figure helpers draw prompts and masks without a display (Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from samlib import plots

    image = rng.integers(0, 256, size=(32, 48, 3), dtype=np.uint8)
    masks = np.stack([rect(32, 48, 2, 10, 3, 20), rect(32, 48, 15, 30, 25, 45)])
    ax = plots.overlay(
        image,
        masks=masks,
        points=np.array([[5, 5], [30, 20]]),
        labels=np.array([1, 0]),
        boxes=prompts.box_from_mask(masks[0]),
        title="demo",
    )
    assert len(ax.images) == 3 and len(ax.patches) == 1 and len(ax.collections) >= 2
    fig = plots.image_grid([image, lambda a: plots.show_mask(a, masks[1])], titles=["a", "b"], ncols=3)
    assert len(fig.axes) == 2
    fig.savefig(tmp_path / "grid.png")
    assert (tmp_path / "grid.png").stat().st_size > 0
    plt.close("all")
    assert plots.palette_color(len(plots.PALETTE)) == plots.PALETTE[0]
