"""Loaders for the book's real sample data, found through one data-root setting.

The data live outside the repository (licences vary; see each folder's PROVENANCE.md). The root is,
in order: the ``root`` argument, env ``SAMLIB_DATA``, or ``<repo>/../shared/data`` if it exists.
Each ``load_<name>(root=None, split=None, limit=None)`` returns a list of :class:`Sample`, sorted by
file name; ``limit`` stops reading after that many samples. ``split=None`` means every labelled sample.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from samlib.errors import DataNotFoundError, InvalidInputError

__all__ = [
    "CAMVID_CLASSES",
    "CAMVID_IGNORE_INDEX",
    "DATASETS",
    "Sample",
    "data_root",
    "instances_from_binary",
    "load_buildings_spacenet_rio",
    "load_camvid",
    "load_dataset",
    "load_mars_pits",
    "load_roads_deepglobe",
    "load_roads_eth",
    "load_ships_hrsid",
    "require_data",
    "split_names",
]

CAMVID_CLASSES: tuple[str, ...] = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)
CAMVID_IGNORE_INDEX = 11
MARS_MIN_BOX_SIZE = 0.005  # normalised width/height below which a YOLO box is degenerate
_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Sample:
    """One image with its ground truth. Absent annotation kinds are None.

    Attributes:
      name (str): file stem, unique within a data set.
      image (np.ndarray): (H, W, 3) uint8 RGB.
      masks (np.ndarray | None): (N, H, W) bool instance masks.
      semantic (np.ndarray | None): (H, W) integer labels: 0/1 for binary sets, class ids for camvid.
      boxes (np.ndarray | None): (N, 4) float64 (x0, y0, x1, y1) pixel boxes.
      box_labels (np.ndarray | None): (N,) int64 class id of each box (mars-pits).
      dataset (str): the data-set folder name.
      meta (dict): extra facts, e.g. {"split": "train", "boxes_source": "coco"}.
    """

    name: str
    image: np.ndarray
    masks: np.ndarray | None = None
    semantic: np.ndarray | None = None
    boxes: np.ndarray | None = None
    box_labels: np.ndarray | None = None
    dataset: str = ""
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def foreground(self) -> np.ndarray:
        """(H, W) bool union of the annotation: ``semantic > 0`` for binary sets, else the union of masks."""
        if self.semantic is not None and self.dataset != "camvid":
            return np.asarray(self.semantic > 0)
        if self.masks is not None:
            return np.asarray(self.masks.any(axis=0))
        raise InvalidInputError(f"Sample {self.name!r} ({self.dataset}) has no binary mask annotation.")


def data_root(explicit: str | Path | None = None) -> Path | None:
    """The data root: ``explicit``, else env ``SAMLIB_DATA``, else ``<repo>/../shared/data`` if present."""
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get("SAMLIB_DATA")
    if env:
        return Path(env).expanduser()
    default = _REPO_ROOT.parent / "shared" / "data"
    return default if default.is_dir() else None


def require_data(name: str, root: str | Path | None = None) -> Path:
    """Folder of data set ``name`` (e.g. "roads-eth"), or :class:`DataNotFoundError` saying how to fix it."""
    base = data_root(root)
    if base is None:
        raise DataNotFoundError(
            f"No data root found for data set {name!r}: set the environment variable SAMLIB_DATA to the "
            f"folder that contains {name}/ (or pass root=...). "
            f"The default, {_REPO_ROOT.parent / 'shared' / 'data'}, does not exist."
        )
    folder = base / name
    if not folder.is_dir():
        raise DataNotFoundError(
            f"Data set {name!r} not found: {folder} is not a folder. Set SAMLIB_DATA (or root=...) to the "
            f"folder that contains {name}/."
        )
    return folder


def split_names(
    names: Sequence[str], test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[str], list[str]]:
    """Deterministic train/test split of ``names``: the same names and seed give the same split.

    Returns:
      (list[str], list[str]): sorted train names and sorted test names (at least one test name if
        ``test_fraction > 0`` and there are two or more names).
    """
    if not 0.0 <= test_fraction < 1.0:
        raise InvalidInputError(f"test_fraction must be in [0, 1), got {test_fraction}.")
    ordered = sorted(names)
    n_test = int(round(len(ordered) * test_fraction))
    if test_fraction > 0 and len(ordered) > 1:
        n_test = max(n_test, 1)
    perm = np.random.default_rng(seed).permutation(len(ordered))
    test = {ordered[i] for i in perm[:n_test]}
    return [n for n in ordered if n not in test], [n for n in ordered if n in test]


def instances_from_binary(mask: np.ndarray, connectivity: int = 8, min_area: int = 1) -> np.ndarray:
    """Instance masks from a binary mask by connected components: (N, H, W) bool, in raster order.

    Components smaller than ``min_area`` pixels are dropped.
    """
    binary = np.asarray(mask) != 0
    if binary.ndim != 2:
        raise InvalidInputError(f"mask must be 2-D (H, W), got shape {binary.shape}.")
    if connectivity not in (4, 8):
        raise InvalidInputError(f"connectivity must be 4 or 8, got {connectivity}.")
    n, labels = cv2.connectedComponents(binary.astype(np.uint8), connectivity=connectivity)
    if n <= 1:
        return np.zeros((0, *binary.shape), dtype=bool)
    ids = np.arange(1, n)
    areas = np.bincount(labels.ravel(), minlength=n)[1:]
    ids = ids[areas >= min_area]
    return labels[None] == ids[:, None, None]


def _boxes_of(masks: np.ndarray) -> np.ndarray:
    out = np.zeros((len(masks), 4), dtype=np.float64)
    for i, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        out[i] = (cols[0], rows[0], cols[-1], rows[-1])
    return out


def _read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB; TIFFs PIL cannot open go through tifffile."""
    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))
    except OSError:
        if path.suffix.lower() not in {".tif", ".tiff"}:
            raise
    import tifffile  # only needed for TIFFs that PIL cannot read

    arr = np.asarray(tifffile.imread(path))
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3].astype(np.uint8))


