"""Knowledge distillation with SAM for planetary landform mapping (Julka & Granitzer, 2023).

The paper's recipe, in the order the chapter uses it:

1. **Prompt-mode study** (:func:`prompt_mode_study`): automatic mask generation (best-matching mask per
   object), a point at the object's centre, a box around it; IoU of each against the truth.
2. **Annotation by distillation** (:func:`pseudo_labels`): an expert draws boxes; SAM prompted with those
   boxes turns them into masks, the pseudo-labels.
3. **Domain decoder** (:class:`samlib.decoders.DomainDecoder`): SAM's image encoder is frozen and its
   embeddings cached (:func:`samlib.embeddings.embed_images`); three transposed-convolution layers
   upsample the embedding 8x to a sigmoid mask of the landform class, trained on the pseudo-labels only.
4. **Contrast** (:class:`samlib.decoders.PromptlessSamDecoder`): SAM's own mask decoder fine-tuned on the
   same labels and used *without prompts* at test time (the paper's failure case) — fine-tuned the usual
   way, with the boxes as prompts (:func:`samlib.decoders.train_sam_decoder_with_boxes`), and, as an
   ablation, fine-tuned without prompts too (:func:`samlib.decoders.train_sam_decoder`).
5. **Delta-N sweep** (:func:`n_sweep`, :func:`summarize_sweep`, :func:`plot_sweep`): train on N images,
   several seeds, score mIoU, micro F1, accuracy, precision and recall.

The decoders and their geometry (a square grid over SAM's padded input) live in :mod:`samlib.decoders`;
the pixel and object metrics in :mod:`samlib.metrics`.

For real data with boxes but no masks (mars-pits), :func:`samlib.metrics.object_scores` measures what
boxes can measure: the fraction of boxes a predicted mask covers (object recall) and the fraction of predicted
connected components that fall inside some box (object precision).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from segment_anything.modeling import Sam
from torch import nn
from tqdm.auto import tqdm

from samlib.decoders import (
    DomainDecoder,
    PromptlessSamDecoder,
    predict_masks,
    train_domain_decoder,
    train_sam_decoder,
    train_sam_decoder_with_boxes,
)
from samlib.embeddings import EmbeddedImages
from samlib.errors import InvalidInputError
from samlib.metrics import best_match_ious, iou, object_scores, segmentation_scores
from samlib.predict import PromptPredictor
from samlib.prompts import box_from_mask, center_point
from samlib.training import fingerprint, load_trained, resume_file, save_trained
from samlib.utils import resolve_device

__all__ = [
    "METHODS",
    "PAPER_TABLE1",
    "SWEEP_METRICS",
    "PlanetarySet",
    "PromptStudy",
    "SweepResult",
    "generated_set",
    "mars_pits_set",
    "n_sweep",
    "plot_prompt_failures",
    "plot_sweep",
    "prompt_mode_study",
    "pseudo_labels",
    "summarize_sweep",
    "sweep_findings",
]

PAPER_TABLE1: dict[str, dict[str, float]] = {
    "mask_rcnn_405_images": {"f1": 0.811, "accuracy": 0.774, "precision": 0.952, "recall": 0.706},
    "domain_decoder_5_images": {"f1": 0.86, "accuracy": 0.96, "precision": 0.89, "recall": 0.93},
}
"""Julka & Granitzer (2023), Table 1: Mask-RCNN trained on 405 images vs the SAM-distilled domain decoder
trained on 5 images (their test set, their pixel metrics; quoted, not reproduced)."""


# ----------------------------------------------------------------------------------------------- data


@dataclass
class PlanetarySet:
    """Images with boxes, and the true landform mask where one exists.

    Attributes:
      images: (H, W, 3) uint8 RGB each (sizes may differ).
      boxes: (K, 4) float (x0, y0, x1, y1) pixel boxes per image (the "expert" annotation).
      truth: (H, W) bool union of the landform instances per image, or None (real data: boxes only).
      instances: (K, H, W) bool instance masks per image, or None.
      names: one name per image.
    """

    images: list[np.ndarray]
    boxes: list[np.ndarray]
    truth: list[np.ndarray] | None = None
    instances: list[np.ndarray] | None = None
    names: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.images)

    def subset(self, indices: Sequence[int]) -> PlanetarySet:
        idx = [int(i) for i in indices]
        return PlanetarySet(
            images=[self.images[i] for i in idx],
            boxes=[self.boxes[i] for i in idx],
            truth=None if self.truth is None else [self.truth[i] for i in idx],
            instances=None if self.instances is None else [self.instances[i] for i in idx],
            names=[self.names[i] for i in idx] if self.names else [],
        )


def generated_set(n: int, size: int = 256, seed: int = 0) -> PlanetarySet:
    """``n`` generated planetary scenes (seeds ``seed .. seed + n - 1``): pits with true masks and boxes.

    Scenes without any pit are skipped (the next seed is taken), so every image has at least one box.
    """
    from samlib.scenes import generate_scene

    if n < 1:
        raise InvalidInputError(f"n must be >= 1, got {n}.")
    images: list[np.ndarray] = []
    boxes: list[np.ndarray] = []
    truth: list[np.ndarray] = []
    instances: list[np.ndarray] = []
    names: list[str] = []
    s = seed
    while len(images) < n:
        scene = generate_scene("planetary", size, s)
        if len(scene.masks):
            images.append(scene.image)
            boxes.append(scene.boxes.astype(np.float64))
            instances.append(scene.masks)
            truth.append(np.asarray(scene.masks.any(axis=0), bool))
            names.append(f"planetary-{s}")
        s += 1
    return PlanetarySet(images, boxes, truth, instances, names)


def mars_pits_set(root: str | Path | None, split: str, limit: int | None = None) -> PlanetarySet | None:
    """The real HiRISE pits (boxes only, no masks) of ``split``, or None when ``root`` is None or absent.

    Images whose boxes were all degenerate (dropped by the loader) are skipped.
    """
    if root is None or not (Path(root) / "mars-pits").is_dir():
        return None
    from samlib.data import load_mars_pits

    samples = [
        s for s in load_mars_pits(root, split=split, limit=limit) if s.boxes is not None and len(s.boxes)
    ]
    return PlanetarySet(
        images=[s.image for s in samples],
        boxes=[np.asarray(s.boxes, dtype=np.float64) for s in samples],
        names=[s.name for s in samples],
    )


# ----------------------------------------------------------------------------------------------- prompts


@dataclass
class PromptStudy:
    """Per-object IoUs of the three prompt modes, and what automatic mode produced.

    Attributes:
      ious: {"auto" | "point" | "box": (total objects,) IoU per object}.
      auto_masks: per image, the (M, H, W) masks automatic generation produced.
      point_masks, box_masks: per image, the (K, H, W) mask chosen for each object's prompt.
      points: per image, the (K, 2) centre points used.
    """

    ious: dict[str, np.ndarray]
    auto_masks: list[np.ndarray]
    point_masks: list[np.ndarray]
    box_masks: list[np.ndarray]
    points: list[np.ndarray]

    def summary(self) -> dict[str, dict[str, float]]:
        """{mode: {"iou": mean IoU, "iou_std", "objects"}} plus masks per image for automatic mode."""
        out = {
            mode: {"iou": float(v.mean()), "iou_std": float(v.std()), "objects": float(len(v))}
            for mode, v in self.ious.items()
        }
        out["auto"]["masks_per_image"] = float(np.mean([len(m) for m in self.auto_masks]))
        return out


def prompt_mode_study(
    sam: Sam,
    images: Sequence[np.ndarray],
    instances: Sequence[np.ndarray],
    predictor: PromptPredictor | None = None,
    auto_kwargs: dict[str, Any] | None = None,
) -> PromptStudy:
    """Segment every instance three ways and score each against its true mask.

    * auto: :class:`segment_anything.SamAutomaticMaskGenerator` (``auto_kwargs``), then for each object
      the generated mask with the highest IoU (an oracle match; the best automatic mode can do);
    * point: one positive click at :func:`samlib.prompts.center_point`, multimask output, SAM's
      highest-scoring mask (SAM has to resolve the ambiguity itself, as a user without a mask would);
    * box: the object's tight box (:func:`samlib.prompts.box_from_mask`), single-mask output.
    """
    from segment_anything import SamAutomaticMaskGenerator

    predictor = predictor if predictor is not None else PromptPredictor(sam)
    generator = SamAutomaticMaskGenerator(sam, **(auto_kwargs or {}))
    ious: dict[str, list[np.ndarray]] = {"auto": [], "point": [], "box": []}
    autos, point_masks, box_masks, points = [], [], [], []
    for image, inst in zip(images, instances, strict=True):
        inst = np.asarray(inst, bool)
        with torch.no_grad():
            generated = generator.generate(image)
        auto = (
            np.stack([g["segmentation"] for g in generated]).astype(bool)
            if generated
            else np.zeros((0, *image.shape[:2]), bool)
        )
        autos.append(auto)
        ious["auto"].append(best_match_ious(auto, inst))
        predictor.set_image(image)
        pts = np.stack([center_point(m) for m in inst])
        pred = predictor.predict_batch(
            point_coords=pts[:, None], point_labels=np.ones((len(pts), 1), int), multimask_output=True
        )
        pm = pred.best()
        bxs = np.stack([box_from_mask(m) for m in inst])
        bm = predictor.predict_batch(boxes=bxs, multimask_output=False).masks[:, 0]
        ious["point"].append(np.array([iou(a, b) for a, b in zip(pm, inst, strict=True)]))
        ious["box"].append(np.array([iou(a, b) for a, b in zip(bm, inst, strict=True)]))
        point_masks.append(pm)
        box_masks.append(bm)
        points.append(pts)
    return PromptStudy(
        {k: np.concatenate(v).astype(np.float64) for k, v in ious.items()},
        autos,
        point_masks,
        box_masks,
        points,
    )


def pseudo_labels(
    predictor: PromptPredictor,
    images: Sequence[np.ndarray],
    boxes: Sequence[np.ndarray],
    instances: bool = False,
) -> list[np.ndarray]:
    """Annotation by distillation: SAM prompted with each image's boxes (single-mask output).

    Returns:
      per image, the union of the box masks, (H, W) bool (all False without boxes); with
      ``instances=True`` the (K, H, W) stack of one mask per box instead.
    """
    out: list[np.ndarray] = []
    for image, bxs in zip(images, boxes, strict=True):
        b = np.asarray(bxs, dtype=np.float64).reshape(-1, 4)
        if len(b) == 0:
            out.append(np.zeros((0, *image.shape[:2]) if instances else image.shape[:2], bool))
            continue
        predictor.set_image(image)
        masks = predictor.predict_batch(boxes=b, multimask_output=False).masks[:, 0]
        out.append(np.asarray(masks if instances else masks.any(axis=0), bool))
    return out


# ----------------------------------------------------------------------------------------------- sweep


@dataclass
class SweepResult:
    """Records of a Delta-N sweep and the models trained at the first seed (for figures).

    Attributes:
      records: one dict per (method, n, seed) with the scores of :func:`segmentation_scores` (and
        :func:`object_scores` when test boxes were given).
      models: {(method, n): model trained with the first seed}.
      histories: {(method, n): loss per step of that model}.
      train_indices: {(n, seed): indices of the training images used}.
    """

    records: list[dict[str, Any]]
    models: dict[tuple[str, int], nn.Module]
    histories: dict[tuple[str, int], list[float]]
    train_indices: dict[tuple[int, int], list[int]]


METHODS: dict[str, str] = {
    "domain_decoder": "domain decoder",
    "sam_decoder_ft": "SAM decoder, fine-tuned with boxes, no prompt at test",
    "sam_decoder_ft_promptless": "SAM decoder, fine-tuned and tested without prompts",
}


# trains one decoder: (embeddings of the N images, their pool indices, their labels, seed) -> (model, losses)
_Trainer = Callable[[EmbeddedImages, list[int], list[np.ndarray], int], tuple[nn.Module, list[float]]]


def n_sweep(
    sam: Sam,
    train_embedded: EmbeddedImages,
    train_labels: Sequence[np.ndarray],
    test_embedded: EmbeddedImages,
    test_truth: Sequence[np.ndarray],
    n_values: Sequence[int],
    seeds: Sequence[int],
    steps: int = 300,
    methods: Sequence[str] = ("domain_decoder", "sam_decoder_ft"),
    method_n: dict[str, Sequence[int]] | None = None,
    method_seeds: dict[str, Sequence[int]] | None = None,
    test_boxes: Sequence[np.ndarray] | None = None,
    train_boxes: Sequence[np.ndarray] | None = None,
    train_instances: Sequence[np.ndarray] | None = None,
    domain_lr: float = 3e-3,
    sam_lr: float = 3e-4,
    batch_size: int = 4,
    device: torch.device | str | None = None,
    progress: bool = True,
    resume_dir: str | Path | None = None,
) -> SweepResult:
    """Train every method on N images (a seeded random draw from the training pool) for every seed.

    Arguments:
      train_labels: the (pseudo-)labels of the training pool, one (H, W) mask per image.
      test_truth: the masks to score against (true masks, or SAM-from-box references on real data).
      methods: keys of :data:`METHODS`: "domain_decoder", "sam_decoder_ft" (SAM's decoder fine-tuned
        with box prompts, tested without; needs ``train_boxes`` and ``train_instances``, the pool's
        boxes and their per-box pseudo-label masks) and "sam_decoder_ft_promptless" (trained and tested
        without prompts).
      method_n, method_seeds: optional per-method subsets of ``n_values`` and ``seeds``.
      test_boxes: when given, :func:`object_scores` are added to each record.
      resume_dir: a folder where every trained decoder is saved (weights, loss history, training time)
        as soon as it is trained; a later call with the same folder loads each decoder whose inputs are
        unchanged instead of training it again (the file name holds a digest of the training data, the
        starting weights and the hyper-parameters), so a long sweep interrupted part-way resumes where it
        stopped and scores what it would have scored uninterrupted. None: nothing is saved.
    """
    for m in methods:
        if m not in METHODS:
            raise InvalidInputError(f"unknown method {m!r}; choose from {sorted(METHODS)}.")
    pool = len(train_embedded)
    if max(n_values) > pool:
        raise InvalidInputError(f"N = {max(n_values)} exceeds the training pool of {pool} images.")
    if "sam_decoder_ft" in methods and (train_boxes is None or train_instances is None):
        raise InvalidInputError("method 'sam_decoder_ft' needs train_boxes and train_instances.")
    jobs = [
        (m, n, s)
        for n in n_values
        for s in seeds
        for m in methods
        if n in (method_n or {}).get(m, n_values) and s in (method_seeds or {}).get(m, seeds)
    ]
    records: list[dict[str, Any]] = []
    models: dict[tuple[str, int], nn.Module] = {}
    histories: dict[tuple[str, int], list[float]] = {}
    indices: dict[tuple[int, int], list[int]] = {}
    if resume_dir is not None:
        # the starting point of both SAM-decoder methods (a different SAM must not reuse them)
        sam_digest = fingerprint(
            *(v for m in (sam.prompt_encoder, sam.mask_decoder) for v in m.state_dict().values())
        )

    # One entry per method: (an untrained decoder that saved weights load into, the training call).
    # Both branches below read this table, so loading and training cannot disagree on the class.
    def train_with_boxes(
        emb: EmbeddedImages, idx: list[int], labels: list[np.ndarray], seed: int
    ) -> tuple[nn.Module, list[float]]:
        assert train_boxes is not None and train_instances is not None
        boxes, instances = [train_boxes[i] for i in idx], [train_instances[i] for i in idx]
        return train_sam_decoder_with_boxes(
            sam, emb, boxes, instances, steps, batch_size, sam_lr, seed, device=device
        )

    builders: dict[str, tuple[Callable[[EmbeddedImages], nn.Module], _Trainer]] = {
        "domain_decoder": (
            lambda emb: DomainDecoder(int(emb.embeddings.shape[1])),
            lambda emb, idx, labels, seed: train_domain_decoder(
                emb, labels, steps, batch_size, domain_lr, seed, device=device
            ),
        ),
        "sam_decoder_ft": (lambda emb: PromptlessSamDecoder(sam), train_with_boxes),
        "sam_decoder_ft_promptless": (
            lambda emb: PromptlessSamDecoder(sam),
            lambda emb, idx, labels, seed: train_sam_decoder(
                sam, emb, labels, steps, batch_size, sam_lr, seed, device=device
            ),
        ),
    }
    for method, n, seed in tqdm(jobs, desc="Delta-N sweep", disable=not progress):
        if (n, seed) not in indices:
            indices[(n, seed)] = sorted(np.random.default_rng(1000 * seed + n).permutation(pool)[:n].tolist())
        idx = indices[(n, seed)]
        emb = train_embedded.subset(idx)
        labels = [train_labels[i] for i in idx]
        blank, train = builders[method]
        saved = None
        if resume_dir is not None:
            box_data: list[Any] = []
            if method == "sam_decoder_ft":
                assert train_boxes is not None and train_instances is not None
                box_data = [np.asarray(a) for i in idx for a in (train_boxes[i], train_instances[i])]
            lr = domain_lr if method == "domain_decoder" else sam_lr
            saved = resume_file(
                resume_dir,
                f"{method}_n{n}_seed{seed}",
                {"method": method, "n": n, "seed": seed, "steps": steps, "lr": lr, "batch_size": batch_size},
                "" if method == "domain_decoder" else sam_digest,
                emb.embeddings,
                *labels,
                *box_data,
            )
        model: nn.Module
        t0 = time.perf_counter()
        if saved is not None and saved.is_file():
            model = blank(emb)
            hist, train_s = load_trained(saved, {"decoder": model})
            model.to(resolve_device(device, default=torch.device("cpu"))).eval()
        else:
            model, hist = train(emb, idx, labels, seed)
            train_s = time.perf_counter() - t0
            save_trained(saved, {"decoder": model}, hist, train_s)
        preds = predict_masks(model, test_embedded)
        rec: dict[str, Any] = {
            "method": method,
            "n": n,
            "seed": seed,
            **segmentation_scores(preds, test_truth),
        }
        rec["n_train_seconds"] = train_s
        if test_boxes is not None:
            rec.update(object_scores(preds, test_boxes))
        records.append(rec)
        if (method, n) not in models:
            models[(method, n)] = model
            histories[(method, n)] = hist
    return SweepResult(records, models, histories, indices)


SWEEP_METRICS: tuple[str, ...] = ("miou", "f1", "accuracy", "precision", "recall")


def summarize_sweep(
    records: Sequence[dict[str, Any]], suffix: str = "", metrics: Sequence[str] | None = None
) -> dict[str, dict[str, float]]:
    """Mean and standard deviation over seeds: ``{f"{method}_n{N}{suffix}": {metric, metric_std, ...}}``."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["method"], int(r["n"])), []).append(r)
    out: dict[str, dict[str, float]] = {}
    for (method, n), rs in groups.items():
        names = metrics or [k for k in rs[0] if k not in ("method", "n", "seed") and not k.startswith("n_")]
        entry: dict[str, float] = {}
        for k in names:
            vals = np.array([r[k] for r in rs], dtype=np.float64)
            entry[k] = float(vals.mean())
            entry[f"{k}_std"] = float(vals.std())
        entry["seeds"] = float(len(rs))
        out[f"{method}_n{n}{suffix}"] = entry
    return out


