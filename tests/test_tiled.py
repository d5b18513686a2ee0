"""Tiled prediction over rasters larger than a tile: windows, prompt routing, merging across borders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

rasterio = pytest.importorskip("rasterio")
pytest.importorskip("fiona")

import scipy.ndimage as ndi  # noqa: E402
from affine import Affine  # noqa: E402

from samlib.errors import InvalidInputError  # noqa: E402
from samlib.predict import PromptPredictor  # noqa: E402
from samlib.tiled import TiledSegmenter  # noqa: E402
from samlib.tiling import sliding_windows  # noqa: E402

CRS = "EPSG:32640"
TRANSFORM = Affine(0.5, 0.0, 300000.0, 0.0, -0.5, 2780000.0)


def write_rgb(path: Path, image: np.ndarray) -> Path:
    with rasterio.open(
        path, "w", driver="GTiff", height=image.shape[0], width=image.shape[1], count=3, dtype="uint8",
        crs=CRS, transform=TRANSFORM,
    ) as dst:  # fmt: skip
        dst.write(image.transpose(2, 0, 1))
    return path


@pytest.mark.parametrize(
    ("h", "w", "tile", "overlap"), [(160, 150, 64, 16), (64, 64, 64, 8), (30, 200, 64, 20)]
)
def test_windows_cover_the_raster_and_cores_partition_it(h: int, w: int, tile: int, overlap: int) -> None:
    wins = sliding_windows(h, w, tile, overlap)
    owner = np.zeros((h, w), dtype=int)
    seen = np.zeros((h, w), dtype=int)
    for win in wins:
        r0, c0, r1, c1 = win.core
        owner[r0:r1, c0:c1] += 1
        seen[win.row : win.row + win.height, win.col : win.col + win.width] += 1
        assert win.row <= r0 and win.col <= c0 and r1 <= win.row + win.height and c1 <= win.col + win.width
    assert (owner == 1).all() and (seen >= 1).all()
    if len(wins) > 1:  # neighbours overlap by at least `overlap`
        assert all(
            b.col - a.col <= tile - overlap for a, b in zip(wins, wins[1:], strict=False) if a.row == b.row
        )


def test_raster_within_one_tile_equals_whole_image(tmp_path: Path, tiny_sam, rng) -> None:
    image = rng.integers(0, 256, (50, 60, 3), dtype=np.uint8)
    seg = TiledSegmenter(tiny_sam, write_rgb(tmp_path / "r.tif", image))
    assert len(seg.windows) == 1
    boxes = np.array([[5, 5, 30, 25], [20, 10, 58, 48]], dtype=float)
    pieces = seg.predict_boxes(boxes)
    whole = PromptPredictor(tiny_sam)
    whole.set_image(image)
    expected = whole.predict_batch(boxes=boxes, multimask_output=False).masks[:, 0]
    for piece, mask in zip(pieces, expected, strict=True):
        np.testing.assert_array_equal(piece.window(0, 0, 50, 60), mask)


def test_tiled_boxes_equal_whole_image_prediction_of_their_tile(tmp_path: Path, tiny_sam, rng) -> None:
    image = rng.integers(0, 256, (160, 150, 3), dtype=np.uint8)
    seg = TiledSegmenter(tiny_sam, write_rgb(tmp_path / "r.tif", image), tile=64, overlap=16)
    assert len(seg.windows) == 9
    boxes = np.array([[5, 5, 40, 30], [70, 60, 110, 100], [120, 130, 149, 159]], dtype=float)
    pieces = seg.predict_boxes(boxes)
    whole = PromptPredictor(tiny_sam)
    for box, piece in zip(boxes, pieces, strict=True):
        win = seg._route(box)
        assert win.contains(box[1], box[0], box[3], box[2])
        whole.set_image(image[win.row : win.row + win.height, win.col : win.col + win.width])
        local = box - [win.col, win.row, win.col, win.row]
        expected = np.zeros((160, 150), dtype=bool)
        expected[win.row : win.row + win.height, win.col : win.col + win.width] = whole.predict(
            box=local, multimask_output=False
        ).masks[0]
        np.testing.assert_array_equal(piece.window(0, 0, 160, 150), expected)
    # one encoder run per window: three boxes in three windows, then served from the cache
    assert seg.predictor.cache.misses == 3
    seg.predict_boxes(boxes)
    assert seg.predictor.cache.hits == 3


def test_map_coordinates_are_routed_like_pixels(tmp_path: Path, tiny_sam, rng) -> None:
    image = rng.integers(0, 256, (160, 150, 3), dtype=np.uint8)
    seg = TiledSegmenter(tiny_sam, write_rgb(tmp_path / "r.tif", image), tile=64, overlap=16)
    px = np.array([[70.0, 60.0, 110.0, 100.0]])
    x0, y0 = TRANSFORM @ (70.0, 100.0)
    x1, y1 = TRANSFORM @ (110.0, 60.0)
    np.testing.assert_allclose(seg.boxes_to_pixels(np.array([[x0, y0, x1, y1]])), px)
    with pytest.raises(InvalidInputError, match="outside the raster"):
        seg.predict_boxes(np.array([[500.0, 500.0, 520.0, 520.0]]))
    with pytest.raises(InvalidInputError, match="outside the raster"):
        seg.predict_points(np.array([[-5.0, 10.0]]))


def scene_with_objects() -> tuple[np.ndarray, np.ndarray]:
    """A 200 x 190 dark scene with bright rectangles: inside tiles, in the overlaps and across borders
    (one larger than the overlap, so no tile holds it whole)."""
    labels = np.zeros((200, 190), dtype=np.int32)
    rects = [(10, 10, 30, 30), (40, 56, 60, 70), (100, 30, 180, 60), (52, 100, 70, 170), (150, 150, 196, 186)]
    for k, (r0, c0, r1, c1) in enumerate(rects, start=1):
        labels[r0:r1, c0:c1] = k
    image = np.where(labels[..., None] > 0, 220, 30).astype(np.uint8).repeat(3, axis=2)
    return image, labels


def components(image: np.ndarray) -> list[dict]:
    """A deterministic stand-in for SAM's automatic generator: one record per bright component."""
    lab, n = ndi.label(image[..., 0] > 128)
    return [{"segmentation": lab == k, "predicted_iou": 0.9} for k in range(1, n + 1)]


