"""Loaders for the book's real sample data, found through one data-root setting.

The data live outside the repository (licences vary; see each folder's PROVENANCE.md). The root is,
in order: the ``root`` argument, env ``SAMLIB_DATA``, or ``<repo>/../shared/data`` if it exists.
Each ``load_<name>(root=None, split=None, limit=None)`` returns a list of :class:`Sample`, sorted by
file name; ``limit`` stops reading after that many samples. ``split=None`` means every labelled sample.
"""

from __future__ import annotations

import functools
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from samlib.errors import CorruptFileError, DataNotFoundError, InvalidInputError, SamlibError

__all__ = [
    "CAMVID_CLASSES",
    "CAMVID_IGNORE_INDEX",
    "DATASETS",
    "DUBAI_CLASSES",
    "DUBAI_IGNORE_INDEX",
    "VOC_CLASSES",
    "VOC_IGNORE_INDEX",
    "Sample",
    "data_root",
    "dubai_tile",
    "instances_from_binary",
    "labels_from_colors",
    "load_buildings_spacenet_rio",
    "load_aerial_dubai",
    "load_camvid",
    "load_camvid_train",
    "load_dataset",
    "load_mars_pits",
    "load_roads_deepglobe",
    "load_roads_eth",
    "load_ships_hrsid",
    "load_voc_samples",
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
    """The data root: ``explicit``, else env ``SAMLIB_DATA``, else ``<repo>/../shared/data`` if present.

    The result is absolute: a relative ``explicit`` or ``SAMLIB_DATA`` is resolved against the current
    working directory *now*, so the path can be handed to code running elsewhere (a notebook kernel
    started in ``notebooks/``) and still mean the same folder. Pass the returned path down rather than
    the relative setting.
    """
    if explicit is not None:
        return Path(explicit).expanduser().absolute()
    env = os.environ.get("SAMLIB_DATA")
    if env:
        return Path(env).expanduser().absolute()
    default = _REPO_ROOT.parent / "shared" / "data"
    return default if default.is_dir() else None  # absolute already; symlinks kept as the user made them


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


def _open_error(path: Path, e: Exception) -> SamlibError:
    if isinstance(e, FileNotFoundError) or not path.exists():
        return DataNotFoundError(f"{path} does not exist: the data set looks incomplete.")
    kind = "empty (0 bytes)" if path.is_file() and path.stat().st_size == 0 else "corrupt or truncated"
    return CorruptFileError(
        f"{path} cannot be read as an image: the file is {kind} ({type(e).__name__}: {e})."
    )


def _png_is_16bit_colour(path: Path) -> bool:
    """PIL reads 16-bit RGB(A) PNGs as 8-bit RGB by dropping the low byte: detect them from the header."""
    with open(path, "rb") as f:
        head = f.read(26)
    return head[:8] == b"\x89PNG\r\n\x1a\n" and len(head) == 26 and head[24] == 16 and head[25] in (2, 6)


def _pixels(path: Path) -> np.ndarray:
    """The file's pixel values in their own dtype: (H, W) or (H, W, C), bands last.

    TIFFs are read with tifffile (PIL truncates 16-bit RGB TIFFs and takes a 4th band for alpha), 16-bit
    colour PNGs with OpenCV, everything else with PIL.
    """
    from samlib.utils import _PIL_8BIT_MODES  # lazily: samlib.utils imports torch

    if not path.is_file():
        raise DataNotFoundError(f"{path} does not exist: the data set looks incomplete.")
    if path.stat().st_size == 0:
        raise CorruptFileError(f"{path} is empty (0 bytes).")
    if path.suffix.lower() in {".tif", ".tiff"}:
        import tifffile  # only needed for TIFFs

        try:
            arr = np.asarray(tifffile.imread(path))
        except Exception as e:  # tifffile raises many types (TiffFileError, ValueError, struct.error ...)
            raise _open_error(path, e) from e
        if arr.ndim == 3 and arr.shape[0] <= 4 < arr.shape[-1]:  # planar (bands first): bands last
            arr = np.moveaxis(arr, 0, -1)
        return arr
    try:
        if _png_is_16bit_colour(path):
            decoded = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if decoded is None:
                raise OSError("OpenCV could not decode it")
            return np.ascontiguousarray(decoded[..., [2, 1, 0, 3][: decoded.shape[-1]]])  # BGR(A) -> RGB(A)
        with Image.open(path) as im:
            im.load()
            # 8-bit modes convert to RGB losslessly; 16-bit / 32-bit / float modes keep their values.
            return np.asarray(im.convert("RGB") if im.mode in _PIL_8BIT_MODES and im.mode != "L" else im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _open_error(path, e) from e


def _read_image(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB. 8-bit files are used as they are; 16-bit and float files are mapped by
    :func:`samlib.utils.stretch_to_uint8` (2-98 percentile stretch, one range for all bands so colours
    keep their balance), never truncated. Files with more than 3 bands are refused: which bands are
    red, green and blue is not knowable from the pixels (an RGBN raster's 4th band is not alpha)."""
    arr = _pixels(path)
    if arr.ndim == 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim == 2:
        arr = np.stack([arr] * 3, axis=-1)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.shape[0] == 0 or arr.shape[1] == 0:
        raise CorruptFileError(
            f"{path}: expected a grey or RGB image, got pixel array of shape {arr.shape} "
            "(select three bands and save them as an RGB file)."
        )
    if arr.dtype == np.uint8:
        return np.ascontiguousarray(arr)
    if arr.dtype == np.bool_:
        return np.ascontiguousarray(arr.astype(np.uint8) * 255)
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise CorruptFileError(f"{path}: unsupported pixel type {arr.dtype}.")
    from samlib.utils import stretch_to_uint8  # lazily: samlib.utils imports torch

    return stretch_to_uint8(arr, per_band=False)


def _read_grey(path: Path) -> np.ndarray:
    """(H, W): single-channel masks in their own dtype, or the channel maximum of RGB masks."""
    try:
        with Image.open(path) as im:
            im.load()
            arr = np.asarray(im)
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise _open_error(path, e) from e
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
        raise CorruptFileError(
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
    """file name -> (N, 4) xyxy boxes from a COCO file (read once), every field checked.

    Raises:
      CorruptFileError: not JSON, not COCO ("images" with "id"/"file_name", "annotations" with
        "image_id"/"bbox" [x, y, w, h] of finite numbers, w, h >= 0), or an annotation of an unknown image.
    """
    try:
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
    except (
        OSError,
        ValueError,
        RecursionError,
    ) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise CorruptFileError(f"{path} is not a readable JSON file ({type(e).__name__}: {e}).") from e
    need = "a COCO file needs 'images' [{'id', 'file_name'}] and 'annotations' [{'image_id', 'bbox'}]"
    if not isinstance(doc, dict) or not isinstance(doc.get("images"), list):
        raise CorruptFileError(f"{path}: {need}.")
    if not isinstance(doc.get("annotations"), list):
        raise CorruptFileError(f"{path}: no 'annotations' list; {need}.")
    names: dict[Any, str] = {}
    for i, info in enumerate(doc["images"]):
        if not isinstance(info, dict) or "id" not in info or not isinstance(info.get("file_name"), str):
            raise CorruptFileError(f"{path}: images[{i}] lacks 'id' or a 'file_name' string; {need}.")
        names[info["id"]] = info["file_name"]
    boxes: dict[str, list[list[float]]] = {name: [] for name in names.values()}
    for i, ann in enumerate(doc["annotations"]):
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        ok = isinstance(bbox, list) and len(bbox) == 4
        ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in bbox)  # type: ignore[union-attr]
        if not ok or not all(math.isfinite(v) for v in bbox) or bbox[2] < 0 or bbox[3] < 0:  # type: ignore[union-attr,index]
            raise CorruptFileError(
                f"{path}: annotations[{i}] needs a 'bbox' [x, y, w, h] of finite numbers with w, h >= 0, "
                f"got {bbox!r}."
            )
        if ann.get("image_id") not in names:
            raise CorruptFileError(
                f"{path}: annotations[{i}] refers to image_id {ann.get('image_id')!r}, not in 'images'."
            )
        boxes[names[ann["image_id"]]].append([float(v) for v in bbox])  # type: ignore[union-attr]
    out: dict[str, np.ndarray] = {}
    for name, rows in boxes.items():
        xywh = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
        out[name] = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
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


MARS_NUM_CLASSES = 5
"""Class ids of the mars-pits YOLO labels are 0 .. MARS_NUM_CLASSES - 1."""
_YOLO_TOLERANCE = 1e-3  # normalised coordinates may exceed [0, 1] by rounding, no more


def _read_yolo(
    path: Path, width: int, height: int, num_classes: int = MARS_NUM_CLASSES
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel (x0, y0, x1, y1) boxes and class ids of a YOLO label file ``class cx cy w h`` per line.

    Every line is checked: five tokens, an integer class id in [0, ``num_classes``), four finite
    normalised values in [0, 1] (pixel coordinates are refused, not rescaled) and a box that overlaps
    the image. A bad line raises :class:`CorruptFileError` naming the file and line number. Boxes that
    poke out of the image are clipped to it.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise CorruptFileError(f"{path}: cannot read the YOLO label file ({type(e).__name__}: {e}).") from e
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        tokens = line.split()
        if not tokens:
            continue
        where = f"{path}, line {number} ({line.strip()[:60]!r})"
        if len(tokens) != 5:
            raise CorruptFileError(f"{where}: expected 5 values 'class cx cy w h', got {len(tokens)}.")
        try:
            values = [float(t) for t in tokens]
        except ValueError:
            raise CorruptFileError(f"{where}: every value must be a number.") from None
        cls, cx, cy, w, h = values
        if not all(np.isfinite(values)):
            raise CorruptFileError(f"{where}: NaN or infinite value.")
        if cls != int(cls) or not 0 <= cls < num_classes:
            raise CorruptFileError(
                f"{where}: class id must be an integer in [0, {num_classes}), got {tokens[0]}."
            )
        tol = _YOLO_TOLERANCE
        if not all(-tol <= v <= 1 + tol for v in (cx, cy, w, h)):
            raise CorruptFileError(
                f"{where}: cx, cy, w, h must be normalised to [0, 1] (pixel coordinates divided by the "
                "image width / height)."
            )
        if w < 0 or h < 0 or cx + w / 2 <= 0 or cx - w / 2 >= 1 or cy + h / 2 <= 0 or cy - h / 2 >= 1:
            raise CorruptFileError(f"{where}: the box lies outside the image.")
        rows.append(values)
    arr = np.asarray(rows, dtype=np.float64).reshape(-1, 5)
    keep = (arr[:, 3] >= MARS_MIN_BOX_SIZE) & (arr[:, 4] >= MARS_MIN_BOX_SIZE)
    arr = arr[keep]
    cx_p, cy_p, w_p, h_p = arr[:, 1] * width, arr[:, 2] * height, arr[:, 3] * width, arr[:, 4] * height
    boxes = np.stack([cx_p - w_p / 2, cy_p - h_p / 2, cx_p + w_p / 2, cy_p + h_p / 2], axis=1)
    boxes = np.clip(boxes, 0, [width, height, width, height])
    return boxes, arr[:, 0].astype(np.int64)


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
    root: str | Path | None = None,
    split: str | None = None,
    limit: int | None = None,
    names: Sequence[str] | None = None,
) -> list[Sample]:
    """CamVid street scenes (480 x 360), SegNet's 11 classes: ``semantic`` holds class ids 0-10
    (:data:`CAMVID_CLASSES`) and :data:`CAMVID_IGNORE_INDEX` (11) for unlabelled pixels. Only the "val"
    split is labelled for evaluation here (None means "val"); CamVid's training frames are read by
    :func:`load_camvid_train`. ``names`` reads only those file stems."""
    _check_split(split, (None, "val"), "camvid")
    _check_limit(limit)
    folder = require_data("camvid", root)
    return _camvid_samples(folder / "images", folder / "labels", "*.png", "val", limit, names)


def load_camvid_train(
    root: str | Path | None = None, limit: int | None = None, names: Sequence[str] | None = None
) -> list[Sample]:
    """CamVid's 367 training frames (images re-encoded as JPEG, original label PNGs), same classes and
    ignore id as :func:`load_camvid`; ``meta["split"] == "train"``. ``names`` reads only those stems."""
    _check_limit(limit)
    folder = require_data("camvid", root) / "train"
    return _camvid_samples(folder / "images", folder / "labels", "*.jpg", "train", limit, names)


def _camvid_samples(
    image_dir: Path, label_dir: Path, pattern: str, split: str, limit: int | None, names: Sequence[str] | None
) -> list[Sample]:
    paths = _files(image_dir, pattern)
    if names is not None:
        wanted = set(names)
        paths = [p for p in paths if p.stem in wanted]
    samples = []
    for path in paths[:limit]:
        image = _read_image(path)
        labels = _read_grey(label_dir / f"{path.stem}.png").astype(np.int64)
        if labels.shape != image.shape[:2]:
            raise CorruptFileError(
                f"camvid/{path.name}: label shape {labels.shape} != image {image.shape[:2]}."
            )
        samples.append(Sample(path.stem, image, semantic=labels, dataset="camvid", meta={"split": split}))
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


VOC_CLASSES: tuple[str, ...] = (
    "background",
    "aeroplane",
    "bicycle",
    "bird",
    "boat",
    "bottle",
    "bus",
    "car",
    "cat",
    "chair",
    "cow",
    "diningtable",
    "dog",
    "horse",
    "motorbike",
    "person",
    "pottedplant",
    "sheep",
    "sofa",
    "train",
    "tvmonitor",
)
VOC_IGNORE_INDEX = 255
DUBAI_CLASSES: tuple[str, ...] = ("Building", "Land", "Road", "Vegetation", "Water")
DUBAI_IGNORE_INDEX = 255
# The colours the aerial-dubai masks actually use (its classes.json palette does not match them).
_DUBAI_COLORS: tuple[tuple[int, int, int], ...] = (
    (60, 16, 152),
    (132, 41, 246),
    (110, 193, 228),
    (254, 221, 58),
    (226, 169, 41),
)


def _voc_palette(n: int = 256) -> np.ndarray:
    """The standard PASCAL VOC colour map, (n, 3) uint8: bits of the class id spread over R, G, B."""
    colors = np.zeros((n, 3), dtype=np.uint8)
    for i in range(n):
        c, r, g, b = i, 0, 0, 0
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        colors[i] = (r, g, b)
    return colors


def labels_from_colors(rgb: np.ndarray, colors: Sequence[Sequence[int]], ignore_index: int) -> np.ndarray:
    """Class-id map from an RGB label image: pixel colour ``colors[k]`` -> k, any other colour ->
    ``ignore_index``.

    Arguments:
      rgb (np.ndarray): (H, W, 3) uint8 label image.
      colors: one (r, g, b) per class id.
      ignore_index (int): the id for colours not in ``colors`` (void, unlabelled).

    Returns:
      (np.ndarray): (H, W) int64 class ids.
    """
    arr = np.asarray(rgb)
    if arr.ndim != 3 or arr.shape[2] < 3:
        raise InvalidInputError(f"rgb must be (H, W, 3), got shape {arr.shape}.")
    code = (arr[..., 0].astype(np.int64) << 16) | (arr[..., 1].astype(np.int64) << 8) | arr[..., 2]
    table = {(int(r) << 16) | (int(g) << 8) | int(b): k for k, (r, g, b) in enumerate(colors)}
    out = np.full(code.shape, ignore_index, dtype=np.int64)
    for value, k in table.items():
        out[code == value] = k
    return out


def _rgb_label_samples(
    dataset: str,
    image_paths: Sequence[Path],
    label_path: Callable[[Path], Path],
    colors: Sequence[Sequence[int]],
    ignore_index: int,
    split: str | None,
) -> list[Sample]:
    samples = []
    for path in image_paths:
        image = _read_image(path)
        with Image.open(label_path(path)) as im:
            labels = labels_from_colors(np.asarray(im.convert("RGB")), colors, ignore_index)
        if labels.shape != image.shape[:2]:
            raise DataNotFoundError(
                f"{dataset}/{path.name}: label shape {labels.shape} != {image.shape[:2]}."
            )
        samples.append(Sample(path.stem, image, semantic=labels, dataset=dataset, meta={"split": split}))
    return samples


def load_voc_samples(
    root: str | Path | None = None,
    split: str | None = None,
    limit: int | None = None,
    test_fraction: float = 0.5,
    seed: int = 0,
) -> list[Sample]:
    """14 PASCAL VOC 2012 val crops (513 x 513): ``semantic`` holds ids 0-20 (:data:`VOC_CLASSES`, 0 =
    background) and :data:`VOC_IGNORE_INDEX` (255) for the void boundary colour.

    ``split`` "train"/"test" uses :func:`split_names` (``test_fraction``, ``seed``); None: all 14.
    """
    _check_split(split, (None, "train", "test"), "voc-samples")
    _check_limit(limit)
    folder = require_data("voc-samples", root)
    paths = _files(folder / "images", "*.png")
    if split is not None:
        train, test = split_names([p.stem for p in paths], test_fraction, seed)
        keep = set(train if split == "train" else test)
        paths = [p for p in paths if p.stem in keep]
    colors = [tuple(int(v) for v in c) for c in _voc_palette(len(VOC_CLASSES))]
    return _rgb_label_samples(
        "voc-samples", paths[:limit], lambda p: folder / "labels" / p.name, colors, VOC_IGNORE_INDEX, split
    )


def dubai_tile(name: str) -> int:
    """The tile number of an aerial-dubai sample name ``tileN_partK``."""
    head = name.split("_", 1)[0]
    if not head.startswith("tile") or not head[4:].isdigit():
        raise InvalidInputError(f"Not an aerial-dubai sample name (tileN_partK): {name!r}.")
    return int(head[4:])


def load_aerial_dubai(
    root: str | Path | None = None,
    split: str | None = None,
    limit: int | None = None,
    tiles: Sequence[int] | None = None,
) -> list[Sample]:
    """Aerial Dubai tiles (509 x 544 to 1126 x 1058): ``semantic`` holds ids 0-4 (:data:`DUBAI_CLASSES`)
    and :data:`DUBAI_IGNORE_INDEX` (255) for Unlabeled and black pixels.

    Parts of one tile overlap in content and look alike, so split by tile: ``tiles`` keeps only those
    tile numbers (1-6 here). ``split`` must be None (there is no official split).
    """
    _check_split(split, (None,), "aerial-dubai")
    _check_limit(limit)
    folder = require_data("aerial-dubai", root)
    paths = _files(folder / "images", "*.jpg")
    if tiles is not None:
        wanted = {int(t) for t in tiles}
        paths = [p for p in paths if dubai_tile(p.stem) in wanted]
    return _rgb_label_samples(
        "aerial-dubai",
        paths[:limit],
        lambda p: folder / "masks" / f"{p.stem}.png",
        _DUBAI_COLORS,
        DUBAI_IGNORE_INDEX,
        split,
    )


DATASETS.update({"voc-samples": load_voc_samples, "aerial-dubai": load_aerial_dubai})


AERIAL_DUBAI_CLASSES: dict[str, tuple[int, int, int]] = {
    name.lower(): colour for name, colour in zip(DUBAI_CLASSES, _DUBAI_COLORS, strict=True)
}
"""The aerial-dubai mask colours actually used (see its PROVENANCE.md; the source's classes.json differs)."""


def load_aerial_dubai_buildings(
    root: str | Path | None = None, split: str | None = None, limit: int | None = None
) -> list[Sample]:
    """Aerial Dubai tiles (6 tiles x 9 parts, 509 x 544 to 1126 x 1058) with the *building* class only:
    binary ``semantic`` (1 = building) and instance ``masks`` from its connected components (touching
    buildings merge), ``boxes`` around them. Other classes, Unlabeled and black pixels are background.
    Built on :func:`load_aerial_dubai` (same files, checks and errors)."""
    building = DUBAI_CLASSES.index("Building")
    samples = load_aerial_dubai(root, split, limit)
    for i, s in enumerate(samples):
        # replaced in place, so each class map is freed as soon as its building mask is made
        samples[i] = _binary_sample("aerial-dubai", s.name, s.image, np.asarray(s.semantic) == building, True)
    return samples