def _read_grey(path: Path) -> np.ndarray:
    """(H, W) uint8: single-channel masks, or the channel maximum of RGB masks."""
    with Image.open(path) as im:
        arr = np.asarray(im)
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=-1)
    return arr


def _check_limit(limit: int | None) -> None:
    if limit is not None and limit < 0:
        raise InvalidInputError(f"limit must be >= 0 or None, got {limit}.")


def _check_split(split: str | None, allowed: Sequence[str | None], dataset: str) -> None:
    if split not in allowed:
        raise InvalidInputError(f"{dataset} has splits {[s for s in allowed]}, got {split!r}.")


def _files(folder: Path, pattern: str) -> list[Path]:
    files = sorted(folder.glob(pattern))
    if not files:
        raise DataNotFoundError(f"No files matching {pattern!r} in {folder}: the data set looks incomplete.")
    return files


def _binary_sample(
    dataset: str, name: str, image: np.ndarray, binary: np.ndarray, instances: bool, **meta: Any
) -> Sample:
    if binary.shape != image.shape[:2]:
        raise DataNotFoundError(
            f"{dataset}/{name}: mask shape {binary.shape} != image shape {image.shape[:2]}."
        )
    masks = instances_from_binary(binary) if instances else None
    return Sample(
        name=name,
        image=image,
        masks=masks,
        semantic=binary.astype(np.uint8),
        boxes=_boxes_of(masks) if masks is not None else None,
        dataset=dataset,
        meta=dict(meta),
    )


