"""Small studies of SAM's prompts that a chapter runs over many scenes.

:func:`prompt_type_ious` scores one image's objects under every prompt type of the introduction (a box,
one click with SAM choosing among its three masks, the oracle choice, single-mask output) against the
filled box, and returns SAM's own quality estimate beside the true IoU of each proposed mask.
"""

from __future__ import annotations

import numpy as np

from samlib.metrics import iou
from samlib.predict import PromptPredictor
from samlib.prompts import center_point

__all__ = ["PROMPT_TYPES", "prompt_type_ious"]

PROMPT_TYPES: tuple[str, ...] = ("filled_box", "point", "point_oracle", "point_single", "box")
"""filled_box: the box itself as the mask (no SAM); point: one centre click, SAM's best-scored of three
masks; point_oracle: the best of the three by true IoU; point_single: single-mask output; box: a box."""


def prompt_type_ious(
    predictor: PromptPredictor, image: np.ndarray, masks: np.ndarray, boxes: np.ndarray
) -> tuple[dict[str, list[float]], list[tuple[float, float]]]:
    """IoU of every prompt type on every (non-empty) object of one image.

    Arguments:
      predictor (PromptPredictor): the model to prompt (its cache is reused).
      image (np.ndarray): (H, W, 3) uint8 RGB.
      masks (np.ndarray): (N, H, W) bool true masks; empty ones are skipped.
      boxes (np.ndarray): (N, 4) their boxes (x0, y0, x1, y1).

    Returns:
      (tuple): ``{prompt type: [IoU per object]}`` over :data:`PROMPT_TYPES`, and the (predicted IoU,
        true IoU) pair of each of the three masks a click proposes, for calibration plots.
    """
    keep = masks.sum(axis=(1, 2)) > 0
    gts, boxes = masks[keep], boxes[keep]
    points = np.stack([center_point(m) for m in gts])[:, None]  # (N, 1, 2)
    labels = np.ones(points.shape[:2], dtype=int)
    predictor.set_image(image)
    multi = predictor.predict_batch(point_coords=points, point_labels=labels, multimask_output=True)
    single = predictor.predict_batch(point_coords=points, point_labels=labels, multimask_output=False)
    boxed = predictor.predict_batch(boxes=boxes, multimask_output=False)
    out: dict[str, list[float]] = {m: [] for m in PROMPT_TYPES}
    pairs: list[tuple[float, float]] = []
    for i, g in enumerate(gts):
        x0, y0, x1, y1 = np.round(boxes[i]).astype(int)
        filled = np.zeros_like(g)
        filled[y0:y1, x0:x1] = True
        ious3 = [iou(m, g) for m in multi.masks[i]]
        pairs += list(zip(multi.scores[i], ious3))
        out["filled_box"].append(iou(filled, g))
        out["point"].append(ious3[int(np.argmax(multi.scores[i]))])
        out["point_oracle"].append(max(ious3))
        out["point_single"].append(iou(single.masks[i, 0], g))
        out["box"].append(iou(boxed.masks[i, 0], g))
    return out, pairs
