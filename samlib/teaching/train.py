"""Pretraining the teaching SAM on generated source scenes.

Training follows the SAM paper's recipe at toy scale: points, boxes and mask prompts, iterative
correction clicks sampled from the error region, multimask output with a min-over-outputs loss for
ambiguous single clicks, a mask loss plus an MSE loss on the predicted IoU, AdamW with warmup and
cosine decay. The mask loss is BCE that up-weights object pixels early and relaxes to plain BCE, plus
dice: SAM's 20:1 focal + dice collapsed to all-background at this scale.

The model is pretrained on the generated ``source`` domain of :mod:`samlib.scenes` and, with
``photo_ratio`` > 0, on real photographs with human masks (:mod:`samlib.teaching.photos`: BSDS500, COCO,
DAVIS, CamVid), never on the chapters' target domains or any remote-sensing set, so it reproduces the
situation the papers start from: a promptable segmenter that works on "everyday" images and struggles
on remote sensing. Command line: ``python -m
samlib.teaching train|eval|export`` (:mod:`samlib.teaching.__main__`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn
from tqdm.auto import tqdm

from samlib import distributed
from samlib.errors import InvalidInputError, SamlibError
from samlib.losses import mask_iou_logits
from samlib.prompts import box_from_mask, center_point, correction_point, jitter_box, sample_points
from samlib.scenes import Scene, generate_scene
from samlib.teaching.model import (
    TEACHING_CHECKPOINT,
    TeachingConfig,
    build_teaching_sam,
    load_teaching_sam,
    read_checkpoint,
    transfer_weights,
)
from samlib.teaching.photos import PHOTO_SETS, PhotoPool, training_photos
from samlib.training import cosine_with_warmup
from samlib.utils import resolve_device, torch_save_atomic

__all__ = [
    "PromptBatch",
    "TrainSettings",
    "TrainingDivergedError",
    "decode",
    "export",
    "sample_prompts",
    "train",
    "training_step",
]


class TrainingDivergedError(SamlibError):
    """The training loss became NaN or infinite: the run stops instead of saving broken weights."""


# --------------------------------------------------------------------------------------------- data


class ScenePool:
    """A rolling pool of generated source scenes: each step draws a batch and replaces a few scenes.

    Generating every training image fresh would cost more CPU than the model step itself; a pool that
    turns over keeps data fresh at a fraction of the cost, and prompts are re-sampled at every draw.
    """

    def __init__(self, size: int, pool_size: int, refresh: int, seed: int, domain: str = "source") -> None:
        self.size, self.refresh, self.domain = size, refresh, domain
        self.rng = np.random.default_rng(seed)
        self._next_seed = seed * 10_000_000 + 1
        self.scenes: list[Scene] = []
        bar = tqdm(
            range(pool_size), desc="scene pool", leave=False, disable=not distributed.is_main_process()
        )
        for _ in bar:
            self.scenes.append(self._fresh())

    def _fresh(self) -> Scene:
        while True:
            s = generate_scene(self.domain, self.size, self._next_seed)
            self._next_seed += 1
            if len(s.kinds):
                return s

    def draw(self, batch: int) -> list[Scene]:
        for i in self.rng.choice(len(self.scenes), self.refresh, replace=False):
            self.scenes[i] = self._fresh()
        return [self.scenes[i] for i in self.rng.choice(len(self.scenes), batch, replace=False)]


# --------------------------------------------------------------------------------------------- prompts

PROMPT_MODES = ("point", "points", "box", "box_point")


@dataclass
class PromptBatch:
    """Prompts for K instances of one image, in the model's input frame (pixels of the 256 image)."""

    coords: torch.Tensor | None  # (K, P, 2)
    labels: torch.Tensor | None  # (K, P)
    boxes: torch.Tensor | None  # (K, 4)
    multimask: bool


