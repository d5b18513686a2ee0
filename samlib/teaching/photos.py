"""Real photographs with human masks, for pretraining and evaluating the teaching SAM.

SAM was trained on photographs (SA-1B) before anyone pointed it at remote sensing; this module gives the
teaching model the same start at small scale. Five everyday-scene sets from the shared data folder are
read as *instance label maps* (0 = no instance, 1..K one instance each) and turned into square
:class:`~samlib.scenes.Scene` objects at the model's input size, so the trainer mixes them with the
generated source scenes without any other change:

* ``bsds500`` — whole-image human segmentations: every region of one annotator's map is an instance
  (one annotator is picked per draw, so the model sees the annotators' disagreement as ambiguity);
* ``coco128`` — COCO instance polygons, rasterised with ``cv2.fillPoly`` (large ones first, so a small
  object in front keeps its visible pixels);
* ``davis2016`` — one foreground object per video frame;
* ``davis2017`` — first frames with several objects;
* ``camvid`` — CamVid street scenes: the connected components of each class are the instances.

Every set has a seeded held-out split (:func:`photo_split`): by sequence for DAVIS 2016 (neighbouring
frames of a video are near-duplicates), by photo otherwise; CamVid's held-out images are its official
``val`` split (``camvid/images``), never used for training. No remote-sensing set is read here: those
are the model's target domains and stay unseen.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from samlib.data import CAMVID_IGNORE_INDEX, data_root, split_names
from samlib.errors import DataNotFoundError, InvalidInputError
from samlib.prompts import box_from_mask
from samlib.scenes import Scene

__all__ = [
    "PHOTO_SETS",
    "PhotoItem",
    "PhotoPool",
    "list_photos",
    "photo_scene",
    "heldout_scenes",
    "photo_split",
    "read_labels",
    "set_min_area",
    "training_photos",
]

PHOTO_SETS: tuple[str, ...] = ("bsds500", "coco128", "davis2016", "davis2017", "camvid")
"""The real-photo sets, by short name (folders under ``natural/`` and ``camvid/`` of the data root)."""

_FOLDERS = {
    "bsds500": "natural/bsds500",
    "coco128": "natural/coco128-seg",
    "davis2016": "natural/davis2016",
    "davis2017": "natural/davis2017-first",
    "camvid": "camvid",
}
MIN_INSTANCE_AREA = 24
"""Instances smaller than this many pixels of the model's input (after resizing) are dropped."""
_SET_MIN_AREA = {"camvid": 100}  # CamVid's class maps break into many specks (poles, sign fragments)


@dataclass(frozen=True)
class PhotoItem:
    """One photograph and where its annotation lives.

    Attributes:
      dataset (str): a name of :data:`PHOTO_SETS`.
      name (str): unique within the set (file stem).
      group (str): the unit of the held-out split (the video sequence for DAVIS 2016, else ``name``).
      image (Path): the photo.
      labels (tuple[Path, ...]): annotation files; several for BSDS500 (one per annotator).
    """

    dataset: str
    name: str
    group: str
    image: Path
    labels: tuple[Path, ...]


# --------------------------------------------------------------------------------------------- listing


def _files(folder: Path, pattern: str) -> list[Path]:
    files = sorted(folder.glob(pattern))
    if not files:
        raise DataNotFoundError(
            f"No files matching {pattern!r} in {folder}: the photo set looks incomplete or missing. Set "
            "SAMLIB_DATA (or --data-root) to the folder that holds natural/ and camvid/."
        )
    return files


def _list_bsds(folder: Path) -> list[PhotoItem]:
    items = []
    for img in _files(folder / "images", "*.jpg"):
        segs = tuple(sorted((folder / "segmentations").glob(f"{img.stem}_a*.png")))
        if segs:
            items.append(PhotoItem("bsds500", img.stem, img.stem, img, segs))
    return items


def _list_pairs(
    dataset: str, folder: Path, image_glob: str, label_dir: str, sequence: bool
) -> list[PhotoItem]:
    items = []
    for img in _files(folder / "images", image_glob):
        label = folder / label_dir / f"{img.stem}.{'txt' if dataset == 'coco128' else 'png'}"
        if label.is_file():
            group = img.stem.rsplit("_", 1)[0] if sequence else img.stem
            items.append(PhotoItem(dataset, img.stem, group, img, (label,)))
    return items


