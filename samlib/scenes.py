"""Seeded procedural scenes: a generic *source* domain and the chapters' *target* domains.

The teaching SAM is pretrained only on the ``source`` domain (everyday-like clutter of many objects of
many shapes, colours and textures, in the spirit of SA-1B). The target domains imitate what the papers
segment — thin roads with sidewalks and crosswalks, dense rooftops with shadows, tiny ships in SAR
speckle, shadowed planetary pits — and are never seen in pretraining, so zero-shot SAM has a real gap
to close, as official SAM has on real remote-sensing imagery.

Every generator is a pure function of ``(size, seed, options)``: the same seed gives the same scene.
All drawing uses OpenCV primitives and low-resolution noise upsampled with ``cv2.resize``, which keeps a
256 x 256 scene at about a millisecond, cheap enough to generate training data on the fly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import cv2
import numpy as np

from samlib.errors import InvalidInputError

__all__ = ["Scene", "DOMAINS", "MOBILITY_CLASSES", "generate_scene", "generate_scenes"]

MOBILITY_CLASSES: tuple[str, ...] = ("background", "road", "sidewalk", "crosswalk")


@dataclass
class Scene:
    """One generated image with its ground truth.

    Attributes:
        image: (H, W, 3) uint8 RGB.
        masks: (N, H, W) bool, one visible (occlusion-aware) mask per instance.
        kinds: N instance kinds, e.g. ``"road"``, ``"ship"``.
        boxes: (N, 4) float32 boxes ``x0, y0, x1, y1``, inclusive pixel indices
            (as :func:`samlib.prompts.box_from_mask`).
        domain: name of the generator that made the scene.
        semantic: (H, W) int64 class-index map for semantic domains, else None.
        classes: class names indexed by ``semantic`` values.
    """

    image: np.ndarray
    masks: np.ndarray
    kinds: list[str]
    boxes: np.ndarray
    domain: str
    semantic: np.ndarray | None = None
    classes: tuple[str, ...] = field(default_factory=tuple)


# --------------------------------------------------------------------------------------------- helpers


def _noise(rng: np.random.Generator, size: int, scale: int, octaves: int = 3) -> np.ndarray:
    """Smooth value noise in [0, 1], (size, size) float32: sum of upsampled random grids."""
    out = np.zeros((size, size), np.float32)
    amp, total = 1.0, 0.0
    cells = max(2, size // scale)
    for _ in range(octaves):
        grid = rng.random((cells, cells), dtype=np.float32)
        out += amp * cv2.resize(grid, (size, size), interpolation=cv2.INTER_CUBIC)
        total += amp
        amp *= 0.5
        cells = min(size, cells * 2)
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


_PATTERN_BANK: dict[int, np.ndarray] = {}


def _pattern_bank(size: int) -> np.ndarray:
    """(64, size, size) float32 grey patterns in [0, 1]: mottling, stripes, checkers and grain.

    Built once per size from a fixed seed. Drawing a fresh noise field per object made a scene cost
    ~70 ms; picking a bank pattern and flipping/rolling it keeps on-the-fly training data cheap.
    """
    if size not in _PATTERN_BANK:
        rng = np.random.default_rng(20240229)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        bank = []
        for i in range(64):
            kind = i % 4
            if kind == 0:  # smooth mottling
                t = _noise(rng, size, int(rng.integers(8, 48)))
            elif kind == 1:  # stripes at a random angle and period
                theta, period = rng.uniform(0, np.pi), rng.uniform(4, 16)
                t = 0.5 + 0.5 * np.sin((xx * np.cos(theta) + yy * np.sin(theta)) * 2 * np.pi / period)
            elif kind == 2:  # checker
                period = int(rng.integers(4, 16))
                t = (((xx // period) + (yy // period)) % 2).astype(np.float32)
            else:  # fine grain
                t = _noise(rng, size, int(rng.integers(2, 6)), octaves=1)
            bank.append(t.astype(np.float32))
        _PATTERN_BANK[size] = np.stack(bank)
    return _PATTERN_BANK[size]


def _texture(
    rng: np.random.Generator,
    size: int,
    base: np.ndarray,
    strength: float,
    region: tuple[slice, slice] | None = None,
) -> np.ndarray:
    """A (size, size, 3) float32 texture around an RGB ``base`` colour in [0, 1].

    With ``region`` only that crop is computed (shape of the crop): painting a small object then costs
    a small fraction of a full-frame texture.
    """
    t = _pattern_bank(size)[rng.integers(0, 64)]
    if rng.random() < 0.5:
        t = t.T
    dy, dx = (int(v) for v in rng.integers(0, size, 2))
    if region is None:
        t = np.roll(t, (dy, dx), axis=(0, 1))
    else:
        ys = (np.arange(region[0].start, region[0].stop) + dy) % size
        xs = (np.arange(region[1].start, region[1].stop) + dx) % size
        t = t[np.ix_(ys, xs)]
    tint = rng.normal(0, 0.15, 3).astype(np.float32)
    return np.clip(base[None, None] + (strength * (t[..., None] - 0.5)) * (1 + tint), 0, 1)


def _paint_texture(
    rng: np.random.Generator,
    canvas: np.ndarray,
    mask: np.ndarray,
    base: np.ndarray,
    strength: float,
    shade: bool = False,
) -> None:
    """Paint a ``base``-coloured texture into ``canvas`` (H, W, 3) where ``mask`` is set, in place."""
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return
    region = (slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1))
    tex = _texture(rng, canvas.shape[0], base, strength, region)
    if shade:  # a linear shading gradient across the object
        h, w = tex.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32) / canvas.shape[0]
        a = rng.uniform(0, 2 * np.pi)
        g = 0.75 + 0.5 * (np.cos(a) * (xx - xx.mean()) + np.sin(a) * (yy - yy.mean())) * 2
        tex = np.clip(tex * g[..., None], 0, 1)
    sel = mask[region] > 0
    canvas[region][sel] = tex[sel]


def _random_color(rng: np.random.Generator) -> np.ndarray:
    hsv = np.array([[[rng.integers(0, 180), rng.integers(40, 256), rng.integers(50, 256)]]], np.uint8)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0, 0].astype(np.float32) / 255.0


def _random_shape_mask(rng: np.random.Generator, size: int, radius: float) -> np.ndarray:
    """A filled random shape (ellipse, polygon, star, rounded rectangle or blob), (size, size) uint8."""
    m = np.zeros((size, size), np.uint8)
    cx, cy = rng.uniform(0.05, 0.95, 2) * size
    kind = rng.integers(0, 5)
    if kind == 0:
        axes = (int(radius), int(radius * rng.uniform(0.3, 1.0)))
        cv2.ellipse(m, (int(cx), int(cy)), axes, rng.uniform(0, 180), 0, 360, 1, -1)
    elif kind in (1, 2):
        n = int(rng.integers(3, 9))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        r = radius * (rng.uniform(0.5, 1.0, n) if kind == 1 else np.where(np.arange(n) % 2, 1.0, 0.45))
        if kind == 2:
            n = 2 * int(rng.integers(4, 7))
            ang = np.linspace(0, 2 * np.pi, n, endpoint=False) + rng.uniform(0, np.pi)
            r = radius * np.where(np.arange(n) % 2, 1.0, rng.uniform(0.35, 0.6))
        pts = np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1).astype(np.int32)
        cv2.fillPoly(m, [pts], 1)
    elif kind == 3:
        w, h = radius * rng.uniform(0.6, 1.6), radius * rng.uniform(0.3, 1.2)
        rect = ((cx, cy), (w * 2, h * 2), rng.uniform(0, 180))
        cv2.fillPoly(m, [cv2.boxPoints(rect).astype(np.int32)], 1)
    else:  # blob: thresholded noise inside a disc
        disc = np.zeros_like(m)
        cv2.circle(disc, (int(cx), int(cy)), int(radius), 1, -1)
        m = ((_noise(rng, size, max(4, int(radius / 2)), 2) > 0.45) & (disc > 0)).astype(np.uint8)
    return m


def _finish(
    image: np.ndarray,
    masks: list[np.ndarray],
    kinds: list[str],
    domain: str,
    min_area: int,
    semantic: np.ndarray | None = None,
    classes: tuple[str, ...] = (),
) -> Scene:
    """Drop tiny instances, compute boxes, and pack a :class:`Scene`."""
    keep = [i for i, m in enumerate(masks) if int(m.sum()) >= min_area]
    size = image.shape[0]
    stack = np.stack([masks[i] > 0 for i in keep]) if keep else np.zeros((0, size, size), bool)
    boxes = np.zeros((len(keep), 4), np.float32)
    for j, m in enumerate(stack):
        ys, xs = np.nonzero(m)
        boxes[j] = (xs.min(), ys.min(), xs.max(), ys.max())
    img8 = np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8) if image.dtype != np.uint8 else image
    return Scene(img8, stack, [kinds[i] for i in keep], boxes, domain, semantic, classes)


# --------------------------------------------------------------------------------------------- source


def _source_scene(rng: np.random.Generator, size: int) -> Scene:
    """Everyday-like clutter: 3-14 textured objects of many shapes and scales, with occlusion."""
    bg = _texture(rng, size, _random_color(rng) * rng.uniform(0.4, 1.0), rng.uniform(0.1, 0.5))
    image = bg.copy()
    n = int(rng.integers(3, 15))
    masks: list[np.ndarray] = []
    kinds: list[str] = []
    # Large objects first so small ones can sit on top of them (occlusion, part-of relations).
    radii = np.sort(size * np.exp(rng.uniform(np.log(0.04), np.log(0.35), n)))[::-1]
    for radius in radii:
        m = _random_shape_mask(rng, size, float(radius))
        if m.sum() < 16:
            continue
        _paint_texture(rng, image, m, _random_color(rng), rng.uniform(0.05, 0.45), shade=rng.random() < 0.5)
        for prev in masks:  # earlier objects lose what the new one covers
            prev[m > 0] = 0
        masks.append(m)
        kinds.append("object")
    image = _camera(rng, image)
    return _finish(image, masks, kinds, "source", min_area=24)


def _camera(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Global illumination gradient, slight blur and sensor noise."""
    size = image.shape[0]
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    light = 1 + rng.uniform(-0.25, 0.25) * (xx - 0.5) + rng.uniform(-0.25, 0.25) * (yy - 0.5)
    image = image * light[..., None]
    if rng.random() < 0.5:
        image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.3, 1.0))
    image = image + rng.normal(0, rng.uniform(0.0, 0.04), image.shape).astype(np.float32)
    return np.clip(image, 0, 1)


