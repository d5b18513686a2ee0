"""PSLG-SAM: referring segmentation as grounding (sentence -> box) followed by prompted SAM.

Li et al., "Semantic Localization Guiding Segment Anything Model For Reference Remote Sensing Image
Segmentation" (arXiv 2506.10503) split referring segmentation in two stages:

1. a visual-grounding model turns (image, sentence) into a box -- any
   :class:`~samlib.experts.grounding.Grounder` (an oracle, the small trained stand-in of
   :mod:`samlib.experts.grounding`, or a user's own model);
2. SAM segments the box, helped by a clustering-based foreground point (CFPG,
   :func:`samlib.prompts.cluster_foreground_point`) and followed by GrabCut boundary refinement (MBO,
   :func:`samlib.postprocess.grabcut_refine`). Stage 2 trains nothing by default; a variant fine-tunes
   SAM's mask decoder on training masks with box prompts.

This module runs the two stages over a set of :class:`~samlib.referring.ReferringSample` and scores
every combination with the RRSIS metrics (:func:`samlib.metrics.referring_scores`). The method names are
those of the chapter's metrics file:

* ``filled_box`` -- the box itself as the mask (a trivial baseline);
* ``box_only`` -- SAM with the box;
* ``box_cfpg`` -- SAM with the box and the CFPG point;
* ``box_mbo`` -- ``box_only`` refined by MBO;
* ``pslg_sam`` -- ``box_cfpg`` refined by MBO (the paper's full train-free stage 2);
* ``pslg_sam_ft10`` / ``pslg_sam_ft100`` -- the full stage 2 with SAM's mask decoder fine-tuned on 10 %
  / 100 % of the training masks (``decoders`` argument of :func:`segment_samples`).

A user's grounding model plugs in through :class:`~samlib.experts.grounding.Grounder`: any object with
``ground(image, sentence) -> Grounding``; pass it in the ``grounders`` dict of :func:`segment_samples`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import Sam
from tqdm.auto import tqdm

from samlib.errors import DataNotFoundError, InvalidInputError
from samlib.experts.grounding import Grounder
from samlib.metrics import iou, referring_scores
from samlib.postprocess import grabcut_refine
from samlib.predict import PromptPredictor
from samlib.prompts import cluster_foreground_point
from samlib.referring import ReferringSample, size_group

__all__ = [
    "STAGE2_METHODS",
    "ReferredMasks",
    "SegmentationRun",
    "filled_box_mask",
    "fine_tune_decoder",
    "sam_with_mask_decoder",
    "segment_referred",
    "segment_samples",
    "try_it_figure",
]

STAGE2_METHODS: tuple[str, ...] = ("filled_box", "box_only", "box_cfpg", "box_mbo", "pslg_sam")
"""The train-free stage-2 variants, in the order of the chapter's table."""


@dataclass
class ReferredMasks:
    """Every stage-2 variant's mask for one (image, box).

    Attributes:
      box (np.ndarray): (4,) the grounder's box.
      point (np.ndarray): (2,) the CFPG point (x, y).
      masks (dict[str, np.ndarray]): method name -> (H, W) bool mask.
    """

    box: np.ndarray
    point: np.ndarray
    masks: dict[str, np.ndarray]


def filled_box_mask(box: Any, shape: tuple[int, ...]) -> np.ndarray:
    """(H, W) bool mask that is True inside the box (inclusive pixel bounds)."""
    b = np.asarray(box, np.float64)
    h, w = shape[:2]
    out = np.zeros((h, w), bool)
    x0, y0 = int(np.clip(round(b[0]), 0, w - 1)), int(np.clip(round(b[1]), 0, h - 1))
    x1, y1 = int(np.clip(round(b[2]), 0, w - 1)), int(np.clip(round(b[3]), 0, h - 1))
    out[y0 : y1 + 1, x0 : x1 + 1] = True
    return out


def sam_with_mask_decoder(sam: Sam, mask_decoder: torch.nn.Module) -> Sam:
    """A :class:`Sam` that shares ``sam``'s image and prompt encoders but uses ``mask_decoder``.

    It keeps ``sam``'s cache name, so a :class:`PromptPredictor` sharing the same
    :class:`~samlib.predict.EmbeddingCache` re-uses the (unchanged) image embeddings.
    """
    out = Sam(
        image_encoder=sam.image_encoder,
        prompt_encoder=sam.prompt_encoder,
        mask_decoder=mask_decoder,  # type: ignore[arg-type]
        pixel_mean=sam.pixel_mean.flatten().tolist(),
        pixel_std=sam.pixel_std.flatten().tolist(),
    ).to(sam.device)
    out.eval()
    if hasattr(sam, "samlib_name"):
        out.samlib_name = sam.samlib_name  # type: ignore[attr-defined]
    return out


