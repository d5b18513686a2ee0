"""The embedded teaching SAM: Meta's architecture at small size, pretrained here on generated scenes.

Official SAM weights (ViT-B/L/H) cannot be downloaded in the environment this book is built in, so the
project ships its own small model built from exactly ``segment_anything``'s classes (ImageEncoderViT,
PromptEncoder, MaskDecoder, TwoWayTransformer, Sam). It is pretrained only on the generated ``source``
domain of :mod:`samlib.scenes`, never on the chapters' target domains, so it reproduces the situation the
papers start from: a promptable segmenter that works on "everyday" images and struggles on remote sensing.

Training follows the SAM paper's recipe at toy scale: points, boxes and mask prompts, iterative
correction clicks sampled from the error region, multimask output with a min-over-outputs loss for
ambiguous single clicks, a mask loss plus an MSE loss on the predicted IoU, AdamW with warmup and
cosine decay. The mask loss is BCE that up-weights object pixels early and relaxes to plain BCE, plus
dice: SAM's 20:1 focal + dice collapsed to all-background at this scale.

Command line::

    python -m samlib.teaching train --minutes 60 --seed 0 --out runs/teaching.pt
    python -m samlib.teaching eval --checkpoint runs/teaching.pt --json runs/eval.json
    python -m samlib.teaching export runs/teaching.pt   # fp16 copy into samlib/weights/
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer
from tqdm.auto import tqdm

from samlib.errors import CheckpointUnavailableError, InvalidInputError
from samlib.losses import mask_iou_logits
from samlib.metrics import iou
from samlib.prompts import box_from_mask, center_point, correction_point, jitter_box, sample_points
from samlib.scenes import Scene, generate_scene
from samlib.training import cosine_with_warmup

__all__ = [
    "TEACHING_CHECKPOINT",
    "TeachingConfig",
    "build_teaching_sam",
    "load_teaching_sam",
    "train",
    "evaluate",
]

TEACHING_CHECKPOINT = Path(__file__).resolve().parent / "weights" / "teaching_sam.pt"
"""The shipped checkpoint (fp16 state dict, config and training metadata)."""

TARGET_DOMAINS: tuple[str, ...] = ("mobility_a", "mobility_b", "buildings", "sar_ships", "planetary")
_EVAL_SEED_OFFSET = 900_000_000  # evaluation scenes never overlap training seeds (< 1e8)


@dataclass(frozen=True)
class TeachingConfig:
    """Architecture of the teaching model: SAM's structure, scaled down (about 1.2 M parameters).

    The defaults are the first training stage: 256 px input with patch 16 gives a 16 x 16 embedding
    and 64 x 64 low-res masks, cheap enough to train from scratch on a CPU. The shipped model is that
    one converted (:func:`transfer_weights`) to ``patch_size=8, window_size=16,
    encoder_global_attn=(1, 3)`` and fine-tuned (a 32 x 32 embedding and 128 x 128 masks, about three
    times the cost per training step), then deepened to ``encoder_depth=6, encoder_global_attn=(1, 3, 5)``
    (1.6 M parameters) and fine-tuned again. Every checkpoint stores its own config.
    """

    img_size: int = 256
    patch_size: int = 16
    encoder_dim: int = 128
    encoder_depth: int = 4
    encoder_heads: int = 4
    encoder_global_attn: tuple[int, ...] = ()
    window_size: int = 0
    encoder_mlp_ratio: float = 4.0
    prompt_dim: int = 64
    decoder_depth: int = 2
    decoder_mlp_dim: int = 256
    decoder_heads: int = 4
    mask_in_chans: int = 16
    iou_head_depth: int = 3
    iou_head_hidden: int = 64

    @property
    def embedding_size(self) -> int:
        return self.img_size // self.patch_size

    @classmethod
    def tiny(cls, img_size: int = 64, patch_size: int = 16) -> TeachingConfig:
        """A ~44 k-parameter model for tests and quick demos (random weights are the point)."""
        return cls(
            img_size=img_size,
            patch_size=patch_size,
            encoder_dim=32,
            encoder_depth=1,
            encoder_heads=2,
            encoder_mlp_ratio=2.0,
            prompt_dim=16,
            decoder_depth=1,
            decoder_mlp_dim=32,
            decoder_heads=2,
            mask_in_chans=4,
            iou_head_depth=1,
            iou_head_hidden=16,
        )


def build_teaching_sam(config: TeachingConfig | None = None) -> Sam:
    """A randomly initialised :class:`Sam` with the teaching architecture (Meta's classes)."""
    c = config or TeachingConfig()
    emb = c.embedding_size
    return Sam(
        image_encoder=ImageEncoderViT(
            img_size=c.img_size,
            patch_size=c.patch_size,
            embed_dim=c.encoder_dim,
            depth=c.encoder_depth,
            num_heads=c.encoder_heads,
            mlp_ratio=c.encoder_mlp_ratio,
            out_chans=c.prompt_dim,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=c.window_size,
            global_attn_indexes=c.encoder_global_attn,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=c.prompt_dim,
            image_embedding_size=(emb, emb),
            input_image_size=(c.img_size, c.img_size),
            mask_in_chans=c.mask_in_chans,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(
                depth=c.decoder_depth,
                embedding_dim=c.prompt_dim,
                mlp_dim=c.decoder_mlp_dim,
                num_heads=c.decoder_heads,
            ),
            transformer_dim=c.prompt_dim,
            iou_head_depth=c.iou_head_depth,
            iou_head_hidden_dim=c.iou_head_hidden,
        ),
    )


def load_teaching_sam(path: str | Path | None = None, device: str | torch.device | None = None) -> Sam:
    """Load the teaching model (the shipped checkpoint by default) in eval mode on ``device``."""
    ckpt_path = Path(path) if path is not None else TEACHING_CHECKPOINT
    if not ckpt_path.is_file():
        raise CheckpointUnavailableError(
            f"teaching checkpoint not found at {ckpt_path}. The shipped file is samlib/weights/"
            f"teaching_sam.pt; re-create it with `python -m samlib.teaching train --out runs/teaching.pt` "
            f"then `python -m samlib.teaching export runs/teaching.pt`."
        )
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise InvalidInputError(f"{ckpt_path} is not a teaching-SAM checkpoint (needs 'config' and 'model')")
    config = _config_from_dict(ckpt["config"])
    sam = build_teaching_sam(config)
    sam.load_state_dict({k: v.float() for k, v in ckpt["model"].items()})
    sam.samlib_name = f"teaching:{ckpt_path.name}"  # type: ignore[assignment]
    dev = torch.device(device) if device is not None else torch.device("cpu")
    return sam.to(dev).eval()


def _config_from_dict(d: dict[str, Any]) -> TeachingConfig:
    d = dict(d)
    d["encoder_global_attn"] = tuple(d.get("encoder_global_attn", ()))
    return TeachingConfig(**d)


# The last layer of each residual branch of an encoder block: zero them and the block is the identity.
_BRANCH_OUTPUTS = frozenset({"attn.proj.weight", "attn.proj.bias", "mlp.lin2.weight", "mlp.lin2.bias"})


def _resize_table(table: torch.Tensor, length: int) -> torch.Tensor:
    """Linearly resample a (L, C) relative-position table to (length, C)."""
    return F.interpolate(table.T[None], size=length, mode="linear", align_corners=True)[0].T.contiguous()


def transfer_weights(sam: Sam, source: Sam) -> Sam:
    """Copy ``source``'s weights into ``sam``, resizing what depends on the patch grid; returns ``sam``.

    This lets a finer-grid model (e.g. patch 8) start from a trained patch-16 one instead of from
    scratch, as when ViTs are fine-tuned at a new resolution. The patch kernel is sum-pooled (a patch-8
    token of an image sees what a patch-16 token sees of the image upsampled 2x), the absolute position
    grid is interpolated, and each relative-position table is stretched by the same factor, then
    cropped to the new block's attention span. ``sam`` may also be deeper than ``source``: its extra
    encoder blocks come after the copied ones and start as the identity (the output projections of their
    attention and MLP branches are zeroed), so the deeper model computes exactly what ``source`` did and
    training adds capacity from there. Everything else must match shape for shape.
    """
    old_p = source.image_encoder.patch_embed.proj.kernel_size[0]
    new_p = sam.image_encoder.patch_embed.proj.kernel_size[0]
    if old_p % new_p:
        raise InvalidInputError(
            f"cannot transfer patch {old_p} weights to patch {new_p}: {old_p} must be a multiple"
        )
    factor = old_p // new_p
    src = source.state_dict()
    old_depth = len(source.image_encoder.blocks)
    if len(sam.image_encoder.blocks) < old_depth:
        raise InvalidInputError(
            f"cannot transfer a {old_depth}-block encoder into a {len(sam.image_encoder.blocks)}-block one: "
            "the target may add blocks, not drop them"
        )
    out: dict[str, torch.Tensor] = {}
    for key, target in sam.state_dict().items():
        if key.startswith("image_encoder.blocks.") and int(key.split(".")[2]) >= old_depth:
            is_branch_output = key.split(".", 3)[3] in _BRANCH_OUTPUTS
            out[key] = torch.zeros_like(target) if is_branch_output else target
            continue
        if key not in src:
            raise InvalidInputError(
                f"cannot transfer weights: the source model has no {key} (a different depth?)"
            )
        value = src[key]
        if key == "image_encoder.patch_embed.proj.weight" and factor > 1:
            value = F.avg_pool2d(value, factor) * factor**2
        elif key == "image_encoder.pos_embed" and value.shape != target.shape:
            grid = F.interpolate(
                value.permute(0, 3, 1, 2), size=target.shape[1:3], mode="bicubic", align_corners=False
            )
            value = grid.permute(0, 2, 3, 1)
        elif ".rel_pos_" in key and value.shape != target.shape:
            stretched = _resize_table(value, factor * (value.shape[0] - 1) + 1)
            if stretched.shape[0] < target.shape[0]:
                stretched = _resize_table(value, target.shape[0])
            start = (stretched.shape[0] - target.shape[0]) // 2
            value = stretched[start : start + target.shape[0]]
        if value.shape != target.shape:
            raise InvalidInputError(
                f"cannot transfer {key}: shape {tuple(value.shape)} vs {tuple(target.shape)}; only the patch "
                "size, window size and global-attention blocks may differ between the two configs"
            )
        out[key] = value.to(target.dtype)
    sam.load_state_dict(out)
    return sam


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
        for _ in tqdm(range(pool_size), desc="scene pool", leave=False):
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

    Args:
        embedding: (1, C, h, w) image embedding.
        mask_input: (K, 1, 4h, 4w) low-res logits from a previous round, or None.
    Returns:
        low-res logits (K, 4, 4h, 4w) and predicted IoU (K, 4); output 0 is the single-mask output,
        1-3 the multimask outputs.
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
    config: TeachingConfig = field(default_factory=TeachingConfig)


@dataclass
class TrainStepResult:
    loss: torch.Tensor  # scalar, with graph
    iou: float  # mean IoU of the chosen outputs, a training-progress signal


def training_step(
    sam: Sam,
    scenes: Sequence[Scene],
    settings: TrainSettings,
    rng: np.random.Generator,
    balance: float,
) -> TrainStepResult:
    """Loss over one batch of scenes (not yet back-propagated: ``loss`` carries the graph)."""
    device = sam.pixel_mean.device
    emb = sam.image_encoder(_pixel_batch(sam, [s.image for s in scenes], device))
    low_size = emb.shape[-1] * 4
    losses, ious = [], []
    for b, scene in enumerate(scenes):
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
    return TrainStepResult(torch.stack(losses).mean(), float(np.mean(ious)))


def train(settings: TrainSettings, out: str | Path, resume: bool = True, device: str | None = None) -> Path:
    """Train the teaching model; writes/resumes a full checkpoint at ``out`` every few hundred steps."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if settings.threads:
        torch.set_num_threads(settings.threads)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    torch.manual_seed(settings.seed)
    sam = build_teaching_sam(settings.config)
    if settings.init_from and not (resume and out.is_file()):
        transfer_weights(sam, load_teaching_sam(settings.init_from))
    sam = sam.to(dev).train()
    opt = torch.optim.AdamW(sam.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    step, total, elapsed = 0, settings.steps, 0.0
    rng = np.random.default_rng(settings.seed)
    if resume and out.is_file():
        state = torch.load(out, map_location="cpu", weights_only=False)
        sam.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        step, total, elapsed = state["step"], state["total_steps"], state["elapsed_s"]
        rng = np.random.default_rng(settings.seed + 7919 * step)  # continue with fresh, seeded draws
        if settings.steps:
            total = settings.steps
        print(f"resumed from {out} at step {step}/{total}")
    pool = ScenePool(
        settings.config.img_size, settings.pool_size, settings.pool_refresh, settings.seed + 7919 * step
    )
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if dev.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    calibrate = total == 0
    if calibrate:
        total = 10**9
    bar = tqdm(initial=step, total=None if calibrate else total, desc="train teaching SAM")
    history: list[dict[str, float]] = []
    t0 = time.time() - elapsed
    mark = (step, elapsed)
    while step < total:
        for g in opt.param_groups:
            g["lr"] = settings.lr * cosine_with_warmup(step, total, settings.warmup_steps, floor=0.02)
        balance = max(0.0, 1 - step / settings.balance_decay_steps) if settings.balance_decay_steps else 0.0
        with autocast:
            stats = training_step(sam, pool.draw(settings.batch_images), settings, rng, balance)
        opt.zero_grad(set_to_none=True)
        stats.loss.backward()
        torch.nn.utils.clip_grad_norm_(sam.parameters(), 1.0)
        opt.step()
        step += 1
        history.append({"step": step, "loss": stats.loss.item(), "iou": stats.iou})
        bar.update(1)
        bar.set_postfix(loss=f"{stats.loss.item():.3f}", iou=f"{stats.iou:.3f}")
        if calibrate and (step == 20 or step % settings.checkpoint_every == 0):
            # Fit the step count to the time budget; re-estimated as the machine's load changes.
            now = time.time() - t0
            per_step = (now - mark[1]) / max(1, step - mark[0])
            total = max(step + 1, step + int((settings.minutes * 60 - now) / per_step))
            mark = (step, now)
            bar.total = total
        if step % settings.checkpoint_every == 0 or step == total:
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
    log = out.with_suffix(".log.jsonl")
    with log.open("a") as f:
        for h in history:
            f.write(json.dumps(h) + "\n")
    state = {
        "model": sam.state_dict(),
        "optimizer": opt.state_dict(),
        "step": step,
        "total_steps": total,
        "elapsed_s": elapsed,
        "config": asdict(settings.config),
        "settings": {k: v for k, v in asdict(settings).items() if k != "config"},
    }
    tmp = out.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, out)  # atomic: a crash never leaves a half-written checkpoint


def export(training_checkpoint: str | Path, dest: str | Path = TEACHING_CHECKPOINT) -> Path:
    """Write the fp16 inference checkpoint (config, weights, training metadata) shipped with samlib."""
    state = torch.load(training_checkpoint, map_location="cpu", weights_only=False)
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
    tmp = dest.with_suffix(".tmp")
    torch.save(ckpt, tmp)
    os.replace(tmp, dest)
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
    prev = torch.load(init, map_location="cpu", weights_only=False)
    if "meta" in prev:  # a shipped (exported) checkpoint
        earlier = prev["meta"].get("stages", [])
    else:
        earlier = _training_stages(prev) if "step" in prev else []
    return [*earlier, own]


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
    from samlib.predict import PromptPredictor

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


# --------------------------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m samlib.teaching", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="pretrain the teaching model on generated source scenes")
    tr.add_argument("--minutes", type=float, default=10.0)
    tr.add_argument("--steps", type=int, default=0, help="fixed step count (overrides --minutes)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", default="runs/teaching.pt")
    tr.add_argument("--threads", type=int, default=0)
    tr.add_argument("--batch-images", type=int, default=TrainSettings.batch_images)
    tr.add_argument("--lr", type=float, default=TrainSettings.lr)
    tr.add_argument("--warmup-steps", type=int, default=TrainSettings.warmup_steps)
    tr.add_argument("--init", default="", help="start from this teaching checkpoint (fine-tuning)")
    tr.add_argument("--depth", type=int, default=TeachingConfig.encoder_depth, help="encoder blocks")
    tr.add_argument("--patch-size", type=int, default=TeachingConfig.patch_size)
    tr.add_argument("--window-size", type=int, default=TeachingConfig.window_size)
    tr.add_argument(
        "--global-attn", type=int, nargs="*", default=[], help="encoder blocks with global attention"
    )
    tr.add_argument("--no-resume", action="store_true")
    tr.add_argument("--device", default=None)
    ev = sub.add_parser("eval", help="evaluate a checkpoint (default: the shipped one)")
    ev.add_argument("--checkpoint", default=None)
    ev.add_argument("--json", default=None)
    ev.add_argument("--n", type=int, default=200)
    ev.add_argument("--n-targets", type=int, default=50)
    ev.add_argument("--data-root", default=None)
    ev.add_argument(
        "--first-scene",
        type=int,
        default=0,
        help="start of the held-out scene range (another set: e.g. 1000)",
    )
    ex = sub.add_parser("export", help="write the fp16 shipped checkpoint from a training checkpoint")
    ex.add_argument("training_checkpoint")
    ex.add_argument("--dest", default=str(TEACHING_CHECKPOINT))
    args = parser.parse_args(argv)
    if args.cmd == "train":
        config = TeachingConfig(patch_size=args.patch_size, window_size=args.window_size,
                                encoder_depth=args.depth,
                                encoder_global_attn=tuple(args.global_attn))  # fmt: skip
        # A trained start does not need the early object-pixel weighting (balance_decay_steps=0).
        balance_steps = 0 if args.init else TrainSettings.balance_decay_steps
        settings = TrainSettings(seed=args.seed, steps=args.steps, minutes=args.minutes, threads=args.threads,
                                 batch_images=args.batch_images, lr=args.lr, warmup_steps=args.warmup_steps,
                                 init_from=args.init, config=config,
                                 balance_decay_steps=balance_steps)  # fmt: skip
        train(settings, args.out, resume=not args.no_resume, device=args.device)
    elif args.cmd == "eval":
        sam = load_teaching_sam(args.checkpoint)
        report = evaluate(sam, args.n, args.n_targets, args.data_root, args.first_scene)
        text = json.dumps(report, indent=2)
        print(text)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(text)
    else:
        print(export(args.training_checkpoint, args.dest))


if __name__ == "__main__":
    main()