# --------------------------------------------------------------------------------------------- mobility

# Two visually different "regions": a temperate city (green, dark asphalt, white paint) and an arid
# one (ochre ground, pale asphalt, yellowish paint). Textures of road and sidewalk are kept close on
# purpose: telling them apart is the hard part in GeoSAM's setting.
_MOBILITY_REGIONS: dict[str, dict[str, tuple[float, float, float]]] = {
    "a": {"ground": (0.30, 0.42, 0.25), "road": (0.30, 0.30, 0.32), "walk": (0.52, 0.51, 0.50),
          "paint": (0.92, 0.92, 0.92), "roof": (0.55, 0.35, 0.30)},
    "b": {"ground": (0.66, 0.56, 0.40), "road": (0.50, 0.47, 0.44), "walk": (0.68, 0.64, 0.58),
          "paint": (0.95, 0.88, 0.60), "roof": (0.80, 0.78, 0.74)},
}  # fmt: skip


def _mobility_scene(rng: np.random.Generator, size: int, region: str = "a") -> Scene:
    """Narrow roads with sidewalks on both sides and zebra crosswalks at junctions.

    Returns a semantic scene (``MOBILITY_CLASSES``); instances are the connected components per class.
    """
    if region not in _MOBILITY_REGIONS:
        raise InvalidInputError(f"unknown mobility region {region!r}; use one of {sorted(_MOBILITY_REGIONS)}")
    pal = {k: np.array(v, np.float32) for k, v in _MOBILITY_REGIONS[region].items()}
    jitter = lambda c: np.clip(c + rng.normal(0, 0.03, 3).astype(np.float32), 0, 1)  # noqa: E731
    image = _texture(rng, size, jitter(pal["ground"]), 0.25)
    semantic = np.zeros((size, size), np.int64)
    road = np.zeros((size, size), np.uint8)
    walk = np.zeros((size, size), np.uint8)
    cross = np.zeros((size, size), np.uint8)
    # A loose grid of roads: 1-3 roughly vertical and 1-3 roughly horizontal, slightly slanted.
    scale = size / 256
    road_w = int(rng.integers(7, 12) * scale)
    walk_w = max(2, int(rng.integers(3, 5) * scale))
    gap = max(1, int(rng.integers(1, 3) * scale))  # kerb/verge between road and sidewalk
    lines: list[tuple[np.ndarray, np.ndarray]] = []
    for axis in (0, 1):
        for _ in range(int(rng.integers(1, 3))):
            c = rng.uniform(0.15, 0.85) * size
            tilt = rng.uniform(-0.2, 0.2) * size
            p0 = np.array([c - tilt / 2, -10.0]) if axis == 0 else np.array([-10.0, c - tilt / 2])
            p1 = np.array([c + tilt / 2, size + 10.0]) if axis == 0 else np.array([size + 10.0, c + tilt / 2])
            lines.append((p0, p1))
    # A few buildings in the blocks, drawn first so roads cut through them.
    for _ in range(int(rng.integers(4, 12))):
        cx, cy = rng.uniform(0, size, 2)
        w, h = rng.uniform(10, 30, 2) * scale
        rect = ((cx, cy), (w, h), rng.uniform(-10, 10))
        roof = np.zeros((size, size), np.uint8)
        cv2.fillPoly(roof, [cv2.boxPoints(rect).astype(np.int32)], 1)
        _paint_texture(rng, image, roof, jitter(pal["roof"]), 0.15)
    outer = road_w + 2 * (gap + walk_w)
    for p0, p1 in lines:
        a, b = tuple(p0.astype(int)), tuple(p1.astype(int))
        cv2.line(walk, a, b, 1, outer)
    for p0, p1 in lines:
        a, b = tuple(p0.astype(int)), tuple(p1.astype(int))
        cv2.line(walk, a, b, 0, road_w + 2 * gap)
    for p0, p1 in lines:
        cv2.line(road, tuple(p0.astype(int)), tuple(p1.astype(int)), 1, road_w)
    walk[road > 0] = 0
    # Zebra crosswalks: stripes across a road just before each junction.
    for i, (p0, p1) in enumerate(lines):
        d = (p1 - p0) / np.linalg.norm(p1 - p0)
        nrm = np.array([-d[1], d[0]])
        for j, (q0, q1) in enumerate(lines):
            if i == j:
                continue
            x = _intersect(p0, p1, q0, q1)
            if x is None or not (0 <= x[0] < size and 0 <= x[1] < size):
                continue
            for side in (-1, 1):
                if rng.random() < 0.3:
                    continue
                centre = x + side * d * (outer / 2 + 5 * scale)
                n_stripes = 5
                for k in range(n_stripes):
                    s = centre + nrm * (k - (n_stripes - 1) / 2) * road_w / n_stripes
                    pa, pb = s - d * 4 * scale, s + d * 4 * scale
                    cv2.line(cross, tuple(pa.astype(int)), tuple(pb.astype(int)), 1, max(1, road_w // 6))
    cross &= road
    _paint_texture(rng, image, walk, jitter(pal["walk"]), 0.12)
    _paint_texture(rng, image, road, jitter(pal["road"]), 0.12)
    _paint_texture(rng, image, cross, jitter(pal["paint"]), 0.08)
    # Trees overhanging here and there occlude roads, as they do in aerial imagery.
    for _ in range(int(rng.integers(0, 6))):
        crown_xy = (int(rng.uniform(0, size)), int(rng.uniform(0, size)))
        crown_r = int(rng.uniform(3, 8) * scale)
        tree = np.zeros((size, size), np.uint8)
        cv2.circle(tree, crown_xy, crown_r, 1, -1)
        _paint_texture(rng, image, tree, np.array([0.15, 0.3, 0.12], np.float32), 0.2)
        road[tree > 0] = walk[tree > 0] = cross[tree > 0] = 0
    semantic[walk > 0] = 1 + 1
    semantic[road > 0] = 1
    semantic[cross > 0] = 3
    image = _camera(rng, image)
    masks, kinds = _components({"road": semantic == 1, "sidewalk": semantic == 2, "crosswalk": semantic == 3})
    return _finish(image, masks, kinds, f"mobility_{region}", 12, semantic, MOBILITY_CLASSES)


def _intersect(p0: np.ndarray, p1: np.ndarray, q0: np.ndarray, q1: np.ndarray) -> np.ndarray | None:
    d1, d2 = p1 - p0, q1 - q0
    den = d1[0] * d2[1] - d1[1] * d2[0]
    if abs(den) < 1e-6:
        return None
    t = ((q0[0] - p0[0]) * d2[1] - (q0[1] - p0[1]) * d2[0]) / den
    return p0 + t * d1


def _components(class_masks: dict[str, np.ndarray]) -> tuple[list[np.ndarray], list[str]]:
    masks, kinds = [], []
    for kind, m in class_masks.items():
        n, labels = cv2.connectedComponents(m.astype(np.uint8), connectivity=8)
        for k in range(1, n):
            masks.append((labels == k).astype(np.uint8))
            kinds.append(kind)
    return masks, kinds


# --------------------------------------------------------------------------------------------- buildings


def _buildings_scene(rng: np.random.Generator, size: int) -> Scene:
    """Dense rectangular rooftops with cast shadows on an urban ground texture."""
    image = _texture(rng, size, np.array([0.45, 0.44, 0.40], np.float32) * rng.uniform(0.8, 1.2), 0.3)
    shadow_dir = rng.normal(size=2)
    shadow_dir /= np.linalg.norm(shadow_dir)
    masks, kinds = [], []
    occupied = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(6, 22))):
        w, h = rng.uniform(10, 40, 2) * size / 256
        cx, cy = rng.uniform(0, size, 2)
        rect = ((cx, cy), (w, h), rng.uniform(-30, 30))
        roof = np.zeros((size, size), np.uint8)
        cv2.fillPoly(roof, [cv2.boxPoints(rect).astype(np.int32)], 1)
        if (roof & occupied).sum() > 0.1 * roof.sum():
            continue
        shadow = np.zeros_like(roof)
        off = shadow_dir * rng.uniform(3, 8) * size / 256
        pts = cv2.boxPoints(((cx + off[0], cy + off[1]), (w, h), rect[2])).astype(np.int32)
        cv2.fillPoly(shadow, [pts], 1)
        image[(shadow > 0) & (roof == 0)] *= 0.45
        tone = np.array(rng.choice([[0.75, 0.72, 0.68], [0.55, 0.30, 0.25], [0.35, 0.36, 0.40],
                                    [0.60, 0.60, 0.55]]), np.float32)  # fmt: skip
        _paint_texture(rng, image, roof, tone * rng.uniform(0.8, 1.15), 0.12)
        if rng.random() < 0.6:  # a ridge line splits many roofs into two tones
            corners = cv2.boxPoints(rect)
            half = np.zeros_like(roof)
            ridge = [corners[0], corners[1], (corners[1] + corners[2]) / 2, (corners[0] + corners[3]) / 2]
            cv2.fillPoly(half, [np.array(ridge, np.int32)], 1)
            image[(half & roof) > 0] *= 0.8
        occupied |= roof
        masks.append(roof)
        kinds.append("building")
    for prev_i, m in enumerate(masks):  # later roofs cover earlier ones
        for later in masks[prev_i + 1 :]:
            m[later > 0] = 0
    image = _camera(rng, image)
    return _finish(image, masks, kinds, "buildings", 20)


