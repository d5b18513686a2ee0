"""Semantic model + SAM and detector + SAM: the hybrid approach of Martino & Arancio Febbo (2023).

"A Hybrid Approach for Semantic Segmentation: Integrating SAM Model" (University of Pisa, MSc AI
project report) combines SAM with a closed-vocabulary model in two ways:

* **Algorithm 1 — majority-vote refinement.** SAM's automatic mask generator proposes class-agnostic
  masks; each mask takes the majority class of a semantic model's prediction under it, and that class
  is written into the mask's pixels (:func:`majority_vote`). Later masks overwrite earlier ones, so the
  order matters: SAM's own order (decreasing predicted IoU) or largest first (small masks win).
* **Algorithm 2 — detector boxes as prompts.** Each detector box (label, confidence) prompts SAM once
  (single-mask output, all boxes of an image in one batched decoder call); the mask's pixels get the
  box's label, everything else the background (:func:`paint_labels`). A confidence threshold decides
  which boxes prompt; it is swept and chosen on a validation split (:func:`threshold_sweep`).

:func:`evaluate_dataset` runs both paths and the semantic model alone on one data set's test split, with
the report's metrics (:func:`samlib.metrics.semantic_report_scores`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import cv2
import numpy as np
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.modeling import Sam
from tqdm.auto import tqdm

from samlib.data import (
    CAMVID_CLASSES,
    CAMVID_IGNORE_INDEX,
    DUBAI_CLASSES,
    DUBAI_IGNORE_INDEX,
    VOC_CLASSES,
    VOC_IGNORE_INDEX,
    Sample,
    dubai_tile,
    instances_from_binary,
    load_aerial_dubai,
    load_camvid,
    load_camvid_train,
    load_voc_samples,
    require_data,
    split_names,
)
from samlib.errors import InvalidInputError
from samlib.experts.detector import (
    COCO_TO_CAMVID,
    COCO_TO_VOC,
    CocoSSDDetector,
    Detections,
    detect_boxes,
    map_detections,
    train_box_detector,
)
from samlib.experts.semantic import EncoderFeatures, encoder_features, predict_labels, train_semantic_head
from samlib.metrics import semantic_report_scores
from samlib.models import model_name
from samlib.predict import CachedEmbedding, EmbeddingCache, PromptPredictor, encoder_fingerprint
from samlib.utils import as_uint8_rgb

__all__ = [
    "DEFAULT_THRESHOLDS",
    "DatasetOutcome",
    "HybridData",
    "MASK_ORDERS",
    "automatic_masks",
    "box_prompt_masks",
    "boxes_as_masks",
    "choose_threshold",
    "evaluate_dataset",
    "load_hybrid_data",
    "majority_vote",
    "make_mask_generator",
    "mask_order",
    "paint_labels",
    "threshold_sweep",
]

_T = TypeVar("_T")
MASK_ORDERS: tuple[str, ...] = ("sam", "largest_first")
DEFAULT_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


# ------------------------------------------------------------------------------ Algorithm 1: refinement


def mask_order(masks: Sequence[np.ndarray], order: str = "sam") -> list[int]:
    """The order in which masks are written: "sam" keeps the given order (the generator's, by
    decreasing predicted IoU), "largest_first" sorts by decreasing area (ties keep SAM's order), so
    that smaller masks are written later and win where masks overlap."""
    if order not in MASK_ORDERS:
        raise InvalidInputError(f"order must be one of {MASK_ORDERS}, got {order!r}.")
    if order == "sam":
        return list(range(len(masks)))
    areas = np.array([int(np.count_nonzero(m)) for m in masks])
    return [int(i) for i in np.argsort(-areas, kind="stable")]


def majority_vote(semantic: np.ndarray, masks: Sequence[np.ndarray], order: str = "sam") -> np.ndarray:
    """The report's Algorithm 1: each mask takes the majority class of ``semantic`` under it.

    The vote always reads the semantic model's own prediction (not the map being refined); masks are
    written in :func:`mask_order` and later ones overwrite earlier ones. Pixels no mask covers keep the
    semantic prediction. Ties go to the smaller class id.

    Arguments:
      semantic (np.ndarray): (H, W) non-negative integer class ids predicted by the semantic model.
      masks (Sequence[np.ndarray]): (H, W) bool masks (e.g. SAM's automatic masks, in SAM's order).
      order (str): "sam" or "largest_first".

    Returns:
      (np.ndarray): (H, W) refined class ids, same dtype as ``semantic``.
    """
    sem = np.asarray(semantic)
    if sem.ndim != 2 or not np.issubdtype(sem.dtype, np.integer):
        raise InvalidInputError(f"semantic must be an (H, W) integer label map, got {sem.shape} {sem.dtype}.")
    if sem.size and sem.min() < 0:
        raise InvalidInputError("semantic must hold non-negative class ids.")
    out = sem.copy()
    for i in mask_order(masks, order):
        m = np.asarray(masks[i], dtype=bool)
        if m.shape != sem.shape:
            raise InvalidInputError(f"mask {i} has shape {m.shape}, the label map {sem.shape}.")
        if not m.any():
            continue
        out[m] = np.bincount(sem[m]).argmax()
    return out


class _CachedImagePredictor(SamPredictor):
    """A SamPredictor whose ``set_image`` goes through a :class:`PromptPredictor`'s embedding cache, so
    the automatic mask generator does not re-run the encoder on images already embedded."""

    def __init__(self, prompts: PromptPredictor) -> None:
        super().__init__(prompts.sam)
        self._prompts = prompts

    def set_image(self, image: np.ndarray, image_format: str = "RGB") -> None:
        self._prompts.set_image(image)
        inner = self._prompts.predictor
        self.features = inner.features
        self.original_size = inner.original_size
        self.input_size = inner.input_size
        self.is_image_set = True


def make_mask_generator(
    sam: Sam,
    points_per_side: int = 8,
    points_per_batch: int = 32,
    pred_iou_thresh: float = 0.6,
    stability_score_thresh: float = 0.7,
    box_nms_thresh: float = 0.7,
    min_mask_region_area: int = 0,
    prompts: PromptPredictor | None = None,
) -> SamAutomaticMaskGenerator:
    """Meta's :class:`SamAutomaticMaskGenerator` with its main knobs exposed (one crop layer: the whole
    image). With ``prompts``, image embeddings come from that predictor's cache.

    Arguments:
      points_per_side (int): the grid of single-point prompts is points_per_side ** 2 (SAM: 32).
      points_per_batch (int): prompts per decoder call (memory: 3 masks each at the image size).
      pred_iou_thresh, stability_score_thresh (float): masks below either are dropped (SAM's defaults,
        0.88 and 0.95, suit the official models; the teaching SAM's scores run lower).
      box_nms_thresh (float): box IoU above which duplicate masks are suppressed.
      min_mask_region_area (int): remove holes and islands smaller than this (pixels); 0 = off.
    """
    if points_per_side < 1:
        raise InvalidInputError(f"points_per_side must be >= 1, got {points_per_side}.")
    generator = SamAutomaticMaskGenerator(
        sam,
        points_per_side=points_per_side,
        points_per_batch=points_per_batch,
        pred_iou_thresh=pred_iou_thresh,
        stability_score_thresh=stability_score_thresh,
        box_nms_thresh=box_nms_thresh,
        min_mask_region_area=min_mask_region_area,
    )
    if prompts is not None:
        generator.predictor = _CachedImagePredictor(prompts)
    return generator


def automatic_masks(generator: SamAutomaticMaskGenerator, image: np.ndarray) -> list[np.ndarray]:
    """SAM's automatic masks of one (H, W, 3) uint8 RGB image, as (H, W) bool arrays in SAM's order."""
    return [np.asarray(r["segmentation"], dtype=bool) for r in generator.generate(image)]


# --------------------------------------------------------------------------- Algorithm 2: box prompts


def box_prompt_masks(predictor: PromptPredictor, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """One SAM mask per box (single-mask output), all boxes of the image in one batched decoder call.

    Returns:
      (np.ndarray): (N, H, W) bool; (0, H, W) when there are no boxes.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    if len(b) == 0:
        return np.zeros((0, *image.shape[:2]), dtype=bool)
    predictor.set_image(image)
    return predictor.predict_batch(boxes=b, multimask_output=False).masks[:, 0]


def boxes_as_masks(boxes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Filled boxes as masks, (N, H, W) bool: the detector's output without SAM (the baseline SAM must
    beat)."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    out = np.zeros((len(b), *shape), dtype=bool)
    for i, (x0, y0, x1, y1) in enumerate(b):
        c0, r0 = int(np.floor(x0)), int(np.floor(y0))
        c1, r1 = int(np.ceil(x1)), int(np.ceil(y1))
        out[i, max(r0, 0) : max(r1, 0), max(c0, 0) : max(c1, 0)] = True
    return out


def paint_labels(
    shape: tuple[int, int], masks: np.ndarray, labels: np.ndarray, scores: np.ndarray, fill: int
) -> np.ndarray:
    """The report's Algorithm 2 output: each mask's pixels get its label, the rest ``fill``.

    Masks are painted by increasing score, so where two overlap the more confident one wins.

    Returns:
      (np.ndarray): (H, W) int64 label map.
    """
    out = np.full(shape, fill, dtype=np.int64)
    m = np.asarray(masks, dtype=bool).reshape(-1, *shape)
    if not (len(m) == len(labels) == len(scores)):
        raise InvalidInputError(f"Got {len(m)} masks, {len(labels)} labels and {len(scores)} scores.")
    for i in np.argsort(np.asarray(scores), kind="stable"):
        out[m[i]] = int(labels[i])
    return out


@dataclass
class PromptedImage:
    """An image's detections (data-set labels) and the SAM mask of each detection box."""

    detections: Detections
    masks: np.ndarray  # (N, H, W) bool
    shape: tuple[int, int]

    def label_map(self, threshold: float, fill: int, use_boxes: bool = False) -> np.ndarray:
        """Algorithm 2's label map from the boxes with score >= ``threshold`` (``use_boxes``: paint the
        filled boxes instead of SAM's masks)."""
        keep = self.detections.scores >= threshold
        masks = boxes_as_masks(self.detections.boxes[keep], self.shape) if use_boxes else self.masks[keep]
        return paint_labels(
            self.shape, masks, self.detections.labels[keep], self.detections.scores[keep], fill
        )


def threshold_sweep(
    prompted: Sequence[PromptedImage],
    gts: Sequence[np.ndarray],
    class_names: Sequence[str],
    fill: int,
    ignore_index: int | None = None,
    background: int | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
) -> dict[float, dict[str, float]]:
    """Scores of Algorithm 2's label maps at each confidence threshold.

    Returns:
      (dict[float, dict[str, float]]): threshold -> :func:`samlib.metrics.semantic_report_scores`.
    """
    return {
        float(t): semantic_report_scores(
            [p.label_map(t, fill) for p in prompted], gts, class_names, ignore_index, background
        )
        for t in thresholds
    }


def choose_threshold(sweep: Mapping[float, Mapping[str, float]], metric: str = "miou") -> float:
    """The threshold with the best ``metric`` (the lowest one among ties)."""
    if not sweep:
        raise InvalidInputError("choose_threshold needs a non-empty sweep.")
    best = max(sweep.items(), key=lambda kv: (np.nan_to_num(kv[1][metric], nan=-1.0), -kv[0]))
    return float(best[0])


# ---------------------------------------------------------------------------------- data and running


@dataclass
class HybridData:
    """One data set prepared for the chapter: train / validation / test samples and label conventions.

    Attributes:
      name (str): short name used in result keys ("voc", "camvid", "dubai").
      train, val, test (list[Sample]): the splits (``val`` chooses the detector threshold).
      class_names (tuple[str, ...]): class ids 0..K-1.
      ignore_index (int): ground-truth label that is not scored.
      background (int | None): the background class, if the data set has one (VOC: 0).
      fill (int): what Algorithm 2 writes where no mask is: the background, or K ("no class").
      things (tuple[int, ...]): the classes a detector can find here.
      split_note (str): how the splits were made, for the chapter's prose.
    """

    name: str
    train: list[Sample]
    val: list[Sample]
    test: list[Sample]
    class_names: tuple[str, ...]
    ignore_index: int
    background: int | None
    fill: int
    things: tuple[int, ...]
    split_note: str


def _downscale(sample: Sample, max_side: int | None) -> Sample:
    """The sample with its long side at most ``max_side`` (image bilinear-area, labels nearest)."""
    h, w = sample.image.shape[:2]
    if max_side is None or max(h, w) <= max_side:
        return sample
    scale = max_side / max(h, w)
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    image = cv2.resize(sample.image, size, interpolation=cv2.INTER_AREA)
    assert sample.semantic is not None
    labels = cv2.resize(sample.semantic.astype(np.int32), size, interpolation=cv2.INTER_NEAREST)
    return Sample(
        sample.name, image, semantic=labels.astype(np.int64), dataset=sample.dataset, meta=sample.meta
    )


def _spread(items: list[_T], n: int | None) -> list[_T]:
    """``n`` items evenly spread over the list (video frames and tile parts: neighbours look alike)."""
    if n is None or n >= len(items):
        return items
    idx = np.linspace(0, len(items) - 1, n).round().astype(int)
    return [items[i] for i in idx]


def load_hybrid_data(
    name: str,
    root: Any = None,
    seed: int = 0,
    n_train: int | None = None,
    n_eval: int | None = None,
    max_side: int | None = 512,
) -> HybridData:
    """Load and split a data set of the chapter: "voc", "camvid" or "dubai".

    * voc — the 14 VOC crops, halved by ``seed``: one half trains the semantic stand-in and chooses
      the detector threshold, the other half is the test split (no other VOC data is at hand).
    * camvid — the stand-in trains on CamVid's train split (``n_train`` frames spread over it); CamVid's
      val split is halved by ``seed`` into validation and test (``n_eval`` each).
    * dubai — split by tile (parts of one tile look alike): ``seed`` permutes the six tiles, four train,
      one validation, one test.

    Arguments:
      n_train, n_eval (int | None): cap the train / each evaluation split (evenly spread); None: all.
      max_side (int | None): downscale images and labels so the long side is at most this.
    """
    if name == "voc":
        train = load_voc_samples(root, split="train", seed=seed)
        test = load_voc_samples(root, split="test", seed=seed)
        data = HybridData(
            "voc", train, list(train), test, VOC_CLASSES, VOC_IGNORE_INDEX, 0, 0,
            tuple(range(1, len(VOC_CLASSES))),
            f"{len(train)} crops train the stand-in and choose the threshold; {len(test)} crops test",
        )  # fmt: skip
    elif name == "camvid":
        folder = require_data("camvid", root)
        val_names, test_names = split_names(
            [p.stem for p in (folder / "images").glob("*.png")], test_fraction=0.5, seed=seed
        )
        val = load_camvid(root, split="val", names=_spread(val_names, n_eval))
        test = load_camvid(root, split="val", names=_spread(test_names, n_eval))
        train_names = _spread(sorted(p.stem for p in (folder / "train" / "images").glob("*.jpg")), n_train)
        train = load_camvid_train(root, names=train_names)
        data = HybridData(
            "camvid", train, val, test, CAMVID_CLASSES, CAMVID_IGNORE_INDEX, None, len(CAMVID_CLASSES),
            (8, 9, 10),
            f"{len(train)} CamVid train frames train the stand-in; CamVid val halved: {len(val)} frames "
            f"choose the threshold, {len(test)} test",
        )  # fmt: skip
    elif name == "dubai":
        pool = load_aerial_dubai(root)
        tiles = sorted({dubai_tile(s.name) for s in pool})
        perm = [tiles[i] for i in np.random.default_rng(seed).permutation(len(tiles))]
        val_tile, test_tile = perm[-2], perm[-1]
        train = _spread([s for s in pool if dubai_tile(s.name) in set(perm[:-2])], n_train)
        val = _spread([s for s in pool if dubai_tile(s.name) == val_tile], n_eval)
        test = _spread([s for s in pool if dubai_tile(s.name) == test_tile], n_eval)
        data = HybridData(
            "dubai", train, val, test, DUBAI_CLASSES, DUBAI_IGNORE_INDEX, None, len(DUBAI_CLASSES), (0,),
            f"{len(train)} parts of tiles {sorted(perm[:-2])} train; tile {val_tile} ({len(val)} parts) "
            f"chooses the threshold; tile {test_tile} ({len(test)} parts) tests",
        )  # fmt: skip
    else:
        raise InvalidInputError(f"Unknown hybrid data set {name!r}: use 'voc', 'camvid' or 'dubai'.")
    for split in ("train", "val", "test"):
        setattr(data, split, [_downscale(s, max_side) for s in getattr(data, split)])
    return data


def _seed_cache(
    cache: EmbeddingCache, sam: Sam, images: Sequence[np.ndarray], feats: EncoderFeatures
) -> None:
    """Put already computed neck embeddings into a predictor cache (the keys ``set_image`` uses)."""
    name, fingerprint = model_name(sam), encoder_fingerprint(sam.image_encoder)
    for i, image in enumerate(images):
        key = (name, fingerprint, EmbeddingCache.image_key(as_uint8_rgb(image)))
        entry = CachedEmbedding(
            feats.neck[i : i + 1].to(sam.device), feats.original_sizes[i], feats.input_sizes[i]
        )
        cache.put(key, entry)


@dataclass
class DatasetOutcome:
    """Everything :func:`evaluate_dataset` measured on one data set.

    Attributes:
      scores (dict[str, dict[str, float]]): method -> metrics (keys of the chapter's results).
      sweep (dict[str, dict[float, dict[str, float]]]): split ("val", "test") -> threshold -> metrics.
      threshold (float): the confidence threshold chosen on the validation split.
      outputs (dict[str, list[np.ndarray]]): per test image label maps: "semantic", "semantic_sam",
        "semantic_sam_largest_first", "detector_sam", "detector_boxes".
      sam_masks (list[list[np.ndarray]]): SAM's automatic masks of each test image, in SAM's order.
      prompted (list[PromptedImage]): detections and box-prompt masks of each test image.
      detector (str): "coco-ssd" or "trained CenterNet".
      seconds (dict[str, float]): wall time per stage.
    """

    scores: dict[str, dict[str, float]]
    sweep: dict[str, dict[float, dict[str, float]]]
    threshold: float
    outputs: dict[str, list[np.ndarray]]
    sam_masks: list[list[np.ndarray]]
    prompted: list[PromptedImage]
    detector: str
    seconds: dict[str, float] = field(default_factory=dict)


def _instance_boxes(sample: Sample, cls: int) -> np.ndarray:
    """(M, 4) boxes around the connected components of class ``cls`` (touching objects merge)."""
    assert sample.semantic is not None
    inst = instances_from_binary(sample.semantic == cls, min_area=4)
    out = np.zeros((len(inst), 4))
    for i, m in enumerate(inst):
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        out[i] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    return out


def evaluate_dataset(
    sam: Sam,
    data: HybridData,
    semantic_steps: int = 150,
    semantic_width: int = 24,
    detector_steps: int = 300,
    max_boxes: int = 40,
    amg: Mapping[str, Any] | None = None,
    thresholds: Sequence[float] = DEFAULT_THRESHOLDS,
    seed: int = 0,
    progress: bool = True,
    clock: Callable[[], float] | None = None,
) -> DatasetOutcome:
    """Run the semantic stand-in, Algorithm 1 (both mask orders) and Algorithm 2 on one data set.

    The semantic head trains on ``data.train``; Algorithm 2 uses the COCO SSD detector for VOC and
    CamVid, and a CenterNet head trained on the train split's building boxes for Dubai. The threshold
    is chosen on ``data.val`` by dataset-level mIoU; test scores use it.

    Arguments:
      max_boxes (int): at most this many boxes per image from the trained detector (highest scores).
      amg (Mapping | None): keyword arguments of :func:`make_mask_generator`.
      clock: a time function for the stage timings (default ``time.perf_counter``).

    Returns:
      (DatasetOutcome): scores keyed "semantic", "semantic_sam", "semantic_sam_largest_first",
        "detector_sam" (test, chosen threshold), "detector_boxes" (filled boxes, same boxes),
        "detector_sam_all" / "detector_boxes_all" (validation and test images together).
    """
    import time

    tick = clock or time.perf_counter
    seconds: dict[str, float] = {}
    t0 = tick()
    k = len(data.class_names)
    score = lambda preds, samples: semantic_report_scores(  # noqa: E731
        preds, [s.semantic for s in samples], data.class_names, data.ignore_index, data.background
    )
    train_img = [s.image for s in data.train]
    eval_samples = data.val + data.test
    eval_img = [s.image for s in eval_samples]
    n_val = len(data.val)
    f_eval = encoder_features(sam, eval_img, progress=progress)
    if [s.name for s in data.train] == [s.name for s in data.val]:  # VOC: one half trains and validates
        f_train = f_eval.subset(range(n_val))
    else:
        f_train = encoder_features(sam, train_img, progress=progress)
    seconds["encoder"] = tick() - t0

    t0 = tick()
    train_labels = [np.asarray(s.semantic) for s in data.train]
    head, _ = train_semantic_head(
        f_train, train_labels, k, data.ignore_index, steps=semantic_steps, width=semantic_width,
        seed=seed, device=sam.device, progress=progress,
    )  # fmt: skip
    test_idx = list(range(n_val, len(eval_samples)))
    semantic = predict_labels(head, f_eval.subset(test_idx))
    seconds["semantic"] = tick() - t0

    t0 = tick()
    cache = EmbeddingCache(maxsize=max(8, len(eval_img)))
    _seed_cache(cache, sam, eval_img, f_eval)
    prompts = PromptPredictor(sam, cache)
    generator = make_mask_generator(sam, prompts=prompts, **dict(amg or {}))
    sam_masks = [
        automatic_masks(generator, s.image)
        for s in tqdm(data.test, desc="SAM automatic masks", disable=not progress)
    ]
    refined = {
        order: [majority_vote(sem, masks, order) for sem, masks in zip(semantic, sam_masks, strict=True)]
        for order in MASK_ORDERS
    }
    seconds["automatic_masks"] = tick() - t0

    t0 = tick()
    if data.name == "dubai":
        detector = "trained CenterNet"
        boxes = [_instance_boxes(s, data.things[0]) for s in data.train]
        box_head, _ = train_box_detector(
            f_train.embedded(),
            boxes,
            steps=detector_steps,
            lr=5e-3,
            seed=seed,
            device=sam.device,
            progress=progress,
        )
        raw = detect_boxes(box_head, f_eval.embedded(), min_score=min(thresholds), max_detections=max_boxes)
        detections = [Detections(d.boxes, d.scores, np.full(len(d), data.things[0])) for d in raw]
    else:
        detector = "coco-ssd"
        ssd = CocoSSDDetector(min_score=min(thresholds))
        class_map = COCO_TO_VOC if data.name == "voc" else COCO_TO_CAMVID
        detections = [map_detections(ssd.detect(im), class_map) for im in eval_img]
    prompted = [
        PromptedImage(d, box_prompt_masks(prompts, im, d.boxes), im.shape[:2])
        for d, im in tqdm(
            list(zip(detections, eval_img, strict=True)), desc="box prompts", disable=not progress
        )
    ]
    seconds["detector"] = tick() - t0

    gts = [np.asarray(s.semantic) for s in eval_samples]
    sweep_args = (data.class_names, data.fill, data.ignore_index, data.background, thresholds)
    sweep = {
        "val": threshold_sweep(prompted[:n_val], gts[:n_val], *sweep_args),
        "test": threshold_sweep(prompted[n_val:], gts[n_val:], *sweep_args),
    }
    t_best = choose_threshold(sweep["val"])
    det_sam = [p.label_map(t_best, data.fill) for p in prompted]
    det_box = [p.label_map(t_best, data.fill, use_boxes=True) for p in prompted]
    scores = {
        "semantic": score(semantic, data.test),
        "semantic_sam": score(refined["sam"], data.test),
        "semantic_sam_largest_first": score(refined["largest_first"], data.test),
        "detector_sam": dict(score(det_sam[n_val:], data.test), threshold=t_best),
        "detector_boxes": score(det_box[n_val:], data.test),
        "detector_sam_all": score(det_sam, eval_samples),
        "detector_boxes_all": score(det_box, eval_samples),
    }
    outputs = {
        "semantic": semantic,
        "semantic_sam": refined["sam"],
        "semantic_sam_largest_first": refined["largest_first"],
        "detector_sam": det_sam[n_val:],
        "detector_boxes": det_box[n_val:],
    }
    return DatasetOutcome(scores, sweep, t_best, outputs, sam_masks, prompted[n_val:], detector, seconds)


# --------------------------------------------------------------------------------------- reporting

METHOD_LABELS: dict[str, str] = {
    "semantic": "semantic model (DPT-style stand-in)",
    "semantic_sam": "semantic + SAM masks (SAM's order)",
    "semantic_sam_largest_first": "semantic + SAM masks (largest first)",
    "detector_boxes": "detector boxes, filled (no SAM)",
    "detector_sam": "detector + SAM boxes (chosen threshold)",
    "detector_sam_all": "detector + SAM boxes, validation + test images",
}


def record_results(outcomes: Mapping[str, DatasetOutcome]) -> dict[str, dict[str, float]]:
    """The chapter's metrics JSON: ``<method>_<data set>`` -> metrics, plus the sweep as
    ``detector_sam_t<10 x threshold>_<data set>_<split>`` -> metrics."""
    out: dict[str, dict[str, float]] = {}
    for ds, outcome in outcomes.items():
        for method, scores in outcome.scores.items():
            out[f"{method}_{ds}"] = dict(scores)
        for split, sweep in outcome.sweep.items():
            for t, scores in sweep.items():
                out[f"detector_sam_t{round(100 * t)}_{ds}_{split}"] = dict(scores)
    return {k: {m: v for m, v in s.items() if np.isfinite(v)} for k, s in out.items()}


def scores_table(
    outcomes: Mapping[str, DatasetOutcome],
    metrics: Sequence[str] = ("miou_report", "iou_fg", "dice_fg", "miou"),
    methods: Sequence[str] = tuple(METHOD_LABELS),
) -> str:
    """A Markdown table: one row per (data set, method), one column per metric (3 decimals)."""
    lines = ["| data set | method | " + " | ".join(metrics) + " |", "|---|---|" + "---:|" * len(metrics)]
    for ds, outcome in outcomes.items():
        for method in methods:
            s = outcome.scores[method]
            cells = [f"{s[m]:.3f}" if m in s and np.isfinite(s[m]) else "–" for m in metrics]
            lines.append(f"| {ds} | {METHOD_LABELS.get(method, method)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def findings(outcomes: Mapping[str, DatasetOutcome], metric: str = "miou_report") -> list[dict[str, Any]]:
    """Whether the report's two findings hold on each data set, by ``metric`` on the test split:
    (1) SAM refinement beats the semantic model (the better mask order is not picked: both are given),
    (2) detector + SAM beats semantic + SAM (SAM's order)."""
    rows = []
    for ds, o in outcomes.items():
        s = {
            m: o.scores[m][metric]
            for m in ("semantic", "semantic_sam", "semantic_sam_largest_first", "detector_sam")
        }
        rows.append(
            {
                "dataset": ds,
                **s,
                "refine_gain": s["semantic_sam"] - s["semantic"],
                "refine_gain_largest_first": s["semantic_sam_largest_first"] - s["semantic"],
                "detector_gain": s["detector_sam"] - s["semantic_sam"],
            }
        )
    return rows


def findings_markdown(outcomes: Mapping[str, DatasetOutcome], metric: str = "miou_report") -> str:
    """The :func:`findings` as Markdown bullets, plus SAM's box masks against the filled boxes."""
    lines = []
    for r in findings(outcomes, metric):
        holds = lambda gain: "holds" if gain > 0 else "does not hold"  # noqa: E731
        lines.append(
            f"- **{r['dataset']}** — (1) SAM refinement > semantic model {holds(r['refine_gain'])}: "
            f"{r['semantic']:.3f} → {r['semantic_sam']:.3f} (SAM's order, {r['refine_gain']:+.3f}) / "
            f"{r['semantic_sam_largest_first']:.3f} (largest first, {r['refine_gain_largest_first']:+.3f}); "
            f"(2) detector + SAM > semantic + SAM {holds(r['detector_gain'])}: {r['detector_sam']:.3f} vs "
            f"{r['semantic_sam']:.3f} ({r['detector_gain']:+.3f})."
        )
    pairs = {
        ds: (o.scores["detector_sam_all"]["miou"], o.scores["detector_boxes_all"]["miou"])
        for ds, o in outcomes.items()
    }
    lines.append(
        "\nSAM's masks against the filled boxes they came from (dataset-level mIoU, validation + test "
        "images, chosen threshold): "
        + "; ".join(f"{ds} {a:.3f} vs {b:.3f} ({a - b:+.3f})" for ds, (a, b) in pairs.items())
        + "."
    )
    return "\n".join(lines)


def try_it_figure(
    outcome: DatasetOutcome, data: HybridData, index: int, threshold: float, largest_first: int
) -> Any:
    """Detector + SAM at ``threshold`` beside the majority vote in the chosen mask order (0 = SAM's,
    1 = largest first) and the ground truth, for test image ``index``."""
    from samlib.plots import label_panels

    order = MASK_ORDERS[int(largest_first)]
    sample = data.test[index]
    panels = {
        f"detector + SAM, t = {threshold:.1f}": outcome.prompted[index].label_map(threshold, data.fill),
        f"semantic + SAM, {order.replace('_', ' ')}": majority_vote(
            outcome.outputs["semantic"][index], outcome.sam_masks[index], order
        ),
        "ground truth": np.asarray(sample.semantic),
    }
    return label_panels(
        sample.image, panels, len(data.class_names), data.class_names, data.ignore_index,
        title=f"{data.name}: confidence threshold and mask order",
    )  # fmt: skip