def load_roads_eth(
    root: str | Path | None = None,
    split: str | None = None,
    limit: int | None = None,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> list[Sample]:
    """ETH/EPFL aerial road tiles (400 x 400): binary ``semantic`` (road = grey value > 127), no instances.

    ``split`` "train"/"test" uses :func:`split_names` (``test_fraction``, ``seed``); None: all 100.
    """
    _check_split(split, (None, "train", "test"), "roads-eth")
    _check_limit(limit)
    folder = require_data("roads-eth", root)
    names = [p.stem for p in _files(folder / "images", "*.png")]
    if split is not None:
        train, test = split_names(names, test_fraction, seed)
        names = train if split == "train" else test
    samples = []
    for name in names[:limit]:
        image = _read_image(folder / "images" / f"{name}.png")
        road = _read_grey(folder / "masks" / f"{name}.png") > 127  # anti-aliased edges
        samples.append(_binary_sample("roads-eth", name, image, road, False, split=split))
    return samples


def load_roads_deepglobe(
    root: str | Path | None = None, split: str | None = None, limit: int | None = None
) -> list[Sample]:
    """DeepGlobe road tiles (1024 x 1024). Only "train" has masks (binary ``semantic``, 255 = road);
    "valid"/"test" images come without annotation. None means "train"."""
    _check_split(split, (None, "train", "valid", "test"), "roads-deepglobe")
    _check_limit(limit)
    split = split or "train"
    folder = require_data("roads-deepglobe", root) / split
    samples = []
    for path in _files(folder, "*_sat.jpg")[:limit]:
        name = path.name[: -len("_sat.jpg")]
        image = _read_image(path)
        mask_path = folder / f"{name}_mask.png"
        if split == "train":
            road = _read_grey(mask_path) > 127
            samples.append(_binary_sample("roads-deepglobe", name, image, road, False, split=split))
        else:
            samples.append(Sample(name=name, image=image, dataset="roads-deepglobe", meta={"split": split}))
    return samples


def load_buildings_spacenet_rio(
    root: str | Path | None = None, split: str | None = None, limit: int | None = None
) -> list[Sample]:
    """SpaceNet-1 Rio building tiles (~438 x 406): binary ``semantic`` and instance ``masks`` from
    connected components (touching buildings merge), ``boxes`` around them. 5 tiles have no building."""
    _check_split(split, (None,), "buildings-spacenet-rio")
    _check_limit(limit)
    folder = require_data("buildings-spacenet-rio", root)
    samples = []
    for path in _files(folder / "images", "*.tif")[:limit]:
        image = _read_image(path)
        building = _read_grey(folder / "masks" / path.name) > 127
        samples.append(_binary_sample("buildings-spacenet-rio", path.stem, image, building, True))
    return samples


@functools.lru_cache(maxsize=4)
def _coco_boxes(path: str) -> dict[str, np.ndarray]:
    """file name -> (N, 4) xyxy boxes from a COCO file (read once)."""
    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):  # COCO() prints progress
        coco = COCO(path)
    out: dict[str, np.ndarray] = {}
    for img_id, info in coco.imgs.items():
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[img_id]))
        xywh = np.array([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        out[info["file_name"]] = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
    return out


def load_ships_hrsid(
    root: str | Path | None = None, split: str | None = None, limit: int | None = None
) -> list[Sample]:
    """HRSID SAR ship chips (800 x 800): binary ``semantic`` (green = ship), instance ``masks`` from
    connected components. ``boxes`` come from boxes_coco.json (x, y, x + w, y + h) for the 30 images it
    covers (``meta["boxes_source"] == "coco"``), else from the instance masks ("masks")."""
    _check_split(split, (None,), "ships-hrsid")
    _check_limit(limit)
    folder = require_data("ships-hrsid", root)
    coco_file = folder / "boxes_coco.json"
    coco = _coco_boxes(str(coco_file)) if coco_file.is_file() else {}
    samples = []
    for path in _files(folder / "images", "*.jpg")[:limit]:
        image = _read_image(path)
        ship = _read_grey(folder / "masks" / f"{path.stem}.png") > 0
        sample = _binary_sample("ships-hrsid", path.stem, image, ship, True, boxes_source="masks")
        if path.name in coco:
            sample.boxes = coco[path.name].copy()
            sample.meta["boxes_source"] = "coco"
        samples.append(sample)
    return samples


def _read_yolo(path: Path, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    rows = np.loadtxt(path, ndmin=2) if path.stat().st_size else np.zeros((0, 5))
    if rows.shape[1] != 5:
        raise DataNotFoundError(
            f"{path}: expected YOLO lines 'class cx cy w h', got {rows.shape[1]} columns."
        )
    keep = (rows[:, 3] >= MARS_MIN_BOX_SIZE) & (rows[:, 4] >= MARS_MIN_BOX_SIZE)
    rows = rows[keep]
    cx, cy, w, h = rows[:, 1] * width, rows[:, 2] * height, rows[:, 3] * width, rows[:, 4] * height
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1)
    boxes = np.clip(boxes, 0, [width, height, width, height])
    return boxes, rows[:, 0].astype(np.int64)


def load_mars_pits(
    root: str | Path | None = None, split: str | None = None, limit: int | None = None
) -> list[Sample]:
    """HiRISE pit/skylight crops (900 x 900) with YOLO boxes converted to pixel (x0, y0, x1, y1) ``boxes``
    and class ids 0-4 in ``box_labels`` (unnamed classes); boxes with normalised w or h < 0.005 are
    dropped. No masks. ``split``: "train", "valid", "test" or None (all three)."""
    _check_split(split, (None, "train", "valid", "test"), "mars-pits")
    _check_limit(limit)
    folder = require_data("mars-pits", root)
    splits = [split] if split else ["train", "valid", "test"]
    samples: list[Sample] = []
    for sp in splits:
        for path in _files(folder / sp / "images", "*.jpg"):
            if limit is not None and len(samples) >= limit:
                return samples
            image = _read_image(path)
            label_path = folder / sp / "labels" / f"{path.stem}.txt"
            if not label_path.is_file():
                raise DataNotFoundError(f"mars-pits: no label file {label_path} for image {path.name}.")
            boxes, labels = _read_yolo(label_path, image.shape[1], image.shape[0])
            samples.append(
                Sample(
                    path.stem, image, boxes=boxes, box_labels=labels, dataset="mars-pits", meta={"split": sp}
                )
            )
    return samples


def load_camvid(
    root: str | Path | None = None, split: str | None = None, limit: int | None = None
) -> list[Sample]:
    """CamVid street scenes (480 x 360), SegNet's 11 classes: ``semantic`` holds class ids 0-10
    (:data:`CAMVID_CLASSES`) and :data:`CAMVID_IGNORE_INDEX` (11) for unlabelled pixels. Only the "val"
    split is present (None means "val")."""
    _check_split(split, (None, "val"), "camvid")
    _check_limit(limit)
    folder = require_data("camvid", root)
    samples = []
    for path in _files(folder / "images", "*.png")[:limit]:
        image = _read_image(path)
        with Image.open(folder / "labels" / path.name) as im:
            labels = np.asarray(im).astype(np.int64)
        if labels.shape != image.shape[:2]:
            raise DataNotFoundError(
                f"camvid/{path.name}: label shape {labels.shape} != image {image.shape[:2]}."
            )
        samples.append(Sample(path.stem, image, semantic=labels, dataset="camvid", meta={"split": "val"}))
    return samples


DATASETS: dict[str, Callable[..., list[Sample]]] = {
    "roads-eth": load_roads_eth,
    "roads-deepglobe": load_roads_deepglobe,
    "buildings-spacenet-rio": load_buildings_spacenet_rio,
    "ships-hrsid": load_ships_hrsid,
    "mars-pits": load_mars_pits,
    "camvid": load_camvid,
}


def load_dataset(
    name: str, root: str | Path | None = None, split: str | None = None, limit: int | None = None
) -> list[Sample]:
    """Load data set ``name`` (a key of :data:`DATASETS`) with its ``load_<name>`` function."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise InvalidInputError(f"Unknown data set {name!r}; known: {', '.join(DATASETS)}.") from None
    return loader(root=root, split=split, limit=limit)


AERIAL_DUBAI_CLASSES: dict[str, tuple[int, int, int]] = {
    "building": (60, 16, 152),
    "land": (132, 41, 246),
    "road": (110, 193, 228),
    "vegetation": (254, 221, 58),
    "water": (226, 169, 41),
}
"""The aerial-dubai mask colours actually used (see its PROVENANCE.md; the source's classes.json differs)."""


def load_aerial_dubai_buildings(
    root: str | Path | None = None, split: str | None = None, limit: int | None = None
) -> list[Sample]:
    """Aerial Dubai tiles (6 tiles x 9 parts, 509 x 544 to 1126 x 1058) with the *building* class only:
    binary ``semantic`` (1 = building) and instance ``masks`` from its connected components (touching
    buildings merge), ``boxes`` around them. Other classes, Unlabeled and black pixels are background."""
    _check_split(split, (None,), "aerial-dubai")
    _check_limit(limit)
    folder = require_data("aerial-dubai", root)
    samples = []
    colour = np.array(AERIAL_DUBAI_CLASSES["building"], np.uint8)
    for path in _files(folder / "images", "*.jpg")[:limit]:
        image = _read_image(path)
        with Image.open(folder / "masks" / f"{path.stem}.png") as im:
            rgb = np.asarray(im.convert("RGB"))
        if rgb.shape[:2] != image.shape[:2]:
            raise DataNotFoundError(
                f"aerial-dubai/{path.stem}: mask shape {rgb.shape[:2]} != image {image.shape[:2]}."
            )
        building = np.all(rgb == colour, axis=-1)
        samples.append(_binary_sample("aerial-dubai", path.stem, image, building, True))
    return samples