def sample_prompts(masks: np.ndarray, mode: str, rng: np.random.Generator) -> PromptBatch:
    """First-round prompts for ``masks`` (K, H, W) bool, all of one ``mode`` so they batch together."""
    k, h, w = masks.shape
    coords, labels, boxes = None, None, None
    if mode in ("box", "box_point"):
        boxes = torch.tensor(np.stack([jitter_box(box_from_mask(m), rng, 0.1, (h, w)) for m in masks]))
    if mode in ("point", "box_point"):
        pts = [sample_points(m, 1, rng) if rng.random() < 0.5 else center_point(m)[None] for m in masks]
        coords = torch.tensor(np.stack(pts), dtype=torch.float32)
        labels = torch.ones(k, 1)
    if mode == "points":
        n_pos, n_neg = int(rng.integers(1, 4)), int(rng.integers(0, 3))
        pos = [sample_points(m, n_pos, rng) for m in masks]
        neg = [_negative_points(m, n_neg, rng) for m in masks]
        coords = torch.tensor(
            np.stack([np.concatenate([p, q]) for p, q in zip(pos, neg)]), dtype=torch.float32
        )
        labels = torch.cat([torch.ones(k, n_pos), torch.zeros(k, n_neg)], 1)
    return PromptBatch(
        coords, labels, boxes.float() if boxes is not None else None, multimask=mode == "point"
    )


