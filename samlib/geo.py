"""GeoTIFF in and out: georeferenced reads with band selection and stretch, masks back as rasters and
vectors.

SAM wants (H, W, 3) uint8 RGB; a satellite GeoTIFF has any number of bands of any dtype (Sentinel-2:
13 bands of uint16 reflectance x 10000), a nodata value, a CRS and an affine transform from pixels to
map coordinates. This module bridges the two without losing the georeferencing:

* :func:`read_geotiff` reads a whole raster or a window, picks bands (``bands=(4, 3, 2)`` for a
  false-colour composite; 1-based like GDAL) and stretches each band to uint8 by percentiles that are
  computed once on a decimated read of the whole raster (:func:`compute_stretch`), so that every window
  of a tiled run uses the same mapping, and the mapping is recorded (:class:`Stretch`).
* :func:`write_mask_geotiff` / :class:`MaskWriter` write masks or label rasters with the source's CRS
  and transform (deflate-compressed, tiled, nodata set), the latter window by window.
* :func:`masks_to_polygons` and :func:`write_vectors` turn a label raster into polygons
  (``rasterio.features.shapes``), simplified by a tolerance in map units (``shapely``), and write
  GeoJSON or GeoPackage (``fiona``) in the raster's CRS.

``rasterio``, ``shapely`` and ``fiona`` are the optional extra ``samlib[geo]``; they are imported inside
the functions, so ``import samlib`` does not need them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from samlib.errors import DataNotFoundError, InvalidInputError, SamlibError

__all__ = [
    "GeoImage",
    "MaskWriter",
    "RasterInfo",
    "Stretch",
    "compute_stretch",
    "map_to_pixel",
    "masks_to_polygons",
    "pixel_to_map",
    "raster_info",
    "read_geotiff",
    "read_vector_prompts",
    "VectorPrompts",
    "select_bands",
    "raster_extent",
    "write_geotiff",
    "write_mask_geotiff",
    "write_vectors",
]

_GEO_HINT = "install the geo extra: pip install 'samlib[geo]' (rasterio, shapely, fiona)"


def _rasterio() -> Any:
    try:
        import rasterio
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise SamlibError(f"samlib.geo needs rasterio: {_GEO_HINT}.") from e
    return rasterio


def _open(path: str | Path) -> Any:
    rasterio = _rasterio()
    p = Path(path)
    if not p.exists():
        raise DataNotFoundError(f"Raster {p} does not exist.")
    try:
        return rasterio.open(p)
    except rasterio.errors.RasterioIOError as e:
        raise InvalidInputError(f"Cannot read {p} as a raster (GeoTIFF expected): {e}") from e


@dataclass(frozen=True)
class RasterInfo:
    """What a raster holds, without reading its pixels.

    Attributes:
      width (int), height (int): size in pixels.
      count (int): number of bands.
      dtypes (tuple[str, ...]): dtype of each band.
      crs (str | None): the CRS as WKT (None for a raster without one).
      transform (tuple[float, ...]): the affine pixel -> map transform (a, b, c, d, e, f).
      nodata (float | None): the nodata value.
    """

    width: int
    height: int
    count: int
    dtypes: tuple[str, ...]
    crs: str | None
    transform: tuple[float, ...]
    nodata: float | None


def raster_info(path: str | Path) -> RasterInfo:
    """:class:`RasterInfo` of the raster at ``path``."""
    with _open(path) as ds:
        return RasterInfo(
            width=ds.width,
            height=ds.height,
            count=ds.count,
            dtypes=tuple(ds.dtypes),
            crs=ds.crs.to_wkt() if ds.crs else None,
            transform=tuple(ds.transform)[:6],
            nodata=ds.nodata,
        )


def select_bands(count: int, bands: Sequence[int] | None = None) -> tuple[int, ...]:
    """The 1-based bands to read from a ``count``-band raster: 1 (grey) or 3 (RGB).

    Without ``bands``, a 1-band raster is read as grey and a 3-band one as RGB; anything else must say
    which bands to use, since guessing (dropping the 4th band of an RGBN raster, taking bands 1-3 of a
    Sentinel-2 scene, which are aerosol/blue/green) silently gives SAM the wrong picture.
    """
    if bands is None:
        if count in (1, 3):
            return tuple(range(1, count + 1))
        raise InvalidInputError(
            f"The raster has {count} bands; SAM takes 3 (RGB) or 1 (grey). Choose them with bands=..., "
            "e.g. bands=(1, 2, 3) for the first three, bands=(4, 3, 2) for Sentinel-2 true colour "
            "or bands=(8, 4, 3) for its false-colour infrared composite (1-based, as in GDAL)."
        )
    chosen = tuple(int(b) for b in bands)
    if len(chosen) not in (1, 3):
        raise InvalidInputError(f"bands must name 1 or 3 bands, got {chosen}.")
    bad = [b for b in chosen if not 1 <= b <= count]
    if bad:
        raise InvalidInputError(f"bands {bad} do not exist: the raster has bands 1..{count} (1-based).")
    return chosen


@dataclass(frozen=True)
class Stretch:
    """A per-band linear mapping to uint8: ``(value - low) / (high - low) * 255``, clipped.

    Attributes:
      bands (tuple[int, ...]): the 1-based bands it applies to, in output order.
      low (tuple[float, ...]), high (tuple[float, ...]): values mapped to 0 and 255, one per band.
      percentiles (tuple[float, float]): the percentiles low/high came from ((0, 100) = min/max,
        and the identity (0, 255) for uint8 input).
    """

    bands: tuple[int, ...]
    low: tuple[float, ...]
    high: tuple[float, ...]
    percentiles: tuple[float, float] = (2.0, 98.0)

    def apply(self, data: np.ndarray) -> np.ndarray:
        """(C, H, W) band values -> (C, H, W) uint8."""
        low = np.asarray(self.low, dtype=np.float64)[:, None, None]
        span = np.maximum(np.asarray(self.high, dtype=np.float64)[:, None, None] - low, 1e-12)
        scaled = (data.astype(np.float64) - low) / span * 255.0
        return np.clip(np.round(scaled), 0, 255).astype(np.uint8)


def compute_stretch(
    path: str | Path,
    bands: Sequence[int] | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
    max_size: int = 1024,
) -> Stretch:
    """Per-band percentile stretch of a raster, from a read decimated to at most ``max_size`` px a side
    (GDAL's overviews or nearest-neighbour decimation: memory stays small for any raster size). Nodata
    pixels are left out. uint8 rasters get the identity mapping (already what SAM takes).

    Arguments:
      path (str | Path): the raster.
      bands (Sequence[int] | None): 1-based bands (see :func:`select_bands`).
      percentiles (tuple[float, float]): (low, high) percentiles mapped to 0 and 255.
      max_size (int): long side of the decimated read the percentiles are computed on.

    Returns:
      (Stretch): the mapping, with the bands it applies to.
    """
    lo_p, hi_p = percentiles
    if not 0 <= lo_p < hi_p <= 100:
        raise InvalidInputError(f"percentiles must satisfy 0 <= low < high <= 100, got {percentiles}.")
    with _open(path) as ds:
        chosen = select_bands(ds.count, bands)
        if all(ds.dtypes[b - 1] == "uint8" for b in chosen):
            return Stretch(chosen, (0.0,) * len(chosen), (255.0,) * len(chosen), (0.0, 100.0))
        scale = max(1.0, max(ds.width, ds.height) / max_size)
        shape = (len(chosen), max(1, round(ds.height / scale)), max(1, round(ds.width / scale)))
        data = ds.read(list(chosen), out_shape=shape, masked=True)
    low, high = [], []
    for band in data:
        values = band.compressed().astype(np.float64)
        values = values[np.isfinite(values)]
        if values.size == 0:
            low.append(0.0)
            high.append(1.0)
            continue
        lo, hi = np.percentile(values, [lo_p, hi_p])
        low.append(float(lo))
        high.append(float(hi) if hi > lo else float(lo) + 1.0)
    return Stretch(chosen, tuple(low), tuple(high), (float(lo_p), float(hi_p)))


@dataclass
class GeoImage:
    """A raster (or a window of one) ready for SAM, with where it sits on the map.

    Attributes:
      image (np.ndarray): (H, W, 3) uint8 RGB (a 1-band raster is repeated into the three channels).
      valid (np.ndarray): (H, W) bool, False where the source is nodata in any chosen band.
      transform (tuple[float, ...]): affine pixel -> map transform of *this* array (a window's own).
      crs (str | None): the CRS as WKT.
      stretch (Stretch): how band values were mapped to uint8.
      window (tuple[int, int, int, int]): (row_off, col_off, height, width) in the source raster.
    """

    image: np.ndarray
    valid: np.ndarray
    transform: tuple[float, ...]
    crs: str | None
    stretch: Stretch
    window: tuple[int, int, int, int] = field(default=(0, 0, 0, 0))


def read_geotiff(
    path: str | Path,
    bands: Sequence[int] | None = None,
    window: tuple[int, int, int, int] | None = None,
    stretch: Stretch | None = None,
    percentiles: tuple[float, float] = (2.0, 98.0),
    out_shape: tuple[int, int] | None = None,
) -> GeoImage:
    """Read a GeoTIFF (or any raster GDAL reads) as SAM input, keeping its georeferencing.

    Arguments:
      path (str | Path): the raster.
      bands (Sequence[int] | None): 1 or 3 bands, 1-based; required for rasters that do not have
        exactly 1 or 3 bands.
      window (tuple[int, int, int, int] | None): (row_off, col_off, height, width) to read only part
        of the raster (clipped to it); None reads all of it.
      stretch (Stretch | None): the mapping to uint8; None computes it with :func:`compute_stretch` on
        the whole raster (pass one in to read many windows with the same mapping).
      percentiles (tuple[float, float]): used when ``stretch`` is None.
      out_shape (tuple[int, int] | None): (height, width) to resample the (clipped) window to, by
        averaging (GDAL reads decimated, from overviews where the file has them): a large window read
        small never sits in memory at full resolution. The returned transform is that of the
        resampled pixels. None keeps the raster's resolution.

    Returns:
      (GeoImage): image (H, W, 3) uint8, valid mask, the window's transform, CRS and stretch.
    """
    _rasterio()
    from affine import Affine
    from rasterio.windows import Window

    if stretch is None:
        stretch = compute_stretch(path, bands, percentiles)
    with _open(path) as ds:
        chosen = select_bands(ds.count, bands)
        if chosen != stretch.bands:
            raise InvalidInputError(f"stretch is for bands {stretch.bands}, but bands {chosen} are read.")
        if window is None:
            win = Window(0, 0, ds.width, ds.height)
        else:
            row, col, h, w = (int(v) for v in window)
            if h < 1 or w < 1:
                raise InvalidInputError(f"window height and width must be >= 1, got {window}.")
            win = Window(col, row, w, h).intersection(Window(0, 0, ds.width, ds.height))
        if out_shape is None:
            data = ds.read(list(chosen), window=win, masked=True)
            transform = tuple(ds.transform @ Affine.translation(win.col_off, win.row_off))[:6]
        else:
            from rasterio.enums import Resampling

            oh, ow = (int(v) for v in out_shape)
            if oh < 1 or ow < 1:
                raise InvalidInputError(f"out_shape must be >= (1, 1), got {out_shape}.")
            data = ds.read(
                list(chosen), window=win, out_shape=(len(chosen), oh, ow), masked=True,
                resampling=Resampling.average,
            )  # fmt: skip
            transform = tuple(
                ds.transform
                @ Affine.translation(win.col_off, win.row_off)
                @ Affine.scale(win.width / ow, win.height / oh)
            )[:6]
        crs = ds.crs.to_wkt() if ds.crs else None
    valid = np.asarray(~np.ma.getmaskarray(data).any(axis=0), dtype=bool)
    image = stretch.apply(np.ma.filled(data, 0))
    image[:, ~valid] = 0
    rgb = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image
    return GeoImage(
        image=np.ascontiguousarray(rgb.transpose(1, 2, 0)),
        valid=valid,
        transform=transform,
        crs=crs,
        stretch=stretch,
        window=(int(win.row_off), int(win.col_off), int(win.height), int(win.width)),
    )


def map_to_pixel(transform: Sequence[float], xs: np.ndarray, ys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Map coordinates -> fractional pixel (col, row) through the inverse of ``transform``."""
    from affine import Affine

    inv = ~Affine(*transform[:6])
    x, y = np.asarray(xs, dtype=np.float64), np.asarray(ys, dtype=np.float64)
    return inv.a * x + inv.b * y + inv.c, inv.d * x + inv.e * y + inv.f


def pixel_to_map(
    transform: Sequence[float], cols: np.ndarray, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Fractional pixel (col, row) -> map (x, y) through ``transform``."""
    from affine import Affine

    fwd = Affine(*transform[:6])
    c, r = np.asarray(cols, dtype=np.float64), np.asarray(rows, dtype=np.float64)
    return fwd.a * c + fwd.b * r + fwd.c, fwd.d * c + fwd.e * r + fwd.f


def _mask_profile(
    height: int, width: int, transform: Sequence[float], crs: str | None, dtype: str, nodata: float | None
) -> dict[str, Any]:
    from affine import Affine

    profile: dict[str, Any] = {
        "driver": "GTiff",
        "height": height,
        "width": width,
        "count": 1,
        "dtype": dtype,
        "crs": crs,
        "transform": Affine(*transform[:6]),
        "nodata": nodata,
        "compress": "deflate",
    }
    # GeoTIFF tiles must be multiples of 16; tiny rasters are written striped.
    if height >= 256 and width >= 256:
        profile.update(tiled=True, blockxsize=256, blockysize=256)
    return profile


class MaskWriter:
    """Write a mask or label raster window by window (a large raster never sits in memory whole).

    Use as a context manager: ``with MaskWriter(path, height, width, transform, crs) as w:
    w.write(labels, row_off, col_off)``.
    """

    def __init__(
        self,
        path: str | Path,
        height: int,
        width: int,
        transform: Sequence[float],
        crs: str | None,
        dtype: str = "uint32",
        nodata: float | None = 0,
    ) -> None:
        self.path = Path(path)
        self.profile = _mask_profile(height, width, transform, crs, dtype, nodata)
        self._ds: Any = None

    def __enter__(self) -> MaskWriter:
        rasterio = _rasterio()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._ds = rasterio.open(self.path, "w", **self.profile)
        return self

    def write(self, block: np.ndarray, row_off: int, col_off: int) -> None:
        """Write (h, w) ``block`` with its top-left pixel at (row_off, col_off)."""
        from rasterio.windows import Window

        if self._ds is None:
            raise SamlibError("MaskWriter.write outside its `with` block.")
        arr = np.asarray(block)
        if arr.ndim != 2:
            raise InvalidInputError(f"block must be (h, w), got shape {arr.shape}.")
        win = Window(col_off, row_off, arr.shape[1], arr.shape[0])
        self._ds.write(arr.astype(self.profile["dtype"]), 1, window=win)

    def __exit__(self, *exc: object) -> None:
        if self._ds is not None:
            self._ds.close()
            self._ds = None


def write_mask_geotiff(
    path: str | Path,
    mask: np.ndarray,
    transform: Sequence[float],
    crs: str | None,
    nodata: float | None = 0,
) -> Path:
    """Write one (H, W) mask (bool -> uint8 0/1) or label raster (integers, 0 = background) as a
    compressed, tiled GeoTIFF with ``transform`` and ``crs`` (e.g. a :class:`GeoImage`'s).

    Returns:
      (Path): the written file.
    """
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise InvalidInputError(f"mask must be (H, W), got shape {arr.shape}.")
    if arr.dtype == np.bool_:
        arr, dtype = arr.astype(np.uint8), "uint8"
    elif np.issubdtype(arr.dtype, np.integer):
        if arr.size and int(arr.min()) < 0:
            raise InvalidInputError("label rasters must be >= 0 (0 = background).")
        dtype = "uint8" if arr.size == 0 or int(arr.max()) <= 255 else "uint32"
    else:
        raise InvalidInputError(f"mask must be bool or integer labels, got dtype {arr.dtype}.")
    with MaskWriter(path, arr.shape[0], arr.shape[1], transform, crs, dtype, nodata) as writer:
        writer.write(arr, 0, 0)
    return Path(path)


def write_geotiff(
    path: str | Path,
    data: np.ndarray,
    transform: Sequence[float],
    crs: str | None,
    nodata: float | None = None,
) -> Path:
    """Write a (C, H, W) or (H, W) array of any dtype as a compressed, tiled GeoTIFF with ``transform``
    (e.g. ``rasterio.transform.from_origin(west, north, xres, yres)``) and ``crs`` ("EPSG:32723", WKT).

    Returns:
      (Path): the written file.
    """
    rasterio = _rasterio()
    arr = np.asarray(data)
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3:
        raise InvalidInputError(f"data must be (C, H, W) or (H, W), got shape {np.asarray(data).shape}.")
    profile = _mask_profile(arr.shape[1], arr.shape[2], transform, crs, str(arr.dtype), nodata)
    profile["count"] = arr.shape[0]
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(p, "w", **profile) as dst:
        dst.write(arr)
    return p


def raster_extent(transform: Sequence[float], height: int, width: int) -> tuple[float, float, float, float]:
    """(left, right, bottom, top) map extent of a north-up raster, for matplotlib's ``imshow(extent=...)``."""
    a, _, c, _, e, f = transform[:6]
    return c, c + a * width, f + e * height, f


def masks_to_polygons(
    labels: np.ndarray,
    transform: Sequence[float],
    simplify_tolerance: float = 0.0,
    offset: tuple[int, int] = (0, 0),
) -> list[tuple[Any, int]]:
    """Polygons of each non-zero label of an (H, W) mask or label raster, in map coordinates.

    Arguments:
      labels (np.ndarray): (H, W) bool or integer; 0 is background.
      transform (Sequence[float]): affine pixel -> map transform of ``labels`` (of the full raster
        when ``offset`` is given).
      simplify_tolerance (float): Douglas-Peucker tolerance in map units (0 keeps every pixel edge);
        topology is preserved.
      offset (tuple[int, int]): (row, col) of ``labels``' top-left pixel in the raster of ``transform``.

    Returns:
      (list[tuple[shapely.Polygon, int]]): (polygon, label) pairs; a label split into pieces gives
        one polygon per piece.
    """
    from affine import Affine
    from rasterio import features
    from shapely.geometry import shape

    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise InvalidInputError(f"labels must be (H, W), got shape {arr.shape}.")
    arr = arr.astype(np.uint8) if arr.dtype == np.bool_ else arr.astype(np.int32)
    tf = Affine(*transform[:6]) @ Affine.translation(offset[1], offset[0])
    out = []
    for geom, value in features.shapes(arr, mask=arr > 0, transform=tf):
        poly = shape(geom)
        if simplify_tolerance > 0:
            poly = poly.simplify(simplify_tolerance, preserve_topology=True)
        if not poly.is_empty:
            out.append((poly, int(value)))
    return out


def write_vectors(
    path: str | Path,
    polygons: Iterable[tuple[Any, int]],
    crs: str | None,
    properties: Sequence[dict[str, float]] | None = None,
) -> Path:
    """Write (polygon, label) pairs as GeoJSON (``.geojson``/``.json``) or GeoPackage (``.gpkg``).

    Arguments:
      path (str | Path): output file; the suffix chooses the format.
      polygons (Iterable[tuple[shapely.Polygon, int]]): e.g. from :func:`masks_to_polygons`.
      crs (str | None): the CRS (WKT or "EPSG:...") of the coordinates; kept in the file.
      properties (Sequence[dict[str, float]] | None): extra numeric fields per polygon (e.g. score).

    Returns:
      (Path): the written file.
    """
    import fiona
    from shapely.geometry import mapping

    p = Path(path)
    drivers = {".geojson": "GeoJSON", ".json": "GeoJSON", ".gpkg": "GPKG"}
    if p.suffix.lower() not in drivers:
        raise InvalidInputError(f"Vector output must end in .geojson, .json or .gpkg, got {p.name}.")
    items = list(polygons)
    extra = list(properties) if properties is not None else [{} for _ in items]
    if len(extra) != len(items):
        raise InvalidInputError(f"{len(extra)} property rows for {len(items)} polygons.")
    fields = {"label": "int"} | {k: "float" for k in (extra[0] if extra else {})}
    schema = {"geometry": "Polygon", "properties": fields}
    p.parent.mkdir(parents=True, exist_ok=True)
    if p.exists():
        p.unlink()
    with fiona.open(p, "w", driver=drivers[p.suffix.lower()], crs_wkt=crs or "", schema=schema) as dst:
        for (poly, label), props in zip(items, extra, strict=True):
            geom = mapping(poly)
            if geom["type"] != "Polygon":  # simplification can split a polygon: keep its largest piece
                poly = max(getattr(poly, "geoms", [poly]), key=lambda g: g.area)
                geom = mapping(poly)
            dst.write(
                {"geometry": geom, "properties": {"label": label, **{k: float(v) for k, v in props.items()}}}
            )
    return p


@dataclass
class VectorPrompts:
    """Prompts read from a vector file, in the file's CRS.

    Attributes:
      boxes (np.ndarray): (B, 4) (x0, y0, x1, y1) map-coordinate bounds of each polygon feature.
      points (np.ndarray): (N, 2) (x, y) of each point feature.
      labels (np.ndarray): (N,) point labels: the ``label`` property if present (1 / 0), else 1.
      crs (str): the file's CRS as WKT.
    """

    boxes: np.ndarray
    points: np.ndarray
    labels: np.ndarray
    crs: str


def read_vector_prompts(path: str | Path) -> VectorPrompts:
    """Boxes (bounds of polygon features) and points from a GeoJSON / GeoPackage file.

    A file without a CRS is refused (:class:`InvalidInputError`): coordinates without one cannot be
    matched to a raster's pixels.
    """
    import fiona
    from shapely.geometry import shape

    p = Path(path)
    if not p.exists():
        raise DataNotFoundError(f"Vector file {p} does not exist.")
    try:
        src = fiona.open(p)
    except Exception as e:  # fiona raises several DriverError kinds
        raise InvalidInputError(f"Cannot read {p} as a vector file (GeoJSON or GeoPackage): {e}") from e
    boxes, points, labels = [], [], []
    with src:
        crs_wkt = src.crs_wkt
        if p.suffix.lower() in (".geojson", ".json") and "crs" not in json.loads(p.read_text()):
            # GDAL reads a GeoJSON without a "crs" member as WGS 84 (RFC 7946); coordinates outside
            # lon/lat ranges mean the file simply lost its CRS.
            west, south, east, north = src.bounds
            if not (-180 <= west <= east <= 180 and -90 <= south <= north <= 90):
                raise InvalidInputError(
                    f"{p.name} has no CRS, and its coordinates ({west:.6g}, {south:.6g}, {east:.6g}, "
                    f"{north:.6g}) are not longitude/latitude: save it with its CRS (a GeoPackage, or "
                    "GeoJSON with a 'crs' member as GDAL/QGIS write it)."
                )
        if not crs_wkt:
            raise InvalidInputError(f"{p.name} has no CRS: save it with the CRS its coordinates are in.")
        for feat in src:
            geom = shape(feat["geometry"])
            if geom.geom_type == "Point":
                points.append((geom.x, geom.y))
                lab = dict(feat["properties"] or {}).get("label")
                labels.append(1 if lab is None else int(lab))
            elif geom.geom_type in ("Polygon", "MultiPolygon"):
                boxes.append(geom.bounds)
    return VectorPrompts(
        boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
        points=np.asarray(points, dtype=np.float64).reshape(-1, 2),
        labels=np.asarray(labels, dtype=np.int64),
        crs=crs_wkt,
    )
