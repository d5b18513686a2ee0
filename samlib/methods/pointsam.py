"""PointSAM (Liu et al., "PointSAM: Pointly-Supervised Segment Anything Model for Remote Sensing
Images", arXiv 2409.13401, IEEE TGRS 2025): adapting SAM's image encoder from point labels alone.

The pieces, in the order the chapter builds them:

* point data: :class:`PointSet` (images and instance masks; the masks only score, and give the points),
  :func:`generated_point_set` and :func:`real_point_set` (crops around groups of objects);
* differentiable SAM calls: :func:`encode_images`, :func:`decode_points` (the encoder runs with
  gradients, so LoRA on it can learn);
* self-training: :func:`train_pointsam` with a teacher (the student itself, an EMA copy or the frozen
  source model), weak/strong augmentation, negative prompt calibration (``samlib.prompts``) for the
  teacher, and prototype-based regularisation (:func:`target_prototypes`, :func:`online_prototypes`,
  :func:`hungarian_prototype_loss`); data-parallel under ``torchrun`` with a resumable training state, and
  a command line (``python -m samlib.methods.pointsam``, :func:`main`) that trains and saves adapters;
* evaluation: :func:`evaluate_points` (per-instance IoU and F1 from K positive + K negative points,
  averaged per image, then over images) and point-to-box scores from rotated boxes.

Two fixes to the public release are deliberate (the chapter says so): the focal loss's alpha and the dice
smoothing are bound explicitly (the release passes the number of masks into those slots), and the
prototype loss is differentiable (the release computes it from detached numbers; ``pbr_gradient=False``
reproduces that).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide
from tqdm.auto import tqdm

from samlib import adapters, augment, clustering, distributed
from samlib.data import load_dataset, split_names
from samlib.errors import InvalidInputError
from samlib.losses import dice_loss, mask_iou_logits, sigmoid_focal_loss
from samlib.metrics import rotated_box, rotated_box_iou
from samlib.prompts import calibrate_negative_prompts, sample_instance_points, sample_points
from samlib.scenes import generate_scene
from samlib.training import cosine_with_warmup
from samlib.utils import as_uint8_rgb, torch_load_safe, torch_save_atomic

__all__ = [
    "ROWS",
    "VARIANTS",
    "SetRun",
    "PointScores",
    "PointSet",
    "PointSAMConfig",
    "Prototypes",
    "TrainResult",
    "decode_points",
    "encode_images",
    "evaluate_points",
    "generated_point_set",
    "hungarian_prototype_loss",
    "instance_crops",
    "online_prototypes",
    "real_point_set",
    "run_set",
    "target_prototypes",
    "train_pointsam",
    "variant_config",
    "weight_check",
]


# ------------------------------------------------------------------------------------------------ data


@dataclass
class PointSet:
    """Images and their instance masks. Training uses only points drawn from the masks.

    Attributes:
      images (list[np.ndarray]): (H, W, 3) uint8 RGB each.
      masks (list[np.ndarray]): (N_i, H, W) bool instance masks of each image, N_i >= 1.
      names (list[str]): where each image comes from (scene seed or file name and crop).
    """

    images: list[np.ndarray]
    masks: list[np.ndarray]
    names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.images) != len(self.masks):
            raise InvalidInputError(f"{len(self.images)} images but {len(self.masks)} mask stacks.")
        for i, (im, m) in enumerate(zip(self.images, self.masks)):
            if m.ndim != 3 or m.shape[1:] != im.shape[:2] or m.shape[0] == 0:
                raise InvalidInputError(
                    f"masks[{i}] must be (N >= 1, H, W) matching image {im.shape[:2]}, got {m.shape}."
                )
        if not self.names:
            self.names = [str(i) for i in range(len(self.images))]

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_instances(self) -> int:
        return int(sum(m.shape[0] for m in self.masks))

    def subset(self, indices: Sequence[int]) -> PointSet:
        idx = list(indices)
        return PointSet(
            [self.images[i] for i in idx], [self.masks[i] for i in idx], [self.names[i] for i in idx]
        )


def generated_point_set(domain: str, n: int, size: int = 256, seed: int = 0) -> PointSet:
    """``n`` generated scenes of ``domain`` (``samlib.scenes``) that have at least one instance."""
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    names: list[str] = []
    scene_seed = seed
    while len(images) < n:
        scene = generate_scene(domain, size, scene_seed)
        if len(scene.masks):
            images.append(scene.image)
            masks.append(scene.masks)
            names.append(f"{domain}-{scene_seed}")
        scene_seed += 1
    return PointSet(images, masks, names)


def instance_crops(
    image: np.ndarray,
    masks: np.ndarray,
    crop: int,
    out_size: int,
    min_area: int = 4,
    name: str = "",
) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """Square crops that cover every instance of a large image, each resized to ``out_size``.

    Greedy: the largest instance not yet covered centres the next ``crop`` x ``crop`` window (shifted to
    stay inside the image); every instance with at least half of its pixels in the window joins it, and
    those count as covered. So a group of nearby objects shares one crop.

    Returns:
      (list): (image (out_size, out_size, 3) uint8, masks (N, out_size, out_size) bool, name) per crop.
    """
    h, w = image.shape[:2]
    if crop > min(h, w) or crop < 8:
        raise InvalidInputError(f"crop must be in [8, {min(h, w)}] for a {h} x {w} image, got {crop}.")
    areas = masks.reshape(len(masks), -1).sum(1)
    covered = np.zeros(len(masks), bool)
    out = []
    for i in np.argsort(-areas):
        if covered[i] or areas[i] == 0:
            continue
        ys, xs = np.nonzero(masks[i])
        y0 = int(np.clip(round(ys.mean()) - crop // 2, 0, h - crop))
        x0 = int(np.clip(round(xs.mean()) - crop // 2, 0, w - crop))
        window = masks[:, y0 : y0 + crop, x0 : x0 + crop]
        inside = window.reshape(len(masks), -1).sum(1)
        members = np.flatnonzero((inside >= 0.5 * np.maximum(areas, 1)) & (areas > 0))
        covered[members] = True
        img = cv2_resize(image[y0 : y0 + crop, x0 : x0 + crop], out_size, linear=True)
        ms = np.stack([cv2_resize(window[j].astype(np.uint8), out_size, linear=False) > 0 for j in members])
        ms = ms[ms.reshape(len(ms), -1).sum(1) >= min_area]
        if len(ms):
            out.append((img, ms, f"{name}@{x0},{y0}"))
    return out


def cv2_resize(array: np.ndarray, size: int, linear: bool) -> np.ndarray:
    """Resize a (H, W[, C]) array to (size, size): area/bilinear for images, nearest for masks."""
    import cv2

    interp = (cv2.INTER_AREA if array.shape[0] > size else cv2.INTER_LINEAR) if linear else cv2.INTER_NEAREST
    return cv2.resize(array, (size, size), interpolation=interp)


def real_point_set(
    dataset: str,
    root: Any,
    split: str,
    crop: int,
    out_size: int = 256,
    test_fraction: float = 1 / 3,
    split_seed: int = 0,
    min_area: int = 4,
) -> PointSet | None:
    """Crops of a real instance data set (``ships-hrsid``, ``buildings-spacenet-rio``), split by image.

    The split is fixed (``split_seed``) over the images that have instances, so crops of one image never
    land on both sides. Returns None when the data set is not found under ``root``.
    """
    if split not in ("train", "test"):
        raise InvalidInputError(f"split must be 'train' or 'test', got {split!r}.")
    try:
        samples = load_dataset(dataset, root=root)
    except Exception as e:  # DataNotFoundError, or a root that does not exist
        if type(e).__name__ in ("DataNotFoundError", "FileNotFoundError"):
            return None
        raise
    labelled = [s for s in samples if s.masks is not None and len(s.masks)]
    train_names, test_names = split_names([s.name for s in labelled], test_fraction, split_seed)
    wanted = set(train_names if split == "train" else test_names)
    images: list[np.ndarray] = []
    masks: list[np.ndarray] = []
    names: list[str] = []
    for s in labelled:
        if s.name not in wanted or s.masks is None:
            continue
        for img, ms, nm in instance_crops(s.image, s.masks, crop, out_size, min_area, s.name):
            images.append(img)
            masks.append(ms)
            names.append(nm)
    return PointSet(images, masks, names) if images else None


# ------------------------------------------------------------------------------------------------ SAM calls


def encode_images(sam: Sam, images: Sequence[np.ndarray]) -> torch.Tensor:
    """Image embeddings (B, C, h, w) of same-sized images; gradients flow if the caller enables them.

    Unlike ``samlib.embeddings.embed_images`` this does not detach: LoRA weights in the encoder train
    through it.
    """
    if len(images) == 0:
        raise InvalidInputError("encode_images needs at least one image.")
    transform = ResizeLongestSide(int(sam.image_encoder.img_size))
    batch = []
    for image in images:
        resized = transform.apply_image(as_uint8_rgb(image))
        x = torch.as_tensor(resized, device=sam.device).permute(2, 0, 1).contiguous()
        batch.append(sam.preprocess(x[None].float())[0])
    return sam.image_encoder(torch.stack(batch))


def decode_points(
    sam: Sam,
    embedding: torch.Tensor,
    coords: np.ndarray,
    labels: np.ndarray,
    original_size: tuple[int, int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """One single-mask decoding per instance from its points, on one image's embedding.

    Arguments:
      embedding (torch.Tensor): (1, C, h, w) from :func:`encode_images`.
      coords (np.ndarray): (N, P, 2) (x, y) pixels of the original image.
      labels (np.ndarray): (N, P), 1 = positive, 0 = negative.
      original_size (tuple[int, int]): (H, W) of the image the points refer to.

    Returns:
      (torch.Tensor, torch.Tensor): low-res logits (N, 1, 4h, 4w) and predicted IoU (N, 1).
    """
    transform = ResizeLongestSide(int(sam.image_encoder.img_size))
    c = torch.as_tensor(np.asarray(coords, np.float32), device=sam.device)
    c = transform.apply_coords_torch(c, original_size)
    lab = torch.as_tensor(np.asarray(labels, np.int64), device=sam.device)
    sparse, dense = sam.prompt_encoder(points=(c, lab), boxes=None, masks=None)
    low, iou = sam.mask_decoder(
        image_embeddings=embedding,
        image_pe=sam.prompt_encoder.get_dense_pe(),
        sparse_prompt_embeddings=sparse,
        dense_prompt_embeddings=dense,
        multimask_output=False,
    )
    return low, iou


def _input_size(sam: Sam, original_size: tuple[int, int]) -> tuple[int, int]:
    img = int(sam.image_encoder.img_size)
    h, w = ResizeLongestSide.get_preprocess_shape(original_size[0], original_size[1], img)
    return int(h), int(w)


def _to_original(sam: Sam, low: torch.Tensor, original_size: tuple[int, int]) -> np.ndarray:
    """(N, 1, h, w) low-res logits -> (N, H, W) bool masks at the original size."""
    up = sam.postprocess_masks(low, _input_size(sam, original_size), original_size)
    return (up[:, 0] > 0).cpu().numpy()


def _lowres_masks(sam: Sam, masks: np.ndarray) -> torch.Tensor:
    """(N, H, W) bool masks -> (N, 1, h, w) float {0, 1} on the decoder's low-res grid (padded like SAM)."""
    img = int(sam.image_encoder.img_size)
    low = tuple(4 * s for s in sam.prompt_encoder.image_embedding_size)
    h, w = _input_size(sam, masks.shape[1:])
    t = torch.as_tensor(masks[:, None].astype(np.float32), device=sam.device)
    t = F.interpolate(t, (h, w), mode="bilinear", align_corners=False)
    t = F.pad(t, (0, img - w, 0, img - h))
    return (F.interpolate(t, low, mode="area") > 0.5).float()


