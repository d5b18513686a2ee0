"""Losses for training SAM's mask decoder (and adapters) on binary masks.

All functions take raw logits and a target of the same shape, (B, 1, H, W) or (B, H, W) (a (B, H, W)
target with (B, 1, H, W) logits is also accepted). More generally any (B, C, ...) shape works: Dice is
computed per (sample, channel) over the remaining dimensions, as MONAI does.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss as _tv_sigmoid_focal_loss

from samlib.errors import InvalidInputError

__all__ = ["bce_dice_loss", "dice_focal_loss", "dice_loss", "mask_iou_logits", "sigmoid_focal_loss"]


def _prepare(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Check shapes and target values; return (logits, float target) as (B, C, N), spatial dims flattened."""
    if not isinstance(logits, torch.Tensor) or not isinstance(target, torch.Tensor):
        raise InvalidInputError(
            "logits and target must be torch tensors, got "
            f"{type(logits).__name__} and {type(target).__name__}."
        )
    if logits.dim() not in (3, 4):
        raise InvalidInputError(
            f"logits must have shape (B, 1, H, W) or (B, H, W), got {tuple(logits.shape)}."
        )
    if target.shape != logits.shape:
        if logits.dim() == 4 and logits.shape[1] == 1 and target.shape == logits.shape[:1] + logits.shape[2:]:
            target = target.unsqueeze(1)
        else:
            raise InvalidInputError(
                f"target shape {tuple(target.shape)} does not match logits shape {tuple(logits.shape)}."
            )
    if logits.dim() == 3:
        logits, target = logits.unsqueeze(1), target.unsqueeze(1)
    target = target.to(dtype=logits.dtype if logits.is_floating_point() else torch.float32)
    _check_target(target)
    return logits.flatten(2), target.flatten(2)


_TARGET_TOLERANCE = 1e-3


def _check_target(target: torch.Tensor) -> None:
    """Targets are probabilities: binary masks (0/1) or soft masks in [0, 1]; 0/255 masks are refused
    (they make BCE and Dice negative and training silently wrong)."""
    if target.numel() == 0:
        raise InvalidInputError("target is empty (zero elements).")
    lo, hi = float(target.min()), float(target.max())
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise InvalidInputError("target contains NaN or infinite values.")
    # A little float rounding is no 0/255 mask: area-resized soft targets land a few ulp outside [0, 1].
    if lo < -_TARGET_TOLERANCE or hi > 1.0 + _TARGET_TOLERANCE:
        raise InvalidInputError(
            f"target values must be in [0, 1] (binary or soft masks), got [{lo:g}, {hi:g}]; a 0/255 mask "
            "needs mask > 0 (or / 255) first."
        )


def dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Soft Dice loss on sigmoid probabilities, averaged over samples (and channels).

    Per sample: ``1 - (2 * sum(p * t) + smooth) / (sum(p) + sum(t) + smooth)``, as MONAI's
    ``DiceLoss(sigmoid=True, smooth_nr=smooth, smooth_dr=smooth, reduction="mean")``. An empty target
    with an all-negative prediction gives a loss near 0.

    Returns:
      (torch.Tensor): scalar loss.
    """
    x, t = _prepare(logits, target)
    p = torch.sigmoid(x)
    intersection = (p * t).sum(-1)
    denominator = p.sum(-1) + t.sum(-1)
    return (1.0 - (2.0 * intersection + smooth) / (denominator + smooth)).mean()


def sigmoid_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    reduction: str = "mean",
) -> torch.Tensor:
    """Focal loss ``alpha_t * (1 - p_t) ** gamma * BCE`` (Lin et al. 2017), via torchvision.

    Arguments:
      alpha (float | None): weight of positives (1 - alpha for negatives); None: no weighting.
      reduction (str): "mean" over all elements, "sum", or "none" (same shape as the input).
    """
    if reduction not in ("mean", "sum", "none"):
        raise InvalidInputError(f"reduction must be 'mean', 'sum' or 'none', got {reduction!r}.")
    x, t = _prepare(logits, target)
    loss = _tv_sigmoid_focal_loss(
        x, t, alpha=-1.0 if alpha is None else alpha, gamma=gamma, reduction=reduction
    )
    return loss if reduction != "none" else loss.reshape(logits.shape)


def dice_focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    dice_weight: float = 1.0,
    focal_weight: float = 1.0,
    gamma: float = 2.0,
    alpha: float | None = None,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """``dice_weight * dice_loss + focal_weight * sigmoid_focal_loss``, both with reduction "mean".

    With the defaults this equals MONAI's ``DiceFocalLoss(sigmoid=True)`` (lambda_dice = lambda_focal =
    1, gamma = 2, no alpha, smooth_nr = smooth_dr = 1e-5, reduction="mean": Dice averaged over samples
    and channels, focal averaged over all elements), for binary targets.

    Returns:
      (torch.Tensor): scalar loss.
    """
    return dice_weight * dice_loss(logits, target, smooth=smooth) + focal_weight * sigmoid_focal_loss(
        logits, target, alpha=alpha, gamma=gamma, reduction="mean"
    )


@torch.no_grad()
def mask_iou_logits(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """IoU between ``logits > 0`` and ``target > 0.5`` over the last two dims: targets for SAM's IoU head.

    Arguments:
      logits (torch.Tensor): (..., H, W), e.g. (B, K, H, W) decoder logits.
      target (torch.Tensor): same shape (or broadcastable, e.g. (B, 1, H, W) against (B, K, H, W)).

    Returns:
      (torch.Tensor): float IoU of shape logits.shape[:-2], no gradient; 1.0 where both masks are empty.
    """
    if logits.dim() < 2:
        raise InvalidInputError(f"logits must have shape (..., H, W), got {tuple(logits.shape)}.")
    try:
        pred, gt = torch.broadcast_tensors(logits > 0, target > 0.5)
    except RuntimeError as e:
        raise InvalidInputError(
            f"target shape {tuple(target.shape)} cannot be matched to logits shape {tuple(logits.shape)}."
        ) from e
    inter = (pred & gt).sum((-2, -1)).float()
    union = (pred | gt).sum((-2, -1)).float()
    return torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))


def bce_dice_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean binary cross-entropy on logits plus :func:`dice_loss`: the plain mask loss of the chapters.

    Shapes as in the module docstring (a (B, H, W) target with (B, 1, H, W) logits is accepted).
    """
    x, t = _prepare(logits, target)
    return F.binary_cross_entropy_with_logits(x, t) + dice_loss(logits, target)