def list_photos(dataset: str, root: str | Path | None = None, part: str = "train") -> list[PhotoItem]:
    """The photos of ``dataset`` in its training or held-out part (before :func:`photo_split`).

    CamVid's ``train`` part is ``camvid/train`` and its ``heldout`` part the official val split
    (``camvid/images``); for the other sets both parts list every photo and :func:`photo_split`
    separates them.

    Arguments:
      dataset (str): a name of :data:`PHOTO_SETS`.
      root (str | Path | None): the data root (default :func:`samlib.data.data_root`).
      part (str): "train" or "heldout" (only CamVid lists different folders).
    Returns:
      list[PhotoItem]: sorted by name.
    """
    if dataset not in _FOLDERS:
        raise InvalidInputError(f"unknown photo set {dataset!r}; known: {', '.join(PHOTO_SETS)}")
    if part not in ("train", "heldout"):
        raise InvalidInputError(f"part must be 'train' or 'heldout', got {part!r}")
    base = data_root(root)
    if base is None:
        raise DataNotFoundError("No data root: set SAMLIB_DATA (or --data-root) to the shared data folder.")
    folder = base / _FOLDERS[dataset]
    if dataset == "bsds500":
        return _list_bsds(folder)
    if dataset == "coco128":
        return _list_pairs(dataset, folder, "*.jpg", "labels", sequence=False)
    if dataset == "davis2016":
        return _list_pairs(dataset, folder, "*.jpg", "masks", sequence=True)
    if dataset == "davis2017":
        return _list_pairs(dataset, folder, "*.jpg", "masks", sequence=False)
    sub = folder / "train" if part == "train" else folder
    items = []
    for img in _files(sub / "images", "*.*"):
        label = sub / "labels" / f"{img.stem}.png"
        if label.is_file():
            items.append(PhotoItem("camvid", img.stem, img.stem, img, (label,)))
    return items


def photo_split(
    dataset: str, root: str | Path | None = None, test_fraction: float = 0.2, seed: int = 0
) -> tuple[list[PhotoItem], list[PhotoItem]]:
    """Seeded train / held-out split of one photo set; the same data and seed give the same split.

    DAVIS 2016 is split by video sequence, the other sets by photo (all annotators of a BSDS500 photo
    stay together); CamVid uses its official train and val folders (``test_fraction`` and ``seed`` are
    then not used).

    Returns:
      (list[PhotoItem], list[PhotoItem]): training items and held-out items.
    """
    if dataset == "camvid":
        return list_photos(dataset, root, "train"), list_photos(dataset, root, "heldout")
    items = list_photos(dataset, root)
    _, test_groups = split_names(sorted({it.group for it in items}), test_fraction, seed)
    held = set(test_groups)
    return [it for it in items if it.group not in held], [it for it in items if it.group in held]


# --------------------------------------------------------------------------------------------- reading


def _read_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


def _read_index(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int64)


def _coco_labels(path: Path, height: int, width: int) -> np.ndarray:
    """Instance label map from YOLO-seg polygons (normalised ``cls x1 y1 x2 y2 ...`` lines)."""
    polys = []
    for line in path.read_text().splitlines():
        vals = line.split()
        if len(vals) < 7:  # a class id and at least three points
            continue
        xy = np.asarray(vals[1:], dtype=np.float64).reshape(-1, 2) * (width, height)
        polys.append(np.round(xy).astype(np.int32))
    labels = np.zeros((height, width), np.int64)
    areas = [abs(cv2.contourArea(p)) for p in polys]
    for i in np.argsort(areas)[::-1]:  # large first: smaller objects drawn later stay visible
        single = np.zeros((height, width), np.uint8)
        cv2.fillPoly(single, [polys[i]], 1)
        labels[single > 0] = i + 1
    return labels


