"""``samlib segment``: outputs, summary line, exit codes and messages for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
fiona = pytest.importorskip("fiona")

from affine import Affine  # noqa: E402

from samlib.cli import main  # noqa: E402

CRS = "EPSG:32640"
TRANSFORM = Affine(0.5, 0.0, 300000.0, 0.0, -0.5, 2780000.0)
URN = {"type": "name", "properties": {"name": "urn:ogc:def:crs:EPSG::32640"}}


@pytest.fixture
def raster(tmp_path: Path) -> Path:
    """300 x 280 px: dark ground with two bright squares (so two tiles of 256 px in each direction)."""
    img = np.full((3, 300, 280), 40, dtype=np.uint8)
    img[:, 40:90, 30:80] = 210
    img[:, 200:260, 180:250] = 180
    path = tmp_path / "in.tif"
    with rasterio.open(
        path, "w", driver="GTiff", height=300, width=280, count=3, dtype="uint8", crs=CRS, transform=TRANSFORM
    ) as dst:
        dst.write(img)
    return path


def box_feature(c0: float, r0: float, c1: float, r1: float) -> dict:
    x0, y0 = TRANSFORM @ (c0, r1)
    x1, y1 = TRANSFORM @ (c1, r0)
    ring = [[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]]
    return {"type": "Feature", "properties": {}, "geometry": {"type": "Polygon", "coordinates": [ring]}}


def write_fc(path: Path, features: list[dict], crs: dict | None = URN) -> Path:
    fc: dict = {"type": "FeatureCollection", "features": features}
    if crs is not None:
        fc["crs"] = crs
    path.write_text(json.dumps(fc))
    return path


def test_box_prompts_write_georeferenced_masks_and_polygons(tmp_path: Path, raster: Path, capsys) -> None:
    boxes = write_fc(
        tmp_path / "boxes.geojson", [box_feature(28, 38, 82, 92), box_feature(178, 198, 252, 262)]
    )
    out, vec = tmp_path / "masks.tif", tmp_path / "masks.gpkg"
    code = main(
        ["segment", str(raster), "--boxes", str(boxes), "--out", str(out), "--vector", str(vec), "--quiet"]
    )
    assert code == 0
    summary = capsys.readouterr().out
    assert "2 masks (box prompts)" in summary and "polygons" in summary
    with rasterio.open(out) as ds:
        labels = ds.read(1)
        assert ds.crs == rasterio.crs.CRS.from_string(CRS) and ds.transform == TRANSFORM
    assert set(np.unique(labels)) <= {0, 1, 2} and (labels > 0).any()
    with fiona.open(vec) as src:
        assert len(src) >= 1


def test_points_given_in_lon_lat_are_reprojected(tmp_path: Path, raster: Path) -> None:
    from rasterio.warp import transform

    x, y = TRANSFORM @ (55, 65)
    lon, lat = transform(CRS, "EPSG:4326", [x], [y])
    feat = {
        "type": "Feature",
        "properties": {"label": 1},
        "geometry": {"type": "Point", "coordinates": [lon[0], lat[0]]},
    }
    pts = write_fc(tmp_path / "pts.geojson", [feat], crs=None)  # RFC 7946: WGS 84
    out = tmp_path / "m.tif"
    assert main(["segment", str(raster), "--points", str(pts), "--out", str(out), "--quiet"]) == 0


def test_auto_runs_over_all_tiles(tmp_path: Path, raster: Path, capsys) -> None:
    out = tmp_path / "auto.tif"
    code = main(["segment", str(raster), "--auto", "--points-per-side", "4", "--out", str(out), "--quiet"])
    assert code == 0
    assert "(automatic) over 280 x 300 px in 4 tiles" in capsys.readouterr().out
    assert out.exists()


def test_auto_downsampled_writes_a_full_resolution_label_raster(tmp_path: Path, raster: Path, capsys) -> None:
    out = tmp_path / "auto_ds.tif"
    argv = ["segment", str(raster), "--auto", "--downsample", "2", "--points-per-side", "4"]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    assert "in 1 tiles of 512 px read at 1/2" in capsys.readouterr().out
    with rasterio.open(out) as ds:
        assert (ds.height, ds.width) == (300, 280) and ds.transform == TRANSFORM


def test_bad_inputs_exit_2_with_a_message(tmp_path: Path, raster: Path, capsys) -> None:
    out = str(tmp_path / "m.tif")
    bare = write_fc(tmp_path / "bare.geojson", [box_feature(28, 38, 82, 92)], crs=None)  # UTM numbers, no CRS
    assert main(["segment", str(raster), "--boxes", str(bare), "--out", out]) == 2
    assert "has no CRS" in capsys.readouterr().err
    far = write_fc(tmp_path / "far.geojson", [box_feature(1000, 1000, 1100, 1100)])
    assert main(["segment", str(raster), "--boxes", str(far), "--out", out]) == 2
    assert "outside the raster" in capsys.readouterr().err
    junk = tmp_path / "junk.tif"
    junk.write_bytes(b"\x00" * 100)
    assert main(["segment", str(junk), "--auto", "--out", out]) == 2
    assert "Cannot read" in capsys.readouterr().err
    assert main(["segment", str(tmp_path / "missing.tif"), "--auto", "--out", out]) == 2
    assert "does not exist" in capsys.readouterr().err
    four = tmp_path / "rgbn.tif"
    with rasterio.open(
        four, "w", driver="GTiff", height=20, width=20, count=4, dtype="uint16", crs=CRS, transform=TRANSFORM
    ) as dst:
        dst.write(np.ones((4, 20, 20), dtype=np.uint16))
    assert main(["segment", str(four), "--auto", "--out", out]) == 2
    assert "has 4 bands" in capsys.readouterr().err
    assert main(["segment", str(raster), "--out", out]) == 2  # no prompt option: argparse usage error
    assert main(["segment", str(raster), "--auto", "--model", "no-such-model", "--out", out]) == 3
