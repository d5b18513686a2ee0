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
import os
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything import SamPredictor
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from samlib.errors import InvalidInputError, SamlibError
from samlib.models import model_name
from samlib.utils import as_uint8_rgb

__all__ = [
    "CachedEmbedding",
    "EmbeddingCache",
    "MaskUpsampler",
    "Prediction",
    "PromptPredictor",
    "encoder_fingerprint",
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
        """A digest of an image's shape, dtype and every byte, cheap enough for 8192 px rasters.

        With ``xxhash`` installed: XXH3-128 of all bytes (~10 GB/s, no copy of a contiguous array). A
        128-bit non-cryptographic hash has no practical accidental collisions (about 2**-64 for 2**32
        distinct images); it is not meant to resist images crafted to collide, which a cache of one's own
        images does not need. Every byte is read, so a one-pixel edit always changes the key. Without
        ``xxhash``: sha1 of all bytes (~10x slower; faster here than blake2b thanks to SHA instructions).
        """
        head = f"{image.shape}{image.dtype}".encode()
        data = np.ascontiguousarray(image).data.cast("B")
        try:
            import xxhash
        except ImportError:
            digest = hashlib.sha1(head)
            digest.update(data)
            return digest.hexdigest()
        fast = xxhash.xxh3_128(head)
        fast.update(data)
        return fast.hexdigest()

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


def _power_of_two_ratio(big: int, small: int) -> bool:
    """True if ``big / small`` is 1, 2, 4, 8, ...: bilinear weights are then exact in float32."""
    return small > 0 and big % small == 0 and (big // small) & (big // small - 1) == 0


def _window_stage(
    state: tuple[int, int, torch.Tensor],
    size_in: tuple[int, int],
    factors: tuple[int, int],
    crop: tuple[int, int],
    threshold: float,
) -> tuple[int, int, torch.Tensor] | None:
    """One bilinear upscaling by integer power-of-two ``factors`` of an array of ``size_in``, of which
    ``state`` = (row, col, values) holds an exact window (outside it, every value is <= threshold), then
    cropped to ``crop``. Returns the new exact window, or None when the input window lacks the margin
    the interpolation needs (the caller then interpolates the whole array)."""
    y0, x0, vals = state
    above = vals > threshold
    rows = torch.nonzero(above.any(1)).flatten()
    cols = torch.nonzero(above.any(0)).flatten()
    if rows.numel() == 0:
        return None
    # 2 input pixels of margin: every output pixel that reads an input above threshold, plus the margin
    # the next stage needs, lies in the exact part of the output
    r0, r1 = max(y0 + int(rows[0]) - 2, 0), min(y0 + int(rows[-1]) + 3, size_in[0])
    c0, c1 = max(x0 + int(cols[0]) - 2, 0), min(x0 + int(cols[-1]) + 3, size_in[1])
    if r0 < y0 or c0 < x0 or r1 > y0 + vals.shape[0] or c1 > x0 + vals.shape[1]:
        return None
    sub = vals[r0 - y0 : r1 - y0, c0 - x0 : c1 - x0]
    fy, fx = factors
    if fy == fx == 1:
        up = sub
    else:
        up = F.interpolate(
            sub[None, None], ((r1 - r0) * fy, (c1 - c0) * fx), mode="bilinear", align_corners=False
        )[0, 0]
    # output pixels within factor/2 of a cut (not the array's own) edge read a clamped neighbour: not exact
    ty0 = r0 * fy + (0 if r0 == 0 else fy // 2)
    tx0 = c0 * fx + (0 if c0 == 0 else fx // 2)
    ty1 = min(r1 * fy - (0 if r1 == size_in[0] else fy // 2), crop[0])
    tx1 = min(c1 * fx - (0 if c1 == size_in[1] else fx // 2), crop[1])
    if ty1 <= ty0 or tx1 <= tx0:
        return None
    return ty0, tx0, up[ty0 - r0 * fy : ty1 - r0 * fy, tx0 - c0 * fx : tx1 - c0 * fx]


class MaskUpsampler:
    """Upscale selected low-res logits to the original image exactly as ``Sam.postprocess_masks`` does.

    Meta's predictor upsamples every mask of a batch in float32 to the full image (twice: to the encoder's
    square input, then to the original size), although most of it is far from the object. Bilinear
    interpolation is a convex combination of at most four inputs, so a pixel can exceed ``threshold`` only
    next to a low-res logit that does. :meth:`window` therefore interpolates only the bounding box of
    the low-res logits above ``threshold`` plus a margin, and returns the logits there: everything
    outside is <= ``threshold``. When both scale factors are powers of two (SAM's 4x to the square
    input; an original image 1x, 2x, 4x ... its resized input), a window shifted by whole low-res pixels
    gets bit-identical interpolation weights, so the values equal Meta's; otherwise the full image is
    interpolated (still only for the masks asked for).

    Arguments:
      low_res (torch.Tensor): (B, K, h, w) float32 logits on the CPU.
      img_size (int): the encoder's square input size.
      input_size (tuple[int, int]): (H', W') of the resized image inside the square.
      original_size (tuple[int, int]): (H, W) of the image as given.
    """

    def __init__(
        self,
        low_res: torch.Tensor,
        img_size: int,
        input_size: tuple[int, int],
        original_size: tuple[int, int],
    ) -> None:
        self.low_res = low_res.float().cpu()
        self.img_size = int(img_size)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.original_size = (int(original_size[0]), int(original_size[1]))
        h, w = self.low_res.shape[-2:]
        self.windowed = (
            h == w
            and _power_of_two_ratio(self.img_size, int(h))
            and _power_of_two_ratio(self.original_size[0], self.input_size[0])
            and _power_of_two_ratio(self.original_size[1], self.input_size[1])
        )

    def _full(self, b: int, k: int) -> torch.Tensor:
        x = F.interpolate(
            self.low_res[b : b + 1, k : k + 1],
            (self.img_size, self.img_size),
            mode="bilinear",
            align_corners=False,
        )
        x = x[..., : self.input_size[0], : self.input_size[1]]
        return F.interpolate(x, self.original_size, mode="bilinear", align_corners=False)[0, 0]

    def window(self, b: int, k: int, threshold: float) -> tuple[slice, slice, torch.Tensor] | None:
        """Logits of mask (b, k) at the original size inside a window outside which all are <= threshold.

        Returns:
          (tuple[slice, slice, torch.Tensor] | None): row and column slices of the original image and the
            (rows, cols) logits there, or None if no logit exceeds ``threshold``.
        """
        low = self.low_res[b, k]
        if not bool((low > threshold).any()):
            return None
        state: tuple[int, int, torch.Tensor] | None = (0, 0, low)
        if self.windowed:
            f1 = self.img_size // low.shape[0]
            fy = self.original_size[0] // self.input_size[0]
            fx = self.original_size[1] // self.input_size[1]
            state = _window_stage(
                (0, 0, low), (low.shape[0], low.shape[1]), (f1, f1), self.input_size, threshold
            )
            if state is not None:
                state = _window_stage(state, self.input_size, (fy, fx), self.original_size, threshold)
        if state is None or not self.windowed:  # not exact by windows: the whole image, as Meta does
            full = self._full(b, k)
            return slice(0, full.shape[0]), slice(0, full.shape[1]), full
        y0, x0, vals = state
        return slice(y0, y0 + vals.shape[0]), slice(x0, x0 + vals.shape[1]), vals

    def masks(self, b_idx: np.ndarray, k_idx: np.ndarray, threshold: float) -> np.ndarray:
        """Binary masks (logits > threshold) of the pairs (b_idx[i], k_idx[i]): bool (n, H, W)."""
        out = np.zeros((len(b_idx), *self.original_size), dtype=bool)
        for i, (b, k) in enumerate(zip(b_idx, k_idx, strict=True)):
            win = self.window(int(b), int(k), threshold)
            if win is not None:
                rows, cols, logits = win
                out[i, rows, cols] = (logits > threshold).numpy()
        return out


class Prediction:
    """Masks predicted for one prompt (shapes without B) or a batch of prompts (shapes with B).

    Masks are computed from the low-res logits only when first asked for (:attr:`masks`), and
    :meth:`best` upsamples only the best mask of each prompt.

    Attributes:
      masks (np.ndarray): bool, (K, H, W) or (B, K, H, W), at the original image size.
      scores (np.ndarray): float32 predicted IoU of each mask, (K,) or (B, K).
      low_res_logits (np.ndarray): float32 mask logits, (K, h, w) or (B, K, h, w) (h=w=256 for
        official SAM); can be passed back as ``mask_input``.
    """

    def __init__(
        self,
        masks: np.ndarray | None,
        scores: np.ndarray,
        low_res_logits: np.ndarray,
        upsampler: MaskUpsampler | None = None,
        threshold: float = 0.0,
    ) -> None:
        if masks is None and upsampler is None:
            raise InvalidInputError("Prediction needs masks or an upsampler to compute them.")
        self._masks = masks
        self.scores = scores
        self.low_res_logits = low_res_logits
        self._upsampler = upsampler
        self._threshold = float(threshold)

    @property
    def masks(self) -> np.ndarray:
        if self._masks is None:
            assert self._upsampler is not None
            b, k = np.meshgrid(
                np.arange(self.scores.shape[0]), np.arange(self.scores.shape[1]), indexing="ij"
            )
            flat = self._upsampler.masks(b.ravel(), k.ravel(), self._threshold)
            self._masks = flat.reshape(*self.scores.shape, *flat.shape[1:])
        return self._masks

    def best_index(self) -> np.ndarray:
        """Index of the highest-scoring mask: a 0-d array, or (B,) for a batch."""
        return np.asarray(np.argmax(self.scores, axis=-1))

    def best(self) -> np.ndarray:
        """The highest-scoring mask: (H, W), or (B, H, W) for a batch."""
        idx = self.best_index()
        if self._masks is None and self._upsampler is not None:
            return self._upsampler.masks(np.arange(len(idx)), idx, self._threshold)
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

    Coordinates are (x, y) pixels of the original image; boxes are (x0, y0, x1, y1). The same rules hold
    for :meth:`predict` and :meth:`predict_batch` (:class:`InvalidInputError` otherwise): points labelled
    1 or 0 must lie on the image (0 <= x <= W, 0 <= y <= H, within :data:`POINT_TOLERANCE_PX`); boxes
    must overlap the image and are clipped to it (corners at most W / H beyond its border); each prompt
    needs a non-padding point, a box or a mask input; an empty point array is an error, not "no prompt".
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
          (Prediction): masks (B, K, H, W), scores (B, K), low_res_logits (B, K, h, w). The masks are
            upsampled from the low-res logits on first access (:meth:`Prediction.best` upsamples only the
            best mask of each prompt), exactly as ``SamPredictor`` does (:class:`MaskUpsampler`).
        """
        self._require_image()
        height, width = (int(v) for v in self.predictor.original_size)
        sizes: dict[str, int] = {}
        boxes_t = coords_t = labels_t = masks_t = None
        if (point_coords is None) != (point_labels is None):
            raise InvalidInputError("point_coords and point_labels must be given together.")
        if boxes is not None:
            b = _check_boxes(_as_float_array(boxes, "boxes"), width, height)
            sizes["boxes"] = b.shape[0]
            boxes_t = self.transform.apply_boxes_torch(
                torch.as_tensor(b, device=self.device), self.predictor.original_size
            )
        lab = None
        if point_coords is not None and point_labels is not None:
            c = _as_float_array(point_coords, "point_coords")
            lab = _as_label_array(point_labels)
            if c.ndim != 3 or c.shape[2] != 2:
                raise InvalidInputError(f"point_coords must have shape (B, N, 2), got {c.shape}.")
            if lab.shape != c.shape[:2]:
                raise InvalidInputError(
                    f"point_labels must have shape (B, N) = {c.shape[:2]} to match point_coords, "
                    f"got {lab.shape}."
                )
            if c.shape[1] == 0:
                raise InvalidInputError(
                    "point_coords holds no points (N = 0): pass point_coords=None, point_labels=None instead."
                )
            _check_points(c, lab, width, height)
            sizes["point_coords"] = c.shape[0]
            coords_t = self.transform.apply_coords_torch(
                torch.as_tensor(c, device=self.device), self.predictor.original_size
            )
            labels_t = torch.as_tensor(lab, device=self.device)
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
        n_prompts = next(iter(sizes.values()))
        if n_prompts == 0:
            raise InvalidInputError(f"Empty prompt batch (B = 0): {sizes}.")
        if lab is not None and boxes is None and mask_inputs is None:
            padding_only = np.flatnonzero((lab == -1).all(axis=1))
            if padding_only.size:
                raise InvalidInputError(
                    f"prompt(s) {padding_only[:10].tolist()} have only padding points (label -1) and no box "
                    "or mask_input: they ask for nothing. Give each prompt a point labelled 1 or 0, or a box."
                )
        _check_mask_budget(n_prompts, 3 if multimask_output else 1, height, width)
        with torch.inference_mode():
            # Meta's predict_torch without its postprocess_masks: masks are upsampled when asked for
            points = None if coords_t is None else (coords_t, labels_t)
            sparse, dense = self.sam.prompt_encoder(points=points, boxes=boxes_t, masks=masks_t)
            low_res, scores = self.sam.mask_decoder(
                image_embeddings=self.predictor.features,
                image_pe=self.sam.prompt_encoder.get_dense_pe(),
                sparse_prompt_embeddings=sparse,
                dense_prompt_embeddings=dense,
                multimask_output=multimask_output,
            )
            low_res = low_res.float().cpu()
        upsampler = MaskUpsampler(
            low_res,
            int(self.sam.image_encoder.img_size),
            tuple(self.predictor.input_size),  # type: ignore[arg-type]
            tuple(self.predictor.original_size),  # type: ignore[arg-type]
        )
        return Prediction(
            None,
            scores.float().cpu().numpy(),
            low_res.numpy(),
            upsampler=upsampler,
            threshold=float(self.sam.mask_threshold),
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


# Prompt rules (one place, so single and batched prompting agree):
# * points (labels 1 / 0) must lie on the image, 0 <= x <= W and 0 <= y <= H in pixel-edge coordinates
#   (a click on the last pixel's far edge is still on the image); padding points (label -1) are ignored
#   by SAM and not checked;
# * a box must be (x0, y0, x1, y1) with x1 >= x0, y1 >= y0 and overlap the image; a box that pokes out
#   (by at most the image's width / height) is clipped to it, what a user dragging past the border means;
# * a prompt needs at least one point that is not padding, or a box, or a mask_input.
POINT_TOLERANCE_PX = 0.5
"""How far outside the image (pixels) a point may be and still be taken as on its border."""

MAX_MASK_BYTES = 8 << 30
"""Refuse a prompt batch whose boolean masks at full image size would exceed this (env
``SAMLIB_MAX_MASK_BYTES`` overrides). The float upsampling behind them is done one mask at a time, and
only inside each mask's window (:class:`MaskUpsampler`), so peak memory stays near the size of the
answer."""


def _as_label_array(labels: Any) -> np.ndarray:
    try:
        arr = np.asarray(labels.detach().cpu() if isinstance(labels, torch.Tensor) else labels)
    except (TypeError, ValueError) as e:
        raise InvalidInputError(f"point_labels must be an integer array, got {type(labels).__name__}.") from e
    if arr.dtype == np.bool_ or not (
        np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)
    ):
        raise InvalidInputError(
            "point_labels must be integers 1 (foreground), 0 (background) or -1 (padding), "
            f"got dtype {arr.dtype}."
        )
    with np.errstate(invalid="ignore"):
        ok = np.isin(arr, (-1, 0, 1))
    if not ok.all():
        raise InvalidInputError(
            "point_labels must be 1 (foreground), 0 (background) or -1 (padding); "
            f"got values {np.unique(arr[~ok])[:10].tolist()}."
        )
    return arr.astype(np.int64)


def _check_points(coords: np.ndarray, labels: np.ndarray, width: int, height: int) -> None:
    real = labels != -1
    x, y = coords[..., 0][real], coords[..., 1][real]
    tol = POINT_TOLERANCE_PX
    outside = (x < -tol) | (x > width + tol) | (y < -tol) | (y > height + tol)
    if outside.any():
        bad = np.stack([x[outside], y[outside]], axis=1)[:3].tolist()
        raise InvalidInputError(
            f"point_coords: {int(outside.sum())} point(s) lie outside the {width} x {height} image, e.g. "
            f"{bad}. Points are (x, y) pixels with 0 <= x <= {width} and 0 <= y <= {height}; label a "
            "point -1 to mark it as padding."
        )


def _check_boxes(b: np.ndarray, width: int, height: int) -> np.ndarray:
    """Boxes checked (shape, order, overlap with the image) and clipped to the image."""
    if b.ndim != 2 or b.shape[1] != 4:
        raise InvalidInputError(f"boxes must have shape (B, 4) as (x0, y0, x1, y1), got {b.shape}.")
    if np.any(b[:, 2] < b[:, 0]) or np.any(b[:, 3] < b[:, 1]):
        raise InvalidInputError("boxes must be (x0, y0, x1, y1) with x1 >= x0 and y1 >= y0.")
    far = (b[:, :2] < -np.array([width, height])) | (b[:, 2:] > 2 * np.array([width, height]))
    if far.any():
        idx = np.flatnonzero(far.any(axis=1))
        raise InvalidInputError(
            f"boxes {idx[:10].tolist()} reach more than the image's own size beyond the {width} x {height} "
            f"image (e.g. {b[idx[0]].tolist()}): they cannot mean a region of it."
        )
    outside = (b[:, 0] > width) | (b[:, 2] < 0) | (b[:, 1] > height) | (b[:, 3] < 0)
    if outside.any():
        idx = np.flatnonzero(outside)
        raise InvalidInputError(
            f"boxes {idx[:10].tolist()} lie entirely outside the {width} x {height} image (e.g. "
            f"{b[idx[0]].tolist()}): boxes must overlap [0, {width}] x [0, {height}]."
        )
    return np.clip(b, 0, np.array([width, height, width, height], np.float32))


def _check_mask_budget(n_prompts: int, k: int, height: int, width: int) -> None:
    """Refuse a batch whose boolean masks would exceed :data:`MAX_MASK_BYTES` if all were asked for."""
    per_prompt = k * height * width  # bytes of bool masks for one prompt
    limit = _max_mask_bytes()
    if n_prompts * per_prompt > limit:
        raise InvalidInputError(
            f"{n_prompts} prompts x {k} mask(s) at {height} x {width} need "
            f"{n_prompts * per_prompt / 2**30:.1f} GiB of masks (limit {limit / 2**30:.1f} GiB, env "
            "SAMLIB_MAX_MASK_BYTES). Prompt fewer at a time, use multimask_output=False, or work on "
            "tiles (samlib.tiling)."
        )


def _max_mask_bytes() -> int:
    raw = os.environ.get("SAMLIB_MAX_MASK_BYTES", "").strip()
    if not raw:
        return MAX_MASK_BYTES
    try:
        return int(float(raw))
    except ValueError:
        raise InvalidInputError(f"$SAMLIB_MAX_MASK_BYTES must be a number of bytes, got {raw!r}.") from None
