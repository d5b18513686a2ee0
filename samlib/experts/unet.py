"""A small U-Net semantic segmenter: the task-specific CNN that gives GeoSAM its prompts.

GeoSAM (Sultan et al., arXiv 2311.11319) takes its sparse prompts from a CNN trained for the task
(Tile2Net in the paper). Any network that outputs per-class probabilities can play that role; this
module ships a small, fast U-Net (Ronneberger et al., 2015) so the book can train one on a laptop CPU:

* :class:`UNet` -- encoder/decoder with skip connections, GroupNorm (batch-size independent), any input
  size (padded internally to a multiple of ``2 ** depth``).
* :func:`train_unet` -- cross-entropy + soft Dice on random crops with flips, rotations and colour
  jitter, through the shared :func:`samlib.training.fit` loop (AdamW, cosine schedule, tqdm).
* :func:`predict_proba` / :func:`predict_labels` -- softmax maps / label maps for images of any size.

Images are (H, W, 3) uint8 RGB; label maps are (H, W) integer class indices (0 = background).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samlib.errors import InvalidInputError
from samlib.training import fit, load_trained, resume_file, save_trained
from samlib.utils import as_uint8_rgb, autocast_context, resolve_device

__all__ = ["UNet", "images_to_tensor", "predict_labels", "predict_proba", "segmentation_loss", "train_unet"]

_MEAN = 0.45
_STD = 0.25


def _block(cin: int, cout: int) -> nn.Sequential:
    groups = math.gcd(8, cout)
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.GroupNorm(groups, cout),
        nn.ReLU(inplace=True),
    )


class UNet(nn.Module):
    """A U-Net with ``depth`` down-sampling stages and ``base * 2**i`` channels at stage ``i``.

    Arguments:
      in_channels (int): input channels (3 for RGB).
      n_classes (int): output channels, one logit per class (background included).
      base (int): channels of the first stage.
      depth (int): number of 2x down-sampling stages.

    ``forward`` maps (B, in_channels, H, W) to logits (B, n_classes, H, W) for any H, W.
    """

    def __init__(self, in_channels: int = 3, n_classes: int = 4, base: int = 16, depth: int = 3) -> None:
        super().__init__()
        if n_classes < 2 or base < 1 or depth < 1:
            raise InvalidInputError(
                f"need n_classes >= 2, base >= 1, depth >= 1; got {n_classes}, {base}, {depth}."
            )
        self.n_classes = n_classes
        self.depth = depth
        chans = [base * 2**i for i in range(depth + 1)]
        self.stem = _block(in_channels, chans[0])
        self.down = nn.ModuleList(_block(chans[i], chans[i + 1]) for i in range(depth))
        self.up = nn.ModuleList(
            nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth))
        )
        self.merge = nn.ModuleList(_block(2 * chans[i], chans[i]) for i in reversed(range(depth)))
        self.head = nn.Conv2d(chans[0], n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise InvalidInputError(f"UNet expects (B, C, H, W), got {tuple(x.shape)}.")
        h, w = x.shape[-2:]
        m = 2**self.depth
        pad_h, pad_w = (-h) % m, (-w) % m
        if pad_h or pad_w:
            x = F.pad(
                x, (0, pad_w, 0, pad_h), mode="reflect" if min(h, w) > max(pad_h, pad_w) else "replicate"
            )
        skips = [self.stem(x)]
        for down in self.down:
            skips.append(down(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for up, merge in zip(self.up, self.merge, strict=True):
            y = merge(torch.cat([up(y), skips.pop()], dim=1))
        return self.head(y)[..., :h, :w]


def images_to_tensor(images: Sequence[np.ndarray]) -> torch.Tensor:
    """(N, 3, H, W) float32 normalised tensor from N same-size (H, W, 3) uint8 images."""
    if len(images) == 0:
        raise InvalidInputError("need at least one image.")
    arr = np.stack([as_uint8_rgb(im) for im in images]).astype(np.float32) / 255.0
    return (torch.from_numpy(arr).permute(0, 3, 1, 2) - _MEAN) / _STD


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    class_weights: torch.Tensor | None = None,
    dice_weight: float = 1.0,
) -> torch.Tensor:
    """Weighted cross-entropy plus soft multi-class Dice over the non-background classes.

    Arguments:
      logits (torch.Tensor): (B, C, H, W).
      target (torch.Tensor): (B, H, W) int64 class indices in [0, C).
      class_weights (torch.Tensor | None): (C,) cross-entropy weights.
    """
    if logits.dim() != 4 or target.shape != logits.shape[:1] + logits.shape[2:]:
        shapes = f"{tuple(logits.shape)}, {tuple(target.shape)}"
        raise InvalidInputError(f"logits (B, C, H, W) and target (B, H, W) expected, got {shapes}.")
    logits = logits.float()
    ce = F.cross_entropy(logits, target, weight=class_weights)
    if dice_weight == 0:
        return ce
    prob = logits.softmax(1)[:, 1:]
    onehot = F.one_hot(target, logits.shape[1]).permute(0, 3, 1, 2)[:, 1:].float()
    inter = (prob * onehot).sum((0, 2, 3))
    denom = prob.sum((0, 2, 3)) + onehot.sum((0, 2, 3))
    dice = 1 - (2 * inter + 1.0) / (denom + 1.0)
    return ce + dice_weight * dice.mean()


def _balanced_weights(labels: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse square-root frequency weights, normalised to mean 1 (rare thin classes count more)."""
    counts = np.bincount(labels.ravel(), minlength=n_classes).astype(np.float64) + 1.0
    w = 1.0 / np.sqrt(counts / counts.sum())
    return torch.tensor(w / w.mean(), dtype=torch.float32)