def _grid_index(
    sam: Sam, points: np.ndarray, original_size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """Embedding-grid (row, column) of (M, 2) (x, y) image points: index an (C, h, w) grid as [:, y, x]."""
    img = int(sam.image_encoder.img_size)
    gh, gw = sam.prompt_encoder.image_embedding_size
    p = ResizeLongestSide(img).apply_coords(np.asarray(points, np.float64), original_size)
    rows = np.clip((p[:, 1] * gh / img).astype(np.int64), 0, gh - 1)
    cols = np.clip((p[:, 0] * gw / img).astype(np.int64), 0, gw - 1)
    return rows, cols


# ------------------------------------------------------------------------------------------------ prototypes


@dataclass
class Prototypes:
    """Offline target prototypes from the frozen source model.

    Attributes:
      features (np.ndarray): (M, C) embedding feature at each training instance's first positive point.
      labels (np.ndarray): (M,) FINCH cluster of each feature (the chosen partition).
      prototypes (np.ndarray): (P, C) cluster means (the coarsest partition with more than one cluster).
    """

    features: np.ndarray
    labels: np.ndarray
    prototypes: np.ndarray


@torch.no_grad()
def target_prototypes(sam: Sam, train: PointSet, seed: int = 0, progress: bool = True) -> Prototypes:
    """Cluster the frozen model's point features of every training instance with FINCH (PointSAM step 1)."""
    rng = np.random.default_rng(seed)
    feats = []
    for image, masks in tqdm(
        list(zip(train.images, train.masks)), desc="prototype features", disable=not progress, leave=False
    ):
        emb = encode_images(sam, [image])[0]
        points = np.stack([sample_points(m, 1, rng)[0] for m in masks])
        rows, cols = _grid_index(sam, points, image.shape[:2])
        feats.append(emb[:, rows, cols].T.float().cpu().numpy())
    features = np.concatenate(feats)
    if len(features) < 2:
        raise InvalidInputError("target_prototypes needs at least two training instances.")
    protos, labels = clustering.finch_prototypes(features)
    return Prototypes(features, labels, protos)


def online_prototypes(features: torch.Tensor) -> torch.Tensor:
    """Prototypes of a bank of features, differentiable in the features: FINCH picks the clusters (from
    detached numbers), the centres are recomputed in torch as the members' means.

    Arguments:
      features (torch.Tensor): (M, C), M >= 2.

    Returns:
      (torch.Tensor): (P, C) cluster centres.
    """
    _, labels = clustering.finch_prototypes(features.detach().float().cpu().numpy())
    lab = torch.as_tensor(labels, device=features.device)
    n = int(lab.max()) + 1
    sums = torch.zeros(n, features.shape[1], device=features.device, dtype=features.dtype)
    sums = sums.index_add(0, lab, features)
    counts = torch.bincount(lab, minlength=n).clamp(min=1).to(features.dtype)
    return sums / counts[:, None]


def hungarian_prototype_loss(predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """PBR loss: match predicted to target prototypes one-to-one (Hungarian, cost 1 - cosine) and return
    the mean matched cost. Zero when the predicted prototypes are the targets (in any order).

    Arguments:
      predicted (torch.Tensor): (P, C) online prototypes (gradients flow through them).
      target (torch.Tensor): (T, C) target prototypes (constants).

    Returns:
      (torch.Tensor): scalar; min(P, T) pairs are matched.
    """
    if predicted.dim() != 2 or target.dim() != 2 or predicted.shape[1] != target.shape[1]:
        raise InvalidInputError(
            f"predicted (P, C) and target (T, C) must share C, got {tuple(predicted.shape)} and "
            f"{tuple(target.shape)}."
        )
    cost = 1.0 - F.normalize(predicted, dim=1) @ F.normalize(target.to(predicted), dim=1).T
    rows, cols = linear_sum_assignment(cost.detach().float().cpu().numpy())
    return cost[torch.as_tensor(rows), torch.as_tensor(cols)].mean()


# ------------------------------------------------------------------------------------------------ training


@dataclass(frozen=True)
class PointSAMConfig:
    """One training run. The defaults are PointSAM's method; :data:`VARIANTS` gives the ablations.

    Attributes:
      teacher (str): "self" (the student under no_grad, as the public code), "ema" (an EMA copy of the
        student), "frozen" (the source SAM: plain self-training) or "none" (supervised: true masks).
      npc (bool): negative prompt calibration of the teacher's prompts.
      pbr (bool): prototype-based regularisation (needs target prototypes).
      pbr_gradient (bool): differentiable PBR (ours); False = computed from detached numbers (the release).
      bank_size (int), pbr_every (int): FIFO memory of point features, and how often PBR is applied once
        the bank is full (paper: 512 and 30).
      strong_ops (int), strong_op_names (tuple[str, ...] | None): the student's strong view applies
        ``strong_ops`` operations drawn from these names of :data:`samlib.augment.PHOTOMETRIC_OPS` (None:
        all of them, the paper's list).
    """

    steps: int = 20
    images_per_step: int = 2
    k_choices: tuple[int, ...] = (1, 2, 3)
    lr: float = 1e-3
    weight_decay: float = 1e-4
    warmup: int = 0
    rank: int = 4
    blocks: tuple[int, ...] | None = None
    teacher: str = "self"
    ema_momentum: float = 0.999
    npc: bool = True
    npc_iou: float = 0.1
    pbr: bool = True
    pbr_weight: float = 0.1
    pbr_gradient: bool = True
    bank_size: int = 512
    pbr_every: int = 30
    focal_weight: float = 20.0
    focal_alpha: float = 0.25
    focal_gamma: float = 2.0
    dice_smooth: float = 1.0
    strong_ops: int = 2
    strong_op_names: tuple[str, ...] | None = None
    max_instances: int = 12
    grad_clip: float = 1.0
    seed: int = 0


VARIANTS: dict[str, dict[str, Any]] = {
    "self_train": dict(teacher="frozen", npc=False, pbr=False),
    "self_train_npc": dict(teacher="frozen", npc=True, pbr=False),
    "self_train_pbr": dict(teacher="frozen", npc=False, pbr=True),
    "pointsam": dict(teacher="self", npc=True, pbr=True),
    "supervised": dict(teacher="none", npc=False, pbr=False),
}
"""The paper's rows as config overrides: self-training (frozen source teacher), + NPC, + PBR, PointSAM
(all parts, the student as its own teacher) and supervised fine-tuning with the true masks."""

STRONG_VIEW_STUDY: dict[str, dict[str, Any]] = {
    "self_train_no_photometric": dict(teacher="frozen", npc=False, pbr=False, strong_ops=0),
    "self_train": dict(teacher="frozen", npc=False, pbr=False),
    "self_train_order_keeping": dict(
        teacher="frozen", npc=False, pbr=False, strong_op_names=augment.ORDER_KEEPING_OPS
    ),
    "self_train_solarize": dict(
        teacher="frozen", npc=False, pbr=False, strong_ops=1, strong_op_names=("solarize",)
    ),
    "self_train_npc_no_photometric": dict(teacher="frozen", npc=True, pbr=False, strong_ops=0),
}
"""Chapter 02's study of the student's strong view on SAR ships: plain self-training (frozen teacher)
with no photometric operation, the paper's seven, the order-keeping five
(:data:`~samlib.augment.ORDER_KEEPING_OPS`) and solarize alone; and NPC added to the first."""

STUDY_LABELS: dict[str, str] = {
    "self_train_no_photometric": "no photometric op",
    "self_train": "the paper's 7 ops",
    "self_train_order_keeping": "the 5 order-keeping ops",
    "self_train_solarize": "solarize alone",
    "self_train_npc_no_photometric": "no photometric op + NPC",
}
"""Short names of the rows of :data:`STRONG_VIEW_STUDY` for figures and text."""


@dataclass
class TrainResult:
    """A trained model and its curves (one value per step; PBR is NaN on steps without it)."""

    sam: Sam
    config: PointSAMConfig
    history: dict[str, list[float]]


def _teacher_prompts(
    teacher: Sam,
    embedding: torch.Tensor,
    coords: np.ndarray,
    labels: np.ndarray,
    size: tuple[int, int],
    npc: bool,
    npc_iou: float,
    rng: np.random.Generator,
) -> tuple[torch.Tensor, np.ndarray]:
    """Teacher logits (N, 1, h, w) for the prompts, after negative prompt calibration if asked."""
    low, _ = decode_points(teacher, embedding, coords, labels, size)
    if npc and len(coords) > 1:
        new_coords, _ = calibrate_negative_prompts(
            (low[:, 0] > 0).cpu().numpy(), coords, labels, rng, npc_iou
        )
        if not np.array_equal(new_coords, coords):
            low, _ = decode_points(teacher, embedding, new_coords, labels, size)
            coords = new_coords
    return low, coords


def train_pointsam(
    source: Sam,
    train: PointSet,
    config: PointSAMConfig,
    prototypes: Prototypes | None = None,
    progress: bool = True,
    desc: str = "PointSAM",
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 0,
    resume: bool = True,
) -> TrainResult:
    """Train LoRA adapters on a copy of ``source``'s image encoder from point labels (PointSAM).

    Every step: draw images, K in ``k_choices``, K positive + K negative points per instance; flip
    (weak); the teacher decodes the weak view (with NPC if asked) -> pseudo-labels ``logits > 0``; the
    student sees the strong view (weak + photometric) with the original prompts; loss = 20 focal + dice +
    MSE of the IoU head against the student's IoU with the pseudo-label, + 0.1 PBR.

    Arguments:
      source (Sam): the frozen source model (not modified; the student is a deep copy).
      train (PointSet): training images; their masks are used only to draw points (or as targets when
        ``config.teacher == "none"``).
      config (PointSAMConfig): the run.
      prototypes (Prototypes | None): targets for PBR (required when ``config.pbr``).
      checkpoint (str | Path | None): a training-state file (adapters, optimizer, random state, PBR bank,
        curves), written every ``checkpoint_every`` steps (0: at the end only) and at the end; with
        ``resume`` an existing one is loaded and training goes on from its step (same config; ``steps``
        may grow).

    Returns:
      (TrainResult): the adapted student and per-step curves (of the whole run when resumed).

    Randomness: one generator seeded by ``config.seed`` draws each step's images, K, instance subsets,
    flips, photometric ops and points; NPC's draws come from a generator per step and image
    (``[seed, step, b]``, b = place in the batch).

    Under ``torchrun --nproc_per_node=N`` (:mod:`samlib.distributed`): every rank draws the same global
    batch (and the same augmentations and points) and trains on its share (images ``rank::N``); the LoRA
    gradients are summed over ranks; the step's point features of all ranks are gathered in batch order,
    so the PBR memory bank and the prototype loss are the same on every rank and equal the
    single-process ones; only rank 0 writes ``checkpoint``. The curves equal a single-process run's with
    the same ``images_per_step`` (to float rounding). Call it on every rank with the same arguments.
    """
    with distributed.session():
        return _train_pointsam(source, train, config, prototypes, progress, desc, checkpoint,
                               checkpoint_every, resume)  # fmt: skip


_STATE_FORMAT = "samlib-pointsam-train-1"
_CURVES = ("loss", "focal", "dice", "iou", "pbr", "pseudo_iou")


@dataclass
class _Item:
    """One image of a step's global batch, after the draws: views, prompts and (possibly subset) masks."""

    weak: np.ndarray
    strong: np.ndarray
    coords: np.ndarray
    labels: np.ndarray
    masks: np.ndarray


def _draw_item(image: np.ndarray, masks: np.ndarray, k: int, config: PointSAMConfig,
               rng: np.random.Generator) -> _Item:  # fmt: skip
    if len(masks) > config.max_instances:
        masks = masks[rng.choice(len(masks), config.max_instances, replace=False)]
    if rng.random() < 0.5:
        image, masks = augment.hflip_image(image), augment.hflip_masks(masks)
    strong = augment.strong_augment(image, rng, config.strong_ops, config.strong_op_names)
    coords, labels = sample_instance_points(masks, k, rng)
    return _Item(image, strong, coords, labels, masks)


def _train_pointsam(
    source: Sam,
    train: PointSet,
    config: PointSAMConfig,
    prototypes: Prototypes | None,
    progress: bool,
    desc: str,
    checkpoint: str | Path | None,
    checkpoint_every: int,
    resume: bool,
) -> TrainResult:
    if config.teacher not in ("self", "ema", "frozen", "none"):
        raise InvalidInputError(f"teacher must be 'self', 'ema', 'frozen' or 'none', got {config.teacher!r}.")
    if config.pbr and prototypes is None:
        raise InvalidInputError("config.pbr needs target prototypes: pass target_prototypes(source, train).")
    if len(train) < config.images_per_step:
        raise InvalidInputError(f"need at least {config.images_per_step} training images, got {len(train)}.")
    world = distributed.world_size()
    if config.images_per_step < world:
        raise InvalidInputError(
            f"images_per_step ({config.images_per_step}) must be >= the {world} processes."
        )
    if checkpoint_every < 0:
        raise InvalidInputError(f"checkpoint_every must be >= 0 steps, got {checkpoint_every}.")
    here = distributed.rank_device(source.device)
    if source.device != here:  # torchrun: each rank trains on its own GPU
        source = copy.deepcopy(source).to(here)
    main = distributed.is_main_process()
    rng = np.random.default_rng(config.seed)
    torch.manual_seed(config.seed)
    student = copy.deepcopy(source)
    adapters.add_encoder_lora(student, rank=config.rank, blocks=config.blocks)
    student.train()
    params = adapters.lora_parameters(student)
    teacher: Sam | None = {"self": student, "frozen": source, "none": None}.get(config.teacher)
    if config.teacher == "ema":
        teacher = copy.deepcopy(student)
    opt = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    targets = None if prototypes is None else torch.as_tensor(prototypes.prototypes, dtype=torch.float32)
    bank: list[torch.Tensor] = []
    history: dict[str, list[float]] = {k: [] for k in _CURVES}
    start = 0
    path = None if checkpoint is None else Path(checkpoint)
    if path is not None and resume and path.is_file():
        start = _load_state(path, config, student, teacher if config.teacher == "ema" else None, opt, rng,
                            bank, history)  # fmt: skip
    distributed.broadcast_parameters(params)  # the same start on every rank (it is already, by the seed)
    if teacher is not None and config.teacher == "ema":
        distributed.broadcast_parameters(adapters.lora_parameters(teacher))
    bar = tqdm(range(start, config.steps), desc=desc, disable=not (progress and main), leave=False)
    for step in bar:
        for g in opt.param_groups:  # the cosine schedule, set from the step (resumable, steps may grow)
            g["lr"] = config.lr * cosine_with_warmup(step, config.steps, config.warmup)
        idx = rng.choice(len(train), size=config.images_per_step, replace=False)
        k = int(rng.choice(config.k_choices))
        # Every rank draws for the whole global batch (cheap), so the shared stream stays in step.
        drawn = [_draw_item(train.images[i], train.masks[i], k, config, rng) for i in idx]
        n = len(drawn)
        mine = distributed.shard(range(n))
        items = [drawn[b] for b in mine]
        pseudo = []
        with torch.no_grad():
            emb_t = None if teacher is None else encode_images(teacher, [it.weak for it in items])
            for j, (b, it) in enumerate(zip(mine, items)):
                if emb_t is None or teacher is None:
                    pseudo.append(_lowres_masks(student, it.masks))
                    continue
                low_t, _ = _teacher_prompts(
                    teacher,
                    emb_t[j : j + 1],
                    it.coords,
                    it.labels,
                    it.weak.shape[:2],
                    config.npc,
                    config.npc_iou,
                    np.random.default_rng([config.seed, step, b]),
                )
                pseudo.append((low_t > 0).float())
        emb_s = encode_images(student, [it.strong for it in items])
        focal = dice = iou_mse = torch.zeros((), device=student.device)
        feats, pseudo_quality = [], []
        for j, it in enumerate(items):
            size = it.strong.shape[:2]
            low_s, iou_s = decode_points(student, emb_s[j : j + 1], it.coords, it.labels, size)
            target = pseudo[j]
            focal = focal + sigmoid_focal_loss(
                low_s, target, alpha=config.focal_alpha, gamma=config.focal_gamma
            )
            dice = dice + dice_loss(low_s, target, smooth=config.dice_smooth)
            iou_mse = iou_mse + F.mse_loss(iou_s, mask_iou_logits(low_s, target))
            rows, cols = _grid_index(student, it.coords[:, 0], size)
            feats.append(emb_s[j][:, rows, cols].T)
            pseudo_quality.append(
                float(mask_iou_logits(target * 2 - 1, _lowres_masks(student, it.masks)).mean())
            )
        # This rank's part of the global batch's mean; the gradients are summed over ranks below.
        loss = (config.focal_weight * focal + dice + iou_mse) / n
        sums = distributed.all_reduce_sum_tensor(torch.stack([focal, dice, iou_mse, loss]))
        pbr_term = torch.zeros((), device=student.device)
        pbr_value = float("nan")
        # The step's point features of the whole global batch, in batch order (own ones with gradients).
        current = torch.cat(distributed.all_gather_shards(feats))
        if config.pbr and targets is not None:
            stored = sum(len(f) for f in bank)
            if stored >= config.bank_size and step % config.pbr_every == 0:
                memory = torch.cat(bank)[-config.bank_size :]
                online = current if config.pbr_gradient else current.detach()
                pbr = hungarian_prototype_loss(online_prototypes(torch.cat([memory, online])), targets)
                # Every rank computes the same PBR; its gradient reaches each rank through its own
                # features only, so the sum over ranks is the whole gradient.
                pbr_term = config.pbr_weight * pbr
                loss = loss + pbr_term
                pbr_value = pbr.item()
            bank.append(current.detach())
            while sum(len(f) for f in bank) - len(bank[0]) >= config.bank_size:
                bank.pop(0)  # FIFO: keep just enough to fill the bank
        opt.zero_grad(set_to_none=True)
        loss.backward()
        distributed.sum_gradients(params)
        torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
        opt.step()
        if config.teacher == "ema" and teacher is not None:
            with torch.no_grad():
                for pt, ps in zip(adapters.lora_parameters(teacher), params):
                    pt.mul_(config.ema_momentum).add_(ps.detach(), alpha=1 - config.ema_momentum)
        quality = distributed.all_reduce_sum([sum(pseudo_quality), len(pseudo_quality)])
        for key, value in (
            ("loss", (sums[3] + pbr_term.detach()).item()),
            ("focal", sums[0].item() / n),
            ("dice", sums[1].item() / n),
            ("iou", sums[2].item() / n),
            ("pbr", pbr_value),
            ("pseudo_iou", quality[0] / quality[1]),
        ):
            history[key].append(value)
        done = step + 1
        if (
            path is not None
            and main
            and (done == config.steps or (checkpoint_every and done % checkpoint_every == 0))
        ):
            _save_state(path, config, done, student, teacher if config.teacher == "ema" else None, opt, rng,
                        bank, history)  # fmt: skip
    student.eval()
    return TrainResult(student, config, history)


def _save_state(path: Path, config: PointSAMConfig, step: int, student: Sam, ema: Sam | None,
                opt: torch.optim.Optimizer, rng: np.random.Generator, bank: list[torch.Tensor],
                history: dict[str, list[float]]) -> None:  # fmt: skip
    """Write the training state atomically (rank 0 only: the caller checks)."""
    state = {
        "format": _STATE_FORMAT,
        "config": asdict(config),
        "step": step,
        "lora": adapters.adapter_state_dict(student),
        "ema_lora": None if ema is None else adapters.adapter_state_dict(ema),
        "optimizer": opt.state_dict(),
        "rng": rng.bit_generator.state,
        "bank": [t.detach().cpu() for t in bank],
        "history": {k: list(v) for k, v in history.items()},
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch_save_atomic(state, path)  # a crash never leaves a half-written file


def _load_state(path: Path, config: PointSAMConfig, student: Sam, ema: Sam | None,
                opt: torch.optim.Optimizer, rng: np.random.Generator, bank: list[torch.Tensor],
                history: dict[str, list[float]]) -> int:  # fmt: skip
    """Restore a state written by :func:`_save_state` in place; returns its step."""
    state = torch_load_safe(path, "a PointSAM training state written by train_pointsam")
    if not isinstance(state, dict) or state.get("format") != _STATE_FORMAT:
        raise InvalidInputError(f"{path} is not a PointSAM training state (written by train_pointsam).")
    saved = {k: v for k, v in state["config"].items() if k != "steps"}
    wanted = {k: v for k, v in asdict(config).items() if k != "steps"}
    if saved != wanted:
        diff = sorted(k for k in wanted if saved.get(k) != wanted[k])
        raise InvalidInputError(f"{path} was trained with another config (differs in {diff}); resume=False "
                                "or another checkpoint path starts afresh.")  # fmt: skip
    if state["step"] > config.steps:
        raise InvalidInputError(f"{path} is at step {state['step']}, beyond config.steps = {config.steps}.")
    with torch.no_grad():
        for model, key in ((student, "lora"), (ema, "ema_lora")):
            if model is None:
                continue
            own = dict(model.named_parameters())
            for name, value in state[key].items():
                own[name].copy_(value.to(own[name].device, own[name].dtype))
    opt.load_state_dict(state["optimizer"])
    rng.bit_generator.state = state["rng"]
    bank[:] = [t.to(student.device) for t in state["bank"]]
    for key in history:
        history[key][:] = state["history"][key]
    return int(state["step"])


def variant_config(name: str, base: PointSAMConfig) -> PointSAMConfig:
    """``base`` with the overrides of :data:`VARIANTS` [``name``]."""
    if name not in VARIANTS:
        raise InvalidInputError(f"unknown variant {name!r}; choose one of {sorted(VARIANTS)}.")
    return replace(base, **VARIANTS[name])


def weight_check(source: Sam, adapted: Sam) -> dict[str, float]:
    """How far the adapted model moved: max |change| of the LoRA B weights (they start at 0) and of every
    other weight compared with ``source`` (0.0 = bit-identical), and the number of weights compared."""
    base = dict(source.named_parameters())
    frozen_diff, lora_change, compared = 0.0, 0.0, 0
    for name, p in adapted.named_parameters():
        if "lora_" in name:
            if "lora_B" in name:
                lora_change = max(lora_change, float(p.detach().abs().max()))
            continue
        original = base[name.replace(".base_layer", "")]
        frozen_diff = max(frozen_diff, float((p.detach() - original.detach()).abs().max()))
        compared += 1
    return {
        "lora_b_max_abs": lora_change,
        "frozen_max_abs_diff": frozen_diff,
        "frozen_tensors": float(compared),
    }


# ------------------------------------------------------------------------------------------------ evaluation


@dataclass
class PointScores:
    """Scores of one model on one set for one K.

    Attributes:
      miou (float), f1 (float): per-instance IoU / F1 (Dice), averaged per image, then over images.
      rbox_iou (float), rbox_p50 (float): mean rotated-box IoU of predicted vs true masks, and the
        fraction of instances with rotated-box IoU >= 0.5 (point-to-box conversion).
      per_image (list[np.ndarray]): per-instance IoU of each image.
      masks (list[np.ndarray]): predicted (N, H, W) masks of each image.
      coords (list[np.ndarray]): the (N, 2K, 2) points used (after NPC when it was on).
    """

    miou: float
    f1: float
    rbox_iou: float
    rbox_p50: float
    per_image: list[np.ndarray]
    masks: list[np.ndarray]
    coords: list[np.ndarray]

    def metrics(self) -> dict[str, float]:
        return {"miou": self.miou, "f1": self.f1}


@torch.no_grad()
def evaluate_points(
    sam: Sam,
    test: PointSet,
    ks: Sequence[int] = (1, 2, 3),
    seed: int = 0,
    npc: bool = False,
    npc_iou: float = 0.1,
    progress: bool = True,
    desc: str = "evaluate",
) -> dict[int, PointScores]:
    """The paper's protocol: K positive + K negative random points per instance (seeded: the same points
    for every model given the same ``seed``), one mask each; optional NPC at test time (not in the paper).

    Returns:
      (dict[int, PointScores]): scores for each K.
    """
    sam.eval()
    out: dict[int, dict[str, list[Any]]] = {
        k: {"iou": [], "f1": [], "rbox": [], "masks": [], "coords": []} for k in ks
    }
    for i in tqdm(range(len(test)), desc=desc, disable=not progress, leave=False):
        image, gts = test.images[i], test.masks[i]
        emb = encode_images(sam, [image])
        for k in ks:
            point_rng = np.random.default_rng([seed, k, i])
            coords, labels = sample_instance_points(gts, k, point_rng)
            low, coords = _teacher_prompts(
                sam,
                emb,
                coords,
                labels,
                image.shape[:2],
                npc,
                npc_iou,
                np.random.default_rng([seed, k, i, 1]),
            )
            pred = _to_original(sam, low, image.shape[:2])
            inter = (pred & gts).reshape(len(gts), -1).sum(1)
            union = (pred | gts).reshape(len(gts), -1).sum(1)
            total = pred.reshape(len(gts), -1).sum(1) + gts.reshape(len(gts), -1).sum(1)
            ious = inter / np.maximum(union, 1)
            out[k]["iou"].append(ious)
            out[k]["f1"].append(2 * inter / np.maximum(total, 1))
            out[k]["rbox"].extend(rotated_box_iou(rotated_box(p), rotated_box(g)) for p, g in zip(pred, gts))
            out[k]["masks"].append(pred)
            out[k]["coords"].append(coords)
    result = {}
    for k, v in out.items():
        rbox = np.asarray(v["rbox"])
        result[k] = PointScores(
            miou=float(np.mean([x.mean() for x in v["iou"]])),
            f1=float(np.mean([x.mean() for x in v["f1"]])),
            rbox_iou=float(rbox.mean()),
            rbox_p50=float((rbox >= 0.5).mean()),
            per_image=v["iou"],
            masks=v["masks"],
            coords=v["coords"],
        )
    return result


# ------------------------------------------------------------------------------------------------ figures


def plot_npc_example(sam: Sam, image: np.ndarray, masks: np.ndarray, k: int = 1, seed: int = 0) -> Any:
    """Three panels on one crowded image: truth, pseudo-labels without NPC, after NPC (with the points)."""
    from samlib.plots import image_grid, overlay, show_points

    with torch.no_grad():
        emb = encode_images(sam, [image])
        coords, labels = sample_instance_points(masks, k, np.random.default_rng(seed))
        before = _to_original(
            sam, decode_points(sam, emb, coords, labels, image.shape[:2])[0], image.shape[:2]
        )
        low, new = _teacher_prompts(
            sam, emb, coords, labels, image.shape[:2], True, 0.1, np.random.default_rng(seed)
        )
        after = _to_original(sam, low, image.shape[:2])
    iou_before = _mean_iou(before, masks)
    iou_after = _mean_iou(after, masks)

    def panel(ms: np.ndarray, pts: np.ndarray | None) -> Callable[[Any], None]:
        def draw(ax: Any) -> None:
            overlay(image, ms, ax=ax)
            if pts is not None:
                show_points(ax, pts.reshape(-1, 2), labels.reshape(-1), size=40)

        return draw

    return image_grid(
        [panel(masks, None), panel(before, coords), panel(after, new)],
        [
            f"ground truth ({len(masks)} objects)",
            f"decoded from K={k} points: mIoU {iou_before:.2f}",
            f"after negative prompt calibration: {iou_after:.2f}",
        ],
        ncols=3,
        size=3.6,
    )


def _mean_iou(pred: np.ndarray, gts: np.ndarray) -> float:
    inter = (pred & gts).reshape(len(gts), -1).sum(1)
    union = (pred | gts).reshape(len(gts), -1).sum(1)
    return float((inter / np.maximum(union, 1)).mean())


def plot_prototypes(protos: Prototypes, title: str = "") -> Any:
    """2-D PCA projection of the point features, coloured by FINCH cluster, prototypes as stars."""
    import matplotlib.pyplot as plt
    from sklearn.decomposition import PCA

    from samlib.plots import palette_color

    pca = PCA(n_components=2).fit(protos.features)
    xy = pca.transform(protos.features)
    centres = pca.transform(protos.prototypes)
    fig, ax = plt.subplots(figsize=(5, 4))
    for c in range(len(centres)):
        sel = protos.labels == c
        ax.scatter(
            xy[sel, 0],
            xy[sel, 1],
            s=10,
            color=palette_color(c),
            alpha=0.6,
            label=f"cluster {c} ({sel.sum()})",
        )
        ax.scatter(centres[c, 0], centres[c, 1], marker="*", s=250, color=palette_color(c), edgecolor="black")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title(
        title or "point features of the training objects (FINCH clusters, stars = prototypes)", fontsize=10
    )
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


def plot_study_gains(gains: dict[str, float], title: str = "") -> Any:
    """One horizontal bar per study row: its 1-point mIoU minus direct SAM's (``gains``: row -> gain)."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 2.8))
    ax.barh([STUDY_LABELS.get(m, m) for m in gains], list(gains.values()), color="tab:blue")
    ax.axvline(0, color="black", lw=0.8)
    ax.invert_yaxis()
    ax.set_xlabel("1-point mIoU minus direct SAM")
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def plot_training_curves(histories: dict[str, dict[str, list[float]]], title: str = "") -> Any:
    """Loss and pseudo-label IoU (against the hidden truth) per step, one line per run."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.4))
    for name, h in histories.items():
        axes[0].plot(h["loss"], label=name)
        axes[1].plot(h["pseudo_iou"], label=name)
    axes[0].set_title("training loss (20 focal + dice + IoU MSE + 0.1 PBR)", fontsize=10)
    axes[1].set_title("pseudo-label IoU with the (unused) true masks", fontsize=10)
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return fig


def compare_figure(
    source: Sam, adapted: Sam, test: PointSet, index: int = 0, k: int = 1, npc: bool = False, seed: int = 0
) -> Any:
    """Direct SAM vs the adapted model on one test image, the same K points, NPC on or off."""
    from samlib.plots import image_grid

    item = test.subset([int(index) % len(test)])
    shown = [item.masks[0]]
    titles = ["ground truth"]
    for name, model in (("direct SAM", source), ("PointSAM", adapted)):
        s = evaluate_points(model, item, (int(k),), seed, npc=npc, progress=False)[int(k)]
        shown.append(s.masks[0])
        titles.append(f"{name}, K={k}{' + NPC' if npc else ''}: mIoU {s.miou:.2f}")
    panels = [partial(_overlay_panel, item.images[0], m) for m in shown]
    return image_grid(panels, titles, ncols=3, size=3.4)


def _overlay_panel(image: np.ndarray, masks: np.ndarray, ax: Any) -> None:
    from samlib.plots import overlay

    overlay(image, masks, ax=ax)


# ------------------------------------------------------------------------------------------------ one set


ROWS: tuple[str, ...] = ("direct_sam", *VARIANTS)
"""The rows of the paper's ablation table, in order (direct SAM first)."""


@dataclass
class SetRun:
    """Every row of the chapter on one data set: scores per method and K, curves, weight checks.

    Attributes:
      split (str): the key suffix, e.g. "generated", "hrsid", "spacenet".
      scores (dict[str, dict[int, PointScores]]): method -> K -> scores; test-time NPC rows end in
        ``_test_npc``.
      histories (dict[str, dict[str, list[float]]]): per-step curves of each trained method.
      models (dict[str, Sam]): the trained models.
      weight_checks (dict[str, dict[str, float]]): :func:`weight_check` of each trained model.
      prototypes (Prototypes | None): the offline target prototypes of this set (None: no variant used PBR).
    """

    split: str
    scores: dict[str, dict[int, PointScores]]
    histories: dict[str, dict[str, list[float]]]
    models: dict[str, Sam]
    weight_checks: dict[str, dict[str, float]]
    prototypes: Prototypes | None

    def results(self) -> dict[str, dict[str, float]]:
        """The metrics-file rows: ``{method}_{k}pt_{split}`` (miou, f1) and
        ``point_to_box_{method}_{split}`` (rbox_iou, rbox_p50, from the K = 1 masks)."""
        out: dict[str, dict[str, float]] = {}
        for method, per_k in self.scores.items():
            for k, s in per_k.items():
                out[f"{method}_{k}pt_{self.split}"] = s.metrics()
        for method in ("direct_sam", "pointsam"):
            if method in self.scores and 1 in self.scores[method]:
                s = self.scores[method][1]
                out[f"point_to_box_{method}_{self.split}"] = {"rbox_iou": s.rbox_iou, "rbox_p50": s.rbox_p50}
        return out


def run_set(
    source: Sam,
    train: PointSet,
    test: PointSet,
    split: str,
    base: PointSAMConfig,
    ks: Sequence[int] = (1, 2, 3),
    seed: int = 0,
    extra_variants: dict[str, dict[str, Any]] | None = None,
    test_npc: Sequence[str] = ("direct_sam", "pointsam"),
    progress: bool = True,
    variants: dict[str, dict[str, Any]] | None = None,
) -> SetRun:
    """Direct SAM, every variant of ``variants`` (default :data:`VARIANTS`) plus ``extra_variants``
    trained on ``train``, all scored on ``test`` with the same seeded points; the methods in ``test_npc``
    also with NPC at test time. Target prototypes are computed only when a variant uses PBR."""
    variants = {**(VARIANTS if variants is None else variants), **(extra_variants or {})}
    configs = {name: replace(base, seed=seed, **overrides) for name, overrides in variants.items()}
    needs_protos = any(c.pbr for c in configs.values())
    protos = target_prototypes(source, train, seed, progress=progress) if needs_protos else None
    scores = {
        "direct_sam": evaluate_points(source, test, ks, seed, progress=progress, desc=f"direct SAM {split}")
    }
    histories, models, checks = {}, {}, {}
    for name, cfg in configs.items():
        run = train_pointsam(
            source, train, cfg, protos if cfg.pbr else None, progress=progress, desc=f"{name} {split}"
        )
        histories[name], models[name] = run.history, run.sam
        checks[name] = weight_check(source, run.sam)
        scores[name] = evaluate_points(run.sam, test, ks, seed, progress=progress, desc=f"{name} {split}")
    for name in test_npc:
        model = source if name == "direct_sam" else models[name]
        scores[f"{name}_test_npc"] = evaluate_points(model, test, ks, seed, npc=True, progress=progress)
    return SetRun(split, scores, histories, models, checks, protos)


# ------------------------------------------------------------------------------------------------ CLI


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m samlib.methods.pointsam``: train PointSAM adapters on generated scenes, save them.

    Start it with ``torchrun --nproc_per_node=N`` to train data-parallel (see :func:`train_pointsam`);
    rank 0 alone writes ``--checkpoint`` (resumed when it exists) and ``--out``.
    """
    import argparse

    from samlib.models import load_sam
    from samlib.utils import resolve_device

    parser = argparse.ArgumentParser(prog="python -m samlib.methods.pointsam", description=main.__doc__)
    parser.add_argument("--model", default="teaching", help="teaching, vit_b, vit_l, vit_h or a checkpoint")
    parser.add_argument("--variant", default="pointsam", choices=sorted(VARIANTS))
    parser.add_argument("--domain", default="dense_objects", help="generated scene domain (samlib.scenes)")
    parser.add_argument("--images", type=int, default=16, help="generated training images")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=PointSAMConfig.steps)
    parser.add_argument("--images-per-step", type=int, default=PointSAMConfig.images_per_step,
                        help="the global batch, split over the processes")  # fmt: skip
    parser.add_argument("--lr", type=float, default=PointSAMConfig.lr)
    parser.add_argument("--bank-size", type=int, default=PointSAMConfig.bank_size)
    parser.add_argument("--pbr-every", type=int, default=PointSAMConfig.pbr_every)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--checkpoint", default=None, help="training state, resumed when it exists")
    parser.add_argument("--checkpoint-every", type=int, default=0)
    parser.add_argument("--out", required=True, help="adapter file (samlib.adapters.save_adapters)")
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)
    with distributed.session():
        device = distributed.rank_device(resolve_device(args.device))
        source = load_sam(args.model, device=device).eval()
        data = generated_point_set(args.domain, args.images, args.image_size, seed=args.seed)
        base = PointSAMConfig(steps=args.steps, images_per_step=args.images_per_step, lr=args.lr,
                              bank_size=args.bank_size, pbr_every=args.pbr_every, seed=args.seed)  # fmt: skip
        config = variant_config(args.variant, base)
        protos = target_prototypes(source, data, args.seed, progress=False) if config.pbr else None
        run = train_pointsam(source, data, config, protos, desc=args.variant, checkpoint=args.checkpoint,
                             checkpoint_every=args.checkpoint_every)  # fmt: skip
        if distributed.is_main_process():
            meta = {"config": asdict(config), "loss": run.history["loss"], "model": str(args.model)}
            path = adapters.save_adapters(run.sam, args.out, meta=meta)
            print(f"{args.variant}: {config.steps} steps on {distributed.world_size()} process(es), "
                  f"final loss {run.history['loss'][-1]:.4f}; adapters in {path}")  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