def segment_referred(
    predictor: PromptPredictor,
    image: np.ndarray,
    box: np.ndarray,
    methods: Sequence[str] = STAGE2_METHODS,
    decoders: Mapping[str, PromptPredictor] | None = None,
    cfpg: Mapping[str, Any] | None = None,
    mbo: Mapping[str, Any] | None = None,
) -> ReferredMasks:
    """Stage 2 for one image and box: SAM with the box (and the CFPG point), MBO on top.

    Arguments:
      predictor (PromptPredictor): SAM; the image embedding is cached.
      image (np.ndarray): (H, W, 3) uint8 RGB.
      box (np.ndarray): (4,) (x0, y0, x1, y1) from a grounder.
      methods (Sequence[str]): names from :data:`STAGE2_METHODS`.
      decoders (Mapping[str, PromptPredictor] | None): extra full-pipeline variants (box + CFPG point +
        MBO) run with other mask decoders, e.g. {"pslg_sam_ft10": predictor of the fine-tuned SAM}.
      cfpg (Mapping[str, Any] | None): keyword arguments of :func:`samlib.prompts.cluster_foreground_point`.
      mbo (Mapping[str, Any] | None): keyword arguments of :func:`samlib.postprocess.grabcut_refine`.

    Returns:
      (ReferredMasks): the box, the point and one mask per method.
    """
    unknown = set(methods) - set(STAGE2_METHODS)
    if unknown:
        raise InvalidInputError(f"unknown stage-2 methods {sorted(unknown)}; choose from {STAGE2_METHODS}.")
    box = np.asarray(box, np.float64)
    cfpg, mbo = dict(cfpg or {}), dict(mbo or {})
    point = cluster_foreground_point(image, box, **cfpg).point
    masks: dict[str, np.ndarray] = {}
    if "filled_box" in methods:
        masks["filled_box"] = filled_box_mask(box, image.shape)

    def with_point(p: PromptPredictor) -> np.ndarray:
        p.set_image(image)
        return p.predict(
            point_coords=point[None], point_labels=np.ones(1), box=box, multimask_output=False
        ).best()

    if {"box_only", "box_mbo"} & set(methods):
        predictor.set_image(image)
        plain = predictor.predict(box=box, multimask_output=False).best()
        if "box_only" in methods:
            masks["box_only"] = plain
        if "box_mbo" in methods:
            masks["box_mbo"] = grabcut_refine(image, plain, box, **mbo).mask
    if {"box_cfpg", "pslg_sam"} & set(methods):
        pointed = with_point(predictor)
        if "box_cfpg" in methods:
            masks["box_cfpg"] = pointed
        if "pslg_sam" in methods:
            masks["pslg_sam"] = grabcut_refine(image, pointed, box, points=point[None], **mbo).mask
    for name, other in (decoders or {}).items():
        masks[name] = grabcut_refine(image, with_point(other), box, points=point[None], **mbo).mask
    return ReferredMasks(box, point, masks)


@dataclass
class SegmentationRun:
    """Stage-2 masks of every sample under every grounder.

    Attributes:
      samples (list[ReferringSample]): the queries.
      results (dict[str, list[ReferredMasks]]): grounder name -> one :class:`ReferredMasks` per sample.
    """

    samples: list[ReferringSample]
    results: dict[str, list[ReferredMasks]] = field(default_factory=dict)

    def ious(self, grounder: str, method: str) -> np.ndarray:
        """(N,) per-sample IoU of ``method`` under ``grounder``."""
        return np.array([iou(r.masks[method], s.mask) for r, s in zip(self.results[grounder], self.samples)])

    def scores(self, split: str) -> dict[str, dict[str, float]]:
        """Metrics for the chapter's file: {"<method>_<grounder>_<split>": referring_scores}."""
        out = {}
        for g, rows in self.results.items():
            for m in rows[0].masks:
                out[f"{m}_{g}_{split}"] = referring_scores(
                    [r.masks[m] for r in rows], [s.mask for s in self.samples]
                )
        return out

    def by_size(self, grounder: str) -> dict[str, dict[str, float]]:
        """mIoU per method and object-size group ("small", "medium", "large") under ``grounder``:
        {method: {"miou_small": ..., "n_small": ...}}."""
        groups = np.array([size_group(s.area_fraction) for s in self.samples])
        out: dict[str, dict[str, float]] = {}
        for m in self.results[grounder][0].masks:
            ious = self.ious(grounder, m)
            row = {}
            for g in ("small", "medium", "large"):
                sel = groups == g
                row[f"n_{g}"] = float(sel.sum())
                if sel.any():  # an empty group has no mIoU (the key is left out)
                    row[f"miou_{g}"] = float(ious[sel].mean())
            out[m] = row
        return out