def _negative_points(mask: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` background points near the object: inside its box enlarged by half, outside the mask."""
    if n == 0:
        return np.zeros((0, 2), np.float32)
    x0, y0, x1, y1 = box_from_mask(mask)
    pad_x, pad_y = (x1 - x0) / 2 + 2, (y1 - y0) / 2 + 2
    h, w = mask.shape
    ring = np.zeros_like(mask)
    ring[
        max(0, int(y0 - pad_y)) : int(min(h, y1 + pad_y)), max(0, int(x0 - pad_x)) : int(min(w, x1 + pad_x))
    ] = True
    ring &= ~mask
    if not ring.any():
        ring = ~mask
    return sample_points(ring, n, rng)


# --------------------------------------------------------------------------------------------- model calls


def _pixel_batch(sam: Sam, images: Sequence[np.ndarray], device: torch.device) -> torch.Tensor:
    """(B, 3, S, S) normalised input for images that are already S x S."""
    x = torch.as_tensor(np.stack(images), device=device).permute(0, 3, 1, 2).float()
    return (x - sam.pixel_mean) / sam.pixel_std


def decode(
    sam: Sam,
    embedding: torch.Tensor,
    prompts: PromptBatch,
    mask_input: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """All four decoder outputs for one image's K prompts.

    Arguments:
      embedding (torch.Tensor): (1, C, h, w) image embedding.
      prompts (PromptBatch): K prompts for that image.
      mask_input (torch.Tensor | None): (K, 1, 4h, 4w) low-res logits from a previous round.

    Returns:
      (tuple[torch.Tensor, torch.Tensor]): low-res logits (K, 4, 4h, 4w) and predicted IoU (K, 4);
        output 0 is the single-mask output, 1-3 the multimask outputs.
    """
    dev = embedding.device
    points = None
    if prompts.coords is not None and prompts.labels is not None:
        points = (prompts.coords.to(dev), prompts.labels.to(dev))
    boxes = prompts.boxes.to(dev) if prompts.boxes is not None else None
    sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=mask_input)
    return sam.mask_decoder.predict_masks(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
    )


def _add_correction_clicks(
    prompts: PromptBatch, pred: np.ndarray, gt: np.ndarray, rng: np.random.Generator
) -> PromptBatch:
    """Append one correction click per prompt, sampled from its error region (SAM's iterative training)."""
    clicks = [
        correction_point(p, g, rng) if (p != g).any() else (center_point(g), 1) for p, g in zip(pred, gt)
    ]
    new_xy = torch.tensor(np.stack([c[0] for c in clicks]), dtype=torch.float32)[:, None]
    new_lab = torch.tensor([float(c[1]) for c in clicks])[:, None]
    coords = new_xy if prompts.coords is None else torch.cat([prompts.coords, new_xy], 1)
    labels = new_lab if prompts.labels is None else torch.cat([prompts.labels, new_lab], 1)
    return PromptBatch(coords, labels, prompts.boxes, multimask=False)


def _upsample(sam: Sam, low: torch.Tensor) -> torch.Tensor:
    size = sam.image_encoder.img_size
    return F.interpolate(low, (size, size), mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------------------------- losses


def _mask_loss(logits: torch.Tensor, target: torch.Tensor, balance: float) -> torch.Tensor:
    """Per-mask class-balanced BCE + dice; logits and target (..., H, W), target in [0, 1].

    With ``balance`` = 1 object pixels get the weight that gives them the same total as the
    background (capped at 30x); ``balance`` = 0 is plain BCE. Training anneals 1 -> 0: at the start
    the balance keeps the model from the all-background solution, later plain BCE sharpens boundaries.
    """
    n_pos = target.sum((-2, -1), keepdim=True)
    n_neg = target[..., :1, :1].new_tensor(target.shape[-1] * target.shape[-2]) - n_pos
    pos_weight = 1 + balance * ((n_neg / n_pos.clamp(min=1)).clamp(1, 30) - 1)
    w = 1 + (pos_weight - 1) * target
    bce = (F.binary_cross_entropy_with_logits(logits, target, reduction="none") * w).sum((-2, -1))
    bce = bce / w.sum((-2, -1))
    p = torch.sigmoid(logits)
    inter = (p * target).sum((-2, -1))
    dice = 1 - (2 * inter + 1) / (p.sum((-2, -1)) + target.sum((-2, -1)) + 1)
    return bce + dice


# --------------------------------------------------------------------------------------------- training


@dataclass
class TrainSettings:
    """Training hyper-parameters (all recorded in the checkpoint)."""

    seed: int = 0
    steps: int = 0  # 0: derived from ``minutes`` after a short speed calibration
    minutes: float = 10.0
    batch_images: int = 8
    prompts_per_image: int = 8
    correction_rounds: int = 1
    lr: float = 8e-4
    weight_decay: float = 0.05
    warmup_steps: int = 250
    balance_decay_steps: int = 1500
    pool_size: int = 768
    pool_refresh: int = 3
    checkpoint_every: int = 200
    threads: int = 0
    init_from: str = ""  # a teaching checkpoint to start from (its patch grid is resized to ``config``'s)
    photo_ratio: float = 0.0  # share of each batch taken from real photos (samlib.teaching.photos)
    data_root: str = ""  # where natural/ and camvid/ are ("" = samlib.data.data_root())
    photo_pool_size: int = 256
    photo_refresh: int = 2
    photo_split_seed: int = 0  # the held-out split that training must not see (same as the eval's)
    config: TeachingConfig = field(default_factory=TeachingConfig)


@dataclass
class TrainStepResult:
    loss: torch.Tensor  # scalar, with graph: the mean of the batch's loss terms
    iou: float  # mean IoU of the chosen outputs, a training-progress signal
    loss_sum: torch.Tensor | None = None  # scalar, with graph: the sum of the n_terms loss terms
    n_terms: int = 1  # one per image and correction round
    iou_sum: float | None = None

    def __post_init__(self) -> None:
        if self.loss_sum is None:
            self.loss_sum = self.loss * self.n_terms
        if self.iou_sum is None:
            self.iou_sum = self.iou * self.n_terms


def training_step(
    sam: Sam,
    scenes: Sequence[Scene],
    settings: TrainSettings,
    rng: np.random.Generator | Sequence[np.random.Generator],
    balance: float,
) -> TrainStepResult:
    """Loss over one batch of scenes (not yet back-propagated: ``loss`` carries the graph).

    ``rng`` is one generator shared by the batch, or one per scene: :func:`train` gives every image of
    the global batch its own seeded generator, so an image's prompts do not depend on which other
    images (or which rank) share its step.
    """
    device = sam.pixel_mean.device
    rngs = [rng] * len(scenes) if isinstance(rng, np.random.Generator) else list(rng)
    emb = sam.image_encoder(_pixel_batch(sam, [s.image for s in scenes], device))
    low_size = emb.shape[-1] * 4
    losses, ious = [], []
    for b, (scene, rng) in enumerate(zip(scenes, rngs)):
        idx = rng.choice(
            len(scene.kinds),
            settings.prompts_per_image,
            replace=len(scene.kinds) < settings.prompts_per_image,
        )
        gt_full = scene.masks[idx]
        gt_low = F.interpolate(
            torch.as_tensor(gt_full[:, None], dtype=torch.float32), (low_size, low_size), mode="area"
        ).to(device)
        prompts = sample_prompts(gt_full, PROMPT_MODES[int(rng.integers(0, len(PROMPT_MODES)))], rng)
        mask_input = None
        rounds = 1 + int(rng.integers(0, settings.correction_rounds + 1))
        for r in range(rounds):
            low, iou_pred = decode(sam, emb[b : b + 1], prompts, mask_input)
            if prompts.multimask:
                outs, ious_p = low[:, 1:], iou_pred[:, 1:]
            else:
                outs, ious_p = low[:, :1], iou_pred[:, :1]
            per_out = _mask_loss(outs, gt_low.expand_as(outs), balance)  # (K, M)
            best = per_out.argmin(1)
            true_iou = mask_iou_logits(outs.detach(), gt_low)
            losses.append(per_out.gather(1, best[:, None]).mean() + F.mse_loss(ious_p, true_iou))
            chosen = outs[torch.arange(len(idx)), best][:, None]
            ious.append(true_iou.gather(1, best[:, None]).mean().item())
            if r + 1 < rounds:
                pred_full = (_upsample(sam, chosen.detach()) > 0)[:, 0].cpu().numpy()
                prompts = _add_correction_clicks(prompts, pred_full, gt_full, rng)
                mask_input = chosen.detach()
    total = torch.stack(losses).sum()
    return TrainStepResult(total / len(losses), float(np.mean(ious)), total, len(losses), float(np.sum(ious)))


class _Step(nn.Module):
    """One training step's forward as a module, so DistributedDataParallel can wrap it.

    DDP prepares its gradient averaging in ``forward``; the teaching step calls SAM's parts directly,
    so the wrapped module's forward is the whole step. Returns the loss sum and the per-step stats.
    """

    def __init__(self, sam: Sam) -> None:
        super().__init__()
        self.sam = sam

    def forward(self, scenes: Sequence[Scene], settings: TrainSettings, rngs: Sequence[np.random.Generator],
                balance: float) -> tuple[torch.Tensor, int, float]:  # fmt: skip
        r = training_step(self.sam, scenes, settings, rngs, balance)
        assert r.loss_sum is not None and r.iou_sum is not None  # set by __post_init__
        return r.loss_sum, r.n_terms, r.iou_sum


def train(settings: TrainSettings, out: str | Path, resume: bool = True, device: str | None = None) -> Path:
    """Train the teaching model; writes/resumes a full checkpoint at ``out`` every few hundred steps.

    Under ``torchrun --nproc_per_node=N`` (:mod:`samlib.distributed`) every rank builds the same scene
    pool and draws the same global batch of ``batch_images``, trains on its share of it with DDP, and
    rank 0 alone writes the checkpoint and log; the loss history equals the single-process run's.
    """
    with distributed.session():
        return _train(settings, Path(out), resume, device)


def _train(settings: TrainSettings, out: Path, resume: bool, device: str | None) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    dev = distributed.rank_device(resolve_device(device))
    world = distributed.world_size()
    main = distributed.is_main_process()
    if settings.batch_images < world:
        raise InvalidInputError(f"batch_images ({settings.batch_images}) must be >= the {world} processes.")
    torch.manual_seed(settings.seed)
    sam = build_teaching_sam(settings.config)
    if settings.init_from and not (resume and out.is_file()):
        transfer_weights(sam, load_teaching_sam(settings.init_from))
    sam = sam.to(dev).train()
    opt = torch.optim.AdamW(sam.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    step, total, elapsed = 0, settings.steps, 0.0
    if resume and out.is_file():
        state = read_checkpoint(out)
        sam.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, total, elapsed = state["step"], state["total_steps"], state["elapsed_s"]
        if settings.steps:
            total = settings.steps
        if main:
            print(f"resumed from {out} at step {step}/{total}")
    model = distributed.wrap(_Step(sam))  # the step itself when alone
    if not 0.0 <= settings.photo_ratio <= 1.0:
        raise InvalidInputError(f"photo_ratio must be in [0, 1], got {settings.photo_ratio}")
    n_photos = round(settings.batch_images * settings.photo_ratio)
    pool = ScenePool(
        settings.config.img_size, settings.pool_size, settings.pool_refresh, settings.seed + 7919 * step
    )
    photos = None
    if n_photos:
        items = training_photos(settings.data_root or None, PHOTO_SETS, settings.photo_split_seed)
        photos = PhotoPool(items, settings.config.img_size, settings.photo_pool_size, settings.photo_refresh,
                           settings.seed + 7919 * step + 1)  # fmt: skip
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if dev.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    calibrate = total == 0
    if calibrate:
        total = 10**9
    bar = tqdm(initial=step, total=None if calibrate else total, desc="train teaching SAM", disable=not main)
    history: list[dict[str, float]] = []
    t0 = time.time() - elapsed
    mark = (step, elapsed)
    while step < total:
        for g in opt.param_groups:
            g["lr"] = settings.lr * cosine_with_warmup(step, total, settings.warmup_steps, floor=0.02)
        balance = max(0.0, 1 - step / settings.balance_decay_steps) if settings.balance_decay_steps else 0.0
        batch = pool.draw(settings.batch_images - n_photos)
        if photos is not None:
            batch += photos.draw(n_photos)
        # One seeded generator per image of the global batch: its prompts are the same on any rank.
        rngs = [np.random.default_rng([settings.seed, step, b]) for b in range(len(batch))]
        mine = distributed.shard(range(len(batch)))
        with autocast:
            loss_sum, n_terms, iou_sum = model(
                [batch[b] for b in mine], settings, [rngs[b] for b in mine], balance
            )
        # The mean over the global batch's terms: DDP averages gradients over ranks, hence the world factor.
        loss_value, n_global, iou_value = distributed.all_reduce_sum([loss_sum.item(), n_terms, iou_sum])
        loss_value, iou_value = loss_value / n_global, iou_value / n_global
        loss = loss_sum * (world / n_global)
        if not np.isfinite(loss_value):
            raise TrainingDivergedError(
                f"the training loss became {loss_value} at step {step + 1}; the last good state is "
                f"in {out} (saved every {settings.checkpoint_every} steps). Lower --lr or lengthen the "
                "warmup and resume."
            )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(sam.parameters(), 1.0)
        opt.step()
        step += 1
        history.append({"step": step, "loss": loss_value, "iou": iou_value})
        bar.update(1)
        bar.set_postfix(loss=f"{loss_value:.3f}", iou=f"{iou_value:.3f}")
        if calibrate and (step == 20 or step % settings.checkpoint_every == 0):
            # Fit the step count to the time budget; re-estimated as the machine's load changes.
            now = time.time() - t0
            per_step = (now - mark[1]) / max(1, step - mark[0])
            total = distributed.broadcast_int(
                max(step + 1, step + int((settings.minutes * 60 - now) / per_step))
            )
            mark = (step, now)
            bar.total = total
        if main and (step % settings.checkpoint_every == 0 or step == total):
            _save_training_state(out, sam, opt, step, total, time.time() - t0, settings, history)
            history = []
    bar.close()
    return out


def _save_training_state(
    out: Path,
    sam: Sam,
    opt: torch.optim.Optimizer,
    step: int,
    total: int,
    elapsed: float,
    settings: TrainSettings,
    history: list[dict[str, float]],
) -> None:
    state = {
        "model": sam.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "total_steps": total,
        "elapsed_s": elapsed,
        "config": asdict(settings.config),
        "settings": {k: v for k, v in asdict(settings).items() if k != "config"},
    }
    torch_save_atomic(state, out)  # a crash never leaves a half-written checkpoint
    # Only now: logged steps were saved, so a kill before the replace cannot log steps that get redone.
    with out.with_suffix(".log.jsonl").open("a") as f:
        for h in history:
            f.write(json.dumps(h) + "\n")


def export(training_checkpoint: str | Path, dest: str | Path = TEACHING_CHECKPOINT) -> Path:
    """Write the fp16 inference checkpoint (config, weights, training metadata) shipped with samlib."""
    state = read_checkpoint(training_checkpoint)
    stages = _training_stages(state)
    meta = {
        "step": state["step"],
        "elapsed_s": state["elapsed_s"],
        "settings": state["settings"],
        "stages": stages,
        "total_steps": sum(s["step"] for s in stages),
        "total_elapsed_s": sum(s["elapsed_s"] for s in stages),
        "torch": str(torch.__version__),
    }
    ckpt = {
        "config": state["config"],
        "model": {k: v.half() for k, v in state["model"].items()},
        "meta": meta,
    }
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    torch_save_atomic(ckpt, dest)
    return dest


def _training_stages(state: dict[str, Any]) -> list[dict[str, Any]]:
    """The training runs behind a checkpoint, oldest first: its own, after those of its ``init_from``.

    An ``init_from`` file that is no longer there ends the chain (its stage is then not listed).
    """
    own = {"step": state["step"], "elapsed_s": state["elapsed_s"], "config": state["config"],
           "settings": state["settings"]}  # fmt: skip
    init = state["settings"].get("init_from")
    if not init or not Path(init).is_file():
        return [own]
    prev = read_checkpoint(init)
    if "meta" in prev:  # a shipped (exported) checkpoint
        earlier = prev["meta"].get("stages", [])
    else:
        earlier = _training_stages(prev) if "step" in prev else []
    return [*earlier, own]
