"""Prompted prediction on top of :class:`segment_anything.SamPredictor`.

* :class:`PromptPredictor` adds an LRU cache of image embeddings (the image encoder is ~99% of SAM's
  compute, so prompting the same image again must not re-run it), input validation with clear errors,
  and batched prompting: many boxes/points for one image in one decoder call.
* Training decoders on cached embeddings of many images lives in :mod:`samlib.embeddings`.

Embeddings are computed under ``torch.no_grad`` rather than ``torch.inference_mode``: inference tensors
cannot be saved for backward, and cached embeddings are meant to be fed to trainable decoders. Mask
prediction itself runs under ``torch.inference_mode``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from samlib.errors import InvalidInputError, SamlibError
from samlib.models import model_name
from samlib.utils import as_uint8_rgb

__all__ = [
    "CachedEmbedding",
    "EmbeddingCache",
    "Prediction",
    "PromptPredictor",
    "encoder_fingerprint",
]


@dataclass
class CachedEmbedding:
    """What :class:`SamPredictor` needs to restore an image without running the encoder.

    Attributes:
      features (torch.Tensor): image embedding, shape (1, C, h, w) (C=256, h=w=64 for official SAM).
      original_size (tuple[int, int]): (H, W) of the image as given.
      input_size (tuple[int, int]): (H', W') after resizing the long side to the encoder size.
    """

    features: torch.Tensor
    original_size: tuple[int, int]
    input_size: tuple[int, int]


def encoder_fingerprint(encoder: torch.nn.Module) -> str:
    """A cheap digest of an image encoder's *current* weights, for embedding-cache keys.

    It hashes each parameter and buffer's name, shape, storage address and version counter. Any in-place
    update (an optimiser step, ``load_state_dict``, merging LoRA) bumps a tensor's version counter, and
    adding or removing modules (injecting an adapter) changes the names, so embeddings computed before
    the change are never served after it. Hashing the weights' bytes would be exact too, but costs a full
    pass over ViT-H's 2.5 GB on every ``set_image``; this costs microseconds.
    """
    digest = hashlib.sha1()
    for name, t in [*encoder.named_parameters(), *encoder.named_buffers()]:
        digest.update(f"{name}{tuple(t.shape)}{t.data_ptr()}{t._version};".encode())
    return digest.hexdigest()[:16]


class EmbeddingCache:
    """LRU cache of image embeddings keyed by (model name, encoder fingerprint, image digest).

    The encoder fingerprint (:func:`encoder_fingerprint`) changes whenever the encoder's weights change
    in place, so fine-tuning the encoder (e.g. LoRA) never serves embeddings of the old weights; training
    only decoders keeps the cache valid.
    """

    def __init__(self, maxsize: int = 32) -> None:
        if maxsize < 1:
            raise InvalidInputError(f"EmbeddingCache maxsize must be >= 1, got {maxsize}.")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._store: OrderedDict[tuple[str, ...], CachedEmbedding] = OrderedDict()

    @staticmethod
    def image_key(image: np.ndarray) -> str:
        """sha1 of an image's shape, dtype and bytes."""
        digest = hashlib.sha1(f"{image.shape}{image.dtype}".encode())
        digest.update(np.ascontiguousarray(image).tobytes())
        return digest.hexdigest()

    def get(self, key: tuple[str, ...]) -> CachedEmbedding | None:
        entry = self._store.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._store.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: tuple[str, ...], entry: CachedEmbedding) -> None:
        self._store[key] = entry
        self._store.move_to_end(key)
        while len(self._store) > self.maxsize:
            self._store.popitem(last=False)

    def clear(self) -> None:
        self._store.clear()

    def __len__(self) -> int:
        return len(self._store)

    def __contains__(self, key: object) -> bool:
        return key in self._store


