"""Heads and decoders trained on cached SAM image embeddings.

* :func:`trainable_decoder` — freeze a SAM and return a trainable copy of its mask decoder (GeoSAM,
  PSLG-SAM's fine-tuned variant);
* :class:`DomainDecoder` — three transposed convolutions from the embedding to one class's mask, with no
  prompt at all (the planetary-mapping paper's domain decoder);
* :class:`PromptlessSamDecoder` — SAM's own mask decoder run without prompts, and with box prompts for
  fine-tuning (:func:`train_sam_decoder_with_boxes`);
* :func:`predict_masks` — any of these over an :class:`~samlib.embeddings.EmbeddedImages` set, back at
  each image's original size.

Geometry: the decoders predict logits on a square grid that covers SAM's *padded* square input
(``img_size`` x ``img_size``: 256 for the teaching model, 1024 for official SAM). Targets are mapped onto
that grid with :func:`samlib.embeddings.masks_to_grid` and predictions back with
:meth:`samlib.embeddings.EmbeddedImages.logits_to_original`, so the same code serves any image size.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import MaskDecoder, Sam
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn

from samlib.embeddings import EmbeddedImages, masks_to_grid
from samlib.errors import InvalidInputError
from samlib.losses import bce_dice_loss
from samlib.prompts import jitter_box
from samlib.training import fit
from samlib.utils import resolve_device

__all__ = [
    "decode_many",
    "DomainDecoder",
    "PromptlessSamDecoder",
    "predict_masks",
    "train_domain_decoder",
    "train_sam_decoder",
    "train_sam_decoder_with_boxes",
    "trainable_decoder",
]


def trainable_decoder(sam: Sam) -> MaskDecoder:
    """Freeze all of ``sam`` (image encoder, prompt encoder, decoder) and return a trainable copy of its
    mask decoder: the only parameters GeoSAM fine-tunes. ``sam`` itself stays the zero-shot model."""
    for p in sam.parameters():
        p.requires_grad_(False)
    decoder = copy.deepcopy(sam.mask_decoder)
    for p in decoder.parameters():
        p.requires_grad_(True)
    return decoder.train()


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
          embedding (torch.Tensor): (1, C, h, w) image embedding.
          boxes (torch.Tensor): (K, 4) (x0, y0, x1, y1) in the resized input frame
            (``ResizeLongestSide.apply_boxes``), as SAM's prompt encoder expects.

        Returns:
          (torch.Tensor): (K, 1, 4h, 4w) logits.
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
          embeddings (torch.Tensor): (B, C, h, w) image embeddings.
          boxes (torch.Tensor): (B, 4) one box per image, in the resized input frame.

        Returns:
          (torch.Tensor): (B, 1, 4h, 4w) logits.
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


def _logit_grid(model: nn.Module, embedded: EmbeddedImages, dev: torch.device) -> int:
    """Side of the square logit map ``model`` returns (one forward pass on the first embedding).

    Arguments:
      model (nn.Module): a decoder of cached embeddings, already on ``dev``.
      embedded (EmbeddedImages): the training embeddings.
      dev (torch.device): the training device.

    Returns:
      (int): the grid side the targets are resized to (:func:`masks_to_grid`).
    """
    with torch.no_grad():
        return int(model(embedded.embeddings[:1].to(dev)).shape[-1])


def _fit_decoder(
    model: nn.Module,
    loss_fn: Callable[[np.ndarray], torch.Tensor],
    n_items: int,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
    dev: torch.device,
    progress: bool,
    desc: str,
) -> list[float]:
    """:func:`samlib.training.fit` with the schedule every decoder here trains with (warm-up 5 % of the
    steps, batches no larger than the data), torch's RNG seeded first; ``model`` is left in eval mode.

    Arguments:
      model (nn.Module): the decoder, on ``dev`` and in train mode.
      loss_fn (Callable[[np.ndarray], torch.Tensor]): item indices -> scalar loss.
      n_items (int): training items (images, or image-box pairs).

    Returns:
      (list[float]): the loss of every step.
    """
    torch.manual_seed(seed)
    history = fit(
        model.parameters(),
        loss_fn,
        n_items=n_items,
        steps=steps,
        batch_size=min(batch_size, n_items),
        lr=lr,
        warmup=max(1, steps // 20),
        seed=seed,
        device=dev,
        desc=desc,
        progress=progress,
    )
    model.eval()
    return history


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
    """Train ``model`` (embeddings in, square logits out) on ``masks`` with BCE + Dice; see
    :func:`train_domain_decoder`. Returns the loss of every step."""
    dev = resolve_device(device, default=torch.device("cpu"))
    model.to(dev).train()
    targets = masks_to_grid(masks, embedded, _logit_grid(model, embedded, dev)).to(dev)
    emb = embedded.embeddings.to(dev)

    def loss_fn(batch: np.ndarray) -> torch.Tensor:
        idx = torch.as_tensor(batch, device=dev)
        logits = model(emb[idx]).float()
        t = targets[idx]
        return bce_dice_loss(logits, t)

    return _fit_decoder(model, loss_fn, len(embedded), steps, batch_size, lr, seed, dev, progress, desc)


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
      boxes (Sequence[np.ndarray]): (K_i, 4) original-pixel boxes per image.
      instance_masks (Sequence[np.ndarray]): (K_i, H, W) the matching masks per image.

    Returns:
      (tuple[PromptlessSamDecoder, list[float]]): the decoder (eval mode) and the loss per step.
    """
    if len(boxes) != len(embedded) or len(instance_masks) != len(embedded):
        raise InvalidInputError("need one box array and one instance-mask stack per embedded image.")
    dev = resolve_device(device, default=torch.device("cpu"))
    model = PromptlessSamDecoder(sam).to(dev).train()
    transform = ResizeLongestSide(embedded.img_size)
    items = [(i, k) for i in range(len(embedded)) for k in range(len(boxes[i]))]
    if not items:
        raise InvalidInputError("no boxes to train on.")
    grid = _logit_grid(model, embedded, dev)
    targets = {
        i: masks_to_grid(list(instance_masks[i]), embedded.subset([i] * len(boxes[i])), grid).to(dev)
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

    history = _fit_decoder(
        model, loss_fn, len(items), steps, batch_size, lr, seed, dev, progress, "SAM decoder (box prompts)"
    )
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


def decode_many(
    decoder: MaskDecoder,
    image_embeddings: torch.Tensor,
    image_pe: torch.Tensor,
    sparse_prompt_embeddings: torch.Tensor,
    dense_prompt_embeddings: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One mask per prompt (``multimask_output=False``) for prompts on *different* images, in one call.

    ``MaskDecoder.forward`` repeats one image embedding for all its prompts; this runs the same layers
    on one embedding per prompt, so a training step can decode the prompts of several images at once.

    Arguments:
      decoder (MaskDecoder): a SAM mask decoder (e.g. :func:`trainable_decoder`).
      image_embeddings (torch.Tensor): (B, C, h, w), the embedding of each prompt's image.
      image_pe (torch.Tensor): (1, C, h, w) positional encoding (``prompt_encoder.get_dense_pe()``).
      sparse_prompt_embeddings (torch.Tensor): (B, T, C).
      dense_prompt_embeddings (torch.Tensor): (B, C, h, w).

    Returns:
      (tuple[torch.Tensor, torch.Tensor]): low-res logits (B, 1, 4h, 4w) and predicted IoU (B, 1).
    """
    b = sparse_prompt_embeddings.shape[0]
    if image_embeddings.shape[0] != b or dense_prompt_embeddings.shape[0] != b:
        raise InvalidInputError(
            f"need one image embedding and one dense prompt per prompt: got {image_embeddings.shape[0]}, "
            f"{dense_prompt_embeddings.shape[0]} for {b} prompts."
        )
    output_tokens = torch.cat([decoder.iou_token.weight, decoder.mask_tokens.weight], dim=0)
    tokens = torch.cat((output_tokens.unsqueeze(0).expand(b, -1, -1), sparse_prompt_embeddings), dim=1)
    src = image_embeddings + dense_prompt_embeddings
    _, c, h, w = src.shape
    hs, src = decoder.transformer(src, image_pe.expand(b, -1, -1, -1), tokens)
    mask_tokens_out = hs[:, 1 : 1 + decoder.num_mask_tokens, :]
    upscaled = decoder.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
    hyper_in = torch.stack(
        [mlp(mask_tokens_out[:, i, :]) for i, mlp in enumerate(decoder.output_hypernetworks_mlps)], dim=1
    )
    _, c2, h2, w2 = upscaled.shape
    masks = (hyper_in @ upscaled.reshape(b, c2, h2 * w2)).reshape(b, -1, h2, w2)
    iou_pred = decoder.iou_prediction_head(hs[:, 0, :])
    return masks[:, :1], iou_pred[:, :1]
