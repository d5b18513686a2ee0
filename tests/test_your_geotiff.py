"""Smoke run of the "Segment your own GeoTIFF" page (notebooks/06_your_geotiff.ipynb)."""

from __future__ import annotations

import pytest
from notebook_runner import run_notebook

pytest.importorskip("rasterio")
pytest.importorskip("fiona")


@pytest.mark.notebook
def test_your_geotiff_smoke_records_its_metrics() -> None:
    record = run_notebook("06_your_geotiff")
    assert record["chapter"] == "06_your_geotiff" and record["setting"] == "smoke"
    res = record["results"]
    for key in ("box_tiled", "box_whole_image", "tiled_vs_whole", "box_sentinel2_432"):
        assert 0.0 <= res[key]["mean_iou"] <= 1.0
    # box prompts on buildings must find them: far above an empty or whole-box mask's IoU of ~0
    assert res["box_tiled"]["mean_iou"] > 0.3
    assert res["automatic"]["masks"] >= 1 and res["automatic"]["polygons"] >= res["automatic"]["masks"]