# --------------------------------------------------------------------------------------------- SAR ships


def _sar_ships_scene(rng: np.random.Generator, size: int) -> Scene:
    """Dark sea with multiplicative gamma speckle and a few tiny bright ships (grey, replicated to RGB)."""
    sea = 0.08 + 0.08 * _noise(rng, size, 64, 2)
    looks = 2.0
    speckle = rng.gamma(looks, 1 / looks, (size, size)).astype(np.float32)
    masks, kinds = [], []
    refl = np.zeros((size, size), np.float32)
    if rng.random() < 0.3:  # a strip of coast: bright, textured land
        land = np.zeros((size, size), np.uint8)
        edge = rng.uniform(0.1, 0.3) * size
        pts = np.array([[0, 0], [edge + rng.uniform(-20, 20), 0], [edge + rng.uniform(-20, 20), size],
                        [0, size]], np.int32)  # fmt: skip
        cv2.fillPoly(land, [pts], 1)
        refl[land > 0] = 0.3 + 0.4 * _noise(rng, size, 8, 3)[land > 0]
    for _ in range(int(rng.integers(1, 7))):
        length = rng.uniform(5, 16) * size / 256
        width = max(1.5, length * rng.uniform(0.2, 0.35))
        cx, cy = rng.uniform(0.1, 0.9, 2) * size
        if refl[int(cy), int(cx)] > 0:
            continue
        ship = np.zeros((size, size), np.uint8)
        angle = rng.uniform(0, 180)
        cv2.ellipse(ship, (int(cx), int(cy)), (int(length / 2), int(width / 2)), angle, 0, 360, 1, -1)
        refl[ship > 0] = rng.uniform(0.6, 1.0)
        # Side lobes: a faint bright cross through strong scatterers, a classic SAR artefact.
        cv2.line(refl, (int(cx - length), int(cy)), (int(cx + length), int(cy)), 0.25, 1)
        cv2.line(refl, (int(cx), int(cy - length)), (int(cx), int(cy + length)), 0.25, 1)
        masks.append(ship)
        kinds.append("ship")
    amp = np.clip((sea + refl) * speckle, 0, 1)
    image = np.repeat(amp[..., None], 3, axis=2)
    return _finish(image, masks, kinds, "sar_ships", 4)