def _camvid_labels(semantic: np.ndarray) -> np.ndarray:
    """Instance label map: the connected components of each CamVid class (ignore pixels excluded)."""
    labels = np.zeros(semantic.shape, np.int64)
    next_id = 1
    for c in np.unique(semantic):
        if c == CAMVID_IGNORE_INDEX:
            continue
        n, comp = cv2.connectedComponents((semantic == c).astype(np.uint8), connectivity=8)
        inside = comp > 0
        labels[inside] = comp[inside] + next_id - 1
        next_id += n - 1
    return labels


def read_labels(item: PhotoItem, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The photo and its instance label map at full resolution.

    Arguments:
      item (PhotoItem): what to read.
      rng (np.random.Generator | None): picks the BSDS500 annotator; None takes the first.
    Returns:
      (np.ndarray, np.ndarray): (H, W, 3) uint8 RGB and (H, W) int64 labels, 0 = no instance.
    """
    image = _read_rgb(item.image)
    h, w = image.shape[:2]
    if item.dataset == "bsds500":
        k = int(rng.integers(len(item.labels))) if rng is not None else 0
        labels = _read_index(item.labels[k]) + 1  # regions cover the image: every value is a region
        if labels.shape == (w, h) and h != w:
            # The maps of portrait photos are stored landscape; a clockwise quarter turn aligns them
            # (checked on all 351 such maps: region borders then fall on the photo's edges).
            labels = np.ascontiguousarray(np.rot90(labels, -1))
    elif item.dataset == "coco128":
        labels = _coco_labels(item.labels[0], h, w)
    elif item.dataset == "davis2016":
        labels = (_read_index(item.labels[0]) > 127).astype(np.int64)
    elif item.dataset == "davis2017":
        labels = _read_index(item.labels[0])
        labels[labels == 255] = 0  # DAVIS marks uncertain borders 255 in some releases
    else:
        labels = _camvid_labels(_read_index(item.labels[0]))
    if labels.shape != (h, w):
        raise DataNotFoundError(f"{item.dataset}/{item.name}: label shape {labels.shape} != image {(h, w)}")
    return image, labels


# --------------------------------------------------------------------------------------------- scenes


def photo_scene(
    image: np.ndarray,
    labels: np.ndarray,
    size: int,
    rng: np.random.Generator | None = None,
    min_area: int = MIN_INSTANCE_AREA,
    domain: str = "photo",
) -> Scene:
    """A ``size`` x ``size`` scene from a photo and its label map: the shorter side resized to ``size``,
    then a square crop (random with ``rng``, else centred) and, with ``rng``, a random horizontal flip.

    Arguments:
      image (np.ndarray): (H, W, 3) uint8 RGB.
      labels (np.ndarray): (H, W) integer instance map, 0 = no instance.
      size (int): the model's input size.
      rng (np.random.Generator | None): random crop and flip (training); None: centre crop (evaluation).
      min_area (int): instances with fewer pixels in the crop are dropped.
      domain (str): recorded as the scene's domain (the set's name).
    Returns:
      Scene: ``masks`` (N, size, size) bool, ``kinds`` all ``domain``; N may be 0.
    """
    h, w = image.shape[:2]
    if labels.shape != (h, w):
        raise InvalidInputError(f"labels shape {labels.shape} must match the image's {(h, w)}")
    scale = size / min(h, w)
    new_w, new_h = max(size, round(w * scale)), max(size, round(h * scale))
    img = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR)
    lab = cv2.resize(labels.astype(np.float32), (new_w, new_h), interpolation=cv2.INTER_NEAREST)
    lab = lab.astype(np.int64)
    if rng is not None:
        y0, x0 = int(rng.integers(new_h - size + 1)), int(rng.integers(new_w - size + 1))
    else:
        y0, x0 = (new_h - size) // 2, (new_w - size) // 2
    img, lab = img[y0 : y0 + size, x0 : x0 + size], lab[y0 : y0 + size, x0 : x0 + size]
    if rng is not None and rng.random() < 0.5:
        img, lab = img[:, ::-1], lab[:, ::-1]
    ids, counts = np.unique(lab, return_counts=True)
    keep = ids[(ids > 0) & (counts >= min_area)]
    masks = lab[None] == keep[:, None, None]
    boxes = (
        np.stack([box_from_mask(m) for m in masks]).astype(np.float32)
        if len(masks)
        else np.zeros((0, 4), np.float32)
    )
    return Scene(np.ascontiguousarray(img), masks, [domain] * len(masks), boxes, domain)


class PhotoPool:
    """A rolling pool of random crops of real photos, drawn like :class:`~samlib.teaching.train.ScenePool`.

    Each draw replaces ``refresh`` pool entries with a fresh photo (random annotator, crop and flip), so
    reading JPEGs costs little next to the model step while the crops keep changing. A set with n photos
    gets a share of draws proportional to sqrt(n), so the 367 similar CamVid frames do not crowd out the
    24 DAVIS 2017 scenes.

    Arguments:
      items (Sequence[PhotoItem]): training photos (e.g. the first part of :func:`photo_split`).
      size (int): the model's input size.
      pool_size (int): scenes held in memory.
      refresh (int): scenes replaced per draw.
      seed (int): seeds every random choice.
    """

    def __init__(
        self, items: Sequence[PhotoItem], size: int, pool_size: int, refresh: int, seed: int
    ) -> None:
        if not items:
            raise InvalidInputError("PhotoPool needs at least one photo (is the data root right?)")
        if pool_size < 1 or refresh < 0:
            raise InvalidInputError(f"pool_size must be >= 1 and refresh >= 0, got {pool_size}, {refresh}")
        self.items, self.size, self.refresh = list(items), size, min(refresh, pool_size)
        self.rng = np.random.default_rng(seed)
        counts: dict[str, int] = {}
        for it in self.items:
            counts[it.dataset] = counts.get(it.dataset, 0) + 1
        weights = np.array([1 / np.sqrt(counts[it.dataset]) for it in self.items])
        self.weights = weights / weights.sum()
        self.scenes: list[Scene] = []
        for _ in tqdm(range(pool_size), desc="photo pool", leave=False):
            self.scenes.append(self._fresh())

    def _fresh(self) -> Scene:
        for _ in range(100):
            item = self.items[int(self.rng.choice(len(self.items), p=self.weights))]
            image, labels = read_labels(item, self.rng)
            scene = photo_scene(image, labels, self.size, self.rng, set_min_area(item.dataset), item.dataset)
            if len(scene.kinds):
                return scene
        raise InvalidInputError("100 photo crops in a row had no instance: the annotations look empty")

    def draw(self, batch: int) -> list[Scene]:
        """``batch`` distinct pool scenes (after refreshing a few)."""
        for i in self.rng.choice(len(self.scenes), self.refresh, replace=False):
            self.scenes[i] = self._fresh()
        return [
            self.scenes[i] for i in self.rng.choice(len(self.scenes), batch, replace=batch > len(self.scenes))
        ]


def set_min_area(dataset: str) -> int:
    """The smallest instance (pixels at the model's input size) kept for ``dataset``."""
    return _SET_MIN_AREA.get(dataset, MIN_INSTANCE_AREA)


def training_photos(
    root: str | Path | None = None, sets: Sequence[str] = PHOTO_SETS, seed: int = 0
) -> list[PhotoItem]:
    """The training part of every photo set in ``sets`` that is present (missing ones are skipped)."""
    items: list[PhotoItem] = []
    for name in sets:
        try:
            items += photo_split(name, root, seed=seed)[0]
        except DataNotFoundError as err:
            print(f"photo set {name} skipped: {err}")
    return items


def heldout_scenes(
    dataset: str, size: int, root: str | Path | None = None, limit: int | None = None, seed: int = 0
) -> list[Scene]:
    """Centre-cropped held-out scenes of one photo set (BSDS500: its first annotator's map), in name order.

    Arguments:
      dataset (str): a name of :data:`PHOTO_SETS`.
      size (int): the model's input size.
      root (str | Path | None): the data root.
      limit (int | None): at most this many photos.
      seed (int): the split's seed (as in :func:`photo_split`).
    Returns:
      list[Scene]: scenes with at least one instance.
    """
    scenes = []
    for item in photo_split(dataset, root, seed=seed)[1][:limit]:
        image, labels = read_labels(item)
        scene = photo_scene(image, labels, size, None, set_min_area(item.dataset), item.dataset)
        if len(scene.kinds):
            scenes.append(scene)
    return scenes
