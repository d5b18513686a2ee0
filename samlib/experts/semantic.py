"""A semantic-segmentation stand-in: a DPT-style dense-prediction head on SAM's frozen image encoder.

DPT (Ranftl et al., 2021) turns a ViT into a dense predictor: tokens from several transformer blocks
are *reassembled* into image-like maps at four strides (4, 8, 16, 32 pixels of the input), the maps
are *fused* from coarse to fine with residual conv units, and a small head predicts at half the input
resolution. Here the ViT is SAM's image encoder, kept frozen: forward hooks on
``sam.image_encoder.blocks[i]`` collect the tokens of a few intermediate blocks (each (B, h, w, C)),
the neck's embedding is the fourth map, and only the head is trained, on features cached once.

Sizes are read from the model (patch size, widths, input size), so the same code runs on the teaching
SAM (256 px, patch 8) and on official ViT-B/L/H.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn
from tqdm.auto import tqdm

from samlib.embeddings import EmbeddedImages, encoder_inputs
from samlib.errors import InvalidInputError
from samlib.training import fit
from samlib.utils import resolve_device

__all__ = [
    "DPTHead",
    "EncoderFeatures",
    "default_blocks",
    "encoder_features",
    "label_grid",
    "predict_labels",
    "train_semantic_head",
]

DPT_STRIDES: tuple[int, int, int, int] = (4, 8, 16, 32)
"""Input-pixel strides of the four reassembled maps (DPT's pyramid)."""


def default_blocks(depth: int) -> tuple[int, int, int]:
    """Three intermediate encoder blocks at 1/4, 1/2 and 3/4 of the depth (0-based; the neck is the 4th
    map). ViT-B (12 blocks): (2, 5, 8), as DPT-Base's first three taps; the teaching SAM (6): (1, 2, 4)."""
    if depth < 1:
        raise InvalidInputError(f"depth must be >= 1, got {depth}.")
    return tuple(max(0, math.ceil(depth * f) - 1) for f in (0.25, 0.5, 0.75))  # type: ignore[return-value]


@dataclass
class EncoderFeatures:
    """Cached frozen-encoder features of N images: intermediate-block tokens plus the neck embedding.

    Attributes:
      blocks (list[torch.Tensor]): one (N, C, h, w) float16 CPU tensor per hooked block.
      block_indexes (tuple[int, ...]): which encoder blocks they came from.
      neck (torch.Tensor): (N, C', h, w) float32 CPU image embeddings (what SAM's decoder reads).
      original_sizes (list[tuple[int, int]]): (H, W) of each image.
      input_sizes (list[tuple[int, int]]): (H', W') after resizing the long side to ``img_size``.
      img_size (int): the encoder's square input size.
      patch_size (int): input pixels per token.
    """

    blocks: list[torch.Tensor]
    block_indexes: tuple[int, ...]
    neck: torch.Tensor
    original_sizes: list[tuple[int, int]]
    input_sizes: list[tuple[int, int]]
    img_size: int
    patch_size: int

    def __len__(self) -> int:
        return int(self.neck.shape[0])

    def embedded(self) -> EmbeddedImages:
        """The neck embeddings as :class:`EmbeddedImages` (for SAM's decoder and other heads)."""
        return EmbeddedImages(self.neck, list(self.original_sizes), list(self.input_sizes), self.img_size)

    def subset(self, indices: Sequence[int]) -> EncoderFeatures:
        """The features of images ``indices``, in that order."""
        idx = torch.as_tensor(list(indices), dtype=torch.long)
        return EncoderFeatures(
            blocks=[b[idx] for b in self.blocks],
            block_indexes=self.block_indexes,
            neck=self.neck[idx],
            original_sizes=[self.original_sizes[i] for i in indices],
            input_sizes=[self.input_sizes[i] for i in indices],
            img_size=self.img_size,
            patch_size=self.patch_size,
        )


def encoder_features(
    sam: Sam,
    images: Sequence[np.ndarray],
    blocks: Sequence[int] | None = None,
    batch_size: int = 4,
    progress: bool = True,
) -> EncoderFeatures:
    """Run SAM's image encoder once per image and keep the tokens of ``blocks`` and the neck output.

    Arguments:
      sam (Sam): the model; its encoder is only read.
      images (Sequence[np.ndarray]): (H, W, 3) uint8 RGB images (sizes may differ).
      blocks (Sequence[int] | None): 0-based encoder block indexes; None: :func:`default_blocks`.
      batch_size (int): images per encoder call.

    Returns:
      (EncoderFeatures): block tokens (N, C, h, w) as float16, neck (N, C', h, w), and the geometry.
    """
    if len(images) == 0:
        raise InvalidInputError("encoder_features needs at least one image.")
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}.")
    encoder = sam.image_encoder
    depth = len(encoder.blocks)
    chosen = tuple(int(b) for b in (blocks if blocks is not None else default_blocks(depth)))
    if not chosen or any(not 0 <= b < depth for b in chosen):
        raise InvalidInputError(f"blocks must be indexes in [0, {depth}), got {list(chosen)}.")
    img_size = int(encoder.img_size)
    patch = int(encoder.patch_embed.proj.kernel_size[0])
    captured: dict[int, torch.Tensor] = {}
    hooks = [
        encoder.blocks[b].register_forward_hook(
            lambda _m, _i, out, b=b: captured.__setitem__(b, out.permute(0, 3, 1, 2).half().cpu())
        )
        for b in sorted(set(chosen))
    ]
    per_block: dict[int, list[torch.Tensor]] = {b: [] for b in set(chosen)}
    necks: list[torch.Tensor] = []
    original_sizes: list[tuple[int, int]] = []
    input_sizes: list[tuple[int, int]] = []
    try:
        with tqdm(total=len(images), desc="Encoder features", disable=not progress) as bar:
            for start in range(0, len(images), batch_size):
                batch, originals, inputs = encoder_inputs(sam, images[start : start + batch_size])
                original_sizes += originals
                input_sizes += inputs
                with torch.no_grad():
                    necks.append(encoder(batch).float().cpu())
                for b in per_block:
                    per_block[b].append(captured.pop(b))
                bar.update(len(batch))
    finally:
        for h in hooks:
            h.remove()
    return EncoderFeatures(
        blocks=[torch.cat(per_block[b]) for b in chosen],
        block_indexes=chosen,
        neck=torch.cat(necks),
        original_sizes=original_sizes,
        input_sizes=input_sizes,
        img_size=img_size,
        patch_size=patch,
    )


