"""Evaluating the teaching SAM: held-out generated scenes of every domain and the real sets.

``python -m samlib.teaching eval`` writes the report that ships beside the checkpoint
(``samlib/weights/teaching_sam_eval.json``) and that the model card reads.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from tqdm.auto import tqdm

from samlib.losses import mask_iou_logits
from samlib.metrics import iou
from samlib.predict import PromptPredictor
from samlib.prompts import box_from_mask, center_point
from samlib.scenes import Scene, generate_scene
from samlib.teaching.train import PromptBatch, _add_correction_clicks, _pixel_batch, _upsample, decode

__all__ = ["TARGET_DOMAINS", "evaluate", "evaluate_domain"]

TARGET_DOMAINS: tuple[str, ...] = ("mobility_a", "mobility_b", "buildings", "sar_ships", "planetary")
_EVAL_SEED_OFFSET = 900_000_000  # evaluation scenes never overlap training seeds (< 1e8)


# --------------------------------------------------------------------------------------------- evaluation


def _instances(
    domain: str, n_scenes: int, size: int, first_scene: int = 0
) -> Iterator[tuple[Scene, np.ndarray]]:
    for i in range(first_scene, first_scene + n_scenes):
        scene = generate_scene(domain, size, _EVAL_SEED_OFFSET + i)
        if len(scene.kinds):
            yield scene, scene.masks


@torch.inference_mode()
def evaluate_domain(
    sam: Sam, domain: str, n_scenes: int = 200, corrections: int = 3, seed: int = 0, first_scene: int = 0
) -> dict[str, float]:
    """Mean instance IoU on held-out scenes of ``domain`` for box, centre-point and corrected-point prompts.

    ``point_iou`` takes the multimask output with the highest predicted IoU; ``points3_iou`` starts from
    that click and adds ``corrections`` clicks from the error region (mask logits fed back each round);
    ``box_baseline_iou`` is the filled box used as the mask (what a box alone already gives).
    ``low_res_ceiling_iou`` is what a perfect low-res mask would score (the ground truth area-pooled to
    the decoder's resolution and upsampled like a prediction): the best any prompt can reach.
    ``box_iou_small`` / ``_medium`` / ``_large`` split ``box_iou`` by instance area (< 400 px,
    400-1600 px, > 1600 px at 256 px: under 20 x 20, over 40 x 40); ``box_iou_whole`` / ``_split`` by
    whether the visible instance is one connected piece or cut into several by objects in front of it.
    Scenes ``first_scene`` .. ``first_scene + n_scenes - 1`` of the held-out set are used; another
    ``first_scene`` gives an independent set, to confirm a comparison made on the default one.
    """
    rng = np.random.default_rng(seed)
    device = sam.pixel_mean.device
    size = sam.image_encoder.img_size
    res: dict[str, list[float]] = {"box_iou": [], "point_iou": [], "points3_iou": [], "box_baseline_iou": [],
                                   "point_oracle_iou": [], "low_res_ceiling_iou": [], "box_iou_small": [],
                                   "box_iou_medium": [], "box_iou_large": [], "box_iou_whole": [],
                                   "box_iou_split": []}  # fmt: skip
    for scene, masks in tqdm(
        _instances(domain, n_scenes, size, first_scene), total=n_scenes, desc=f"eval {domain}", leave=False
    ):
        emb = sam.image_encoder(_pixel_batch(sam, [scene.image], device))
        gt = torch.as_tensor(masks)
        boxes = np.stack([box_from_mask(m) for m in masks])
        box_prompts = PromptBatch(None, None, torch.tensor(boxes, dtype=torch.float32), False)
        low, _ = decode(sam, emb, box_prompts)
        box_ious = _iou_full(sam, low[:, :1], gt).tolist()
        res["box_iou"] += box_ious
        for iou_k, m in zip(box_ious, masks):
            area = m.sum()
            pieces = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)[0] - 1  # minus background
            res["box_iou_" + ("small" if area < 400 else "medium" if area <= 1600 else "large")].append(iou_k)
            res["box_iou_" + ("whole" if pieces <= 1 else "split")].append(iou_k)
        pooled = F.interpolate(gt[:, None].float(), low.shape[-2:], mode="area")
        res["low_res_ceiling_iou"] += _iou_full(sam, pooled - 0.5, gt).tolist()
        filled = np.zeros_like(masks)
        for j, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
            filled[j, y0 : y1 + 1, x0 : x1 + 1] = True  # boxes are inclusive pixel indices
        res["box_baseline_iou"] += [iou(f, m) for f, m in zip(filled, masks)]
        pts = torch.tensor(np.stack([center_point(m) for m in masks]), dtype=torch.float32)[:, None]
        prompts = PromptBatch(pts, torch.ones(len(masks), 1), None, True)
        low, iou_pred = decode(sam, emb, prompts)
        all_ious = torch.stack([_iou_full(sam, low[:, j : j + 1], gt) for j in range(1, 4)], 1)
        pick = iou_pred[:, 1:].argmax(1)
        res["point_iou"] += all_ious.gather(1, pick[:, None])[:, 0].tolist()
        res["point_oracle_iou"] += all_ious.max(1).values.tolist()
        chosen = low[torch.arange(len(masks)), 1 + pick][:, None]
        for _ in range(corrections):
            pred = (_upsample(sam, chosen) > 0)[:, 0].cpu().numpy()
            prompts = _add_correction_clicks(prompts, pred, masks, rng)
            low, _ = decode(sam, emb, prompts, chosen)
            chosen = low[:, :1]
        res["points3_iou"] += _iou_full(sam, chosen, gt).tolist()
    return {k: float(np.mean(v)) if v else float("nan") for k, v in res.items()}


def _iou_full(sam: Sam, low: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU of (K, 1, h, w) low-res logits, upsampled to the input size, against (K, H, W) masks."""
    return mask_iou_logits(_upsample(sam, low.float())[:, 0].cpu(), gt.float())


def evaluate(
    sam: Sam,
    n_scenes: int = 200,
    n_target_scenes: int = 50,
    data_root: str | Path | None = None,
    first_scene: int = 0,
) -> dict[str, Any]:
    """The model card's numbers: source-domain metrics, each target domain, and real data when present."""
    report: dict[str, Any] = dict(evaluate_domain(sam, "source", n_scenes, first_scene=first_scene))
    report["targets"] = {}
    for domain in TARGET_DOMAINS:
        r = evaluate_domain(sam, domain, n_target_scenes, first_scene=first_scene)
        report["targets"][domain] = {"box_iou": r["box_iou"], "point_iou": r["point_iou"],
                                     "box_baseline_iou": r["box_baseline_iou"]}  # fmt: skip
    report["real"] = _evaluate_real(sam, data_root)
    return report


def _evaluate_real(sam: Sam, data_root: str | Path | None) -> dict[str, dict[str, float]]:
    """Box-prompt IoU on the real building and ship sets, when the shared data is present."""
    from samlib import data as sdata

    root = sdata.data_root(data_root)
    if root is None:
        return {}
    out: dict[str, dict[str, float]] = {}
    predictor = PromptPredictor(sam)
    for name, loader in (("buildings-spacenet-rio", sdata.load_buildings_spacenet_rio),
                         ("ships-hrsid", sdata.load_ships_hrsid)):  # fmt: skip
        try:
            samples = loader(root)
        except Exception as err:  # a missing folder is not an evaluation failure
            print(f"skipping {name}: {err}")
            continue
        ious = []
        for s in samples:
            if s.masks is None or len(s.masks) == 0:
                continue
            predictor.set_image(s.image)
            boxes = np.stack([box_from_mask(m) for m in s.masks])
            pred = predictor.predict_batch(boxes=boxes, multimask_output=False)
            ious += [iou(pred.masks[j, 0], s.masks[j]) for j in range(len(s.masks))]
        out[name] = {"box_iou": float(np.mean(ious)) if ious else float("nan"), "instances": float(len(ious))}
    return out
