"""Automatic mask generation (segment everything) that upsamples only the masks it keeps.

Meta's :class:`segment_anything.SamAutomaticMaskGenerator` prompts SAM with a grid of points, upsamples
all three masks of every point to the full image in float32, and only then filters them by predicted
IoU and stability, computes boxes, run-length encodes every mask and removes duplicates by box NMS.
:class:`AutomaticMaskGenerator` gives the same masks with the same thresholds, doing less:

1. the predicted-IoU filter runs on the decoder's scores, before any upsampling;
2. a stability pre-filter runs on the low-res logits (with a slack, so that no mask Meta's full-res
   score keeps is dropped) and the exact stability score is then computed from
   :meth:`samlib.predict.MaskUpsampler.window`: the full-resolution logits inside a window outside which
   every logit is below the stability's lower threshold -- exactly the counts Meta's score uses;
3. boxes come from those windows, and box NMS (torchvision's ``batched_nms``, as Meta) runs on them;
4. only the survivors are written as full-size masks; no run-length encoding.

Only the single-crop setting (Meta's ``crop_n_layers=0``, its default) is implemented.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from segment_anything.modeling import Sam

from samlib.errors import InvalidInputError
from samlib.predict import EmbeddingCache, MaskUpsampler, PromptPredictor

__all__ = ["AutomaticMaskGenerator"]


class AutomaticMaskGenerator:
    """Segment everything in an image with a grid of point prompts (Meta's defaults and output format).

    Arguments:
      sam (Sam): the model.
      points_per_side (int): the point grid is ``points_per_side`` x ``points_per_side``.
      points_per_batch (int): points decoded together.
      pred_iou_thresh (float): keep masks whose predicted IoU exceeds this.
      stability_score_thresh (float): keep masks whose stability score is at least this.
      stability_score_offset (float): logit offset of the stability score.
      box_nms_thresh (float): box IoU above which the lower-scoring mask is a duplicate.
      stability_slack (float): how far below ``stability_score_thresh`` the low-res pre-filter may go;
        a mask whose low-res stability is lower still is dropped without being upsampled.
      cache (EmbeddingCache | None): the embedding cache of the predictor (a fresh one if None).
    """

    def __init__(
        self,
        sam: Sam,
        points_per_side: int = 32,
        points_per_batch: int = 64,
        pred_iou_thresh: float = 0.88,
        stability_score_thresh: float = 0.95,
        stability_score_offset: float = 1.0,
        box_nms_thresh: float = 0.7,
        stability_slack: float = 0.1,
        cache: EmbeddingCache | None = None,
    ) -> None:
        if points_per_side < 1 or points_per_batch < 1:
            raise InvalidInputError(
                "points_per_side and points_per_batch must be >= 1, "
                f"got {points_per_side}, {points_per_batch}."
            )
        from segment_anything.utils.amg import build_point_grid

        self.sam = sam
        self.predictor = PromptPredictor(sam, cache)
        self.point_grid = build_point_grid(points_per_side)
        self.points_per_batch = int(points_per_batch)
        self.pred_iou_thresh = float(pred_iou_thresh)
        self.stability_score_thresh = float(stability_score_thresh)
        self.stability_score_offset = float(stability_score_offset)
        self.box_nms_thresh = float(box_nms_thresh)
        self.stability_slack = float(stability_slack)

    @torch.inference_mode()
    def generate(self, image: np.ndarray) -> list[dict[str, Any]]:
        """Masks of everything in ``image`` ((H, W, 3) uint8 RGB).

        Returns:
          (list[dict[str, Any]]): one record per mask, best first, with Meta's keys: "segmentation"
            ((H, W) bool), "area" (int), "bbox" ([x, y, w, h]), "predicted_iou", "point_coords"
            ([[x, y]]), "stability_score", "crop_box" ([0, 0, W, H]).
        """
        from torchvision.ops.boxes import batched_nms

        pred = self.predictor
        pred.set_image(image)
        h, w = pred.original_size
        points_all = self.point_grid * np.array([[w, h]])
        t = float(self.sam.mask_threshold)
        off = self.stability_score_offset
        kept: list[tuple[tuple[slice, slice, torch.Tensor], float, float, np.ndarray]] = []
        for start in range(0, len(points_all), self.points_per_batch):
            points = points_all[start : start + self.points_per_batch]
            # points mapped in float64 and labels as Meta's generator does, so the decoder sees the same input
            coords = torch.as_tensor(pred.transform.apply_coords(points, (h, w)), device=pred.device)
            labels = torch.ones(coords.shape[0], dtype=torch.int, device=pred.device)
            sparse, dense = self.sam.prompt_encoder(
                points=(coords[:, None], labels[:, None]), boxes=None, masks=None
            )
            low, iou = self.sam.mask_decoder(
                image_embeddings=pred.predictor.features,
                image_pe=self.sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=True,
            )
            low, iou = low.float().cpu(), iou.float().cpu()
            upsampler = MaskUpsampler(low, int(self.sam.image_encoder.img_size), pred.input_size, (h, w))
            # low-res stability, a pre-filter only: the exact score is computed at full resolution below
            inter = (low > t + off).flatten(2).sum(-1)
            union = (low > t - off).flatten(2).sum(-1)
            rough = inter / union.clamp(min=1)
            candidates = (iou > self.pred_iou_thresh) & (
                rough >= self.stability_score_thresh - self.stability_slack
            )
            for b, k in torch.nonzero(candidates).tolist():
                win = upsampler.window(b, k, t - off)
                if win is None:
                    continue
                logits = win[2]
                i_full = (logits > t + off).sum(-1, dtype=torch.int32).sum()
                u_full = (logits > t - off).sum(-1, dtype=torch.int32).sum()
                stability = float(i_full / u_full)
                if stability >= self.stability_score_thresh:
                    kept.append((win, float(iou[b, k]), stability, points[b]))
        if not kept:
            return []
        boxes = torch.stack([_window_box(win, t) for win, *_ in kept])
        scores = torch.tensor([s for _, s, _, _ in kept])
        order = batched_nms(boxes.float(), scores, torch.zeros(len(kept)), iou_threshold=self.box_nms_thresh)
        out = []
        for i in order.tolist():
            (rows, cols, logits), score, stability, point = kept[i]
            mask = np.zeros((h, w), dtype=bool)
            mask[rows, cols] = (logits > t).numpy()
            x0, y0, x1, y1 = boxes[i].tolist()
            out.append(
                {
                    "segmentation": mask,
                    "area": int(mask.sum()),
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "predicted_iou": score,
                    "point_coords": [point.tolist()],
                    "stability_score": stability,
                    "crop_box": [0, 0, w, h],
                }
            )
        return out


def _window_box(win: tuple[slice, slice, torch.Tensor], threshold: float) -> torch.Tensor:
    """(x0, y0, x1, y1) of the pixels above ``threshold`` (inclusive, as Meta's ``batched_mask_to_box``;
    zeros for an empty mask)."""
    rows, cols, logits = win
    m = logits > threshold
    ys = torch.nonzero(m.any(1)).flatten()
    xs = torch.nonzero(m.any(0)).flatten()
    if ys.numel() == 0:
        return torch.zeros(4, dtype=torch.int64)
    return torch.tensor(
        [cols.start + int(xs[0]), rows.start + int(ys[0]), cols.start + int(xs[-1]), rows.start + int(ys[-1])]
    )
