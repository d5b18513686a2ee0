"""Automatic masks over a 20000 x 20000 x 3 GeoTIFF: peak memory and wall time.

Usage::

    python benchmarks/big_raster.py all [--dir DIR] [--json results/perf/big_raster.json]
    python benchmarks/big_raster.py make DIR/big.tif      # only write the raster
    python benchmarks/big_raster.py run DIR/big.tif       # only segment it (run under /usr/bin/time -v)

``all`` writes the raster (window by window: it is never whole in memory) and then segments it in a
separate process under ``/usr/bin/time -v``, whose "Maximum resident set size" and elapsed time are
reported, with the peak resident set after every tile (``VmHWM``), so that one can see that the
peak does not grow with the number of tiles processed.

The raster: 5 x 5 procedural scenes of the teaching model's source domain (``samlib.scenes``), each
256 px, laid side by side, upsampled 16x (bilinear) to 20000 x 20000 px with pixel noise on top; RGB
uint8, tiled 512 px, deflate-compressed (about 1.2 GB uncompressed).

The segmentation: :class:`samlib.tiled.TiledSegmenter` with 4096-px windows read 16x smaller
(``downsample=16``: the teaching SAM sees each window as its 256-px input, one mask pixel per 16 x 16
raster pixels), samlib's automatic mask generator per window, masks merged across windows, the
label raster written at full resolution (20000 x 20000, window core by window core) and the polygons
as a GeoPackage.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

import samlib  # noqa: E402, F401  (before torchvision / segment_anything)

SIZE = 20000
SCALE = 16  # full-resolution pixels per pixel of the procedural map
BLOCK = 2048


def _vm_hwm_mb() -> float:
    """Peak resident set of this process so far (Linux ``VmHWM``), in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def make_raster(path: Path, size: int = SIZE, seed: int = 0) -> Path:
    """Write the synthetic raster block by block (``BLOCK`` x ``BLOCK`` windows)."""
    import cv2
    import rasterio
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    from samlib.scenes import generate_scene

    n_scenes = -(-size // (256 * SCALE)) + 1
    low = np.concatenate(
        [
            np.concatenate(
                [generate_scene("source", 256, seed=seed + r * n_scenes + c).image for c in range(n_scenes)],
                1,
            )
            for r in range(n_scenes)
        ],
        0,
    )
    rng = np.random.default_rng(seed)
    profile = {
        "driver": "GTiff", "height": size, "width": size, "count": 3, "dtype": "uint8",
        "crs": "EPSG:32633", "transform": from_origin(400000.0, 5000000.0, 0.3, 0.3),
        "tiled": True, "blockxsize": 512, "blockysize": 512, "compress": "deflate", "zlevel": 1,
        "predictor": 2, "BIGTIFF": "YES", "photometric": "RGB",
    }  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as ds:
        for r in range(0, size, BLOCK):
            for c in range(0, size, BLOCK):
                h, w = min(BLOCK, size - r), min(BLOCK, size - c)
                # the map's pixels under this block, one extra on each far side so that bilinear
                # interpolation at the block's edge matches the neighbouring block (no seams)
                sub = low[
                    r // SCALE : r // SCALE + BLOCK // SCALE + 2, c // SCALE : c // SCALE + BLOCK // SCALE + 2
                ]
                up = cv2.resize(
                    sub, (sub.shape[1] * SCALE, sub.shape[0] * SCALE), interpolation=cv2.INTER_LINEAR
                )
                block = up[:h, :w].astype(np.int16) + rng.integers(-12, 13, (h, w, 3), dtype=np.int16)
                ds.write(
                    np.clip(block, 0, 255).astype(np.uint8).transpose(2, 0, 1), window=Window(c, r, w, h)
                )
    return path


def run(
    path: Path, tile: int, downsample: int, points_per_side: int, max_tiles: int | None, out_dir: Path
) -> dict:
    """Segment ``path``; returns counts, timings and the peak RSS after every tile."""
    import torch

    from samlib.amg import AutomaticMaskGenerator
    from samlib.models import load_sam
    from samlib.tiled import TiledSegmenter

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    t0 = time.perf_counter()
    sam = load_sam("teaching", device="cpu")
    seg = TiledSegmenter(sam, path, tile=tile, downsample=downsample)
    amg = AutomaticMaskGenerator(sam, points_per_side=points_per_side)
    peaks: list[float] = []

    def generate(image: np.ndarray) -> list:
        records = amg.generate(image)
        peaks.append(_vm_hwm_mb())
        return records

    t1 = time.perf_counter()
    pieces = seg.automatic(generate, max_tiles=max_tiles)
    t2 = time.perf_counter()
    seg.write_geotiff(pieces, out_dir / "labels.tif")
    t3 = time.perf_counter()
    n_polygons = seg.write_vectors(pieces, out_dir / "masks.gpkg")
    t4 = time.perf_counter()
    return {
        "raster": list(seg.shape),
        "tile": seg.tile,
        "downsample": seg.downsample,
        "model_input_px": int(sam.image_encoder.img_size),
        "grid": list(seg.grid_shape),
        "tiles_total": len(seg.windows),
        "tiles_processed": len(peaks),
        "points_per_side": points_per_side,
        "masks": len(pieces),
        "polygons": n_polygons,
        "seconds": {
            "load": round(t1 - t0, 1),
            "masks": round(t2 - t1, 1),
            "label_geotiff": round(t3 - t2, 1),
            "vectors": round(t4 - t3, 1),
        },
        "peak_rss_mb_after_tile": [round(p, 1) for p in peaks],
        "peak_rss_mb_end": round(_vm_hwm_mb(), 1),
    }


def _time_v(cmd: list[str]) -> tuple[dict, str]:
    """Run ``cmd`` under ``/usr/bin/time -v``; returns (its peak RSS in MB and wall s, its stdout)."""
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", proc.stderr)
    parts = [float(x) for x in wall.group(1).split(":")] if wall else [float("nan")]
    seconds = sum(p * 60**k for k, p in enumerate(reversed(parts)))
    return {
        "peak_rss_mb": round(int(rss.group(1)) / 1024, 1) if rss else None,
        "wall_s": round(seconds, 1),
    }, proc.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["all", "make", "run"])
    parser.add_argument("path", nargs="?", help="make/run: the raster; all: a folder (default: a temp dir)")
    parser.add_argument("--size", type=int, default=SIZE)
    parser.add_argument("--tile", type=int, default=4096)
    parser.add_argument("--downsample", type=int, default=16)
    parser.add_argument("--points-per-side", type=int, default=16)
    parser.add_argument("--max-tiles", type=int, default=None, help="segment only the first N tiles")
    parser.add_argument("--json", default=None, help="all: also write the report here")
    args = parser.parse_args(argv)
    knobs = ["--tile", str(args.tile), "--downsample", str(args.downsample)]
    knobs += ["--points-per-side", str(args.points_per_side)]
    knobs += [] if args.max_tiles is None else ["--max-tiles", str(args.max_tiles)]

    if args.command == "make":
        make_raster(Path(args.path), args.size)
        print(json.dumps({"raster": args.path, "bytes": Path(args.path).stat().st_size}))
        return 0
    if args.command == "run":
        path = Path(args.path)
        print(
            json.dumps(
                run(path, args.tile, args.downsample, args.points_per_side, args.max_tiles, path.parent)
            )
        )
        return 0

    with tempfile.TemporaryDirectory(dir=args.path) as tmp:
        raster = Path(tmp) / "big.tif"
        me = [sys.executable, str(Path(__file__).resolve())]
        made, _ = _time_v([*me, "make", str(raster), "--size", str(args.size)])
        segmented, out = _time_v([*me, "run", str(raster), *knobs])
        report = {
            "write_raster": {**made, "file_mb": round(raster.stat().st_size / 2**20, 1)},
            "segment": {**segmented, **json.loads(out.strip().splitlines()[-1])},
            "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
            "load_average_1min_at_end": round(os.getloadavg()[0], 2),
        }
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