def segment_samples(
    predictor: PromptPredictor,
    samples: Sequence[ReferringSample],
    grounders: Mapping[str, Grounder],
    methods: Sequence[str] = STAGE2_METHODS,
    decoders: Mapping[str, PromptPredictor] | None = None,
    cfpg: Mapping[str, Any] | None = None,
    mbo: Mapping[str, Any] | None = None,
    progress: bool = True,
) -> SegmentationRun:
    """Both stages for every sample and grounder: ``grounder.ground(image, sentence)`` then
    :func:`segment_referred`.

    Arguments:
      predictor (PromptPredictor): SAM.
      samples (Sequence[ReferringSample]): the queries.
      grounders (Mapping[str, Grounder]): name -> stage-1 model (any object with ``ground``).
      methods, decoders, cfpg, mbo: as :func:`segment_referred`.

    Returns:
      (SegmentationRun): the masks, ready for :meth:`SegmentationRun.scores`.
    """
    if not samples:
        raise InvalidInputError("segment_samples needs at least one sample.")
    run = SegmentationRun(list(samples))
    total = len(samples) * len(grounders)
    with tqdm(total=total, desc="PSLG-SAM", disable=not progress) as bar:
        for name, grounder in grounders.items():
            rows = []
            for s in samples:
                box = grounder.ground(s.image, s.sentence).box
                rows.append(segment_referred(predictor, s.image, box, methods, decoders, cfpg, mbo))
                bar.update(1)
            run.results[name] = rows
    return run


def fine_tune_decoder(
    sam: Sam,
    embedded: Any,
    samples_per_image: Sequence[Sequence[ReferringSample]] | None = None,
    boxes: Sequence[np.ndarray] | None = None,
    masks: Sequence[np.ndarray] | None = None,
    fraction: float = 1.0,
    steps: int = 150,
    seed: int = 0,
    **options: Any,
) -> Sam:
    """SAM with its mask decoder fine-tuned on training masks with box prompts (encoder frozen, cached
    embeddings), via :func:`samlib.decoders.train_sam_decoder_with_boxes`.

    Arguments:
      sam (Sam): the model.
      embedded (EmbeddedImages): embeddings of the training images.
      boxes (Sequence[np.ndarray]): (K_i, 4) boxes per image.
      masks (Sequence[np.ndarray]): (K_i, H, W) masks per image.
      fraction (float): share of the training images used (seeded choice; at least one).
      steps (int): optimisation steps.
      **options: further arguments of ``train_sam_decoder_with_boxes`` (batch_size, lr, jitter ...).

    Returns:
      (Sam): a SAM sharing ``sam``'s encoders, with the fine-tuned decoder.
    """
    from samlib.decoders import train_sam_decoder_with_boxes

    if boxes is None or masks is None:
        raise InvalidInputError("fine_tune_decoder needs boxes and masks per training image.")
    if not 0 < fraction <= 1:
        raise InvalidInputError(f"fraction must be in (0, 1], got {fraction}.")
    n = len(boxes)
    rng = np.random.default_rng(seed)
    keep = sorted(int(i) for i in rng.choice(n, size=max(1, round(fraction * n)), replace=False))
    sub = embedded.subset(keep) if hasattr(embedded, "subset") else _subset(embedded, keep)
    model, _ = train_sam_decoder_with_boxes(
        sam, sub, [boxes[i] for i in keep], [masks[i] for i in keep], steps=steps, seed=seed, **options
    )
    return sam_with_mask_decoder(sam, model.mask_decoder)