def sweep_findings(records: Sequence[dict[str, Any]]) -> dict[str, str]:
    """The chapter's readings of a Delta-N sweep, as printable lines computed from its records.

    Keys (each present only when the sweep has the methods it needs):
      "failure_case": the domain decoder's F1 at the smallest N against SAM's decoder fine-tuned with
        boxes and run without prompts (the paper's failure case "reproduces" when the domain decoder is
        more than 0.05 F1 ahead).
      "promptless": the domain decoder against SAM's decoder trained without prompts, with the domain
        decoder's spread over seeds.
      "handful" (only when the sweep has two or more N): the domain decoder's F1 at the smallest and
        the largest N, read three ways: "a handful suffices" when the gain is at most 0.02; "more
        images help on average, within the spread over draws" when it is at most twice the larger
        seed spread (the choice of the few images matters as much as their number); otherwise "more
        images still help".
    """
    summary = summarize_sweep(records)
    ns = sorted({int(r["n"]) for r in records if r["method"] == "domain_decoder"})
    out: dict[str, str] = {}
    if not ns:
        return out
    n0, n_max = ns[0], ns[-1]
    dd = summary[f"domain_decoder_n{n0}"]
    ft, ftp = summary.get(f"sam_decoder_ft_n{n0}"), summary.get(f"sam_decoder_ft_promptless_n{n0}")
    if ft is not None:
        verdict = (
            "the paper's failure case reproduces" if dd["f1"] > ft["f1"] + 0.05 else "no clear failure here"
        )
        out["failure_case"] = (
            f"domain decoder F1 {dd['f1']:.3f} vs SAM decoder fine-tuned with boxes, run without: "
            f"{ft['f1']:.3f} ({verdict})"
        )
    if ftp is not None:
        out["promptless"] = (
            f"domain decoder F1 {dd['f1']:.3f} vs SAM decoder trained without prompts: {ftp['f1']:.3f} "
            f"(difference {dd['f1'] - ftp['f1']:+.3f}; "
            f"domain decoder's spread over seeds ±{dd['f1_std']:.3f})"
        )
    if n_max == n0:
        return out
    first, last = dd, summary[f"domain_decoder_n{n_max}"]
    gain, spread = last["f1"] - first["f1"], max(first["f1_std"], last["f1_std"])
    if gain <= 0.02:
        reading = "a handful of images suffices here"
    elif gain <= 2 * spread:
        reading = (
            "more images help on average, by less than twice the spread over draws: "
            "which few images are drawn matters as much as how many"
        )
    else:
        reading = "more images still help here"
    out["handful"] = (
        f"domain decoder F1: {first['f1']:.3f} at N={n0}, {last['f1']:.3f} at N={n_max} "
        f"(gain {gain:+.3f}, seed spread ±{spread:.3f}): {reading}"
    )
    return out