def test_automatic_masks_cross_tile_borders_without_seams_or_duplicates(tmp_path: Path, tiny_sam) -> None:
    image, labels = scene_with_objects()
    seg = TiledSegmenter(tiny_sam, write_rgb(tmp_path / "s.tif", image), tile=64, overlap=24)
    assert len(seg.windows) > 9
    pieces = seg.automatic(generator=components)
    assert len(pieces) == labels.max()  # no duplicates
    truth = [labels == k for k in range(1, labels.max() + 1)]
    for piece in pieces:
        mask = piece.window(0, 0, *labels.shape)
        assert max(np.logical_and(mask, t).sum() / np.logical_or(mask, t).sum() for t in truth) == 1.0
    out = seg.write_geotiff(pieces, tmp_path / "labels.tif")
    with rasterio.open(out) as ds:
        written = ds.read(1)
        assert ds.transform == TRANSFORM and ds.crs == rasterio.crs.CRS.from_string(CRS)
    # every object is one label (no seam splits it), background stays 0
    for t in truth:
        assert len(np.unique(written[t])) == 1 and written[t][0] > 0
    assert (written[labels == 0] == 0).all()
    n_polys = seg.write_vectors(pieces, tmp_path / "labels.gpkg")
    assert n_polys == labels.max()


def test_automatic_with_sams_generator_runs_per_tile(tmp_path: Path, tiny_sam) -> None:
    image, _ = scene_with_objects()
    seg = TiledSegmenter(tiny_sam, write_rgb(tmp_path / "s.tif", image), tile=64, overlap=16)
    pieces = seg.automatic(points_per_side=4, pred_iou_thresh=0.0, stability_score_thresh=0.0)
    assert all(p.mask.dtype == bool and p.mask.any() for p in pieces)
    seg.write_geotiff(pieces, tmp_path / "auto.tif")


def test_downsampled_windows_give_the_same_objects_on_the_raster(tmp_path: Path, tiny_sam) -> None:
    image, labels = scene_with_objects()  # rectangles on even pixels: exact at downsample 2
    seg = TiledSegmenter(tiny_sam, write_rgb(tmp_path / "s.tif", image), tile=128, overlap=48, downsample=2)
    assert seg.grid_shape == (100, 95) and len(seg.windows) == 4
    win = seg.windows[0]
    tile = seg.read(win)
    assert tile.image.shape == (win.height, win.width, 3)
    assert tile.transform == tuple(TRANSFORM @ Affine.scale(2))[:6] == seg.grid_transform
    pieces = seg.automatic(generator=components)
    assert len(pieces) == labels.max()
    written_path = seg.write_geotiff(pieces, tmp_path / "labels.tif")
    with rasterio.open(written_path) as ds:
        written = ds.read(1)
        assert written.shape == labels.shape and ds.transform == TRANSFORM
    for k in range(1, labels.max() + 1):  # each object is one label at full resolution, exactly
        assert len(np.unique(written[labels == k])) == 1
    assert ((written > 0) == (labels > 0)).all()
    gpkg = tmp_path / "labels.gpkg"
    assert seg.write_vectors(pieces, gpkg) == labels.max()
    import fiona
    from shapely.geometry import shape

    with fiona.open(gpkg) as src:
        area = sum(shape(f["geometry"]).area for f in src)
    assert area == pytest.approx((labels > 0).sum() * 0.25)  # 0.5 m pixels
    assert len(seg.automatic(generator=components, max_tiles=2)) <= labels.max()
    boxes = seg.predict_boxes(np.array([[10, 10, 30, 30]], dtype=float))  # raster px in, grid px out
    assert boxes[0].row < 100 and boxes[0].col < 95
    with pytest.raises(InvalidInputError, match="downsample"):
        TiledSegmenter(tiny_sam, tmp_path / "s.tif", downsample=0)
