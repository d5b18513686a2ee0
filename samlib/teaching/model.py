"""The teaching SAM's architecture and weights: config, builder, loader and weight transfer.

Official SAM weights (ViT-B/L/H) cannot be downloaded in the environment this book is built in, so the
project ships its own small model built from exactly ``segment_anything``'s classes (ImageEncoderViT,
PromptEncoder, MaskDecoder, TwoWayTransformer, Sam). This module is all that
``samlib.load_sam("teaching")`` imports; training lives in :mod:`samlib.teaching.train` and evaluation
in :mod:`samlib.teaching.evaluate`.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

from samlib.errors import CheckpointUnavailableError, InvalidInputError
from samlib.utils import check_finite_weights, resolve_device, torch_load_safe

__all__ = [
    "TEACHING_CHECKPOINT",
    "TeachingConfig",
    "build_teaching_sam",
    "config_from_dict",
    "load_teaching_sam",
    "read_checkpoint",
    "transfer_weights",
]

TEACHING_CHECKPOINT = Path(__file__).resolve().parent.parent / "weights" / "teaching_sam.pt"
"""The shipped checkpoint (fp16 state dict, config and training metadata)."""


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
    ckpt = read_checkpoint(ckpt_path)
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise InvalidInputError(f"{ckpt_path} is not a teaching-SAM checkpoint (needs 'config' and 'model')")
    config = config_from_dict(ckpt["config"], source=str(ckpt_path))
    weights = ckpt["model"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise InvalidInputError(f"{ckpt_path}: 'model' must be a state dict of tensors.")
    check_finite_weights(weights, str(ckpt_path))
    try:
        sam = build_teaching_sam(config)
    except (RuntimeError, ValueError, TypeError, ZeroDivisionError, AssertionError) as e:
        raise InvalidInputError(f"{ckpt_path}: its config {config} does not build a model ({e}).") from e
    try:
        sam.load_state_dict({k: v.float() for k, v in weights.items()})
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        raise InvalidInputError(
            f"The weights in {ckpt_path} do not fit the model its config describes: {first}"
        ) from e
    sam.samlib_name = f"teaching:{ckpt_path.name}"  # type: ignore[assignment]
    return sam.to(resolve_device(device, default=torch.device("cpu"))).eval()


def read_checkpoint(path: str | Path) -> Any:
    """``torch.load(path, weights_only=True)`` on CPU: tensors, numbers, strings and containers only.

    A file that needs anything else (a pickled object, which could run code on loading) is refused with
    :class:`~samlib.errors.InvalidInputError` instead of being executed.
    """
    return torch_load_safe(
        path,
        "a teaching checkpoint (tensors, numbers, strings, lists and dicts) from samlib's trainer/export",
    )


def config_from_dict(d: Any, source: str = "the checkpoint") -> TeachingConfig:
    """A :class:`TeachingConfig` from its ``asdict`` form (as stored in checkpoints), checked.

    Raises:
      InvalidInputError: ``d`` is not a dict, has unknown keys, or values of the wrong type / range.
    """
    if not isinstance(d, dict):
        raise InvalidInputError(f"{source}: 'config' must be a dict, got {type(d).__name__}.")
    fields = {f.name: f for f in dataclasses.fields(TeachingConfig)}
    unknown = sorted(str(k) for k in d if k not in fields)
    if unknown:
        raise InvalidInputError(f"{source}: unknown config key(s) {unknown}; known: {sorted(fields)}.")
    d = dict(d)
    attn = d.get("encoder_global_attn", ())
    if not isinstance(attn, (list, tuple)) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in attn
    ):
        raise InvalidInputError(
            f"{source}: encoder_global_attn must be a list of block indices, got {attn!r}."
        )
    d["encoder_global_attn"] = tuple(attn)
    for key, value in d.items():
        if key == "encoder_global_attn":
            continue
        kind = float if key == "encoder_mlp_ratio" else int
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok or (kind is int and value != int(value)) or value < (0 if key == "window_size" else 1):
            raise InvalidInputError(
                f"{source}: config {key} must be a positive {kind.__name__}, got {value!r}."
            )
        d[key] = kind(value)
    config = TeachingConfig(**d)
    if config.img_size % config.patch_size:
        raise InvalidInputError(
            f"{source}: img_size {config.img_size} is not a multiple of patch_size {config.patch_size}."
        )
    if config.encoder_dim % config.encoder_heads or config.prompt_dim % config.decoder_heads:
        raise InvalidInputError(f"{source}: the embedding widths must be multiples of the head counts.")
    if any(not 0 <= i < config.encoder_depth for i in config.encoder_global_attn):
        raise InvalidInputError(
            f"{source}: encoder_global_attn {config.encoder_global_attn} names blocks outside "
            f"0..{config.encoder_depth - 1}."
        )
    return config


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