def _subset(embedded: Any, keep: list[int]) -> Any:
    return type(embedded)(
        embedded.embeddings[keep],
        [embedded.original_sizes[i] for i in keep],
        [embedded.input_sizes[i] for i in keep],
        embedded.img_size,
    )


# ------------------------------------------------------------------------------------- real data


def real_referring_samples(
    root: Any, limit: int | None = 4, per_image: int = 3, seed: int = 0
) -> dict[str, list[ReferringSample]]:
    """Generated sentences on the real sets with instance masks: {"spacenet": ..., "hrsid": ...,
    "dubai": ...} (a set whose folder is missing is left out). The images and masks are real, the
    sentences are generated from the true instances (size rank, position, ordinal, relation).

    Arguments:
      root (Any): the data root (``samlib.data_root()``), or None.
      limit (int | None): images per set (those with at least one instance), None = all.
      per_image (int): sentences per image.
      seed (int): which sentences are kept.
    """
    from samlib import data
    from samlib.referring import referring_samples_from_instances

    out: dict[str, list[ReferringSample]] = {}
    if root is None:
        return out
    sets = {
        "spacenet": ("buildings-spacenet-rio", "building", data.load_buildings_spacenet_rio),
        "hrsid": ("ships-hrsid", "ship", data.load_ships_hrsid),
        "dubai": ("aerial-dubai", "building", data.load_aerial_dubai_buildings),
    }
    for split, (folder, kind, loader) in sets.items():
        try:
            loaded = loader(root=root, limit=None if limit is None else 3 * limit)
        except DataNotFoundError:  # a missing folder skips that set
            continue
        chosen = [s for s in loaded if s.masks is not None and len(s.masks)][:limit]
        if chosen:
            out[split] = referring_samples_from_instances(
                [s.image for s in chosen],
                [s.masks for s in chosen if s.masks is not None],
                kind,
                folder,
                [s.name for s in chosen],
                seed=seed,
                per_image=per_image,
            )
    return out


# ------------------------------------------------------------------------------------- figures


def plot_samples(samples: Sequence[ReferringSample], n: int = 4, size: float = 3.2) -> Any:
    """A row of samples: image, the referred object's mask, the sentence as the title."""
    from samlib.plots import image_grid, overlay

    chosen = list(samples)[:n]
    panels = [lambda ax, s=s: overlay(s.image, s.mask, ax=ax) for s in chosen]
    titles = [_wrap(s.sentence) for s in chosen]
    return image_grid(panels, titles, ncols=len(chosen), size=size)


def _wrap(text: str, width: int = 32) -> str:
    import textwrap

    return "\n".join(textwrap.wrap(f'"{text}"', width))


def plot_cfpg(sample: ReferringSample, box: np.ndarray | None = None, **cfpg: Any) -> Any:
    """CFPG at work on one sample: the box crop, its two KMeans clusters, the watershed regions with
    their solidity, and the chosen point on the true mask."""
    import matplotlib.pyplot as plt

    from samlib.plots import show_image, show_points

    box = sample.box if box is None else np.asarray(box, np.float64)
    res = cluster_foreground_point(sample.image, box, **cfpg)
    x0, y0 = res.origin
    h, w = res.regions.shape
    crop = sample.image[y0 : y0 + h, x0 : x0 + w]
    truth = sample.mask[y0 : y0 + h, x0 : x0 + w]
    fig, axes = plt.subplots(1, 4, figsize=(12, 3.3))
    show_image(axes[0], crop, "box crop")
    axes[1].imshow(res.clusters, cmap="coolwarm", interpolation="nearest")
    axes[1].set_title("KMeans++ (k=2) clusters")
    axes[2].imshow(res.regions, cmap="tab20", interpolation="nearest")
    for r in range(1, len(res.area) + 1):
        ys, xs = np.nonzero(res.regions == r)
        if len(xs) >= 0.02 * h * w:
            axes[2].text(
                xs.mean(), ys.mean(), f"{res.solidity[r - 1]:.2f}", ha="center", va="center", fontsize=8
            )
    axes[2].set_title("watershed regions (solidity)")
    show_image(axes[3], crop, "chosen point on the true mask")
    axes[3].imshow(np.ma.masked_where(~truth, truth), alpha=0.4, cmap="Greens", vmin=0, vmax=1)
    show_points(axes[3], (res.point - [x0, y0])[None], np.ones(1))
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(_wrap(sample.sentence, 90), fontsize=10)
    fig.tight_layout()
    return fig


