"""Knowledge distillation with SAM for planetary landform mapping (Julka & Granitzer, 2023).

The paper's recipe, in the order the chapter uses it:

1. **Prompt-mode study** (:func:`prompt_mode_study`): automatic mask generation (best-matching mask per
   object), a point at the object's centre, a box around it; IoU of each against the truth.
2. **Annotation by distillation** (:func:`pseudo_labels`): an expert draws boxes; SAM prompted with those
   boxes turns them into masks, the pseudo-labels.
3. **Domain decoder** (:class:`DomainDecoder`, :func:`train_domain_decoder`): SAM's image encoder is frozen
   and its embeddings cached (:func:`samlib.predict.embed_images`); three transposed-convolution layers
   upsample the embedding 8x to a sigmoid mask of the landform class, trained on the pseudo-labels only.
4. **Contrast** (:class:`PromptlessSamDecoder`): SAM's own mask decoder fine-tuned on the same labels and
   used *without prompts* at test time (the paper's failure case) — fine-tuned the usual way, with the
   boxes as prompts (:func:`train_sam_decoder_with_boxes`), and, as an ablation, fine-tuned without
   prompts too (:func:`train_sam_decoder`).
5. **Delta-N sweep** (:func:`n_sweep`, :func:`summarize_sweep`, :func:`plot_sweep`): train on N images,
   several seeds, score mIoU, micro F1, accuracy, precision and recall.

Geometry: both decoders predict logits on a square grid that covers SAM's *padded* square input
(``img_size`` x ``img_size``: 256 for the teaching model, 1024 for official SAM). Targets are mapped onto
that grid with :func:`masks_to_grid` and predictions back to each image with
:meth:`samlib.predict.EmbeddedImages.logits_to_original` (crop the valid region, resize), so the same
code serves 256 x 256 generated scenes, 900 x 900 HiRISE tiles, non-square images and official SAM's
64 x 64 embeddings unchanged.

For real data with boxes but no masks (mars-pits), :func:`object_scores` measures what boxes can
measure: the fraction of boxes a predicted mask covers (object recall) and the fraction of predicted
connected components that fall inside some box (object precision).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn

from samlib.errors import InvalidInputError
from samlib.losses import bce_dice_loss
from samlib.metrics import binary_scores
from samlib.predict import EmbeddedImages, PromptPredictor
from samlib.prompts import box_from_mask, center_point
from samlib.training import fit

__all__ = [
    "METHODS",
    "PAPER_TABLE1",
    "SWEEP_METRICS",
    "DomainDecoder",
    "PlanetarySet",
    "PromptStudy",
    "PromptlessSamDecoder",
    "SweepResult",
    "best_match_ious",
    "embedded_subset",
    "generated_set",
    "mars_pits_set",
    "masks_to_grid",
    "n_sweep",
    "object_scores",
    "plot_prompt_failures",
    "plot_rows",
    "plot_sweep",
    "predict_masks",
    "prompt_mode_study",
    "pseudo_labels",
    "segmentation_scores",
    "show_comparison",
    "summarize_sweep",
    "train_domain_decoder",
    "train_sam_decoder",
    "train_sam_decoder_with_boxes",
]

PAPER_TABLE1: dict[str, dict[str, float]] = {
    "mask_rcnn_405_images": {"f1": 0.811, "accuracy": 0.774, "precision": 0.952, "recall": 0.706},
    "domain_decoder_5_images": {"f1": 0.86, "accuracy": 0.96, "precision": 0.89, "recall": 0.93},
}
"""Julka & Granitzer (2023), Table 1: Mask-RCNN trained on 405 images vs the SAM-distilled domain decoder
trained on 5 images (their test set, their pixel metrics; quoted, not reproduced)."""


# ----------------------------------------------------------------------------------------------- data


@dataclass
class PlanetarySet:
    """Images with boxes, and the true landform mask where one exists.

    Attributes:
      images: (H, W, 3) uint8 RGB each (sizes may differ).
      boxes: (K, 4) float (x0, y0, x1, y1) pixel boxes per image (the "expert" annotation).
      truth: (H, W) bool union of the landform instances per image, or None (real data: boxes only).
      instances: (K, H, W) bool instance masks per image, or None.
      names: one name per image.
    """

    images: list[np.ndarray]
    boxes: list[np.ndarray]
    truth: list[np.ndarray] | None = None
    instances: list[np.ndarray] | None = None
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int]) -> PlanetarySet:
        idx = [int(i) for i in indices]
        return PlanetarySet(
            images=[self.images[i] for i in idx],
            boxes=[self.boxes[i] for i in idx],
            truth=None if self.truth is None else [self.truth[i] for i in idx],
            instances=None if self.instances is None else [self.instances[i] for i in idx],
            names=[self.names[i] for i in idx] if self.names else [],
        )


def generated_set(n: int, size: int = 256, seed: int = 0) -> PlanetarySet:
    """``n`` generated planetary scenes (seeds ``seed .. seed + n - 1``): pits with true masks and boxes.

    Scenes without any pit are skipped (the next seed is taken), so every image has at least one box.
    """
    from samlib.scenes import generate_scene

    if n < 1:
        raise InvalidInputError(f"n must be >= 1, got {n}.")
    images: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    truth: list[np.ndarray] = []
    instances: list[np.ndarray] = []
    names: list[str] = []
    s = seed
    while len(images) < n:
        scene = generate_scene("planetary", size, s)
        if len(scene.masks):
            images.append(scene.image)
            boxes.append(scene.boxes.astype(np.float64))
            instances.append(scene.masks)
            truth.append(np.asarray(scene.masks.any(axis=0), bool))
            names.append(f"planetary-{s}")
        s += 1
    return PlanetarySet(images, boxes, truth, instances, names)


def mars_pits_set(root: str | Path | None, split: str, limit: int | None = None) -> PlanetarySet | None:
    """The real HiRISE pits (boxes only, no masks) of ``split``, or None when ``root`` is None or absent.

    Images whose boxes were all degenerate (dropped by the loader) are skipped.
    """
    if root is None or not (Path(root) / "mars-pits").is_dir():
        return None
    from samlib.data import load_mars_pits

    samples = [
        s for s in load_mars_pits(root, split=split, limit=limit) if s.boxes is not None and len(s.boxes)
    ]
    return PlanetarySet(
        images=[s.image for s in samples],
        boxes=[np.asarray(s.boxes, dtype=np.float64) for s in samples],
        names=[s.name for s in samples],
    )


# ----------------------------------------------------------------------------------------------- metrics


def segmentation_scores(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> dict[str, float]:
    """The paper's pixel metrics, pooled over all images (micro).

    Returns:
      dict with "miou" (mean of the landform IoU and the background IoU), "iou" (landform only), "f1",
      "accuracy", "precision", "recall" (landform class).
    """
    fg = binary_scores(list(preds), list(gts), average="micro")
    bg = binary_scores([~np.asarray(p, bool) for p in preds], [~np.asarray(g, bool) for g in gts], "micro")
    return {
        "miou": 0.5 * (fg["iou"] + bg["iou"]),
        "iou": fg["iou"],
        "f1": fg["f1"],
        "accuracy": fg["accuracy"],
        "precision": fg["precision"],
        "recall": fg["recall"],
    }


def _box_slices(box: np.ndarray, shape: tuple[int, int]) -> tuple[slice, slice]:
    x0, y0, x1, y1 = (float(v) for v in box)
    h, w = shape
    c0, c1 = int(np.clip(np.floor(x0), 0, w)), int(np.clip(np.ceil(x1), 0, w))
    r0, r1 = int(np.clip(np.floor(y0), 0, h)), int(np.clip(np.ceil(y1), 0, h))
    return slice(r0, max(r1, r0 + 1)), slice(c0, max(c1, c0 + 1))


def object_scores(
    preds: Sequence[np.ndarray] | np.ndarray,
    boxes: Sequence[np.ndarray] | np.ndarray,
    cover: float = 0.2,
    inside: float = 0.5,
    min_area: int = 16,
) -> dict[str, float]:
    """Object-level scores of binary masks against boxes (no true masks needed), pooled over images.

    * object recall: the fraction of boxes whose area the prediction covers by at least ``cover``;
    * object precision: the fraction of predicted connected components (8-connected, at least
      ``min_area`` pixels) with at least ``inside`` of their pixels inside the union of the boxes.

    Empty denominators follow :mod:`samlib.metrics`: 1.0 when nothing was to be found and nothing was
    predicted, else 0.0.

    Arguments:
      preds: one (H, W) mask or a sequence of them; boxes: one (K, 4) array per image (x0, y0, x1, y1).

    Returns:
      dict with "object_recall", "object_precision", "object_f1", "n_boxes", "n_components".
    """
    if isinstance(preds, np.ndarray) and preds.ndim == 2:
        preds, boxes = [preds], [np.asarray(boxes)]
    if len(preds) != len(boxes):
        raise InvalidInputError(f"got {len(preds)} masks for {len(boxes)} box arrays.")
    hits = n_boxes = good = n_comp = 0
    for pred, bxs in zip(preds, boxes, strict=True):
        p = np.asarray(pred).astype(bool)
        if p.ndim != 2:
            raise InvalidInputError(f"masks must be (H, W), got shape {p.shape}.")
        b = np.asarray(bxs, dtype=np.float64).reshape(-1, 4)
        covered = np.zeros(p.shape, bool)
        for box in b:
            sl = _box_slices(box, p.shape)
            covered[sl] = True
            n_boxes += 1
            hits += int(p[sl].mean() >= cover)
        count, labels, stats, _ = cv2.connectedComponentsWithStats(p.astype(np.uint8), connectivity=8)
        for k in range(1, count):
            if stats[k, cv2.CC_STAT_AREA] < min_area:
                continue
            n_comp += 1
            good += int(covered[labels == k].mean() >= inside)
    recall = hits / n_boxes if n_boxes else (1.0 if n_comp == 0 else 0.0)
    precision = good / n_comp if n_comp else (1.0 if n_boxes == 0 else 0.0)
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return {
        "object_recall": float(recall),
        "object_precision": float(precision),
        "object_f1": float(f1),
        "n_boxes": float(n_boxes),
        "n_components": float(n_comp),
    }


def best_match_ious(candidates: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """For each target mask (K, H, W) the IoU of the best-matching candidate (M, H, W); 0 if M = 0."""
    t = np.asarray(targets, bool).reshape(len(targets), -1).astype(np.float32)
    if len(candidates) == 0:
        return np.zeros(len(t), np.float32)
    c = np.asarray(candidates, bool).reshape(len(candidates), -1).astype(np.float32)
    inter = t @ c.T
    union = t.sum(1)[:, None] + c.sum(1)[None] - inter
    return (inter / np.maximum(union, 1)).max(axis=1)


# ----------------------------------------------------------------------------------------------- prompts


@dataclass
class PromptStudy:
    """Per-object IoUs of the three prompt modes, and what automatic mode produced.

    Attributes:
      ious: {"auto" | "point" | "box": (total objects,) IoU per object}.
      auto_masks: per image, the (M, H, W) masks automatic generation produced.
      point_masks, box_masks: per image, the (K, H, W) mask chosen for each object's prompt.
      points: per image, the (K, 2) centre points used.
    """

    ious: dict[str, np.ndarray]
    auto_masks: list[np.ndarray]
    point_masks: list[np.ndarray]
    box_masks: list[np.ndarray]
    points: list[np.ndarray]

    def summary(self) -> dict[str, dict[str, float]]:
        """{mode: {"iou": mean IoU, "iou_std", "objects"}} plus masks per image for automatic mode."""
        out = {
            mode: {"iou": float(v.mean()), "iou_std": float(v.std()), "objects": float(len(v))}
            for mode, v in self.ious.items()
        }
        out["auto"]["masks_per_image"] = float(np.mean([len(m) for m in self.auto_masks]))
        return out


def prompt_mode_study(
    sam: Sam,
    images: Sequence[np.ndarray],
    instances: Sequence[np.ndarray],
    predictor: PromptPredictor | None = None,
    auto_kwargs: dict[str, Any] | None = None,
) -> PromptStudy:
    """Segment every instance three ways and score each against its true mask.

    * auto: :class:`segment_anything.SamAutomaticMaskGenerator` (``auto_kwargs``), then for each object
      the generated mask with the highest IoU (an oracle match; the best automatic mode can do);
    * point: one positive click at :func:`samlib.prompts.center_point`, multimask output, SAM's
      highest-scoring mask (SAM has to resolve the ambiguity itself, as a user without a mask would);
    * box: the object's tight box (:func:`samlib.prompts.box_from_mask`), single-mask output.
    """
    from segment_anything import SamAutomaticMaskGenerator

    predictor = predictor if predictor is not None else PromptPredictor(sam)
    generator = SamAutomaticMaskGenerator(sam, **(auto_kwargs or {}))
    ious: dict[str, list[np.ndarray]] = {"auto": [], "point": [], "box": []}
    autos, point_masks, box_masks, points = [], [], [], []
    for image, inst in zip(images, instances, strict=True):
        inst = np.asarray(inst, bool)
        with torch.no_grad():
            generated = generator.generate(image)
        auto = (
            np.stack([g["segmentation"] for g in generated]).astype(bool)
            if generated
            else np.zeros((0, *image.shape[:2]), bool)
        )
        autos.append(auto)
        ious["auto"].append(best_match_ious(auto, inst))
        predictor.set_image(image)
        pts = np.stack([center_point(m) for m in inst])
        pred = predictor.predict_batch(
            point_coords=pts[:, None], point_labels=np.ones((len(pts), 1), int), multimask_output=True
        )
        pm = pred.best()
        bxs = np.stack([box_from_mask(m) for m in inst])
        bm = predictor.predict_batch(boxes=bxs, multimask_output=False).masks[:, 0]
        ious["point"].append(np.array([_iou(a, b) for a, b in zip(pm, inst, strict=True)]))
        ious["box"].append(np.array([_iou(a, b) for a, b in zip(bm, inst, strict=True)]))
        point_masks.append(pm)
        box_masks.append(bm)
        points.append(pts)
    return PromptStudy(
        {k: np.concatenate(v).astype(np.float64) for k, v in ious.items()},
        autos,
        point_masks,
        box_masks,
        points,
    )


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.logical_and(a, b).sum()
    union = np.logical_or(a, b).sum()
    return float(inter / union) if union else 1.0


def pseudo_labels(
    predictor: PromptPredictor,
    images: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    instances: bool = False,
) -> list[np.ndarray]:
    """Annotation by distillation: SAM prompted with each image's boxes (single-mask output).

    Returns:
      per image, the union of the box masks, (H, W) bool (all False without boxes); with
      ``instances=True`` the (K, H, W) stack of one mask per box instead.
    """
    out: list[np.ndarray] = []
    for image, bxs in zip(images, boxes, strict=True):
        b = np.asarray(bxs, dtype=np.float64).reshape(-1, 4)
        if len(b) == 0:
            out.append(np.zeros((0, *image.shape[:2]) if instances else image.shape[:2], bool))
            continue
        predictor.set_image(image)
        masks = predictor.predict_batch(boxes=b, multimask_output=False).masks[:, 0]
        out.append(np.asarray(masks if instances else masks.any(axis=0), bool))
    return out


# ----------------------------------------------------------------------------------------------- decoders


class DomainDecoder(nn.Module):
    """Three transposed-convolution upsampling layers: embedding (B, C, h, w) -> logits (B, 1, 8h, 8w).

    Each layer doubles the resolution (kernel 4, stride 2, padding 1); the first two halve the channels
    and are followed by a channel LayerNorm and GELU. A sigmoid of the output is the landform mask.
    """

    def __init__(self, in_chans: int, hidden: int | None = None) -> None:
        super().__init__()
        c1 = hidden if hidden is not None else max(8, in_chans // 2)
        c2 = max(4, c1 // 2)
        self.in_chans = in_chans
        self.up1 = nn.ConvTranspose2d(in_chans, c1, 4, stride=2, padding=1)
        self.norm1 = nn.GroupNorm(1, c1)
        self.up2 = nn.ConvTranspose2d(c1, c2, 4, stride=2, padding=1)
        self.norm2 = nn.GroupNorm(1, c2)
        self.up3 = nn.ConvTranspose2d(c2, 1, 4, stride=2, padding=1)

    @property
    def scale(self) -> int:
        return 8

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        if embeddings.dim() != 4 or embeddings.shape[1] != self.in_chans:
            raise InvalidInputError(
                f"DomainDecoder expects embeddings (B, {self.in_chans}, h, w), got {tuple(embeddings.shape)}."
            )
        x = F.gelu(self.norm1(self.up1(embeddings)))
        x = F.gelu(self.norm2(self.up2(x)))
        return self.up3(x)


class PromptlessSamDecoder(nn.Module):
    """SAM's mask decoder (a trainable copy) run with no prompt at test time: no points, no box, the
    "no mask" dense embedding. The prompt encoder is frozen; only the mask decoder is trained.

    ``forward(embeddings)`` gives single-mask low-res logits (B, 1, 4h, 4w) on the padded square input's
    grid; :meth:`decode_boxes` runs the same decoder *with* box prompts (used to fine-tune it the way
    SAM's decoder is normally fine-tuned, before it is asked to work without them).
    """

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.prompt_encoder = copy.deepcopy(sam.prompt_encoder)
        self.mask_decoder = copy.deepcopy(sam.mask_decoder)
        for p in self.prompt_encoder.parameters():
            p.requires_grad_(False)
        self.in_chans = int(self.prompt_encoder.embed_dim)

    @property
    def scale(self) -> int:
        return 4

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        if embeddings.dim() != 4 or embeddings.shape[1] != self.in_chans:
            raise InvalidInputError(
                f"PromptlessSamDecoder expects (B, {self.in_chans}, h, w), got {tuple(embeddings.shape)}."
            )
        pe = self.prompt_encoder
        sparse = torch.empty((1, 0, pe.embed_dim), device=embeddings.device, dtype=embeddings.dtype)
        dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(1, -1, *embeddings.shape[-2:])
        image_pe = pe.pe_layer(tuple(embeddings.shape[-2:])).unsqueeze(0)
        # One prompt set (batch 1) against B images: MaskDecoder repeats the image batch once per prompt
        # (here once), and the two-way transformer's attention broadcasts the single token set over the
        # B images, so one call decodes the whole batch (equal to decoding each image alone).
        low, _ = self.mask_decoder(
            image_embeddings=embeddings,
            image_pe=image_pe,
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return low

    def decode_boxes(self, embedding: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Logits (K, 1, 4h, 4w) for K box prompts on one image.

        Arguments:
          embedding: (1, C, h, w); boxes: (K, 4) (x0, y0, x1, y1) in the resized input frame
            (``ResizeLongestSide.apply_boxes``), as SAM's prompt encoder expects.
        """
        pe = self.prompt_encoder
        sparse, dense = pe(points=None, boxes=boxes, masks=None)
        low, _ = self.mask_decoder(
            image_embeddings=embedding,
            image_pe=pe.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return low

    def decode_box_batch(self, embeddings: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
        """Logits (B, 1, 4h, 4w) for one box on each of B images, in one decoder pass.

        ``MaskDecoder.forward`` repeats one image for many prompts, so B images with one prompt each
        would need B calls; this runs the decoder's own steps (``MaskDecoder.predict_masks``, output
        token 0 as for ``multimask_output=False``) on the pairs directly. Equal to :meth:`decode_boxes`
        per image.

        Arguments:
          embeddings: (B, C, h, w); boxes: (B, 4) in the resized input frame.
        """
        pe, md = self.prompt_encoder, self.mask_decoder
        sparse, dense = pe(points=None, boxes=boxes, masks=None)  # (B, 2, C), (B, C, h, w)
        b = embeddings.shape[0]
        tokens = torch.cat([md.iou_token.weight, md.mask_tokens.weight], dim=0).unsqueeze(0).expand(b, -1, -1)
        tokens = torch.cat((tokens, sparse), dim=1)
        src = embeddings + dense
        pos = pe.get_dense_pe().expand(b, -1, -1, -1)
        _, c, h, w = src.shape
        hs, src = md.transformer(src, pos, tokens)
        up = md.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        hyper = md.output_hypernetworks_mlps[0](hs[:, 1, :])  # mask token 0: the single-mask output
        _, c2, h2, w2 = up.shape
        return (hyper.unsqueeze(1) @ up.reshape(b, c2, h2 * w2)).reshape(b, 1, h2, w2)


def _train_decoder(
    model: nn.Module,
    embedded: EmbeddedImages,
    masks: Sequence[np.ndarray],
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    device: torch.device | str | None,
    progress: bool,
    desc: str,
) -> list[float]:
    dev = torch.device(device) if device is not None else torch.device("cpu")
    model.to(dev).train()
    with torch.no_grad():
        grid = int(model(embedded.embeddings[:1].to(dev)).shape[-1])
    targets = masks_to_grid(masks, embedded, grid).to(dev)
    emb = embedded.embeddings.to(dev)

    def loss_fn(batch: np.ndarray) -> torch.Tensor:
        idx = torch.as_tensor(batch, device=dev)
        logits = model(emb[idx]).float()
        t = targets[idx]
        return bce_dice_loss(logits, t)

    torch.manual_seed(seed)
    history = fit(
        model.parameters(),
        loss_fn,
        n_items=len(embedded),
        steps=steps,
        batch_size=min(batch_size, len(embedded)),
        lr=lr,
        warmup=max(1, steps // 20),
        seed=seed,
        device=dev,
        desc=desc,
        progress=progress,
    )
    model.eval()
    return history


def train_domain_decoder(
    embedded: EmbeddedImages,
    masks: Sequence[np.ndarray],
    steps: int = 300,
    batch_size: int = 4,
    lr: float = 3e-3,
    seed: int = 0,
    hidden: int | None = None,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> tuple[DomainDecoder, list[float]]:
    """Train a fresh :class:`DomainDecoder` on cached embeddings and (pseudo-)label masks.

    Loss: BCE + Dice on the padded-square grid (:func:`masks_to_grid`); optimiser and schedule:
    :func:`samlib.training.fit`. Returns the decoder (eval mode) and the loss history.
    """
    torch.manual_seed(seed)
    model = DomainDecoder(int(embedded.embeddings.shape[1]), hidden)
    history = _train_decoder(
        model, embedded, masks, steps, batch_size, lr, seed, device, progress, "domain decoder"
    )
    return model, history


def train_sam_decoder(
    sam: Sam,
    embedded: EmbeddedImages,
    masks: Sequence[np.ndarray],
    steps: int = 300,
    batch_size: int = 4,
    lr: float = 3e-4,
    seed: int = 0,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> tuple[PromptlessSamDecoder, list[float]]:
    """Fine-tune a copy of SAM's mask decoder, prompt-less, on the same data and loss as the domain
    decoder. ``sam`` itself is not modified."""
    model = PromptlessSamDecoder(sam)
    history = _train_decoder(
        model, embedded, masks, steps, batch_size, lr, seed, device, progress, "SAM decoder"
    )
    return model, history


def train_sam_decoder_with_boxes(
    sam: Sam,
    embedded: EmbeddedImages,
    boxes: Sequence[np.ndarray],
    instance_masks: Sequence[np.ndarray],
    steps: int = 300,
    batch_size: int = 4,
    lr: float = 3e-4,
    seed: int = 0,
    jitter: float = 0.1,
    device: torch.device | str | None = None,
    progress: bool = False,
) -> tuple[PromptlessSamDecoder, list[float]]:
    """Fine-tune a copy of SAM's mask decoder the usual way — box prompt in, that object's mask out —
    on (box, pseudo-label instance) pairs, with SAM-style box jitter (:func:`samlib.prompts.jitter_box`).

    At test time the returned model is run like :class:`PromptlessSamDecoder`, without prompts: the
    paper's failure case, a decoder trained to follow prompts asked to segment a class on its own.

    Arguments:
      boxes: (K_i, 4) original-pixel boxes per image; instance_masks: (K_i, H, W) the matching masks.
    """
    from segment_anything.utils.transforms import ResizeLongestSide

    from samlib.prompts import jitter_box

    if len(boxes) != len(embedded) or len(instance_masks) != len(embedded):
        raise InvalidInputError("need one box array and one instance-mask stack per embedded image.")
    dev = torch.device(device) if device is not None else torch.device("cpu")
    model = PromptlessSamDecoder(sam).to(dev).train()
    transform = ResizeLongestSide(embedded.img_size)
    items = [(i, k) for i in range(len(embedded)) for k in range(len(boxes[i]))]
    if not items:
        raise InvalidInputError("no boxes to train on.")
    with torch.no_grad():
        grid = int(model(embedded.embeddings[:1].to(dev)).shape[-1])
    targets = {
        i: masks_to_grid(list(instance_masks[i]), embedded_subset(embedded, [i] * len(boxes[i])), grid).to(
            dev
        )
        for i in range(len(embedded))
        if len(boxes[i])
    }
    emb = embedded.embeddings.to(dev)
    rng = np.random.default_rng(seed)

    def loss_fn(batch: np.ndarray) -> torch.Tensor:
        image_idx, box_in, target = [], [], []
        for j in batch:
            i, k = items[int(j)]
            h, w = embedded.original_sizes[i]
            box = jitter_box(np.asarray(boxes[i][k], np.float64), rng, scale=jitter, image_shape=(h, w))
            box_in.append(transform.apply_boxes(box[None], (h, w))[0])
            image_idx.append(i)
            target.append(targets[i][k : k + 1])
        b = torch.as_tensor(np.stack(box_in), dtype=torch.float32, device=dev)
        x = model.decode_box_batch(emb[torch.as_tensor(image_idx, device=dev)], b).float()
        t = torch.cat(target)
        return bce_dice_loss(x, t)

    torch.manual_seed(seed)
    history = fit(
        model.parameters(),
        loss_fn,
        n_items=len(items),
        steps=steps,
        batch_size=min(batch_size, len(items)),
        lr=lr,
        warmup=max(1, steps // 20),
        seed=seed,
        device=dev,
        desc="SAM decoder (box prompts)",
        progress=progress,
    )
    model.eval()
    return model, history


def predict_masks(
    model: nn.Module,
    embedded: EmbeddedImages,
    threshold: float = 0.5,
    batch_size: int = 8,
    return_probs: bool = False,
) -> list[np.ndarray]:
    """Masks (or probabilities) at each image's original size from a decoder of cached embeddings.

    The decoder's square logits are mapped back with :meth:`EmbeddedImages.logits_to_original`.
    """
    dev = next(model.parameters()).device
    model.eval()
    out: list[np.ndarray] = []
    with torch.no_grad():
        for start in range(0, len(embedded), batch_size):
            logits = model(embedded.embeddings[start : start + batch_size].to(dev)).float().cpu()
            for j in range(logits.shape[0]):
                full = embedded.logits_to_original(logits[j : j + 1], start + j)[0, 0]
                prob = torch.sigmoid(full).numpy()
                out.append(prob if return_probs else prob > threshold)
    return out


# ----------------------------------------------------------------------------------------------- sweep


@dataclass
class SweepResult:
    """Records of a Delta-N sweep and the models trained at the first seed (for figures).

    Attributes:
      records: one dict per (method, n, seed) with the scores of :func:`segmentation_scores` (and
        :func:`object_scores` when test boxes were given).
      models: {(method, n): model trained with the first seed}.
      histories: {(method, n): loss per step of that model}.
      train_indices: {(n, seed): indices of the training images used}.
    """

    records: list[dict[str, Any]]
    models: dict[tuple[str, int], nn.Module]
    histories: dict[tuple[str, int], list[float]]
    train_indices: dict[tuple[int, int], list[int]]


METHODS: dict[str, str] = {
    "domain_decoder": "domain decoder",
    "sam_decoder_ft": "SAM decoder, fine-tuned with boxes, no prompt at test",
    "sam_decoder_ft_promptless": "SAM decoder, fine-tuned and tested without prompts",
}


def n_sweep(
    sam: Sam,
    train_embedded: EmbeddedImages,
    train_labels: Sequence[np.ndarray],
    test_embedded: EmbeddedImages,
    test_truth: Sequence[np.ndarray],
    n_values: Sequence[int],
    seeds: Sequence[int],
    steps: int = 300,
    methods: Sequence[str] = ("domain_decoder", "sam_decoder_ft"),
    method_n: dict[str, Sequence[int]] | None = None,
    method_seeds: dict[str, Sequence[int]] | None = None,
    test_boxes: Sequence[np.ndarray] | None = None,
    train_boxes: Sequence[np.ndarray] | None = None,
    train_instances: Sequence[np.ndarray] | None = None,
    domain_lr: float = 3e-3,
    sam_lr: float = 3e-4,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> SweepResult:
    """Train every method on N images (a seeded random draw from the training pool) for every seed.

    Arguments:
      train_labels: the (pseudo-)labels of the training pool, one (H, W) mask per image.
      test_truth: the masks to score against (true masks, or SAM-from-box references on real data).
      methods: keys of :data:`METHODS`: "domain_decoder", "sam_decoder_ft" (SAM's decoder fine-tuned
        with box prompts, tested without; needs ``train_boxes`` and ``train_instances``, the pool's
        boxes and their per-box pseudo-label masks) and "sam_decoder_ft_promptless" (trained and tested
        without prompts).
      method_n, method_seeds: optional per-method subsets of ``n_values`` and ``seeds``.
      test_boxes: when given, :func:`object_scores` are added to each record.
    """
    from tqdm.auto import tqdm

    for m in methods:
        if m not in METHODS:
            raise InvalidInputError(f"unknown method {m!r}; choose from {sorted(METHODS)}.")
    pool = len(train_embedded)
    if max(n_values) > pool:
        raise InvalidInputError(f"N = {max(n_values)} exceeds the training pool of {pool} images.")
    if "sam_decoder_ft" in methods and (train_boxes is None or train_instances is None):
        raise InvalidInputError("method 'sam_decoder_ft' needs train_boxes and train_instances.")
    jobs = [
        (m, n, s)
        for n in n_values
        for s in seeds
        for m in methods
        if n in (method_n or {}).get(m, n_values) and s in (method_seeds or {}).get(m, seeds)
    ]
    records: list[dict[str, Any]] = []
    models: dict[tuple[str, int], nn.Module] = {}
    histories: dict[tuple[str, int], list[float]] = {}
    indices: dict[tuple[int, int], list[int]] = {}
    for method, n, seed in tqdm(jobs, desc="Delta-N sweep", disable=not progress):
        if (n, seed) not in indices:
            indices[(n, seed)] = sorted(np.random.default_rng(1000 * seed + n).permutation(pool)[:n].tolist())
        idx = indices[(n, seed)]
        emb = embedded_subset(train_embedded, idx)
        labels = [train_labels[i] for i in idx]
        model: nn.Module
        t0 = time.perf_counter()
        if method == "domain_decoder":
            model, hist = train_domain_decoder(emb, labels, steps, batch_size, domain_lr, seed, device=device)
        elif method == "sam_decoder_ft":
            assert train_boxes is not None and train_instances is not None
            model, hist = train_sam_decoder_with_boxes(
                sam,
                emb,
                [train_boxes[i] for i in idx],
                [train_instances[i] for i in idx],
                steps,
                batch_size,
                sam_lr,
                seed,
                device=device,
            )
        else:
            model, hist = train_sam_decoder(sam, emb, labels, steps, batch_size, sam_lr, seed, device=device)
        train_s = time.perf_counter() - t0
        preds = predict_masks(model, test_embedded)
        rec: dict[str, Any] = {
            "method": method,
            "n": n,
            "seed": seed,
            **segmentation_scores(preds, test_truth),
        }
        rec["n_train_seconds"] = train_s
        if test_boxes is not None:
            rec.update(object_scores(preds, test_boxes))
        records.append(rec)
        if (method, n) not in models:
            models[(method, n)] = model
            histories[(method, n)] = hist
    return SweepResult(records, models, histories, indices)


SWEEP_METRICS: tuple[str, ...] = ("miou", "f1", "accuracy", "precision", "recall")


def summarize_sweep(
    records: Sequence[dict[str, Any]], suffix: str = "", metrics: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over seeds: ``{f"{method}_n{N}{suffix}": {metric, metric_std, ...}}``."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["method"], int(r["n"])), []).append(r)
    out: dict[str, dict[str, float]] = {}
    for (method, n), rs in groups.items():
        names = metrics or [k for k in rs[0] if k not in ("method", "n", "seed") and not k.startswith("n_")]
        entry: dict[str, float] = {}
        for k in names:
            vals = np.array([r[k] for r in rs], dtype=np.float64)
            entry[k] = float(vals.mean())
            entry[f"{k}_std"] = float(vals.std())
        entry["seeds"] = float(len(rs))
        out[f"{method}_n{n}{suffix}"] = entry
    return out


# ----------------------------------------------------------------------------------------------- figures


def plot_sweep(
    records: Sequence[dict[str, Any]],
    metrics: Sequence[str] = SWEEP_METRICS,
    title: str | None = None,
    paper: dict[str, float] | None = None,
) -> Any:
    """Metric vs N, one line per method (mean over seeds, band = min..max over seeds).

    ``paper``: optional {metric: value} drawn as a dotted reference at N = 5 (the paper's domain decoder).
    Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, method in enumerate(dict.fromkeys(r["method"] for r in records)):
            ns = sorted({int(r["n"]) for r in records if r["method"] == method})
            vals = [
                np.array([r[metric] for r in records if r["method"] == method and r["n"] == n]) for n in ns
            ]
            mean = np.array([v.mean() for v in vals])
            color = f"C{i}"
            ax.plot(ns, mean, "o-", color=color, label=METHODS.get(method, method))
            if any(len(v) > 1 for v in vals):
                ax.fill_between(ns, [v.min() for v in vals], [v.max() for v in vals], color=color, alpha=0.2)
        if paper and metric in paper:
            ax.plot([5], [paper[metric]], "k*", markersize=10, label="paper, 5 images")
        ax.set_xlabel("N training images")
        ax.set_title(metric)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    legend: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    labels, handles = list(legend), list(legend.values())
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(4, len(labels)), frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def show_comparison(
    image: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray | None]],
    boxes: np.ndarray | None = None,
    axes: Sequence[Any] | None = None,
    size: float = 3.0,
) -> Any:
    """The image with its boxes, then one overlay per (title, mask) panel (None: "not available").

    Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from samlib.plots import show_boxes, show_image, show_mask

    n = 1 + len(panels)
    if axes is None:
        fig, ax_arr = plt.subplots(1, n, figsize=(size * n, size), squeeze=False)
        axes = list(ax_arr[0])
    else:
        fig = axes[0].figure
    show_image(axes[0], image, "image + boxes")
    if boxes is not None:
        show_boxes(axes[0], boxes, color=(1.0, 0.9, 0.0))
    for ax, (title, mask) in zip(axes[1:], panels, strict=True):
        show_image(ax, image, title)
        if mask is None:
            ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes, color="w")
        else:
            show_mask(ax, np.asarray(mask, bool), (0.0, 0.8, 1.0), 0.5)
    fig.tight_layout()
    return fig


def plot_rows(
    images: Sequence[np.ndarray],
    rows: dict[str, Sequence[np.ndarray | None]],
    boxes: Sequence[np.ndarray] | None = None,
    size: float = 3.0,
) -> Any:
    """A grid with one row per ``{title: masks}`` entry and one column per image (masks overlaid).

    ``boxes``: when given, drawn on every panel of the first row. Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    from samlib.plots import show_boxes, show_image, show_mask

    n = len(images)
    fig, axes = plt.subplots(len(rows), n, figsize=(size * n, size * len(rows)), squeeze=False)
    for r, (title, masks) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            show_image(ax, images[c], title)
            if masks[c] is not None:
                show_mask(ax, np.asarray(masks[c], bool), (0.0, 0.45, 0.7), 0.5)
            if boxes is not None and r == 0:
                show_boxes(ax, boxes[c], color=(1.0, 0.9, 0.0))
    fig.tight_layout()
    return fig


def plot_prompt_failures(
    study: PromptStudy, images: Sequence[np.ndarray], instances: Sequence[np.ndarray]
) -> Any:
    """The prompt-mode study's typical failures on the object where the click fell furthest behind the
    box: all masks of automatic mode on that image, the click's mask, the box's mask, the truth."""
    from samlib.plots import image_grid, overlay

    k = int(np.argmax(study.ious["box"] - study.ious["point"]))
    offsets = np.cumsum([0] + [len(m) for m in instances])
    i = int(np.searchsorted(offsets, k, side="right") - 1)
    j = int(k - offsets[i])
    img, auto = images[i], study.auto_masks[i]
    box = box_from_mask(instances[i][j])
    return image_grid(
        [
            lambda ax: overlay(img, auto if len(auto) else None, ax=ax),
            lambda ax: overlay(
                img, study.point_masks[i][j], points=study.points[i][j][None], labels=np.ones(1, int), ax=ax
            ),
            lambda ax: overlay(img, study.box_masks[i][j], boxes=box, ax=ax),
            lambda ax: overlay(img, instances[i][j], ax=ax),
        ],
        [
            f"automatic: {len(auto)} masks",
            f"point: IoU {study.ious['point'][k]:.2f}",
            f"box: IoU {study.ious['box'][k]:.2f}",
            "truth",
        ],
        ncols=4,
        size=3.2,
    )
