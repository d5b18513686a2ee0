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
    "zoom_window",
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


class EmbeddingCache:
    """LRU cache of image embeddings keyed by (model name, image digest).

    The key assumes a model's image encoder does not change under the same name: after fine-tuning the
    encoder in place, call :meth:`clear`. (Training only decoders keeps the cache valid.)
    """

    def __init__(self, maxsize: int = 32) -> None:
        if maxsize < 1:
            raise InvalidInputError(f"EmbeddingCache maxsize must be >= 1, got {maxsize}.")
        self.maxsize = maxsize
        self.hits = 0
        self.misses = 0
        self._store: OrderedDict[tuple[str, str], CachedEmbedding] = OrderedDict()

    @staticmethod
    def image_key(image: np.ndarray) -> str:
        """sha1 of an image's shape, dtype and bytes."""
        digest = hashlib.sha1(f"{image.shape}{image.dtype}".encode())
        digest.update(np.ascontiguousarray(image).tobytes())
        return digest.hexdigest()

    def get(self, key: tuple[str, str]) -> CachedEmbedding | None:
        entry = self._store.get(key)
        if entry is None:
            self.misses += 1
            return None
        self._store.move_to_end(key)
        self.hits += 1
        return entry

    def put(self, key: tuple[str, str], entry: CachedEmbedding) -> None:
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
        self._image: np.ndarray | None = None  # the current image, for zoomed prediction

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
        self._image = image
        key = (model_name(self.sam), EmbeddingCache.image_key(image))
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

    # ----------------------------------------------------------------------------------------- zoom

    def predict_zoomed(
        self,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        box: np.ndarray | None = None,
        multimask_output: bool = True,
        margin: float = 0.5,
        min_crop: int = 64,
    ) -> Prediction:
        """:meth:`predict` on a crop around the prompt, the mask pasted back at full resolution.

        Small objects get more of the encoder's pixels: a 12 px ship in a 1,000 px image is 3 px at a
        256 px encoder input, but 48 px when a 64 px crop around it is encoded. The crop is
        :func:`zoom_window` of the prompt; its embedding is cached like any image's.

        Arguments:
          point_coords (np.ndarray | None): (N, 2) (x, y) pixel coordinates of the full image.
          point_labels (np.ndarray | None): (N,) labels, 1 = foreground, 0 = background.
          box (np.ndarray | None): (4,) box (x0, y0, x1, y1) of the full image.
          multimask_output (bool): three masks (K=3) for ambiguous prompts, else one (K=1).
          margin (float): context around the prompt, as a fraction of its size on each side.
          min_crop (int): the smallest crop side in pixels (the zoom is at most encoder size / min_crop).

        Returns:
          (Prediction): masks (K, H, W) of the full image (False outside the crop), scores (K,),
            low_res_logits (K, h, w) in the crop's frame (not a ``mask_input`` for the full image).
        """
        coords_b = labels_b = box_b = None
        if point_coords is not None:
            coords_b = _as_float_array(point_coords, "point_coords")[None]
        if point_labels is not None:
            labels_b = np.asarray(point_labels)[None]
        if box is not None:
            box_b = _as_float_array(box, "box").reshape(1, -1)
        batch = self.predict_batch_zoomed(box_b, coords_b, labels_b, multimask_output, margin, min_crop)
        return Prediction(batch.masks[0], batch.scores[0], batch.low_res_logits[0])

    def predict_batch_zoomed(
        self,
        boxes: np.ndarray | None = None,
        point_coords: np.ndarray | None = None,
        point_labels: np.ndarray | None = None,
        multimask_output: bool = False,
        margin: float = 0.5,
        min_crop: int = 64,
    ) -> Prediction:
        """:meth:`predict_batch` with every prompt predicted on its own crop (see :meth:`predict_zoomed`).

        Prompts whose crops coincide share one encoder run; the current image's embedding is restored
        afterwards, so plain prediction continues where it was.

        Arguments:
          boxes (np.ndarray | None): (B, 4) boxes (x0, y0, x1, y1) in original-image pixels.
          point_coords (np.ndarray | None): (B, N, 2) (x, y) points in original-image pixels.
          point_labels (np.ndarray | None): (B, N) labels, 1 = foreground, 0 = background (-1 = padding).
          multimask_output (bool): K=3 masks per prompt if True, else K=1.
          margin (float): context around each prompt, as a fraction of its size on each side.
          min_crop (int): the smallest crop side in pixels.

        Returns:
          (Prediction): masks (B, K, H, W) of the full image, scores (B, K), low_res_logits
            (B, K, h, w) in each prompt's crop frame.
        """
        self._require_image()
        if self._image is None:
            raise SamlibError("Zoomed prediction needs the image itself: call set_image(image) first.")
        if margin < 0 or min_crop < 1:
            raise InvalidInputError(f"margin must be >= 0 and min_crop >= 1, got {margin}, {min_crop}.")
        if (point_coords is None) != (point_labels is None):
            raise InvalidInputError("point_coords and point_labels must be given together.")
        b = c = lab = None
        n = None
        if boxes is not None:
            b = _as_float_array(boxes, "boxes")
            if b.ndim != 2 or b.shape[1] != 4:
                raise InvalidInputError(f"boxes must have shape (B, 4) as (x0, y0, x1, y1), got {b.shape}.")
            n = len(b)
        if point_coords is not None and point_labels is not None:
            c = _as_float_array(point_coords, "point_coords")
            lab = np.asarray(point_labels)
            if c.ndim != 3 or c.shape[2] != 2 or lab.shape != c.shape[:2]:
                raise InvalidInputError(
                    f"point_coords must be (B, N, 2) and point_labels (B, N), got {c.shape} and {lab.shape}."
                )
            if n is not None and len(c) != n:
                raise InvalidInputError(
                    f"boxes and points must have the same batch size, got {n} and {len(c)}."
                )
            n = len(c)
        if not n:
            raise InvalidInputError("Give at least one box or point prompt (B >= 1) for zoomed prediction.")
        image = self._image
        h, w = image.shape[:2]
        windows = []
        for i in range(n):
            pts = None
            if c is not None and lab is not None:
                fg = lab[i] == 1
                pts = c[i][fg] if fg.any() else c[i][lab[i] >= 0]
            windows.append(zoom_window((h, w), None if b is None else b[i], pts, margin, min_crop))
        saved = (self.predictor.features, self.predictor.original_size, self.predictor.input_size)
        k = 3 if multimask_output else 1
        masks = np.zeros((n, k, h, w), dtype=bool)
        scores: list[np.ndarray] = [np.zeros(0)] * n
        logits: list[np.ndarray] = [np.zeros(0)] * n
        try:
            for win in sorted(set(windows)):
                x0, y0, x1, y1 = win
                self.set_image(image[y0:y1, x0:x1])
                idx = [i for i in range(n) if windows[i] == win]
                offset = np.array([x0, y0], dtype=np.float32)
                pred = self.predict_batch(
                    boxes=None if b is None else b[idx] - np.tile(offset, 2),
                    point_coords=None if c is None else c[idx] - offset,
                    point_labels=None if lab is None else lab[idx],
                    multimask_output=multimask_output,
                )
                masks[idx, :, y0:y1, x0:x1] = pred.masks
                for j, i in enumerate(idx):
                    scores[i], logits[i] = pred.scores[j], pred.low_res_logits[j]
        finally:
            self._image = image
            self.predictor.features, self.predictor.original_size, self.predictor.input_size = saved
            self.predictor.is_image_set = True
        return Prediction(masks=masks, scores=np.stack(scores), low_res_logits=np.stack(logits))