def plot_referred(
    sample: ReferringSample, referred: ReferredMasks, methods: Sequence[str] | None = None, size: float = 3.0
) -> Any:
    """One sample under every stage-2 method: the mask, the box and the CFPG point, IoU in the title."""
    from samlib.plots import image_grid, overlay

    methods = list(referred.masks) if methods is None else list(methods)
    panels: list[Any] = [lambda ax: overlay(sample.image, sample.mask, ax=ax)]
    titles = [_wrap(sample.sentence, 28)]
    for m in methods:
        panels.append(
            lambda ax, m=m: overlay(
                sample.image,
                referred.masks[m],
                points=referred.point[None],
                labels=np.ones(1),
                boxes=referred.box[None],
                ax=ax,
            )
        )
        titles.append(f"{m}: IoU {iou(referred.masks[m], sample.mask):.2f}")
    return image_grid(panels, titles, ncols=min(len(panels), 4), size=size)


def failure_cases(run: SegmentationRun, grounder: str, n: int = 3) -> dict[str, list[int]]:
    """Indices of the worst cases of two failure modes:

    * "convexity bias": the CFPG point falls outside the true mask (a compact background patch won),
      ordered by how much the point cost (box_only IoU - box_cfpg IoU);
    * "grounding drift": the grounder's box misses (box IoU < 0.5), ordered by box IoU.
    """
    from samlib.metrics import box_iou

    rows = run.results[grounder]
    outside = []
    for i, (r, s) in enumerate(zip(rows, run.samples)):
        x, y = (int(round(v)) for v in r.point)
        if not s.mask[min(y, s.mask.shape[0] - 1), min(x, s.mask.shape[1] - 1)]:
            outside.append(
                (
                    iou(r.masks.get("box_only", s.mask), s.mask)
                    - iou(r.masks.get("box_cfpg", s.mask), s.mask),
                    i,
                )
            )
    drift = [(float(box_iou(r.box, s.box)), i) for i, (r, s) in enumerate(zip(rows, run.samples))]
    return {
        "convexity bias": [i for _, i in sorted(outside, reverse=True)[:n]],
        "grounding drift": [i for v, i in sorted(drift) if v < 0.5][:n],
    }


def plot_failures(run: SegmentationRun, grounder: str, cases: Sequence[int], method: str = "pslg_sam") -> Any:
    """The true mask and box (green) beside ``method``'s mask with the grounder's box and point."""
    import matplotlib.pyplot as plt

    from samlib.plots import show_boxes, show_image, show_mask, show_points

    if not cases:
        return None
    fig, axes = plt.subplots(1, len(cases), figsize=(3.3 * len(cases), 3.6), squeeze=False)
    for ax, i in zip(axes[0], cases):
        s, r = run.samples[i], run.results[grounder][i]
        show_image(ax, s.image)
        show_mask(ax, s.mask, (0.1, 0.8, 0.2), 0.45)
        show_mask(ax, r.masks[method], (0.9, 0.2, 0.2), 0.45)
        show_boxes(ax, s.box[None], color=(0.1, 0.8, 0.2))
        show_boxes(ax, r.box[None], color=(0.9, 0.2, 0.2))
        show_points(ax, r.point[None], np.ones(1))
        ax.set_title(f"{_wrap(s.sentence, 30)}\nIoU {iou(r.masks[method], s.mask):.2f}", fontsize=9)
        ax.set_axis_off()
    fig.tight_layout()
    return fig


def try_it_figure(
    predictor: PromptPredictor,
    grounder: Grounder,
    samples: Sequence[ReferringSample],
    sentence: str,
    cfpg: Mapping[str, Any] | None = None,
    mbo: Mapping[str, Any] | None = None,
) -> Any:
    """The chapter's interactive figure: ground ``sentence`` (on the image of the sample it belongs to,
    else on the first sample's image), then box-only SAM and PSLG-SAM side by side."""
    import dataclasses

    if not samples:
        raise InvalidInputError("try_it_figure needs at least one sample.")
    base = next((s for s in samples if s.sentence == sentence), samples[0])
    box = grounder.ground(base.image, sentence).box
    referred = segment_referred(predictor, base.image, box, ("box_only", "pslg_sam"), cfpg=cfpg, mbo=mbo)
    return plot_referred(dataclasses.replace(base, sentence=sentence), referred, ["box_only", "pslg_sam"])
