"""Evaluating the teaching SAM: held-out generated scenes of every domain and the real sets.

``python -m samlib.teaching eval`` writes the report that ships beside the checkpoint
(``samlib/weights/teaching_sam_eval.json``) and that the model card reads.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from tqdm.auto import tqdm

from samlib.errors import DataNotFoundError, InvalidInputError
from samlib.losses import mask_iou_logits
from samlib.metrics import iou
from samlib.predict import PromptPredictor
from samlib.prompts import box_from_mask, center_point
from samlib.scenes import Scene, generate_scene
from samlib.teaching.photos import PHOTO_SETS, heldout_scenes
from samlib.teaching.train import PromptBatch, _add_correction_clicks, _pixel_batch, _upsample, decode

__all__ = [
    "EVAL_SECTIONS",
    "REMOTE_SETS",
    "TARGET_DOMAINS",
    "evaluate",
    "evaluate_domain",
    "evaluate_photos",
    "evaluate_remote",
    "evaluate_scenes",
]

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

    Scenes ``first_scene`` .. ``first_scene + n_scenes - 1`` of the held-out set are used; another
    ``first_scene`` gives an independent set, to confirm a comparison made on the default one. The
    metrics are those of :func:`evaluate_scenes`.
    """
    size = sam.image_encoder.img_size
    scenes = (scene for scene, _ in _instances(domain, n_scenes, size, first_scene))
    return evaluate_scenes(sam, scenes, corrections, seed, desc=f"eval {domain}", total=n_scenes)


@torch.inference_mode()
def evaluate_scenes(
    sam: Sam,
    scenes: Iterable[Scene],
    corrections: int = 3,
    seed: int = 0,
    desc: str = "eval",
    total: int | None = None,
) -> dict[str, float]:
    """Mean instance IoU over ``scenes`` (already at the model's input size) for box and click prompts.

    ``point_iou`` takes the multimask output with the highest predicted IoU; ``points3_iou`` starts from
    that click and adds ``corrections`` clicks from the error region (mask logits fed back each round);
    ``box_baseline_iou`` is the filled box used as the mask (what a box alone already gives).
    ``low_res_ceiling_iou`` is what a perfect low-res mask would score (the ground truth area-pooled to
    the decoder's resolution and upsampled like a prediction): the best any prompt can reach.
    ``box_iou_small`` / ``_medium`` / ``_large`` split ``box_iou`` by instance area (< 400 px,
    400-1600 px, > 1600 px at 256 px: under 20 x 20, over 40 x 40); ``box_iou_whole`` / ``_split`` by
    whether the visible instance is one connected piece or cut into several by objects in front of it.
    ``instances`` counts the instances scored.
    """
    rng = np.random.default_rng(seed)
    device = sam.pixel_mean.device
    res: dict[str, list[float]] = {"box_iou": [], "point_iou": [], "points3_iou": [], "box_baseline_iou": [],
                                   "point_oracle_iou": [], "low_res_ceiling_iou": [], "box_iou_small": [],
                                   "box_iou_medium": [], "box_iou_large": [], "box_iou_whole": [],
                                   "box_iou_split": []}  # fmt: skip
    for scene in tqdm(scenes, total=total, desc=desc, leave=False):
        masks = scene.masks
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
            res["box_iou_" + _size_class(area)].append(iou_k)
            res["box_iou_" + ("whole" if pieces <= 1 else "split")].append(iou_k)
        pooled = F.interpolate(gt[:, None].float(), low.shape[-2:], mode="area")
        res["low_res_ceiling_iou"] += _iou_full(sam, pooled - 0.5, gt).tolist()
        res["box_baseline_iou"] += [iou(f, m) for f, m in zip(_filled_boxes(boxes, masks.shape[1:]), masks)]
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
    out = {k: float(np.mean(v)) if v else float("nan") for k, v in res.items()}
    out["instances"] = float(len(res["box_iou"]))
    return out


def _size_class(area: float) -> str:
    """small (< 20 x 20 px), medium (up to 40 x 40) or large."""
    return "small" if area < 400 else "medium" if area <= 1600 else "large"