# --------------------------------------------------------------------------------------------- planetary


def _planetary_scene(rng: np.random.Generator, size: int) -> Scene:
    """Dusty terrain with pits/skylights (dark, shadowed interiors) and craters (raised lit rims).

    Only pits and skylights are instances; craters are distractors, as in HiRISE pit catalogues.
    """
    base = np.array([0.62, 0.48, 0.36], np.float32) * rng.uniform(0.7, 1.1)
    height = _noise(rng, size, 32, 4)
    sun = rng.uniform(0, 2 * np.pi)
    gy, gx = np.gradient(height)
    shade = 0.8 + 6.0 * (np.cos(sun) * gx + np.sin(sun) * gy)
    image = np.clip(
        base[None, None] * shade[..., None] * (0.85 + 0.3 * _noise(rng, size, 4, 1))[..., None], 0, 1
    )
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    masks, kinds = [], []
    for _ in range(int(rng.integers(2, 8))):  # craters: lit rim towards the sun, shadow opposite
        cx, cy, r = rng.uniform(0, size), rng.uniform(0, size), rng.uniform(6, 30) * size / 256
        d = np.hypot(xx - cx, yy - cy) / r
        facing = np.cos(np.arctan2(yy - cy, xx - cx) - sun)
        rim = np.exp(-((d - 1.0) ** 2) / 0.02)
        bowl = (d < 1.0) * (1 - d**2)
        image *= (1 + 0.35 * rim * facing - 0.25 * bowl * facing)[..., None]
    for _ in range(int(rng.integers(1, 5))):  # pits: steep walls, a dark floor, a crescent of light
        cx, cy = rng.uniform(0.1, 0.9, 2) * size
        a = rng.uniform(5, 22) * size / 256
        b = a * rng.uniform(0.6, 1.0)
        ang = rng.uniform(0, 180)
        pit = np.zeros((size, size), np.uint8)
        cv2.ellipse(pit, (int(cx), int(cy)), (int(a), int(b)), ang, 0, 360, 1, -1)
        inside = pit > 0
        facing = np.cos(np.arctan2(yy - cy, xx - cx) - sun)
        dark = 0.12 + 0.35 * np.clip(facing, 0, 1) * (rng.random() < 0.7)
        image[inside] *= dark[inside][:, None]
        masks.append(pit)
        kinds.append("pit")
    for i, m in enumerate(masks):
        for later in masks[i + 1 :]:
            m[later > 0] = 0
    image = _camera(rng, np.clip(image, 0, 1))
    return _finish(image, masks, kinds, "planetary", 16)


