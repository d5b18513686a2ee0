"""samlib.geo: GeoTIFF reads (bands, stretch, nodata, windows) and writes (rasters, vectors)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("shapely")
pytest.importorskip("fiona")

from affine import Affine  # noqa: E402

from samlib import geo  # noqa: E402
from samlib.errors import InvalidInputError  # noqa: E402

CRS = "EPSG:32640"  # UTM 40N (Dubai)
TRANSFORM = Affine(0.5, 0.0, 300000.0, 0.0, -0.5, 2780000.0)


def write_raster(path: Path, data: np.ndarray, nodata: float | None = None, crs: str | None = CRS) -> Path:
    """(C, H, W) ``data`` as a GeoTIFF with TRANSFORM."""
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        height=data.shape[1],
        width=data.shape[2],
        count=data.shape[0],
        dtype=str(data.dtype),
        crs=crs,
        transform=TRANSFORM,
        nodata=nodata,
    ) as dst:
        dst.write(data)
    return path


def test_uint8_rgb_reads_unchanged_with_georeferencing(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.integers(0, 256, (3, 40, 50), dtype=np.uint8)
    img = geo.read_geotiff(write_raster(tmp_path / "rgb.tif", data))
    assert img.image.shape == (40, 50, 3)
    np.testing.assert_array_equal(img.image, data.transpose(1, 2, 0))
    assert img.transform == tuple(TRANSFORM)[:6]
    assert rasterio.crs.CRS.from_wkt(img.crs) == rasterio.crs.CRS.from_string(CRS)
    assert img.stretch.low == (0.0, 0.0, 0.0) and img.stretch.high == (255.0, 255.0, 255.0)


def test_window_read_has_the_window_transform(tmp_path: Path, rng: np.random.Generator) -> None:
    data = rng.integers(0, 256, (3, 40, 50), dtype=np.uint8)
    path = write_raster(tmp_path / "rgb.tif", data)
    img = geo.read_geotiff(path, window=(10, 20, 15, 100))  # clipped at the right edge
    assert img.window == (10, 20, 15, 30)
    np.testing.assert_array_equal(img.image, data[:, 10:25, 20:50].transpose(1, 2, 0))
    assert img.transform == tuple(TRANSFORM @ Affine.translation(20, 10))[:6]


@pytest.mark.parametrize("count", [4, 13])
def test_many_bands_need_a_band_choice(tmp_path: Path, rng: np.random.Generator, count: int) -> None:
    data = rng.integers(0, 10000, (count, 30, 30), dtype=np.uint16)
    path = write_raster(tmp_path / f"b{count}.tif", data)
    with pytest.raises(InvalidInputError, match=f"{count} bands"):
        geo.read_geotiff(path)
    bands = (4, 3, 2)
    img = geo.read_geotiff(path, bands=bands)
    assert img.image.shape == (30, 30, 3) and img.stretch.bands == bands
    # channel 0 is band 4: same ordering of pixels as the source band
    src = data[3].ravel().astype(float)
    out = img.image[..., 0].ravel().astype(float)
    assert np.corrcoef(src, out)[0, 1] > 0.95
    with pytest.raises(InvalidInputError, match="do not exist"):
        geo.read_geotiff(path, bands=(count + 1, 2, 1))


def test_16_bit_is_stretched_not_truncated(tmp_path: Path) -> None:
    ramp = np.linspace(1000, 60000, 64 * 64).reshape(1, 64, 64).astype(np.uint16)
    img = geo.read_geotiff(write_raster(tmp_path / "u16.tif", ramp), percentiles=(0, 100))
    grey = img.image[..., 0].astype(int)
    assert grey.min() == 0 and grey.max() == 255
    # monotone in the source values: truncation (value % 256 or a uint8 cast) would wrap around
    order = np.argsort(ramp[0].ravel(), kind="stable")
    assert np.all(np.diff(grey.ravel()[order]) >= 0)
    assert img.stretch.low == (1000.0,) and img.stretch.high == (60000.0,)


def test_nodata_is_masked_and_left_out_of_the_stretch(tmp_path: Path) -> None:
    data = np.full((1, 20, 20), 500, dtype=np.uint16)
    data[0, :, 10:] = 1500
    data[0, :5] = 0  # nodata rows
    img = geo.read_geotiff(write_raster(tmp_path / "nd.tif", data, nodata=0), percentiles=(0, 100))
    assert not img.valid[:5].any() and img.valid[5:].all()
    assert img.stretch.low == (500.0,) and img.stretch.high == (1500.0,)
    assert (img.image[:5] == 0).all() and (img.image[5:, 10:] == 255).all()


def test_mask_geotiff_round_trip_keeps_crs_transform_nodata(tmp_path: Path) -> None:
    labels = np.zeros((300, 280), dtype=np.int64)
    labels[10:50, 20:90] = 1
    labels[100:200, 150:260] = 300
    out = geo.write_mask_geotiff(tmp_path / "m.tif", labels, tuple(TRANSFORM), CRS, nodata=0)
    with rasterio.open(out) as ds:
        assert ds.crs == rasterio.crs.CRS.from_string(CRS)
        assert ds.transform == TRANSFORM
        assert ds.nodata == 0
        assert ds.profile["compress"] == "deflate" and ds.profile["tiled"]
        np.testing.assert_array_equal(ds.read(1), labels)


@pytest.mark.parametrize("suffix", [".geojson", ".gpkg"])
def test_vector_round_trip_counts_and_areas(tmp_path: Path, suffix: str) -> None:
    import fiona
    from shapely.geometry import shape

    labels = np.zeros((100, 120), dtype=np.uint8)
    labels[10:30, 10:50] = 1  # 20 x 40 px = 800 px = 200 m^2 at 0.5 m
    labels[50:90, 60:110] = 2
    labels[60:70, 10:20] = 1  # a second piece of label 1
    polys = geo.masks_to_polygons(labels, tuple(TRANSFORM), simplify_tolerance=0.25)
    assert len(polys) == 3
    out = geo.write_vectors(tmp_path / f"v{suffix}", polys, CRS)
    with fiona.open(out) as src:
        assert rasterio.crs.CRS.from_wkt(src.crs_wkt) == rasterio.crs.CRS.from_string(CRS)
        feats = list(src)
    assert len(feats) == 3
    areas = sorted(shape(f["geometry"]).area for f in feats)
    expected = sorted([800 * 0.25, 2000 * 0.25, 100 * 0.25])
    np.testing.assert_allclose(areas, expected, rtol=0.02)
    # polygons sit where the pixels are, in map units
    big = max((shape(f["geometry"]) for f in feats), key=lambda g: g.area)
    x0, y0 = TRANSFORM @ (60, 90)
    x1, y1 = TRANSFORM @ (110, 50)
    np.testing.assert_allclose(big.bounds, (x0, y0, x1, y1))


def test_vector_prompts_need_a_crs(tmp_path: Path) -> None:
    fc = {
        "type": "FeatureCollection",
        "features": [
            {
                "type": "Feature",
                "properties": {},
                "geometry": {"type": "Point", "coordinates": [300010.0, 2779990.0]},
            }
        ],
    }
    bare = tmp_path / "bare.geojson"
    bare.write_text(json.dumps(fc))
    with pytest.raises(InvalidInputError, match="no CRS"):
        geo.read_vector_prompts(bare)
    fc["crs"] = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32640"}}
    ok = tmp_path / "ok.geojson"
    ok.write_text(json.dumps(fc))
    prompts = geo.read_vector_prompts(ok)
    np.testing.assert_allclose(prompts.points, [[300010.0, 2779990.0]])
    assert prompts.labels.tolist() == [1]


def test_unreadable_raster_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.tif"
    bad.write_text("not a tiff")
    with pytest.raises(InvalidInputError, match="Cannot read"):
        geo.read_geotiff(bad)
