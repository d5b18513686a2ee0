"""SAM over a raster of any size: sliding windows, prompts in map coordinates, masks back to GeoTIFF
and vectors.

A 12000 x 12000 raster given to SAM whole is shrunk 47x to ViT-H's 1024 px (12x to the teaching model's
256 px): buildings become a few pixels. :class:`TiledSegmenter` instead reads the raster one window at
a time (:func:`samlib.geo.read_geotiff` with ``window``; the whole raster is never in memory), one
encoder input per window at full resolution, with windows overlapping so that every object smaller
than the overlap is seen whole by some window:

* prompts (boxes, points) are routed to the window that holds them with the most margin; each
  window's embedding is computed once and cached (:class:`samlib.predict.PromptPredictor`), so many
  prompts in one window cost one encoder run;
* automatic masks come from Meta's :class:`SamAutomaticMaskGenerator` on each window and are merged
  across windows by :func:`samlib.tiling.merge_tile_pieces` (NMS on the overlap; objects cut by every
  window they touch are joined);
* masks are kept as crops of their bounding boxes, and the label raster is written window by window
  (each window writes only its core: the halo is cropped).

``downsample=s`` reads every window ``s`` times smaller (GDAL averages while reading, so a large window
is never in memory at full resolution) and predicts on that grid: one mask pixel covers ``s x s``
raster pixels. This trades resolution for tiles: a 20000 x 20000 raster in 4096-px windows read at
1/16 is 36 encoder inputs of 256 px instead of ~11000 at full resolution. Masks (:class:`MaskPiece`)
are then in the coordinates of the downsampled grid (:attr:`TiledSegmenter.grid_shape`); the writers
put them back on the raster (label GeoTIFF at full resolution, nearest; polygons in map coordinates).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from segment_anything.modeling import Sam
from tqdm.auto import tqdm

from samlib import geo
from samlib.errors import InvalidInputError
from samlib.predict import EmbeddingCache, PromptPredictor
from samlib.tiling import MaskPiece, Window, mask_piece, merge_tile_pieces, paint_labels, sliding_windows

__all__ = ["TiledSegmenter"]

MaskGenerator = Callable[[np.ndarray], list[dict[str, Any]]]
"""image (H, W, 3) uint8 -> SAM-style records with "segmentation" (H, W) bool and "predicted_iou"."""


class TiledSegmenter:
    """Prompted and automatic SAM masks over a GeoTIFF, tile by tile.

    Arguments:
      sam (Sam): the model.
      path (str | Path): the raster.
      bands (Sequence[int] | None): 1 or 3 bands, 1-based (see :func:`samlib.geo.select_bands`).
      tile (int | None): window size in raster px; None = the encoder's input size times
        ``downsample`` (no resizing in SAM).
      overlap (int | None): minimum overlap of neighbouring windows in raster px; None = tile // 4.
      cache_size (int): embeddings kept (windows revisited by later prompts are not re-encoded).
      downsample (int): read windows this many times smaller and predict on that grid (1 = full
        resolution); see the module's docstring.
    """

    def __init__(
        self,
        sam: Sam,
        path: str | Path,
        bands: Sequence[int] | None = None,
        tile: int | None = None,
        overlap: int | None = None,
        cache_size: int = 8,
        downsample: int = 1,
    ) -> None:
        if int(downsample) < 1:
            raise InvalidInputError(f"downsample must be an integer >= 1, got {downsample}.")
        self.sam = sam
        self.path = Path(path)
        self.info = geo.raster_info(self.path)
        self.stretch = geo.compute_stretch(self.path, bands)
        self.downsample = int(downsample)
        self.tile = int(tile or sam.image_encoder.img_size * self.downsample)
        self.overlap = int(self.tile // 4 if overlap is None else overlap)
        s = self.downsample
        grid_tile = max(1, -(-self.tile // s))
        self.windows = sliding_windows(*self.grid_shape, grid_tile, min(self.overlap // s, grid_tile - 1))
        self.predictor = PromptPredictor(sam, EmbeddingCache(cache_size))

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the raster."""
        return self.info.height, self.info.width

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(H, W) of the grid windows and masks live on: the raster's, ``downsample`` times smaller."""
        s = self.downsample
        return -(-self.info.height // s), -(-self.info.width // s)

    @property
    def grid_transform(self) -> tuple[float, ...]:
        """Pixel -> map transform of :attr:`grid_shape` (the raster's when ``downsample`` is 1)."""
        from affine import Affine

        return tuple(Affine(*self.info.transform[:6]) @ Affine.scale(self.downsample))[:6]

    def read(self, window: Window) -> geo.GeoImage:
        """One window of the grid as SAM input (same stretch for every window): the raster pixels it
        covers, averaged ``downsample`` x ``downsample`` while reading."""
        s = self.downsample
        if s == 1:
            return geo.read_geotiff(
                self.path,
                self.stretch.bands,
                window=(window.row, window.col, window.height, window.width),
                stretch=self.stretch,
            )
        h, w = self.shape
        row, col = window.row * s, window.col * s
        return geo.read_geotiff(
            self.path,
            self.stretch.bands,
            window=(row, col, min(window.height * s, h - row), min(window.width * s, w - col)),
            stretch=self.stretch,
            out_shape=(window.height, window.width),
        )

    # --- coordinates ---------------------------------------------------------------------------------

    def boxes_to_pixels(self, boxes: np.ndarray) -> np.ndarray:
        """(B, 4) map-coordinate boxes (x_min, y_min, x_max, y_max) -> (B, 4) pixel boxes (x0, y0, x1, y1)."""
        b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        c0, r0 = geo.map_to_pixel(self.info.transform, b[:, 0], b[:, 1])
        c1, r1 = geo.map_to_pixel(self.info.transform, b[:, 2], b[:, 3])
        return np.stack(
            [np.minimum(c0, c1), np.minimum(r0, r1), np.maximum(c0, c1), np.maximum(r0, r1)], axis=1
        )

    def points_to_pixels(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) map (x, y) -> (N, 2) pixel (col, row)."""
        p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        cols, rows = geo.map_to_pixel(self.info.transform, p[:, 0], p[:, 1])
        return np.stack([cols, rows], axis=1)

    def _check_inside(self, boxes_px: np.ndarray, what: str) -> None:
        h, w = self.shape
        outside = np.flatnonzero(
            (boxes_px[:, 2] <= 0) | (boxes_px[:, 3] <= 0) | (boxes_px[:, 0] >= w) | (boxes_px[:, 1] >= h)
        )
        if outside.size:
            raise InvalidInputError(
                f"{outside.size} {what} (indices {outside[:5].tolist()}) lie outside the raster "
                f"({w} x {h} px): are they in the raster's CRS and over this image?"
            )

    def _route(self, box_px: np.ndarray) -> Window:
        """The window holding ``box_px`` (x0, y0, x1, y1) with the most margin, or a window centred on
        it (as large as needed) when no tile of the grid holds it whole."""
        x0, y0, x1, y1 = box_px
        h, w = self.grid_shape
        best, margin = None, -1.0
        for win in self.windows:
            if win.contains(y0, x0, y1, x1):
                m = min(y0 - win.row, x0 - win.col, win.row + win.height - y1, win.col + win.width - x1)
                if m > margin:
                    best, margin = win, m
        if best is not None:
            return best
        size_h = min(h, max(self.tile, int(np.ceil(y1 - y0)) + 2))
        size_w = min(w, max(self.tile, int(np.ceil(x1 - x0)) + 2))
        row = int(np.clip((y0 + y1) / 2 - size_h / 2, 0, h - size_h))
        col = int(np.clip((x0 + x1) / 2 - size_w / 2, 0, w - size_w))
        return Window(row, col, size_h, size_w, (row, col, row + size_h, col + size_w))

    # --- prompted masks ------------------------------------------------------------------------------

    def predict_boxes(self, boxes_px: np.ndarray, progress: bool = False) -> list[MaskPiece]:
        """One mask per box, each predicted in the window that holds it.

        Arguments:
          boxes_px (np.ndarray): (B, 4) (x0, y0, x1, y1) in raster pixels (see :meth:`boxes_to_pixels`).
          progress (bool): show a tqdm bar over windows.

        Returns:
          (list[MaskPiece]): B masks in input order (an empty prediction gives an empty 1 x 1 piece).
        """
        b = np.asarray(boxes_px, dtype=np.float64).reshape(-1, 4)
        if b.shape[0] == 0:
            return []
        self._check_inside(b, "boxes")
        h, w = self.shape
        b = np.clip(b, 0, [w, h, w, h]) / self.downsample
        groups: dict[Window, list[int]] = {}
        for i, box in enumerate(b):
            groups.setdefault(self._route(box), []).append(i)
        out: list[MaskPiece | None] = [None] * len(b)
        for win, idx in tqdm(groups.items(), desc="tiles", disable=not progress):
            self.predictor.set_image(self.read(win).image)
            local = b[idx] - [win.col, win.row, win.col, win.row]
            pred = self.predictor.predict_batch(boxes=local, multimask_output=False)
            for k, i in enumerate(idx):
                piece = mask_piece(pred.masks[k, 0], win, self.grid_shape, float(pred.scores[k, 0]))
                out[i] = piece or MaskPiece(win.row, win.col, np.zeros((1, 1), bool), 0.0)
        return [p for p in out if p is not None]

    def predict_points(
        self, points_px: np.ndarray, labels: np.ndarray | None = None, progress: bool = False
    ) -> list[MaskPiece]:
        """One mask per positive point (label 1); negative points (label 0) are added to every positive
        point's prompt in the same window.

        Arguments:
          points_px (np.ndarray): (N, 2) (col, row) in raster pixels (see :meth:`points_to_pixels`).
          labels (np.ndarray | None): (N,) 1 / 0; None = all positive.

        Returns:
          (list[MaskPiece]): one mask per positive point, in input order.
        """
        p = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
        lab = np.ones(len(p), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
        if lab.shape != (len(p),) or not np.isin(lab, (0, 1)).all():
            raise InvalidInputError(f"labels must be (N,) = ({len(p)},) of 1 / 0, got {lab.tolist()[:10]}.")
        self._check_inside(np.concatenate([p, p + 1e-6], axis=1), "points")
        p = p / self.downsample
        positives = np.flatnonzero(lab == 1)
        if positives.size == 0:
            raise InvalidInputError("Give at least one positive point (label 1).")
        groups: dict[Window, list[int]] = {}
        for i in positives:
            groups.setdefault(self._route(np.concatenate([p[i], p[i] + 1e-6])), []).append(int(i))
        out: dict[int, MaskPiece] = {}
        for win, idx in tqdm(groups.items(), desc="tiles", disable=not progress):
            negatives = [
                j
                for j in np.flatnonzero(lab == 0)
                if win.contains(p[j, 1], p[j, 0], p[j, 1] + 1e-6, p[j, 0] + 1e-6)
            ]
            self.predictor.set_image(self.read(win).image)
            for i in idx:
                coords = p[[i, *negatives]] - [win.col, win.row]
                pred = self.predictor.predict(
                    coords, np.array([1] + [0] * len(negatives)), multimask_output=True
                )
                k = int(pred.best_index())
                piece = mask_piece(pred.masks[k], win, self.grid_shape, float(pred.scores[k]))
                out[i] = piece or MaskPiece(win.row, win.col, np.zeros((1, 1), bool), 0.0)
        return [out[int(i)] for i in positives]

    # --- automatic masks -----------------------------------------------------------------------------

    def automatic(
        self,
        generator: MaskGenerator | None = None,
        iou_threshold: float = 0.5,
        progress: bool = False,
        max_tiles: int | None = None,
        **generator_kwargs: Any,
    ) -> list[MaskPiece]:
        """Automatic masks over the whole raster, window by window, merged across windows.

        Arguments:
          generator (MaskGenerator | None): per-window mask generator; None = Meta's
            :class:`SamAutomaticMaskGenerator` on this model with ``generator_kwargs``.
          iou_threshold (float): overlap IoU above which masks of neighbouring windows are one object.
          progress (bool): show a tqdm bar over windows.
          max_tiles (int | None): stop after this many windows (row-major), e.g. to time a fraction of
            a large raster; None = all.

        Returns:
          (list[MaskPiece]): merged masks, by decreasing score.
        """
        if generator is None:
            from segment_anything import SamAutomaticMaskGenerator

            generator = SamAutomaticMaskGenerator(self.sam, **generator_kwargs).generate
        pieces: list[MaskPiece] = []
        windows = self.windows[: len(self.windows) if max_tiles is None else max(0, int(max_tiles))]
        for t, win in enumerate(tqdm(windows, desc="tiles", disable=not progress)):
            tile = self.read(win)
            for rec in generator(tile.image):
                seg = np.asarray(rec["segmentation"], dtype=bool) & tile.valid
                piece = mask_piece(seg, win, self.grid_shape, float(rec.get("predicted_iou", 1.0)), tile=t)
                if piece is not None:
                    pieces.append(piece)
        return merge_tile_pieces(pieces, self.windows, iou_threshold)

    # --- output --------------------------------------------------------------------------------------

    def write_geotiff(self, pieces: Sequence[MaskPiece], path: str | Path) -> Path:
        """Label raster (mask k -> label k + 1, 0 = background/nodata) with the source's CRS and
        transform, written window core by window core (with ``downsample`` > 1 each grid pixel's label
        is repeated over the raster pixels it covers)."""
        n = len(pieces)
        dtype = "uint8" if n < 256 else "uint16" if n < 65536 else "uint32"
        h, w = self.shape
        s = self.downsample
        with geo.MaskWriter(path, h, w, self.info.transform, self.info.crs, dtype=dtype, nodata=0) as writer:
            for win in self.windows:
                r0, c0, r1, c1 = win.core
                labels = paint_labels(pieces, r0, c0, r1, c1).astype(dtype)
                if s > 1:
                    labels = np.repeat(np.repeat(labels, s, axis=0), s, axis=1)
                    labels = labels[: min(r1 * s, h) - r0 * s, : min(c1 * s, w) - c0 * s]
                writer.write(labels, r0 * s, c0 * s)
        return Path(path)

    def write_vectors(
        self, pieces: Sequence[MaskPiece], path: str | Path, simplify_tolerance: float = 0.0
    ) -> int:
        """Polygons of every mask (label k + 1, with its score) as GeoJSON / GeoPackage in the raster's
        CRS; returns the number of polygons written."""
        polys: list[tuple[Any, int]] = []
        props: list[dict[str, float]] = []
        for k, piece in enumerate(pieces):
            for poly, _ in geo.masks_to_polygons(
                piece.mask, self.grid_transform, simplify_tolerance, offset=(piece.row, piece.col)
            ):
                polys.append((poly, k + 1))
                props.append({"score": piece.score})
        geo.write_vectors(path, polys, self.info.crs, props)
        return len(polys)
