"""Image embeddings of many images at once, for training heads and decoders on cached features.

SAM's image encoder is ~99% of its compute; a decoder or a small head trained for many epochs on a fixed
set of images should see each image encoded once. :func:`embed_images` runs the encoder over a list of
images (any sizes) and returns :class:`EmbeddedImages`: the embeddings plus the geometry that maps
decoder logits back to each original image. :func:`masks_to_grid` is the inverse mapping, for targets.

Embeddings are computed under ``torch.no_grad`` rather than ``torch.inference_mode``: inference tensors
cannot be saved for backward, and cached embeddings are meant to be fed to trainable decoders.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from tqdm.auto import tqdm

from samlib.errors import InvalidInputError
from samlib.utils import as_uint8_rgb

__all__ = ["EmbeddedImages", "default_batch_size", "embed_images", "encoder_inputs", "masks_to_grid"]


@dataclass
class EmbeddedImages:
    """Image embeddings plus the geometry needed to map decoder logits back to each image.

    Attributes:
      embeddings (torch.Tensor): float32 on CPU, shape (N, C, h, w).
      original_sizes (list[tuple[int, int]]): (H, W) of each image as given.
      input_sizes (list[tuple[int, int]]): (H', W') after resizing the long side to ``img_size``.
      img_size (int): the encoder's square input size (1024 for official SAM).
    """

    embeddings: torch.Tensor
    original_sizes: list[tuple[int, int]]
    input_sizes: list[tuple[int, int]]
    img_size: int

    def __len__(self) -> int:
        return int(self.embeddings.shape[0])

    def subset(self, indices: Sequence[int]) -> EmbeddedImages:
        """The images ``indices`` of this set (embeddings indexed, sizes copied)."""
        idx = [int(i) for i in indices]
        return EmbeddedImages(
            embeddings=self.embeddings[idx],
            original_sizes=[self.original_sizes[i] for i in idx],
            input_sizes=[self.input_sizes[i] for i in idx],
            img_size=self.img_size,
        )

    @classmethod
    def concat(cls, parts: Sequence[EmbeddedImages]) -> EmbeddedImages:
        """One set holding the images of ``parts`` in order (e.g. the same images cut at two tile sizes).

        Raises:
          InvalidInputError: no parts, or parts from encoders of different input or embedding size.
        """
        if len(parts) == 0:
            raise InvalidInputError("EmbeddedImages.concat needs at least one set.")
        first = parts[0]
        for part in parts[1:]:
            if part.img_size != first.img_size or part.embeddings.shape[1:] != first.embeddings.shape[1:]:
                raise InvalidInputError(
                    f"cannot concatenate embeddings of shape {tuple(part.embeddings.shape[1:])} at "
                    f"{part.img_size} px with {tuple(first.embeddings.shape[1:])} at {first.img_size} px: "
                    "embed every part with the same SAM."
                )
        return cls(
            embeddings=torch.cat([p.embeddings for p in parts]),
            original_sizes=[s for p in parts for s in p.original_sizes],
            input_sizes=[s for p in parts for s in p.input_sizes],
            img_size=first.img_size,
        )

    def logits_to_original(self, logits: torch.Tensor, index: int) -> torch.Tensor:
        """Upscale low-res logits of image ``index`` to its original size (as ``Sam.postprocess_masks``).

        Arguments:
          logits (torch.Tensor): (B, K, h, w) low-res decoder logits.

        Returns:
          (torch.Tensor): (B, K, H, W) logits at the original image size.
        """
        if logits.dim() != 4:
            raise InvalidInputError(f"logits must have shape (B, K, h, w), got {tuple(logits.shape)}.")
        up = F.interpolate(logits, (self.img_size, self.img_size), mode="bilinear", align_corners=False)
        h, w = self.input_sizes[index]
        return F.interpolate(
            up[..., :h, :w], self.original_sizes[index], mode="bilinear", align_corners=False
        )


def default_batch_size(device: torch.device) -> int:
    """The encoder batch size that is fastest on ``device``'s kind, as measured by ``benchmarks/perf.py``.

    On a CPU, batch 1 is fastest (teaching model, 2 cores: 17.7 / 11.7 / 7.7 images/s at batch 1 / 4 /
    16; larger activations fall out of cache and the matmuls are already big enough to use every core).
    On a GPU, batches fill the chip: 16.
    """
    return 1 if device.type == "cpu" else 16


def encoder_inputs(
    sam: Sam, images: Sequence[np.ndarray]
) -> tuple[torch.Tensor, list[tuple[int, int]], list[tuple[int, int]]]:
    """SAM's image-encoder input for a batch of images, as :class:`segment_anything.SamPredictor` builds it:
    long side resized to the encoder's input size, normalised, padded bottom/right to the square.

    Arguments:
      sam (Sam): the model (its input size, pixel statistics and device).
      images (Sequence[np.ndarray]): (H, W, 3) uint8 RGB images; sizes may differ.

    Returns:
      (tuple[torch.Tensor, list[tuple[int, int]], list[tuple[int, int]]]): the (B, 3, S, S) batch on
        ``sam.device``, each image's original (H, W) and its (H', W') after resizing.
    """
    transform = ResizeLongestSide(int(sam.image_encoder.img_size))
    batch, original_sizes, input_sizes = [], [], []
    for image in images:
        rgb = as_uint8_rgb(image)
        resized = transform.apply_image(rgb)
        original_sizes.append((int(rgb.shape[0]), int(rgb.shape[1])))
        input_sizes.append((int(resized.shape[0]), int(resized.shape[1])))
        x = torch.as_tensor(resized, device=sam.device).permute(2, 0, 1).contiguous()
        batch.append(sam.preprocess(x[None])[0])  # normalise and pad to img_size x img_size
    return torch.stack(batch), original_sizes, input_sizes


def embed_images(
    sam: Sam, images: Sequence[np.ndarray], batch_size: int | None = None, progress: bool = True
) -> EmbeddedImages:
    """Run SAM's image encoder on ``images`` (each (H, W, 3) uint8 RGB; sizes may differ).

    Arguments:
      batch_size (int | None): images per encoder call; None: :func:`default_batch_size` of the device.

    Returns:
      (EmbeddedImages): embeddings (N, C, h, w) on CPU plus per-image original and input sizes.
    """
    if batch_size is None:
        batch_size = default_batch_size(sam.device)
    if batch_size < 1:
        raise InvalidInputError(f"batch_size must be >= 1, got {batch_size}.")
    if len(images) == 0:
        raise InvalidInputError("embed_images needs at least one image.")
    img_size = int(sam.image_encoder.img_size)
    chunks: list[torch.Tensor] = []
    original_sizes: list[tuple[int, int]] = []
    input_sizes: list[tuple[int, int]] = []
    with tqdm(total=len(images), desc="Embedding images", disable=not progress) as bar:
        for start in range(0, len(images), batch_size):
            batch, originals, inputs = encoder_inputs(sam, images[start : start + batch_size])
            original_sizes += originals
            input_sizes += inputs
            with torch.no_grad():
                features = sam.image_encoder(batch)
            chunks.append(features.float().cpu())
            bar.update(len(batch))
    return EmbeddedImages(torch.cat(chunks), original_sizes, input_sizes, img_size)


def masks_to_grid(masks: Sequence[np.ndarray], embedded: EmbeddedImages, grid: int) -> torch.Tensor:
    """Map original-size masks onto a ``grid`` x ``grid`` map of SAM's padded square input.

    Each mask is resized like its image (long side to ``img_size``), zero-padded bottom/right to the
    square, then area-resized to ``grid``: the inverse of :meth:`EmbeddedImages.logits_to_original`.

    Returns:
      (torch.Tensor): (N, 1, grid, grid) float32 soft targets in [0, 1].
    """
    if len(masks) != len(embedded):
        raise InvalidInputError(f"got {len(masks)} masks for {len(embedded)} embedded images.")
    s = embedded.img_size
    out = np.zeros((len(masks), 1, grid, grid), np.float32)
    for i, m in enumerate(masks):
        m = np.asarray(m)
        if m.dtype == object or not (m.dtype == np.bool_ or np.issubdtype(m.dtype, np.number)):
            raise InvalidInputError(f"mask {i} must be a numeric or bool array, got dtype {m.dtype}.")
        m = m.astype(np.float32)
        if not np.isfinite(m).all() or (m.size and (m.min() < 0 or m.max() > 1)):
            raise InvalidInputError(
                f"mask {i} must hold values in [0, 1] (binary or soft), got [{np.nanmin(m):g}, "
                f"{np.nanmax(m):g}]; a 0/255 mask needs mask > 0 first."
            )
        if m.shape != tuple(embedded.original_sizes[i]):
            raise InvalidInputError(
                f"mask {i} has shape {m.shape}, its image was {tuple(embedded.original_sizes[i])}."
            )
        h, w = embedded.input_sizes[i]
        square = np.zeros((s, s), np.float32)
        square[:h, :w] = cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA)
        out[i, 0] = square if grid == s else cv2.resize(square, (grid, grid), interpolation=cv2.INTER_AREA)
    np.clip(out, 0.0, 1.0, out=out)  # resizing can overshoot [0, 1] by float rounding
    return torch.from_numpy(out)