# ----------------------------------------------------------------------------------------------- figures


def plot_sweep(
    records: Sequence[dict[str, Any]],
    metrics: Sequence[str] = SWEEP_METRICS,
    title: str | None = None,
    paper: dict[str, float] | None = None,
) -> Any:
    """Metric vs N, one line per method (mean over seeds, band = min..max over seeds).

    ``paper``: optional {metric: value} drawn as a dotted reference at N = 5 (the paper's domain decoder).
    Returns the matplotlib Figure.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        for i, method in enumerate(dict.fromkeys(r["method"] for r in records)):
            ns = sorted({int(r["n"]) for r in records if r["method"] == method})
            vals = [
                np.array([r[metric] for r in records if r["method"] == method and r["n"] == n]) for n in ns
            ]
            mean = np.array([v.mean() for v in vals])
            color = f"C{i}"
            ax.plot(ns, mean, "o-", color=color, label=METHODS.get(method, method))
            if any(len(v) > 1 for v in vals):
                ax.fill_between(ns, [v.min() for v in vals], [v.max() for v in vals], color=color, alpha=0.2)
        if paper and metric in paper:
            ax.plot([5], [paper[metric]], "k*", markersize=10, label="paper, 5 images")
        ax.set_xlabel("N training images")
        ax.set_title(metric)
        ax.set_ylim(0, 1.02)
        ax.grid(alpha=0.3)
    legend: dict[str, Any] = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            legend.setdefault(label, handle)
    labels, handles = list(legend), list(legend.values())
    fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=min(4, len(labels)), frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    return fig


def plot_prompt_failures(
    study: PromptStudy, images: Sequence[np.ndarray], instances: Sequence[np.ndarray]
) -> Any:
    """The prompt-mode study's typical failures on the object where the click fell furthest behind the
    box: all masks of automatic mode on that image, the click's mask, the box's mask, the truth."""
    from samlib.plots import image_grid, overlay

    k = int(np.argmax(study.ious["box"] - study.ious["point"]))
    offsets = np.cumsum([0] + [len(m) for m in instances])
    i = int(np.searchsorted(offsets, k, side="right") - 1)
    j = int(k - offsets[i])
    img, auto = images[i], study.auto_masks[i]
    box = box_from_mask(instances[i][j])
    return image_grid(
        [
            lambda ax: overlay(img, auto if len(auto) else None, ax=ax),
            lambda ax: overlay(
                img, study.point_masks[i][j], points=study.points[i][j][None], labels=np.ones(1, int), ax=ax
            ),
            lambda ax: overlay(img, study.box_masks[i][j], boxes=box, ax=ax),
            lambda ax: overlay(img, instances[i][j], ax=ax),
        ],
        [
            f"automatic: {len(auto)} masks",
            f"point: IoU {study.ious['point'][k]:.2f}",
            f"box: IoU {study.ious['box'][k]:.2f}",
            "truth",
        ],
        ncols=4,
        size=3.2,
    )