# --------------------------------------------------------------------------------------------- registry

DOMAINS: dict[str, Callable[..., Scene]] = {
    "source": _source_scene,
    "mobility": _mobility_scene,
    "mobility_a": lambda rng, size: _mobility_scene(rng, size, "a"),
    "mobility_b": lambda rng, size: _mobility_scene(rng, size, "b"),
    "buildings": _buildings_scene,
    "sar_ships": _sar_ships_scene,
    "planetary": _planetary_scene,
}
"""Scene generators by name. ``mobility`` takes a ``region`` option ("a" familiar, "b" unseen)."""


def generate_scene(domain: str = "source", size: int = 256, seed: int = 0, **options: object) -> Scene:
    """Generate one scene of ``domain`` at ``size`` x ``size`` pixels, deterministic in ``seed``."""
    if domain not in DOMAINS:
        raise InvalidInputError(f"unknown scene domain {domain!r}; choose one of {sorted(DOMAINS)}")
    if not isinstance(size, (int, np.integer)) or size < 32:
        raise InvalidInputError(f"scene size must be an integer >= 32 pixels, got {size!r}")
    rng = np.random.default_rng(seed)
    return DOMAINS[domain](rng, int(size), **options)


def generate_scenes(domain: str, n: int, size: int = 256, seed: int = 0, **options: object) -> list[Scene]:
    """``n`` scenes with seeds ``seed, seed + 1, ...``."""
    return [generate_scene(domain, size, seed + i, **options) for i in range(n)]