class _ResidualConvUnit(nn.Module):
    """DPT's residual conv unit: x + conv(relu(conv(relu(x))))."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


def _resample(channels: int, factor: float) -> nn.Module:
    """Bring a token-grid map to another stride: transposed conv up, identity, or strided conv down."""
    if factor >= 1:
        up = int(round(factor))
        return nn.Identity() if up == 1 else nn.ConvTranspose2d(channels, channels, up, stride=up)
    down = int(round(1 / factor))
    return nn.Conv2d(channels, channels, 3, stride=down, padding=1)


class DPTHead(nn.Module):
    """Reassemble four token maps into a pyramid, fuse coarse to fine, predict class logits at half
    the encoder's input resolution.

    Arguments:
      in_channels (Sequence[int]): channels of the four inputs (three blocks' tokens, then the neck).
      num_classes (int): output classes.
      patch_size (int): input pixels per token (sets the resampling factors).
      img_size (int): the encoder's input size; the output is (img_size / 2) square.
      features (int): channels of the pyramid and the fusion path.
    """

    def __init__(
        self, in_channels: Sequence[int], num_classes: int, patch_size: int, img_size: int, features: int = 32
    ) -> None:
        super().__init__()
        if len(in_channels) != len(DPT_STRIDES):
            raise InvalidInputError(f"DPTHead needs {len(DPT_STRIDES)} inputs, got {len(in_channels)}.")
        if num_classes < 2:
            raise InvalidInputError(f"num_classes must be >= 2, got {num_classes}.")
        self.out_size = img_size // 2
        self.project = nn.ModuleList(nn.Conv2d(c, features, 1) for c in in_channels)
        self.resample = nn.ModuleList(_resample(features, patch_size / s) for s in DPT_STRIDES)
        self.skip_units = nn.ModuleList(_ResidualConvUnit(features) for _ in DPT_STRIDES)
        self.fuse_units = nn.ModuleList(_ResidualConvUnit(features) for _ in DPT_STRIDES)
        self.head = nn.Sequential(
            nn.Conv2d(features, features, 3, padding=1), nn.ReLU(), nn.Conv2d(features, num_classes, 1)
        )

    def forward(self, maps: Sequence[torch.Tensor]) -> torch.Tensor:
        """Arguments:
          maps (Sequence[torch.Tensor]): four (B, C_i, h, w) token-grid maps (finest stride first).

        Returns:
          (torch.Tensor): (B, num_classes, img_size / 2, img_size / 2) logits.
        """
        pyramid = [r(p(m.float())) for m, p, r in zip(maps, self.project, self.resample, strict=True)]
        path = self.fuse_units[-1](self.skip_units[-1](pyramid[-1]))
        for level in range(len(pyramid) - 2, -1, -1):
            skip = pyramid[level]
            path = F.interpolate(path, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            path = self.fuse_units[level](path + self.skip_units[level](skip))
        logits = self.head(path)
        return F.interpolate(
            logits, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False
        )


def _maps(features: EncoderFeatures, idx: torch.Tensor, device: torch.device) -> list[torch.Tensor]:
    return [b[idx].to(device) for b in features.blocks] + [features.neck[idx].to(device)]


def label_grid(labels: Sequence[np.ndarray], features: EncoderFeatures, ignore_index: int) -> torch.Tensor:
    """Ground-truth label maps in the head's output frame: resized like the image (long side to
    ``img_size``), padded with ``ignore_index``, then taken at half resolution (nearest).

    Returns:
      (torch.Tensor): (N, img_size / 2, img_size / 2) int64.
    """
    if len(labels) != len(features):
        raise InvalidInputError(f"Got {len(labels)} label maps for {len(features)} images.")
    size = features.img_size
    out = torch.full((len(labels), size // 2, size // 2), ignore_index, dtype=torch.int64)
    for i, lab in enumerate(labels):
        arr = np.asarray(lab)
        if arr.shape != features.original_sizes[i]:
            raise InvalidInputError(
                f"label map {i} has shape {arr.shape}, its image {features.original_sizes[i]}."
            )
        h, w = features.input_sizes[i]
        padded = np.full((size, size), ignore_index, dtype=np.int64)
        padded[:h, :w] = np.asarray(
            torch.nn.functional.interpolate(
                torch.as_tensor(arr, dtype=torch.float32)[None, None], size=(h, w), mode="nearest"
            )[0, 0].long()
        )
        out[i] = torch.as_tensor(padded[::2, ::2])
    return out


def train_semantic_head(
    features: EncoderFeatures,
    labels: Sequence[np.ndarray],
    num_classes: int,
    ignore_index: int | None = None,
    steps: int = 200,
    batch_size: int = 8,
    lr: float = 2e-3,
    width: int = 32,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> tuple[DPTHead, list[float]]:
    """Train a :class:`DPTHead` with cross-entropy on cached features (the encoder stays frozen).

    Arguments:
      features (EncoderFeatures): the training images' features.
      labels (Sequence[np.ndarray]): (H, W) class ids per image, in [0, num_classes) or ``ignore_index``.
      ignore_index (int | None): label of pixels that do not count (void, unlabelled).
      width (int): channels of the head (DPT's ``features``).

    Returns:
      (DPTHead, list[float]): the trained head (eval mode) and the loss of every step.
    """
    ignore = -100 if ignore_index is None else int(ignore_index)
    target = label_grid(labels, features, ignore)
    valid = target[target != ignore]
    if valid.numel() and (valid.min() < 0 or valid.max() >= num_classes):
        raise InvalidInputError(f"labels must be in [0, {num_classes}) or ignore_index {ignore_index}.")
    dev = resolve_device(device)
    torch.manual_seed(seed)
    channels = [b.shape[1] for b in features.blocks] + [features.neck.shape[1]]
    if len(channels) != len(DPT_STRIDES):
        raise InvalidInputError(
            f"DPTHead needs 3 hooked blocks plus the neck, got {len(features.blocks)} blocks."
        )
    head = DPTHead(channels, num_classes, features.patch_size, features.img_size, width).to(dev).train()

    def loss_fn(batch: np.ndarray) -> torch.Tensor:
        idx = torch.as_tensor(batch)
        logits = head(_maps(features, idx, dev))
        return F.cross_entropy(logits, target[idx].to(dev), ignore_index=ignore)

    history = fit(
        head.parameters(), loss_fn, len(features), steps, batch_size=min(batch_size, len(features)), lr=lr,
        weight_decay=1e-4, warmup=min(20, steps // 10), seed=seed, device=dev, desc="train DPT head",
        progress=progress,
    )  # fmt: skip
    return head.eval(), history


@torch.no_grad()
def predict_labels(head: DPTHead, features: EncoderFeatures, batch_size: int = 8) -> list[np.ndarray]:
    """Class-id maps at each image's original size (logits upsampled, padding cropped, then argmax).

    Returns:
      (list[np.ndarray]): one (H, W) int64 map per image.
    """
    device = next(head.parameters()).device
    embedded = features.embedded()
    out: list[np.ndarray] = []
    for start in range(0, len(features), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(features)))
        logits = head(_maps(features, idx, device)).float().cpu()
        for j, i in enumerate(idx.tolist()):
            full = embedded.logits_to_original(logits[j : j + 1], i)[0]
            out.append(full.argmax(0).numpy().astype(np.int64))
    return out
