"""One look for every chapter's figures: images, masks, point and box prompts, grids.

Works with any matplotlib backend (Agg included); nothing here calls ``plt.show``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from samlib.errors import InvalidInputError

__all__ = [
    "class_colors",
    "label_panels",
    "metric_curves",
    "per_class_bars",
    "show_labels",
    "NEGATIVE_COLOR",
    "colorize",
    "label_maps_figure",
    "PALETTE",
    "POSITIVE_COLOR",
    "image_grid",
    "method_bars",
    "multimask_figure",
    "overlay",
    "palette_color",
    "plot_rows",
    "show_boxes",
    "show_comparison",
    "show_image",
    "show_mask",
    "show_points",
    "split_bars",
]

# Colour-blind friendly (Okabe-Ito), as RGB in [0, 1]; mask i gets PALETTE[i % len(PALETTE)].
PALETTE: tuple[tuple[float, float, float], ...] = (
    (0.00, 0.45, 0.70),  # blue
    (0.90, 0.62, 0.00),  # orange
    (0.00, 0.62, 0.45),  # bluish green
    (0.80, 0.47, 0.65),  # reddish purple
    (0.34, 0.71, 0.91),  # sky blue
    (0.84, 0.37, 0.00),  # vermillion
    (0.94, 0.89, 0.26),  # yellow
    (0.50, 0.50, 0.50),  # grey
)
POSITIVE_COLOR = (0.0, 0.8, 0.0)
NEGATIVE_COLOR = (0.9, 0.0, 0.0)


def palette_color(i: int) -> tuple[float, float, float]:
    """The i-th colour of the fixed palette (cycling)."""
    return PALETTE[i % len(PALETTE)]


def show_image(ax: Axes, image: np.ndarray, title: str | None = None) -> None:
    """Draw an (H, W, 3) or (H, W) image without axes ticks."""
    img = np.asarray(image)
    ax.imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
    ax.set_axis_off()
    if title:
        ax.set_title(title, fontsize=10)


def show_mask(
    ax: Axes, mask: np.ndarray, color: Sequence[float] | None = None, alpha: float = 0.5, outline: bool = True
) -> None:
    """Overlay an (H, W) binary mask in ``color`` (default: first palette colour) with a thin outline."""
    m = np.asarray(mask).astype(bool)
    rgb = np.asarray(color if color is not None else PALETTE[0], dtype=float)[:3]
    rgba = np.zeros((*m.shape, 4))
    rgba[m] = (*rgb, alpha)
    ax.imshow(rgba, interpolation="nearest")
    if outline and m.any() and not m.all():
        ax.contour(m.astype(float), levels=[0.5], colors=[tuple(rgb)], linewidths=1.0)


def show_points(ax: Axes, coords: np.ndarray, labels: np.ndarray | None = None, size: float = 200) -> None:
    """(N, 2) (x, y) points: green stars for label 1 (positive), red stars for label 0 (negative)."""
    pts = np.asarray(coords, dtype=float).reshape(-1, 2)
    lab = np.ones(len(pts), dtype=int) if labels is None else np.asarray(labels).reshape(-1)
    for value, color in ((1, POSITIVE_COLOR), (0, NEGATIVE_COLOR)):
        sel = pts[lab == value]
        if len(sel):
            ax.scatter(
                sel[:, 0],
                sel[:, 1],
                color=color,
                marker="*",
                s=size,
                edgecolor="white",
                linewidth=1.0,
                zorder=3,
            )


def show_boxes(
    ax: Axes, boxes: np.ndarray, color: Sequence[float] | None = None, linewidth: float = 1.5
) -> None:
    """(N, 4) or (4,) (x0, y0, x1, y1) boxes; box i in palette colour i unless ``color`` is given."""
    for i, (x0, y0, x1, y1) in enumerate(np.asarray(boxes, dtype=float).reshape(-1, 4)):
        edge = tuple(color) if color is not None else palette_color(i)
        ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=edge, linewidth=linewidth))


def overlay(
    image: np.ndarray,
    masks: np.ndarray | None = None,
    points: np.ndarray | None = None,
    labels: np.ndarray | None = None,
    boxes: np.ndarray | None = None,
    ax: Axes | None = None,
    title: str | None = None,
    alpha: float = 0.5,
) -> Axes:
    """Image with masks ((H, W) or (N, H, W), one palette colour each), point prompts and boxes.

    Returns:
      (Axes): ``ax``, or the axes of a new figure.
    """
    if ax is None:
        _, ax = plt.subplots(figsize=(5, 5))
    show_image(ax, image, title)
    if masks is not None:
        stack = np.asarray(masks)
        stack = stack[None] if stack.ndim == 2 else stack
        for i, m in enumerate(stack):
            show_mask(ax, m, palette_color(i), alpha)
    if boxes is not None:
        show_boxes(ax, boxes)
    if points is not None:
        show_points(ax, points, labels)
    return ax


def image_grid(
    images_or_callables: Sequence[np.ndarray | Callable[[Axes], Any]],
    titles: Sequence[str] | None = None,
    ncols: int = 3,
    size: float = 3.5,
) -> Figure:
    """A grid of panels; each item is an image or a function ``draw(ax)`` that fills its panel."""
    n = len(images_or_callables)
    if n == 0:
        raise InvalidInputError("image_grid needs at least one panel.")
    if titles is not None and len(titles) != n:
        raise InvalidInputError(f"Got {len(titles)} titles for {n} panels.")
    ncols = max(1, min(ncols, n))
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows), squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i >= n:
            ax.set_axis_off()
            continue
        item = images_or_callables[i]
        if callable(item):
            item(ax)
            ax.set_axis_off()
        else:
            show_image(ax, item)
        if titles is not None:
            ax.set_title(titles[i], fontsize=10)
    fig.tight_layout()
    return fig


def show_comparison(
    image: np.ndarray,
    panels: Sequence[tuple[str, np.ndarray | None]],
    boxes: np.ndarray | None = None,
    axes: Sequence[Any] | None = None,
    size: float = 3.0,
) -> Any:
    """The image with its boxes, then one overlay per (title, mask) panel (None: "not available").

    Returns the matplotlib Figure.
    """
    n = 1 + len(panels)
    if axes is None:
        fig, ax_arr = plt.subplots(1, n, figsize=(size * n, size), squeeze=False)
        axes = list(ax_arr[0])
    else:
        fig = axes[0].figure
    show_image(axes[0], image, "image + boxes")
    if boxes is not None:
        show_boxes(axes[0], boxes, color=(1.0, 0.9, 0.0))
    for ax, (title, mask) in zip(axes[1:], panels, strict=True):
        show_image(ax, image, title)
        if mask is None:
            ax.text(0.5, 0.5, "not available", ha="center", va="center", transform=ax.transAxes, color="w")
        else:
            show_mask(ax, np.asarray(mask, bool), (0.0, 0.8, 1.0), 0.5)
    fig.tight_layout()
    return fig


def plot_rows(
    images: Sequence[np.ndarray],
    rows: dict[str, Sequence[np.ndarray | None]],
    boxes: Sequence[np.ndarray] | None = None,
    size: float = 3.0,
) -> Any:
    """A grid with one row per ``{title: masks}`` entry and one column per image (masks overlaid).

    ``boxes``: when given, drawn on every panel of the first row. Returns the matplotlib Figure.
    """
    n = len(images)
    fig, axes = plt.subplots(len(rows), n, figsize=(size * n, size * len(rows)), squeeze=False)
    for r, (title, masks) in enumerate(rows.items()):
        for c in range(n):
            ax = axes[r][c]
            show_image(ax, images[c], title)
            if masks[c] is not None:
                show_mask(ax, np.asarray(masks[c], bool), (0.0, 0.45, 0.7), 0.5)
            if boxes is not None and r == 0:
                show_boxes(ax, boxes[c], color=(1.0, 0.9, 0.0))
    fig.tight_layout()
    return fig


def multimask_figure(image: np.ndarray, prediction: Any, points: np.ndarray, size: float = 3.0) -> Figure:
    """The masks SAM proposed for one point prompt, highest predicted IoU first, one panel each.

    Arguments:
      image (np.ndarray): (H, W, 3) the prompted image.
      prediction (samlib.predict.Prediction): masks (K, H, W) and scores (K,) for that prompt.
      points (np.ndarray): (N, 2) the positive clicks, drawn on every panel.

    Returns:
      (Figure): K panels titled with each mask's predicted IoU.
    """
    order = np.argsort(-np.asarray(prediction.scores))
    fig, axes = plt.subplots(1, len(order), figsize=(size * len(order), size + 0.4), squeeze=False)
    for ax, k in zip(axes[0], order, strict=True):
        title = f"predicted IoU {prediction.scores[k]:.2f}"
        overlay(image, prediction.masks[k], points, np.ones(len(points), int), ax=ax, title=title)
    fig.tight_layout()
    return fig


def method_bars(
    results: dict[str, dict[str, float]],
    methods: Sequence[str],
    splits: Sequence[str],
    metric: str = "miou",
    title: str | None = None,
) -> Figure:
    """Grouped bars of ``results[f"{method}_{split}"][metric]``: one group per method, a bar per split.

    Missing entries are left as gaps. Returns the Figure.
    """
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(methods)), 3.4))
    width = 0.8 / max(1, len(splits))
    for k, split in enumerate(splits):
        vals = [results.get(f"{m}_{split}", {}).get(metric, np.nan) for m in methods]
        ax.bar(np.arange(len(methods)) + k * width, vals, width, label=split, color=palette_color(k))
    ax.set_xticks(np.arange(len(methods)) + width * (len(splits) - 1) / 2, methods, rotation=30, ha="right")
    ax.set_ylabel(metric)
    if title:
        ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def colorize(labels: np.ndarray, colors: np.ndarray) -> np.ndarray:
    """An (H, W) label map as an (H, W, 3) uint8 image: label k gets ``colors[k]`` ((K, 3) uint8)."""
    lab, cols = np.asarray(labels), np.asarray(colors, np.uint8)
    if cols.ndim != 2 or cols.shape[1] != 3:
        raise InvalidInputError(f"colors must be (K, 3) RGB, got shape {cols.shape}.")
    if lab.size and (lab.min() < 0 or lab.max() >= len(cols)):
        raise InvalidInputError(f"labels span [{lab.min()}, {lab.max()}]; only {len(cols)} colours given.")
    return cols[lab]


def label_maps_figure(
    image: np.ndarray,
    truth: np.ndarray,
    maps: dict[str, np.ndarray],
    colors: np.ndarray,
    size: float = 2.6,
) -> Figure:
    """One row: the image, its ground-truth label map, then each named predicted label map (coloured)."""
    panels = [image, colorize(truth, colors)] + [colorize(m, colors) for m in maps.values()]
    return image_grid(panels, ["image", "ground truth", *maps], ncols=len(panels), size=size)


def split_bars(
    values: dict[str, dict[str, float]],
    metric: str,
    title: str | None = None,
    width: float = 6.0,
) -> Figure:
    """A small grouped bar chart: one group per split, one bar per method, each bar labelled.

    Arguments:
      values (dict[str, dict[str, float]]): ``{split: {method: value}}`` (splits in display order).
      metric (str): the y-axis label.
      title (str | None): the figure title.
      width (float): figure width in inches (the book's text column is about 6).

    Returns:
      (Figure): the figure; methods keep one colour across splits, missing bars are gaps.
    """
    splits = list(values)
    methods = list(dict.fromkeys(m for row in values.values() for m in row))
    if not splits or not methods:
        raise InvalidInputError("split_bars needs at least one split with one method value.")
    fig, ax = plt.subplots(figsize=(width, 2.8))
    bar = 0.8 / len(methods)
    for k, method in enumerate(methods):
        xs = np.arange(len(splits)) + (k - (len(methods) - 1) / 2) * bar
        ys = [values[s].get(method, np.nan) for s in splits]
        rects = ax.bar(xs, ys, bar, label=method, color=palette_color(k))
        ax.bar_label(rects, fmt="%.2f", fontsize=7, padding=1)
    ax.set_xticks(np.arange(len(splits)), splits)
    ax.set_ylabel(metric)
    top = np.nanmax([v for row in values.values() for v in row.values()])
    ax.set_ylim(0, max(1.0, float(top)) * 1.3)  # room for the legend above the bars
    ax.legend(fontsize=7, ncols=min(4, len(methods)), loc="upper left", frameon=False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def class_colors(num_classes: int) -> np.ndarray:
    """(num_classes + 2, 3) float RGB colours for label maps: classes 0..K-1 from matplotlib's tab20
    (cycling), then grey for "no class" (id K) and black for ignored pixels (the last row)."""
    if num_classes < 1:
        raise InvalidInputError(f"num_classes must be >= 1, got {num_classes}.")
    cmap = plt.get_cmap("tab20")
    colors = [cmap(i % 20)[:3] for i in range(num_classes)]
    return np.array([*colors, (0.75, 0.75, 0.75), (0.0, 0.0, 0.0)], dtype=float)


def show_labels(
    ax: Axes,
    labels: np.ndarray,
    num_classes: int,
    ignore_index: int | None = None,
    image: np.ndarray | None = None,
    alpha: float = 0.6,
    title: str | None = None,
) -> None:
    """Draw an (H, W) class-id map in :func:`class_colors` (id K = "no class" in grey, ``ignore_index``
    in black), blended over ``image`` when given."""
    lab = np.asarray(labels).astype(np.int64)
    colors = class_colors(num_classes)
    idx = np.where((lab >= 0) & (lab <= num_classes), lab, num_classes + 1)
    if ignore_index is not None:
        idx = np.where(lab == ignore_index, num_classes + 1, idx)
    rgb = colors[idx]
    if image is not None:
        base = np.asarray(image, dtype=float)[..., :3] / 255.0
        rgb = (1 - alpha) * base + alpha * rgb
    show_image(ax, (rgb * 255).astype(np.uint8), title)


def label_panels(
    image: np.ndarray,
    panels: Mapping[str, np.ndarray],
    num_classes: int,
    class_names: Sequence[str] | None = None,
    ignore_index: int | None = None,
    size: float = 3.2,
    title: str | None = None,
) -> Figure:
    """One row: the image, then each label map of ``panels`` (title -> (H, W) class ids) side by side,
    with a legend of the classes that appear."""
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(size * (len(panels) + 1), size), squeeze=False)
    show_image(axes[0, 0], image, "image")
    seen: set[int] = set()
    for ax, (name, lab) in zip(axes[0, 1:], panels.items(), strict=True):
        show_labels(ax, lab, num_classes, ignore_index, title=name)
        seen |= {int(v) for v in np.unique(lab) if 0 <= v < num_classes}
    if class_names is not None and seen:
        colors = class_colors(num_classes)
        handles = [Rectangle((0, 0), 1, 1, color=colors[c]) for c in sorted(seen)]
        fig.legend(handles, [class_names[c] for c in sorted(seen)], loc="lower center",
                   ncol=min(8, len(handles)), fontsize=8, frameon=False)  # fmt: skip
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout(rect=(0, 0.08 if class_names is not None else 0, 1, 1))
    return fig


def per_class_bars(
    scores: Mapping[str, Mapping[str, float]],
    class_names: Sequence[str],
    prefix: str = "iou_",
    title: str | None = None,
    ylabel: str = "IoU",
) -> Figure:
    """Grouped bars: one group per class, one bar per method (``scores``: method -> {prefix + class
    name lower-cased: value}); a class a method has no score for is drawn as 0."""
    methods = list(scores)
    if not methods:
        raise InvalidInputError("per_class_bars needs at least one method.")
    x = np.arange(len(class_names))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(min(14.0, max(6.0, 0.5 * len(class_names) + 2)), 3.8))
    for i, method in enumerate(methods):
        values = [float(scores[method].get(f"{prefix}{c.lower()}", 0.0)) for c in class_names]
        ax.bar(x + (i - (len(methods) - 1) / 2) * width, values, width, label=method, color=palette_color(i))
    ax.set_xticks(x, list(class_names), rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_ylim(0, 1)
    ax.legend(fontsize=8, ncol=min(2, len(methods)), loc="upper right")
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig


def show_polygons_on_raster(
    ax: Axes,
    image: np.ndarray,
    transform: Sequence[float],
    polygons: Sequence[Any],
    title: str | None = None,
    color: str = "yellow",
    unit: str = "m",
) -> None:
    """A raster with polygons over it, on map coordinates (easting / northing on the axes).

    Arguments:
      ax (Axes): where to draw.
      image (np.ndarray): (H, W, 3) uint8 RGB of the raster.
      transform (Sequence[float]): its affine pixel -> map transform (north-up).
      polygons (Sequence[shapely.Polygon]): in the same map coordinates.
      title (str | None): axes title.
      color (str): outline colour.
      unit (str): map unit for the axis labels.
    """
    a, _, c, _, e, f = transform[:6]
    h, w = image.shape[:2]
    ax.imshow(image, extent=(c, c + a * w, f + e * h, f))
    for poly in polygons:
        for part in getattr(poly, "geoms", [poly]):
            xs, ys = part.exterior.xy
            ax.plot(xs, ys, color=color, linewidth=1.0)
    ax.set_xlabel(f"easting ({unit})")
    ax.set_ylabel(f"northing ({unit})")
    ax.ticklabel_format(useOffset=False, style="plain")
    if title:
        ax.set_title(title)


def metric_curves(
    x: Sequence[float],
    curves: Mapping[str, Sequence[float]],
    xlabel: str,
    ylabel: str,
    title: str | None = None,
    marks: Mapping[str, float] | None = None,
) -> Figure:
    """Line plot of several curves over the same ``x``; ``marks`` (curve name -> x) draws a dot on
    each curve where it was chosen."""
    fig, ax = plt.subplots(figsize=(5.5, 3.4))
    xs = np.asarray(x, dtype=float)
    for i, (name, ys) in enumerate(curves.items()):
        ax.plot(xs, ys, marker="o", ms=3, label=name, color=palette_color(i))
        if marks and name in marks:
            j = int(np.argmin(np.abs(xs - marks[name])))
            ax.plot(xs[j], ys[j], "o", ms=9, mfc="none", color=palette_color(i))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=11)
    fig.tight_layout()
    return fig
