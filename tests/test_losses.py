"""Losses against hand-computed values and MONAI's published formulas."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from samlib import losses
from samlib.errors import InvalidInputError

LN2 = math.log(2.0)


def test_dice_loss_by_hand() -> None:
    logits = torch.zeros(1, 1, 2, 2)  # p = 0.5 everywhere
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    s = 1e-5
    # intersection 0.5, sum p = 2, sum t = 1
    assert losses.dice_loss(logits, target).item() == pytest.approx(1 - (1 + s) / (3 + s))
    # (B, H, W) input, and a (B, H, W) target with (B, 1, H, W) logits
    assert losses.dice_loss(logits[:, 0], target[:, 0]).item() == pytest.approx(1 - (1 + s) / (3 + s))
    assert losses.dice_loss(logits, target[:, 0]).item() == pytest.approx(1 - (1 + s) / (3 + s))
    # per-sample mean: a perfect, confident sample adds ~0
    confident = torch.tensor([[[[20.0, -20.0], [-20.0, -20.0]]]])
    both = losses.dice_loss(torch.cat([logits, confident]), torch.cat([target, target]))
    assert both.item() == pytest.approx((1 - (1 + s) / (3 + s)) / 2, abs=1e-6)
    # empty target, confident empty prediction: loss ~ 0 thanks to the smoothing terms
    assert losses.dice_loss(torch.full((1, 1, 2, 2), -30.0), torch.zeros(1, 1, 2, 2)).item() == pytest.approx(
        0, abs=1e-6
    )


def test_focal_loss_by_hand() -> None:
    logits = torch.zeros(1, 1, 2, 2)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # every pixel: BCE = ln 2, (1 - p_t)^2 = 1/4
    assert losses.sigmoid_focal_loss(logits, target, alpha=None).item() == pytest.approx(0.25 * LN2)
    # alpha = 0.25: one positive (x0.25) and three negatives (x0.75)
    expected = (0.25 + 3 * 0.75) / 4 * 0.25 * LN2
    assert losses.sigmoid_focal_loss(logits, target).item() == pytest.approx(expected)
    # non-trivial logits: x = 2 (t = 1) and x = -1 (t = 0)
    x = torch.tensor([[[[2.0, -1.0]]]])
    t = torch.tensor([[[[1.0, 0.0]]]])
    p1, p2 = 1 / (1 + math.exp(-2.0)), 1 / (1 + math.exp(1.0))
    terms = [-math.log(p1) * (1 - p1) ** 2, -math.log(1 - p2) * p2**2]
    assert losses.sigmoid_focal_loss(x, t, alpha=None).item() == pytest.approx(sum(terms) / 2, rel=1e-5)
    assert losses.sigmoid_focal_loss(x, t, alpha=None, reduction="sum").item() == pytest.approx(
        sum(terms), rel=1e-5
    )
    assert losses.sigmoid_focal_loss(x, t, reduction="none").shape == x.shape


def monai_dice_focal(logits: torch.Tensor, target: torch.Tensor, gamma: float = 2.0) -> torch.Tensor:
    """MONAI DiceFocalLoss(sigmoid=True) defaults, written out from MONAI's source formulas."""
    p = torch.sigmoid(logits)
    dims = tuple(range(2, logits.dim()))
    inter = (p * target).sum(dims)
    dice = (1 - (2 * inter + 1e-5) / (p.sum(dims) + target.sum(dims) + 1e-5)).mean()
    bce = logits - logits * target - F.logsigmoid(logits)
    invprobs = F.logsigmoid(-logits * (target * 2 - 1))
    focal = ((invprobs * gamma).exp() * bce).mean()
    return dice + focal


def test_dice_focal_matches_monai_formula() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 1, 8, 8, generator=g) * 3
    target = (torch.rand(3, 1, 8, 8, generator=g) > 0.7).float()
    ours = losses.dice_focal_loss(logits, target)
    assert ours.item() == pytest.approx(monai_dice_focal(logits, target).item(), rel=1e-5)
    weighted = losses.dice_focal_loss(logits, target, dice_weight=2.0, focal_weight=0.5)
    expected = 2 * losses.dice_loss(logits, target) + 0.5 * losses.sigmoid_focal_loss(
        logits, target, alpha=None
    )
    assert weighted.item() == pytest.approx(expected.item(), rel=1e-6)


def test_losses_have_gradients_and_validate_shapes() -> None:
    logits = torch.randn(2, 1, 4, 4, requires_grad=True)
    target = torch.rand(2, 1, 4, 4) > 0.5  # bool targets are accepted
    losses.dice_focal_loss(logits, target).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and logits.grad.abs().sum() > 0
    with pytest.raises(InvalidInputError, match="does not match"):
        losses.dice_loss(torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 5))
    with pytest.raises(InvalidInputError, match="logits must have shape"):
        losses.dice_loss(torch.zeros(4, 4), torch.zeros(4, 4))
    with pytest.raises(InvalidInputError, match="reduction"):
        losses.sigmoid_focal_loss(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2), reduction="max")


def test_mask_iou_logits() -> None:
    logits = torch.tensor([[[[1.0, -1.0], [1.0, 1.0]]]])
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])
    # pred {(0,0), (1,0), (1,1)}, gt {(0,0), (0,1)}: inter 1, union 4
    out = losses.mask_iou_logits(logits, target)
    assert out.shape == (1, 1) and out.item() == pytest.approx(0.25)
    assert losses.mask_iou_logits(-torch.ones(2, 3, 2), torch.zeros(2, 3, 2)).tolist() == [1.0, 1.0]
    multi = losses.mask_iou_logits(torch.cat([logits, -logits], 1), target)  # (B, K) against (B, 1)
    assert multi.shape == (1, 2) and multi[0, 1].item() == pytest.approx(1 / 2)
    assert not multi.requires_grad