def _augment(
    x: torch.Tensor, y: torch.Tensor, gen: torch.Generator, colour: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips / 90-degree rotations (geometry) and per-image colour jitter (appearance)."""
    if torch.rand(1, generator=gen).item() < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    if torch.rand(1, generator=gen).item() < 0.5:
        x, y = x.flip(-2), y.flip(-2)
    k = int(torch.randint(0, 4, (1,), generator=gen).item())
    if k:
        x, y = torch.rot90(x, k, (-2, -1)), torch.rot90(y, k, (-2, -1))
    if colour:
        b = x.shape[0]
        # A random 3x3 colour mix near identity, plus gain and offset: changes hue, saturation and
        # brightness, so the network learns shapes and contrasts more than one region's palette.
        mix = torch.eye(3) + 0.25 * torch.randn(b, 3, 3, generator=gen)
        gain = 1 + 0.3 * torch.randn(b, 1, 1, 1, generator=gen)
        offset = 0.4 * torch.randn(b, 3, 1, 1, generator=gen)
        x = torch.einsum("bij,bjhw->bihw", mix, x) * gain + offset
        grey = torch.rand(b, 1, 1, 1, generator=gen) < 0.2
        x = torch.where(grey, x.mean(1, keepdim=True).expand_as(x), x)
    return x, y


def _class_ids(labels: Any, index: int) -> np.ndarray:
    """Label map ``index`` as int64 class ids; floats only when whole numbers (0.7 is not class 0)."""
    arr = np.asarray(labels)
    if arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer):
        return arr.astype(np.int64)
    if (
        np.issubdtype(arr.dtype, np.floating)
        and np.isfinite(arr).all()
        and np.array_equal(arr, np.round(arr))
    ):
        return arr.astype(np.int64)
    raise InvalidInputError(
        f"labels[{index}] must hold integer class ids, got dtype {arr.dtype}"
        + (" with non-integer values (threshold or argmax it first)." if arr.dtype.kind == "f" else ".")
    )


def train_unet(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    n_classes: int,
    steps: int = 300,
    batch_size: int = 8,
    crop: int | None = 128,
    lr: float = 3e-3,
    base: int = 16,
    depth: int = 3,
    class_weights: str | Sequence[float] | None = "balanced",
    dice_weight: float = 1.0,
    augment: bool = True,
    colour_augment: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    model: UNet | None = None,
    resume_dir: str | Path | None = None,
) -> tuple[UNet, list[float]]:
    """Train a :class:`UNet` on images and label maps (all of one size) and return it with its losses.

    Arguments:
      images: (H, W, 3) uint8 RGB images.
      labels: (H, W) integer label maps, values in [0, n_classes).
      crop (int | None): train on random ``crop`` x ``crop`` windows (cheaper; the net is fully
        convolutional, so it predicts on whole images afterwards); None: whole images.
      class_weights: "balanced" (inverse square-root class frequency), explicit weights, or None.
      augment / colour_augment: random flips and rotations / random colour mixing, gain and offset.
      model: continue training this network instead of a fresh one.
      resume_dir: save the trained network there (under a digest of the data, the starting weights and
        every setting) and, when a file for exactly this training exists, load it instead of training
        (:func:`samlib.training.resume_file`): an interrupted long run picks up where it stopped.

    Returns:
      (UNet, list[float]): the trained network (eval mode, on ``device``) and the loss of every step.
    """
    if len(images) != len(labels) or len(images) == 0:
        raise InvalidInputError(
            f"need as many label maps as images (>= 1), got {len(labels)} and {len(images)}."
        )
    dev = resolve_device(device)
    x_all = images_to_tensor(images)
    ids = [_class_ids(lab, i) for i, lab in enumerate(labels)]
    if len({a.shape for a in ids}) != 1:
        raise InvalidInputError(
            f"label maps must all have one (H, W) shape, got {sorted({a.shape for a in ids})}."
        )
    y_np = np.stack(ids)
    if y_np.shape != (x_all.shape[0], *x_all.shape[2:]):
        raise InvalidInputError(
            f"label maps must match the images' (H, W), got {y_np.shape[1:]} vs {tuple(x_all.shape[2:])}."
        )
    if y_np.min() < 0 or y_np.max() >= n_classes:
        raise InvalidInputError(f"labels must be in [0, {n_classes}), found {y_np.min()}..{y_np.max()}.")
    y_all = torch.from_numpy(y_np)
    if class_weights == "balanced":
        weights: torch.Tensor | None = _balanced_weights(y_np, n_classes).to(dev)
    elif class_weights is None:
        weights = None
    elif isinstance(class_weights, str):
        raise InvalidInputError(
            f"class_weights must be 'balanced', a sequence or None, got {class_weights!r}."
        )
    else:
        weights = torch.tensor(list(class_weights), dtype=torch.float32, device=dev)
    torch.manual_seed(seed)
    net = (model if model is not None else UNet(3, n_classes, base, depth)).to(dev).train()
    cw = (
        class_weights
        if class_weights is None or isinstance(class_weights, str)
        else list(map(float, class_weights))
    )
    settings = [n_classes, steps, batch_size, crop, lr, base, depth, cw, dice_weight, augment]
    saved = resume_file(resume_dir, "unet", settings, colour_augment, seed, net, x_all, y_np)
    if saved is not None and saved.is_file():
        history, _ = load_trained(saved, {"unet": net})
        return net.eval(), history
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(seed)
    height, width = y_all.shape[1:]
    size = None if crop is None or crop >= min(height, width) else int(crop)

    def loss_fn(batch: np.ndarray) -> torch.Tensor:
        idx = torch.as_tensor(batch)
        x, y = x_all[idx], y_all[idx]
        if size is not None:
            xs, ys = [], []
            for i in range(len(idx)):
                top = int(torch.randint(0, height - size + 1, (1,), generator=gen).item())
                left = int(torch.randint(0, width - size + 1, (1,), generator=gen).item())
                xs.append(x[i, :, top : top + size, left : left + size])
                ys.append(y[i, top : top + size, left : left + size])
            x, y = torch.stack(xs), torch.stack(ys)
        if augment:
            x, y = _augment(x, y, gen, colour_augment)
        return segmentation_loss(net(x.to(dev)), y.to(dev), weights, dice_weight)

    history = fit(
        net.parameters(), loss_fn, len(images), steps, batch_size=min(batch_size, len(images)), lr=lr,
        weight_decay=1e-4, warmup=min(20, steps // 10), seed=seed, device=dev, desc="train U-Net",
        progress=progress,
    )  # fmt: skip
    save_trained(saved, {"unet": net}, history, time.perf_counter() - t0)
    return net.eval(), history


@torch.no_grad()
def predict_proba(
    model: UNet, images: Sequence[np.ndarray], batch_size: int = 4, device: str | torch.device | None = None
) -> list[np.ndarray]:
    """Softmax class probabilities of each image: a list of (n_classes, H, W) float32 arrays.

    Images may differ in size (they are grouped by size into batches).
    """
    dev = resolve_device(device, default=next(model.parameters()).device)
    model = model.to(dev).eval()
    out: list[np.ndarray | None] = [None] * len(images)
    by_size: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        by_size.setdefault(np.asarray(im).shape, []).append(i)
    for idx in by_size.values():
        for start in range(0, len(idx), batch_size):
            chunk = idx[start : start + batch_size]
            x = images_to_tensor([images[i] for i in chunk]).to(dev)
            with autocast_context(dev):
                logits = model(x)
            prob = logits.float().softmax(1).cpu().numpy()
            for j, i in enumerate(chunk):
                out[i] = prob[j]
    return [p for p in out if p is not None]


def predict_labels(model: UNet, images: Sequence[np.ndarray], **kwargs: object) -> list[np.ndarray]:
    """Arg-max label maps (H, W) int64 of :func:`predict_proba`."""
    return [p.argmax(0).astype(np.int64) for p in predict_proba(model, images, **kwargs)]  # type: ignore[arg-type]