def zoom_window(
    image_size: tuple[int, int],
    box: np.ndarray | None = None,
    points: np.ndarray | None = None,
    margin: float = 0.5,
    min_crop: int = 64,
) -> tuple[int, int, int, int]:
    """The square crop that zoomed prediction encodes for one prompt.

    The prompt's extent (the box, the points' bounding box, or both together) grows by ``margin`` of
    its size on each side, is made square with side at least ``min_crop``, and is shifted (not cut) to
    lie inside the image; a side longer than the image is clipped to it.

    Arguments:
      image_size (tuple[int, int]): (H, W) of the image.
      box (np.ndarray | None): (4,) box (x0, y0, x1, y1), inclusive pixel indices.
      points (np.ndarray | None): (N, 2) (x, y) points.
      margin (float): context on each side, as a fraction of the prompt's size.
      min_crop (int): the smallest side in pixels.

    Returns:
      (tuple[int, int, int, int]): (x0, y0, x1, y1) with x1, y1 exclusive, so the crop is
        ``image[y0:y1, x0:x1]``.
    """
    h, w = image_size
    parts = []
    if box is not None:
        parts.append(np.asarray(box, dtype=np.float64).reshape(2, 2))
    if points is not None and len(points):
        parts.append(np.asarray(points, dtype=np.float64).reshape(-1, 2))
    if not parts:
        raise InvalidInputError("zoom_window needs a box or at least one point.")
    xy = np.concatenate(parts)
    (lx, ly), (hx, hy) = xy.min(0), xy.max(0) + 1  # + 1: boxes and points are pixel indices
    cx, cy = (lx + hx) / 2, (ly + hy) / 2
    side = max(hx - lx, hy - ly) * (1 + 2 * margin)
    side_x = int(min(w, max(min_crop, np.ceil(side))))
    side_y = int(min(h, max(min_crop, np.ceil(side))))
    x0 = int(np.clip(round(cx - side_x / 2), 0, w - side_x))
    y0 = int(np.clip(round(cy - side_y / 2), 0, h - side_y))
    return x0, y0, x0 + side_x, y0 + side_y