@dataclass
class Prediction:
    """Masks predicted for one prompt (shapes without B) or a batch of prompts (shapes with B).

    Attributes:
      masks (np.ndarray): bool, (K, H, W) or (B, K, H, W), at the original image size.
      scores (np.ndarray): float32 predicted IoU of each mask, (K,) or (B, K).
      low_res_logits (np.ndarray): float32 mask logits, (K, h, w) or (B, K, h, w) (h=w=256 for
        official SAM); can be passed back as ``mask_input``.
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray

    def best_index(self) -> np.ndarray:
        """Index of the highest-scoring mask: a 0-d array, or (B,) for a batch."""
        return np.asarray(np.argmax(self.scores, axis=-1))

    def best(self) -> np.ndarray:
        """The highest-scoring mask: (H, W), or (B, H, W) for a batch."""
        idx = self.best_index()
        if self.masks.ndim == 3:
            return self.masks[int(idx)]
        return self.masks[np.arange(self.masks.shape[0]), idx]

    def best_logits(self) -> np.ndarray:
        """Low-res logits of the best mask, shaped for ``mask_input``: (1, h, w) or (B, 1, h, w)."""
        idx = self.best_index()
        if self.low_res_logits.ndim == 3:
            return self.low_res_logits[int(idx)][None]
        return self.low_res_logits[np.arange(self.low_res_logits.shape[0]), idx][:, None]


def _as_float_array(x: Any, name: str) -> np.ndarray:
    try:
        arr = np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, dtype=np.float32)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"{name} must be a numeric array, got {type(x).__name__}.") from e
    if not np.isfinite(arr).all():
        raise InvalidInputError(f"{name} contains NaN or infinite values.")
    return arr


class PromptPredictor:
    """Prompt SAM on one image at a time, re-using cached embeddings.

    Coordinates are (x, y) pixels of the original image; boxes are (x0, y0, x1, y1).
    """

    def __init__(self, sam: Sam, cache: EmbeddingCache | None = None) -> None:
        self.sam = sam
        self.predictor = SamPredictor(sam)
        self.cache = cache if cache is not None else EmbeddingCache()

    @property
    def transform(self) -> ResizeLongestSide:
        return self.predictor.transform

    @property
    def device(self) -> torch.device:
        return self.predictor.device

    @property
    def is_image_set(self) -> bool:
        return bool(self.predictor.is_image_set)

    @property
    def original_size(self) -> tuple[int, int]:
        self._require_image()
        return tuple(self.predictor.original_size)  # type: ignore[return-value]

    @property
    def input_size(self) -> tuple[int, int]:
        self._require_image()
        return tuple(self.predictor.input_size)  # type: ignore[return-value]

    @property
    def embedding(self) -> torch.Tensor:
        """Embedding of the current image, shape (1, C, h, w)."""
        self._require_image()
        return self.predictor.get_image_embedding()

    def _require_image(self) -> None:
        if not self.predictor.is_image_set:
            raise SamlibError("No image set: call PromptPredictor.set_image(image) first.")

    def set_image(self, image: np.ndarray) -> None:
        """Set the image to prompt: (H, W, 3) uint8 RGB (grey, RGBA and [0, 1] floats are converted).

        The encoder runs only if this (model, image) pair is not in the cache.
        """
        image = as_uint8_rgb(image)
        key = (
            model_name(self.sam),
            encoder_fingerprint(self.sam.image_encoder),
            EmbeddingCache.image_key(image),
        )
        entry = self.cache.get(key)
        if entry is None:
            with torch.no_grad():
                self.predictor.set_image(image)
            entry = CachedEmbedding(
                features=self.predictor.features,
                original_size=tuple(self.predictor.original_size),  # type: ignore[arg-type]
                input_size=tuple(self.predictor.input_size),  # type: ignore[arg-type]
            )
            self.cache.put(key, entry)
            return
        self.predictor.reset_image()
        self.predictor.features = entry.features.to(self.device)
        self.predictor.original_size = entry.original_size
        self.predictor.input_size = entry.input_size
        self.predictor.is_image_set = True

    def predict(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        mask_input: np.ndarray | None = None,
        multimask_output: bool = True,
    ) -> Prediction:
        """Masks for one prompt on the current image.

        Arguments:
          point_coords (np.ndarray | None): (N, 2) (x, y) pixel coordinates.
          point_labels (np.ndarray | None): (N,) labels, 1 = foreground, 0 = background (-1 = padding).
          box (np.ndarray | None): (4,) box (x0, y0, x1, y1).
          mask_input (np.ndarray | None): (1, h, w) or (h, w) low-res logits from a previous prediction.
          multimask_output (bool): three masks (K=3) for ambiguous prompts, else one (K=1).

        Returns:
          (Prediction): masks (K, H, W), scores (K,), low_res_logits (K, h, w).
        """
        coords_b = labels_b = box_b = mask_b = None
        if point_coords is not None:
            coords = _as_float_array(point_coords, "point_coords")
            if coords.ndim != 2 or coords.shape[1] != 2:
                raise InvalidInputError(f"point_coords must have shape (N, 2), got {coords.shape}.")
            coords_b = coords[None]
        if point_labels is not None:
            labels = np.asarray(point_labels)
            if labels.ndim != 1:
                raise InvalidInputError(f"point_labels must have shape (N,), got {labels.shape}.")
            labels_b = labels[None]
        if box is not None:
            b = _as_float_array(box, "box")
            if b.shape not in {(4,), (1, 4)}:
                raise InvalidInputError(f"box must have shape (4,) as (x0, y0, x1, y1), got {b.shape}.")
            box_b = b.reshape(1, 4)
        if mask_input is not None:
            m = _as_float_array(mask_input, "mask_input")
            if m.ndim == 2:
                m = m[None]
            if m.ndim != 3 or m.shape[0] != 1:
                raise InvalidInputError(f"mask_input must have shape (1, h, w) or (h, w), got {m.shape}.")
            mask_b = m[None]
        batch = self.predict_batch(
            boxes=box_b,
            point_coords=coords_b,
            point_labels=labels_b,
            mask_inputs=mask_b,
            multimask_output=multimask_output,
        )
        return Prediction(batch.masks[0], batch.scores[0], batch.low_res_logits[0])

    def predict_batch(
        self,
        boxes: np.ndarray | None = None,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        mask_inputs: np.ndarray | None = None,
        multimask_output: bool = False,
    ) -> Prediction:
        """Masks for B prompts on the current image, in one batched decoder call.

        Arguments:
          boxes (np.ndarray | None): (B, 4) boxes (x0, y0, x1, y1) in original-image pixels.
          point_coords (np.ndarray | None): (B, N, 2) (x, y) points in original-image pixels.
          point_labels (np.ndarray | None): (B, N) labels, 1 = foreground, 0 = background (-1 = padding).
          mask_inputs (np.ndarray | None): (B, 1, h, w) low-res logits (h, w = the decoder's mask input
            size, 256 x 256 for official SAM).
          multimask_output (bool): K=3 masks per prompt if True, else K=1.

        Returns:
          (Prediction): masks (B, K, H, W), scores (B, K), low_res_logits (B, K, h, w).
        """
        self._require_image()
        sizes: dict[str, int] = {}
        boxes_t = coords_t = labels_t = masks_t = None
        if (point_coords is None) != (point_labels is None):
            raise InvalidInputError("point_coords and point_labels must be given together.")
        if boxes is not None:
            b = _as_float_array(boxes, "boxes")
            if b.ndim != 2 or b.shape[1] != 4:
                raise InvalidInputError(f"boxes must have shape (B, 4) as (x0, y0, x1, y1), got {b.shape}.")
            if np.any(b[:, 2] < b[:, 0]) or np.any(b[:, 3] < b[:, 1]):
                raise InvalidInputError("boxes must be (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0.")
            sizes["boxes"] = b.shape[0]
            boxes_t = self.transform.apply_boxes_torch(
                torch.as_tensor(b, device=self.device), self.predictor.original_size
            )
        if point_coords is not None and point_labels is not None:
            c = _as_float_array(point_coords, "point_coords")
            lab = np.asarray(point_labels)
            if c.ndim != 3 or c.shape[2] != 2:
                raise InvalidInputError(f"point_coords must have shape (B, N, 2), got {c.shape}.")
            if lab.shape != c.shape[:2]:
                raise InvalidInputError(
                    f"point_labels must have shape (B, N) = {c.shape[:2]} to match point_coords, "
                    f"got {lab.shape}."
                )
            if not np.isin(lab, (-1, 0, 1)).all():
                raise InvalidInputError(
                    "point_labels must be 1 (foreground), 0 (background) or -1 (padding); "
                    f"got values {np.unique(lab).tolist()}."
                )
            sizes["point_coords"] = c.shape[0]
            coords_t = self.transform.apply_coords_torch(
                torch.as_tensor(c, device=self.device), self.predictor.original_size
            )
            labels_t = torch.as_tensor(lab.astype(np.int64), device=self.device)
        if mask_inputs is not None:
            m = _as_float_array(mask_inputs, "mask_inputs")
            expected = tuple(self.sam.prompt_encoder.mask_input_size)
            if m.ndim != 4 or m.shape[1] != 1 or m.shape[2:] != expected:
                raise InvalidInputError(
                    f"mask_inputs must have shape (B, 1, {expected[0]}, {expected[1]}), got {m.shape}."
                )
            sizes["mask_inputs"] = m.shape[0]
            masks_t = torch.as_tensor(m, device=self.device)
        if not sizes:
            raise InvalidInputError(
                "Give at least one prompt: boxes, point_coords/point_labels or mask_inputs."
            )
        if len(set(sizes.values())) != 1:
            raise InvalidInputError(f"All prompts must have the same batch size B, got {sizes}.")
        if next(iter(sizes.values())) == 0:
            raise InvalidInputError(f"Empty prompt batch (B = 0): {sizes}.")
        with torch.inference_mode():
            masks, scores, low_res = self.predictor.predict_torch(
                coords_t, labels_t, boxes_t, masks_t, multimask_output=multimask_output
            )
        return Prediction(
            masks=masks.cpu().numpy().astype(bool),
            scores=scores.float().cpu().numpy(),
            low_res_logits=low_res.float().cpu().numpy(),
        )
