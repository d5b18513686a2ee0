"""Zoomed prompting (PromptPredictor.predict_zoomed / predict_batch_zoomed) on a tiny random SAM."""

from __future__ import annotations

import numpy as np
import pytest
from segment_anything.modeling import Sam

from samlib.errors import InvalidInputError, SamlibError
from samlib.predict import PromptPredictor, zoom_window


@pytest.fixture
def image(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(120, 200, 3), dtype=np.uint8)


def test_zoom_window_is_square_inside_the_image_and_at_least_min_crop() -> None:
    # A 10 px box with 50 % margin is 20 px: min_crop makes it 64, centred on the box.
    assert zoom_window((120, 200), np.array([95, 55, 104, 64]), margin=0.5, min_crop=64) == (68, 28, 132, 92)
    # A box larger than min_crop: its size times (1 + 2 margin).
    x0, y0, x1, y1 = zoom_window((120, 200), np.array([80, 40, 119, 79]), margin=0.25, min_crop=8)
    assert (x1 - x0, y1 - y0) == (60, 60) and (x0, y0) == (70, 30)
    # At the corner it is shifted inside, not cut.
    assert zoom_window((120, 200), np.array([0, 0, 3, 3]), min_crop=50) == (0, 0, 50, 50)
    assert zoom_window((120, 200), np.array([196, 116, 199, 119]), min_crop=50) == (150, 70, 200, 120)
    # Larger than the image: clipped to it.
    assert zoom_window((120, 200), np.array([0, 0, 199, 119]), min_crop=8) == (0, 0, 200, 120)
    # Points only: their bounding box.
    assert zoom_window((120, 200), points=np.array([[100.0, 60.0]]), min_crop=32) == (84, 44, 116, 76)
    with pytest.raises(InvalidInputError, match="box or at least one point"):
        zoom_window((120, 200))


def test_zoomed_box_mask_is_the_crop_prediction_pasted_in_place(tiny_sam: Sam, image: np.ndarray) -> None:
    boxes = np.array([[95, 55, 104, 64], [10, 10, 30, 25]], dtype=np.float32)
    pred = PromptPredictor(tiny_sam)
    pred.set_image(image)
    zoomed = pred.predict_batch_zoomed(boxes=boxes, margin=0.5, min_crop=64)
    assert zoomed.masks.shape == (2, 1, 120, 200) and zoomed.masks.dtype == bool
    assert zoomed.scores.shape == (2, 1)
    ref = PromptPredictor(tiny_sam)
    for i, box in enumerate(boxes):
        x0, y0, x1, y1 = zoom_window((120, 200), box, margin=0.5, min_crop=64)
        ref.set_image(image[y0:y1, x0:x1])
        crop = ref.predict_batch(boxes=(box - [x0, y0, x0, y0])[None]).masks[0]
        np.testing.assert_array_equal(zoomed.masks[i, :, y0:y1, x0:x1], crop)
        outside = zoomed.masks[i].copy()
        outside[:, y0:y1, x0:x1] = False
        assert not outside.any()  # nothing outside the crop
    # The random model predicts something inside the first crop (else the paste test proves little).
    assert zoomed.masks[0].any()


def test_zoom_caches_crops_and_restores_the_full_image(
    tiny_sam: Sam, image: np.ndarray, encoder_calls: list[int]
) -> None:
    pred = PromptPredictor(tiny_sam)
    pred.set_image(image)
    box = np.array([[95, 55, 104, 64]], dtype=np.float32)
    before = pred.predict_batch(boxes=box)
    # Two prompts with the same crop share one encoder run.
    pred.predict_batch_zoomed(boxes=np.repeat(box, 2, 0))
    assert encoder_calls[0] == 2
    pred.predict_batch_zoomed(boxes=box)
    assert encoder_calls[0] == 2  # the crop's embedding came from the cache
    after = pred.predict_batch(boxes=box)
    np.testing.assert_array_equal(before.masks, after.masks)  # plain prediction sees the full image again
    assert pred.original_size == (120, 200)


def test_single_zoomed_prediction_matches_the_batched_path(tiny_sam: Sam, image: np.ndarray) -> None:
    pred = PromptPredictor(tiny_sam)
    pred.set_image(image)
    pts, lab = np.array([[150.0, 30.0], [160.0, 40.0]]), np.array([1, 0])
    single = pred.predict_zoomed(point_coords=pts, point_labels=lab, multimask_output=True, min_crop=48)
    batch = pred.predict_batch_zoomed(
        point_coords=pts[None], point_labels=lab[None], multimask_output=True, min_crop=48
    )
    assert single.masks.shape == (3, 120, 200)
    np.testing.assert_array_equal(single.masks, batch.masks[0])
    np.testing.assert_allclose(single.scores, batch.scores[0])
    # The crop follows the foreground point only: nothing left of x = 150 - 24.
    assert not single.masks[:, :, : 150 - 24].any()


def test_zoom_refuses_bad_input(tiny_sam: Sam, image: np.ndarray) -> None:
    pred = PromptPredictor(tiny_sam)
    with pytest.raises(SamlibError, match="set_image"):
        pred.predict_batch_zoomed(boxes=np.array([[0, 0, 5, 5]]))
    pred.set_image(image)
    with pytest.raises(InvalidInputError, match="at least one box or point"):
        pred.predict_batch_zoomed()
    with pytest.raises(InvalidInputError, match="margin"):
        pred.predict_batch_zoomed(boxes=np.array([[0, 0, 5, 5]]), margin=-1)
    with pytest.raises(InvalidInputError, match="same batch size"):
        pred.predict_batch_zoomed(
            boxes=np.array([[0, 0, 5, 5]]), point_coords=np.zeros((2, 1, 2)), point_labels=np.ones((2, 1))
        )
