"""The ``samlib`` command line.

``samlib segment IN.tif --boxes boxes.geojson | --points pts.geojson | --auto --out masks.tif
[--vector masks.gpkg]`` segments a GeoTIFF of any size tile by tile (:class:`samlib.tiled.TiledSegmenter`)
and writes a label raster with the input's CRS and transform, and optionally the masks as polygons.

Exit codes: 0 done; 2 bad arguments or bad input (unreadable raster, a vector file without a CRS,
prompts outside the raster, > 3 bands without ``--bands``); 3 the model could not be loaded.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from samlib.errors import CheckpointUnavailableError, DataNotFoundError, InvalidInputError, SamlibError

__all__ = ["main"]

EXIT_OK, EXIT_BAD_INPUT, EXIT_MODEL = 0, 2, 3


def _bands(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(b) for b in text.split(","))
    except ValueError as e:
        raise argparse.ArgumentTypeError(
            f"--bands takes 1-based band numbers like 4,3,2, got {text!r}"
        ) from e


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``samlib`` (sub-command ``segment``)."""
    parser = argparse.ArgumentParser(prog="samlib", description="Segment Anything for remote sensing.")
    sub = parser.add_subparsers(dest="command", required=True)
    seg = sub.add_parser(
        "segment", help="segment a GeoTIFF tile by tile", description=__doc__.split("\n\n")[1]
    )
    seg.add_argument("raster", help="input GeoTIFF (any size, any band count with --bands)")
    prompts = seg.add_mutually_exclusive_group(required=True)
    prompts.add_argument(
        "--boxes", metavar="VECTOR", help="polygons (GeoJSON/GeoPackage): one mask per bounding box"
    )
    prompts.add_argument(
        "--points",
        metavar="VECTOR",
        help="points (GeoJSON/GeoPackage; property label 1/0): one mask per positive",
    )
    prompts.add_argument("--auto", action="store_true", help="automatic masks over the whole raster")
    seg.add_argument("--model", default="teaching", help="teaching, vit_b, vit_l, vit_h or a checkpoint path")
    seg.add_argument("--bands", type=_bands, default=None, help="bands to use, 1-based, e.g. 4,3,2")
    seg.add_argument(
        "--tile", type=int, default=None, help="tile size in px (default: the encoder's input size)"
    )
    seg.add_argument(
        "--overlap", type=int, default=None, help="overlap of neighbouring tiles in px (default: tile/4)"
    )
    seg.add_argument(
        "--downsample",
        type=int,
        default=1,
        help="read tiles this many times smaller and predict on that grid (large rasters; default 1)",
    )
    seg.add_argument("--points-per-side", type=int, default=16, help="--auto: prompt grid per tile")
    seg.add_argument(
        "--pred-iou-thresh", type=float, default=0.88, help="--auto: keep masks above this predicted IoU"
    )
    seg.add_argument(
        "--stability-thresh", type=float, default=0.95, help="--auto: keep masks above this stability score"
    )
    seg.add_argument("--out", required=True, help="output label GeoTIFF (mask k -> label k, 0 = background)")
    seg.add_argument("--vector", default=None, help="also write polygons (.geojson or .gpkg)")
    seg.add_argument(
        "--simplify", type=float, default=0.0, help="polygon simplification tolerance in map units"
    )
    seg.add_argument("--device", default=None, help="cpu, cuda, mps (default: the best available)")
    seg.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def _prompts_in_raster_crs(path: str, raster_crs: str | None) -> tuple[object, object, object]:
    """(boxes (B, 4), points (N, 2), labels (N,)) of a vector file, reprojected to the raster's CRS."""
    import numpy as np
    from rasterio.crs import CRS
    from rasterio.warp import transform

    from samlib import geo

    vp = geo.read_vector_prompts(path)
    if raster_crs is None:
        raise InvalidInputError(
            "The raster has no CRS, so prompts in map coordinates cannot be placed on it."
        )
    src, dst = CRS.from_wkt(vp.crs), CRS.from_wkt(raster_crs)
    boxes, points = vp.boxes, vp.points
    if src != dst:
        if len(boxes):
            xs, ys = transform(src, dst, [*boxes[:, 0], *boxes[:, 2]], [*boxes[:, 1], *boxes[:, 3]])
            n = len(boxes)
            boxes = np.stack([xs[:n], ys[:n], xs[n:], ys[n:]], axis=1)
        if len(points):
            xs, ys = transform(src, dst, points[:, 0].tolist(), points[:, 1].tolist())
            points = np.stack([xs, ys], axis=1)
    return boxes, points, vp.labels


def _segment(args: argparse.Namespace) -> str:
    from samlib.models import load_sam
    from samlib.tiled import TiledSegmenter

    start = time.perf_counter()
    # Read the raster and the prompts before loading the model: bad input fails fast.
    from samlib import geo

    info = geo.raster_info(args.raster)
    geo.select_bands(info.count, args.bands)
    prompt_file = args.boxes or args.points
    if prompt_file:
        boxes, points, labels = _prompts_in_raster_crs(prompt_file, info.crs)
        if args.boxes and len(boxes) == 0:  # type: ignore[arg-type]
            raise InvalidInputError(f"{prompt_file} holds no polygons to use as boxes.")
        if args.points and len(points) == 0:  # type: ignore[arg-type]
            raise InvalidInputError(f"{prompt_file} holds no points.")
    try:
        sam = load_sam(args.model, device=args.device)
    except CheckpointUnavailableError:
        raise
    except InvalidInputError as e:
        raise CheckpointUnavailableError(str(e)) from e
    seg = TiledSegmenter(
        sam, args.raster, bands=args.bands, tile=args.tile, overlap=args.overlap, downsample=args.downsample
    )
    progress = not args.quiet
    if args.boxes:
        pieces = seg.predict_boxes(seg.boxes_to_pixels(boxes), progress=progress)  # type: ignore[arg-type]
        kind = "box prompts"
    elif args.points:
        pieces = seg.predict_points(seg.points_to_pixels(points), labels, progress=progress)  # type: ignore[arg-type]
        kind = "point prompts"
    else:
        pieces = seg.automatic(
            progress=progress,
            points_per_side=args.points_per_side,
            pred_iou_thresh=args.pred_iou_thresh,
            stability_score_thresh=args.stability_thresh,
        )
        kind = "automatic"
    seg.write_geotiff(pieces, args.out)
    summary = (
        f"{len(pieces)} masks ({kind}) over {info.width} x {info.height} px in {len(seg.windows)} tiles of "
        f"{seg.tile} px{f' read at 1/{seg.downsample}' if seg.downsample > 1 else ''} -> {args.out}"
    )
    if args.vector:
        n_polys = seg.write_vectors(pieces, args.vector, args.simplify)
        summary += f", {n_polys} polygons -> {args.vector}"
    return summary + f" ({time.perf_counter() - start:.1f} s)"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on bad usage, 0 on --help
        return int(e.code or 0)
    try:
        print(_segment(args))
    except CheckpointUnavailableError as e:
        print(f"samlib {args.command}: model {args.model!r} unavailable: {e}", file=sys.stderr)
        return EXIT_MODEL
    except (InvalidInputError, DataNotFoundError) as e:
        print(f"samlib {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except SamlibError as e:
        print(f"samlib {args.command}: error: {e}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