def _filled_boxes(boxes: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(K, H, W) bool: each box (inclusive pixel indices x0, y0, x1, y1) filled."""
    filled = np.zeros((len(boxes), *shape), dtype=bool)
    for j, (x0, y0, x1, y1) in enumerate(np.asarray(boxes).astype(int)):
        filled[j, max(0, y0) : y1 + 1, max(0, x0) : x1 + 1] = True
    return filled


def _iou_full(sam: Sam, low: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """IoU of (K, 1, h, w) low-res logits, upsampled to the input size, against (K, H, W) masks."""
    return mask_iou_logits(_upsample(sam, low.float())[:, 0].cpu(), gt.float())


EVAL_SECTIONS: tuple[str, ...] = ("source", "targets", "real", "photos", "remote")
"""Parts of :func:`evaluate`'s report; each can be run on its own (``--sections``)."""


def evaluate(
    sam: Sam,
    n_scenes: int = 200,
    n_target_scenes: int = 50,
    data_root: str | Path | None = None,
    first_scene: int = 0,
    sections: Sequence[str] = ("source", "targets", "real"),
    n_photos: int = 20,
    n_remote: int = 10,
    max_instances: int = 20,
    zoom_margin: float = 0.5,
    zoom_min_crop: int = 64,
) -> dict[str, Any]:
    """The model card's numbers: source-domain metrics, each target domain, and real data when present.

    Arguments:
      sam (Sam): the model.
      n_scenes (int): held-out source scenes ("source").
      n_target_scenes (int): scenes of each generated target domain ("targets").
      data_root (str | Path | None): the shared data (``samlib.data.data_root()`` when None).
      first_scene (int): start of the held-out scene range.
      sections (Sequence[str]): which parts of :data:`EVAL_SECTIONS` to run.
      n_photos (int): held-out photos per real-photo set ("photos", :func:`evaluate_photos`).
      n_remote (int): images per remote-sensing set ("remote", :func:`evaluate_remote`).
      max_instances (int): instances per remote-sensing image (a seeded subset of larger ones).
      zoom_margin (float), zoom_min_crop (int): the zoom of :meth:`PromptPredictor.predict_batch_zoomed`.
    Returns:
      dict: source metrics at the top level, then "targets", "real", "photos", "remote" as run.
    """
    unknown = set(sections) - set(EVAL_SECTIONS)
    if unknown:
        raise InvalidInputError(f"unknown eval sections {sorted(unknown)}; known: {', '.join(EVAL_SECTIONS)}")
    report: dict[str, Any] = {}
    if "source" in sections:
        report.update(evaluate_domain(sam, "source", n_scenes, first_scene=first_scene))
    if "targets" in sections:
        report["targets"] = {}
        for domain in TARGET_DOMAINS:
            r = evaluate_domain(sam, domain, n_target_scenes, first_scene=first_scene)
            report["targets"][domain] = {"box_iou": r["box_iou"], "point_iou": r["point_iou"],
                                         "box_baseline_iou": r["box_baseline_iou"]}  # fmt: skip
    if "real" in sections:
        report["real"] = _evaluate_real(sam, data_root)
    if "photos" in sections:
        report["photos"] = evaluate_photos(sam, data_root, n_photos)
    if "remote" in sections:
        report["remote"] = evaluate_remote(
            sam, data_root, n_remote, max_instances, zoom_margin, zoom_min_crop
        )
    return report


def evaluate_photos(
    sam: Sam, data_root: str | Path | None = None, n_photos: int = 20, split_seed: int = 0
) -> dict[str, dict[str, float]]:
    """:func:`evaluate_scenes` on the held-out photos of each set of :data:`~.photos.PHOTO_SETS`.

    The photos are centre-cropped to the model's input (as in training); missing sets are skipped.
    ``"mean"`` averages each metric over the sets (each set counts once, however many instances).

    Arguments:
      sam (Sam): the model.
      data_root (str | Path | None): where ``natural/`` and ``camvid/`` are.
      n_photos (int): the first this many held-out photos of each set (name order).
      split_seed (int): the held-out split's seed (the trainer's ``photo_split_seed``).
    Returns:
      dict[str, dict[str, float]]: set name -> metrics, and "mean".
    """
    size = sam.image_encoder.img_size
    out: dict[str, dict[str, float]] = {}
    for name in PHOTO_SETS:
        try:
            scenes = heldout_scenes(name, size, data_root, n_photos, split_seed)
        except DataNotFoundError as err:
            print(f"skipping photo set {name}: {err}")
            continue
        out[name] = evaluate_scenes(sam, scenes, desc=f"eval {name}", total=len(scenes))
    if out:
        keys = [k for k in next(iter(out.values())) if k != "instances"]
        finite = {k: [r[k] for r in out.values() if np.isfinite(r[k])] for k in keys}
        out["mean"] = {k: float(np.mean(v)) if v else float("nan") for k, v in finite.items()}
    return out


REMOTE_SETS: tuple[str, ...] = ("buildings-spacenet-rio", "ships-hrsid", "roads-eth", "mars-pits")
"""Real remote-sensing sets scored zero-shot (never used in training)."""
_ROAD_MIN_AREA = 100  # road components smaller than this (pixels) are label noise, not roads


def _remote_samples(name: str, root: Path, n_images: int) -> list[Any]:
    from samlib import data as sdata

    if name == "mars-pits":
        return sdata.load_mars_pits(root, split="test", limit=n_images)
    if name == "roads-eth":
        samples = sdata.load_roads_eth(root, split="test", limit=n_images)
        for s in samples:
            if s.semantic is not None:
                s.masks = sdata.instances_from_binary(s.semantic, min_area=_ROAD_MIN_AREA)
        return samples
    loader = {
        "buildings-spacenet-rio": sdata.load_buildings_spacenet_rio,
        "ships-hrsid": sdata.load_ships_hrsid,
    }
    return loader[name](root, limit=n_images)


def _ellipses(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(K, H, W) bool: the ellipse inscribed in each (x0, y0, x1, y1) box."""
    yy, xx = np.mgrid[: shape[0], : shape[1]] + 0.5
    out = np.zeros((len(boxes), *shape), dtype=bool)
    for j, (x0, y0, x1, y1) in enumerate(boxes):
        rx, ry = max((x1 - x0) / 2, 0.5), max((y1 - y0) / 2, 0.5)
        out[j] = ((xx - (x0 + x1) / 2) / rx) ** 2 + ((yy - (y0 + y1) / 2) / ry) ** 2 <= 1
    return out


@torch.inference_mode()
def evaluate_remote(
    sam: Sam,
    data_root: str | Path | None = None,
    n_images: int = 10,
    max_instances: int = 20,
    zoom_margin: float = 0.5,
    zoom_min_crop: int = 64,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Zero-shot box prompts on real remote-sensing images, on the whole image and zoomed.

    Every instance's box prompts :class:`~samlib.predict.PromptPredictor` once on the whole image
    (resized into the encoder) and once on a crop around the box
    (:meth:`~samlib.predict.PromptPredictor.predict_batch_zoomed`). Buildings, ships and road
    components (connected parts of the road mask, test split) have true masks: ``box_iou`` /
    ``box_iou_zoom``, split by instance area in image pixels (``_small`` < 400, ``_medium`` <= 1600,
    ``_large``), and ``box_baseline_iou`` for the filled box. Mars pits have boxes only (test split):
    ``nonempty_share`` (boxes that get a non-empty mask), ``fill_ratio`` (mean share of the box the
    mask covers), ``ellipse_iou`` (IoU with the ellipse inscribed in the box, a pit's rough shape;
    ``ellipse_baseline_iou`` is the filled box against it).

    Arguments:
      sam (Sam): the model.
      data_root (str | Path | None): the shared data folder.
      n_images (int): the first this many images of each set.
      max_instances (int): at most this many instances per image (a seeded random subset).
      zoom_margin (float): context around each box, as a fraction of its size on each side.
      zoom_min_crop (int): the smallest crop side in pixels.
      seed (int): picks the instance subsets.
    Returns:
      dict[str, dict[str, float]]: set name -> metrics (sets that are missing are skipped).
    """
    from samlib import data as sdata

    root = sdata.data_root(data_root)
    if root is None:
        return {}
    rng = np.random.default_rng(seed)
    predictor = PromptPredictor(sam)
    out: dict[str, dict[str, float]] = {}
    for name in REMOTE_SETS:
        try:
            samples = _remote_samples(name, root, n_images)
        except DataNotFoundError as err:
            print(f"skipping {name}: {err}")
            continue
        res: dict[str, list[float]] = {}
        for s in tqdm(samples, desc=f"eval {name}", leave=False):
            if name == "mars-pits":
                boxes = np.asarray(s.boxes, dtype=np.float64).reshape(-1, 4)
                masks = None
            else:
                masks = s.masks if s.masks is not None else np.zeros((0, *s.image.shape[:2]), bool)
                boxes = np.stack([box_from_mask(m) for m in masks]) if len(masks) else np.zeros((0, 4))
            if len(boxes) == 0:
                continue
            if len(boxes) > max_instances:
                pick = np.sort(rng.choice(len(boxes), max_instances, replace=False))
                boxes = boxes[pick]
                masks = masks[pick] if masks is not None else None
            predictor.set_image(s.image)
            whole = predictor.predict_batch(boxes=boxes, multimask_output=False).masks[:, 0]
            zoomed = predictor.predict_batch_zoomed(
                boxes=boxes, margin=zoom_margin, min_crop=zoom_min_crop
            ).masks[:, 0]
            shape = s.image.shape[:2]
            if masks is None:
                filled = _filled_boxes(np.round(boxes), shape)
                ellipses = _ellipses(boxes, shape)
                res.setdefault("ellipse_baseline_iou", []).extend(iou(f, e) for f, e in zip(filled, ellipses))
                for tag, pred in (("", whole), ("_zoom", zoomed)):
                    res.setdefault("nonempty_share" + tag, []).extend(float(p.any()) for p in pred)
                    res.setdefault("fill_ratio" + tag, []).extend(
                        float((p & f).sum() / max(1, f.sum())) for p, f in zip(pred, filled)
                    )
                    res.setdefault("ellipse_iou" + tag, []).extend(iou(p, e) for p, e in zip(pred, ellipses))
                continue
            filled = _filled_boxes(boxes, shape)
            res.setdefault("box_baseline_iou", []).extend(iou(f, m) for f, m in zip(filled, masks))
            for tag, pred in (("", whole), ("_zoom", zoomed)):
                ious = [iou(p, m) for p, m in zip(pred, masks)]
                res.setdefault("box_iou" + tag, []).extend(ious)
                for v, m in zip(ious, masks):
                    res.setdefault(f"box_iou{tag}_{_size_class(m.sum())}", []).append(v)
        out[name] = {k: float(np.mean(v)) for k, v in res.items()}
        first = "box_iou" if "box_iou" in res else "nonempty_share"
        out[name]["instances"] = float(len(res.get(first, [])))
    return out


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