# --------------------------------------------------------------------------------------------- dense objects


def _dense_objects_scene(rng: np.random.Generator, size: int) -> Scene:
    """Crowded multi-class scene in the spirit of NWPU VHR-10: rows of parked vehicles that touch,
    clusters of storage tanks, ships moored side by side and a few aircraft, on a paved ground.

    Neighbours are often 0-2 pixels apart, so a click on one object easily spills into the next: the
    case PointSAM's negative prompt calibration is for.
    """
    scale = size / 256
    ground = np.array([0.46, 0.45, 0.42], np.float32) * rng.uniform(0.8, 1.15)
    image = _texture(rng, size, ground, 0.25)
    masks: list[np.ndarray] = []
    kinds: list[str] = []

    def add(mask: np.ndarray, kind: str, tone: np.ndarray, strength: float = 0.1) -> None:
        if mask.sum() == 0:
            return
        _paint_texture(rng, image, mask, np.clip(tone, 0, 1), strength, shade=rng.random() < 0.5)
        for prev in masks:  # later objects cover earlier ones
            prev[mask > 0] = 0
        masks.append(mask)
        kinds.append(kind)

    for _ in range(int(rng.integers(1, 4))):  # parking rows: vehicles side by side
        length, width = rng.uniform(10, 16) * scale, rng.uniform(5, 8) * scale
        angle = rng.uniform(0, 180)
        step = width + rng.uniform(0.0, 2.0) * scale
        direction = np.array([np.cos(np.radians(angle)), np.sin(np.radians(angle))])
        start = rng.uniform(0.05, 0.95, 2) * size
        for i in range(int(rng.integers(3, 9))):
            cx, cy = start + i * step * direction
            vehicle = np.zeros((size, size), np.uint8)
            rect = ((float(cx), float(cy)), (float(width), float(length)), float(angle))
            cv2.fillPoly(vehicle, [cv2.boxPoints(rect).astype(np.int32)], 1)
            add(vehicle, "vehicle", _random_color(rng) * rng.uniform(0.6, 1.1))
    for _ in range(int(rng.integers(0, 3))):  # storage tanks: touching discs, bright with a rim
        r = rng.uniform(6, 13) * scale
        cx, cy = rng.uniform(0.1, 0.9, 2) * size
        for j in range(int(rng.integers(2, 6))):
            tank = np.zeros((size, size), np.uint8)
            ox = cx + (j % 3) * (2 * r + rng.uniform(0, 2) * scale)
            oy = cy + (j // 3) * (2 * r + rng.uniform(0, 2) * scale)
            cv2.circle(tank, (int(ox), int(oy)), int(r), 1, -1)
            add(tank, "storage_tank", np.array([0.85, 0.85, 0.82], np.float32) * rng.uniform(0.8, 1.1), 0.05)
    for _ in range(int(rng.integers(0, 2))):  # moored ships: long hulls side by side
        length, width = rng.uniform(26, 48) * scale, rng.uniform(6, 10) * scale
        angle = rng.uniform(0, 180)
        normal = np.array([-np.sin(np.radians(angle)), np.cos(np.radians(angle))])
        start = rng.uniform(0.15, 0.85, 2) * size
        for i in range(int(rng.integers(2, 5))):
            cx, cy = start + i * (width + rng.uniform(0.0, 1.5) * scale) * normal
            ship = np.zeros((size, size), np.uint8)
            cv2.ellipse(ship, (int(cx), int(cy)), (int(length / 2), int(width / 2)), angle, 0, 360, 1, -1)
            add(ship, "ship", np.array([0.7, 0.7, 0.72], np.float32) * rng.uniform(0.7, 1.2), 0.15)
    for _ in range(int(rng.integers(0, 3))):  # aircraft: a fuselage and a wing
        span, body = rng.uniform(16, 30, 2) * scale
        angle = rng.uniform(0, 180)
        cx, cy = rng.uniform(0.1, 0.9, 2) * size
        plane = np.zeros((size, size), np.uint8)
        for w, h, a in ((body, body * 0.18, angle), (span, span * 0.15, angle + 90)):
            rect = ((float(cx), float(cy)), (float(w), float(h)), float(a))
            cv2.fillPoly(plane, [cv2.boxPoints(rect).astype(np.int32)], 1)
        add(plane, "airplane", np.array([0.9, 0.9, 0.92], np.float32) * rng.uniform(0.8, 1.05), 0.05)
    image = _camera(rng, image)
    return _finish(image, masks, kinds, "dense_objects", 12)


DOMAINS["dense_objects"] = _dense_objects_scene
