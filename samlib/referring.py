"""Referring segmentation data: scenes of named objects and unambiguous sentences that pick one of them.

Referring remote-sensing image segmentation (RRSIS) pairs an image with a sentence such as "the large
white storage tank at the top left" and asks for the mask of the one object it names. No RRSIS data set
could be obtained for this book, so this module makes the sentences itself:

* :func:`generate_referring_scene` draws an aerial-looking tile with several objects of several kinds
  (buildings, vehicles, ships, storage tanks, tennis courts), each with a named colour, exact masks and
  seeded randomness (the same seed gives the same scene);
* :func:`describe` builds, for one object, the sentences that single it out from templates over its
  attributes -- kind, colour, size rank ("the largest ..."), absolute position ("at the top left"),
  ordinal ("the second ... from the left") and relation to another object ("left of the blue building")
  -- and keeps only those that exactly one object satisfies *with a margin* (a second object that
  nearly satisfies it, e.g. sits on a cell border or is almost as large, makes the sentence unclear and
  it is dropped);
* :func:`referring_samples` and :func:`referring_samples_from_instances` turn generated scenes or real
  images with instance masks (SpaceNet buildings, HRSID ships, Dubai buildings: no colour names there)
  into :class:`ReferringSample` records, one sentence each.

Every sentence comes with its :class:`Expression`, the structured form :func:`matching_objects`
evaluates; the tests parse the text back independently to check that none is ambiguous.
Boxes are (x0, y0, x1, y1) with inclusive pixel indices (as :func:`samlib.prompts.box_from_mask`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from samlib.errors import InvalidInputError

__all__ = [
    "COLOURS",
    "KINDS",
    "POSITIONS",
    "Expression",
    "ReferringObject",
    "ReferringSample",
    "ReferringScene",
    "describe",
    "generate_referring_scene",
    "matching_objects",
    "objects_from_masks",
    "referring_samples",
    "referring_samples_from_instances",
    "size_group",
    "template_name",
]

KINDS: tuple[str, ...] = ("building", "vehicle", "ship", "storage tank", "tennis court")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (200, 40, 35),
    "blue": (40, 70, 200),
    "green": (40, 150, 60),
    "white": (235, 235, 230),
    "yellow": (225, 200, 40),
    "black": (30, 30, 35),
}
"""Colour names and the RGB each is painted with (textured around it)."""

POSITIONS: tuple[tuple[str, ...], ...] = (
    ("top left", "top", "top right"),
    ("left", "centre", "right"),
    ("bottom left", "bottom", "bottom right"),
)
"""Names of the 3 x 3 cells of the image, row by row; the sentence says "at the top left", "in the centre"."""

ORDINALS: tuple[str, ...] = ("first", "second", "third", "fourth")
DIRECTIONS: tuple[str, ...] = ("left", "right", "top", "bottom")
RELATIONS: tuple[str, ...] = ("left of", "right of", "above", "below")
SIZE_GROUPS: tuple[tuple[str, float], ...] = (("small", 0.005), ("medium", 0.03), ("large", float("inf")))
"""(name, upper bound of the object's share of the image area): the size breakdown of the evaluation."""


@dataclass
class ReferringObject:
    """What a sentence may say about one object.

    Attributes:
      kind (str): e.g. "building".
      colour (str | None): a key of :data:`COLOURS`, None when unknown (real images).
      area (float): pixels.
      centre (tuple[float, float]): (x, y) centroid of the mask, pixels.
      box (np.ndarray): (4,) float64 (x0, y0, x1, y1), inclusive pixel indices.
    """

    kind: str
    colour: str | None
    area: float
    centre: tuple[float, float]
    box: np.ndarray


@dataclass
class Expression:
    """A referring expression in structured form: a kind, optionally a colour, and at most one of a size
    rank, a position, an ordinal or a relation to a reference object (itself an :class:`Expression`).

    Attributes:
      kind (str): the object's kind.
      colour (str | None): its colour name.
      size (str | None): "largest" or "smallest" among the objects of that kind (and colour).
      position (str | None): a name in :data:`POSITIONS`.
      ordinal (tuple[int, str] | None): (k, direction): the k-th (1-based) from the left/right/top/bottom.
      relation (tuple[str, Expression] | None): (one of :data:`RELATIONS`, the reference object).
    """

    kind: str
    colour: str | None = None
    size: str | None = None
    position: str | None = None
    ordinal: tuple[int, str] | None = None
    relation: tuple[str, Expression] | None = None

    def noun_phrase(self) -> str:
        words = ["the"]
        if self.ordinal is not None:
            words.append(ORDINALS[self.ordinal[0] - 1])
        if self.size is not None:
            words.append(self.size)
        if self.colour is not None:
            words.append(self.colour)
        words.append(self.kind)
        return " ".join(words)

    def text(self) -> str:
        """The sentence, e.g. "the second red vehicle from the left"."""
        phrase = self.noun_phrase()
        if self.ordinal is not None:
            phrase += f" from the {self.ordinal[1]}"
        if self.position is not None:
            phrase += " in the centre" if self.position == "centre" else f" at the {self.position}"
        if self.relation is not None:
            phrase += f" {self.relation[0]} {self.relation[1].text()}"
        return phrase


@dataclass
class ReferringScene:
    """A generated tile with named objects.

    Attributes:
      image (np.ndarray): (H, W, 3) uint8 RGB.
      masks (np.ndarray): (N, H, W) bool, one mask per object.
      kinds (list[str]): N kinds.
      colours (list[str | None]): N colour names.
      seed (int): the seed it was drawn with.
    """

    image: np.ndarray
    masks: np.ndarray
    kinds: list[str]
    colours: list[str | None]
    seed: int = 0

    def objects(self) -> list[ReferringObject]:
        return objects_from_masks(self.masks, self.kinds, self.colours)


@dataclass
class ReferringSample:
    """One sentence with the image it refers into and the answer.

    Attributes:
      image (np.ndarray): (H, W, 3) uint8 RGB.
      sentence (str): the referring expression.
      mask (np.ndarray): (H, W) bool mask of the referred object.
      box (np.ndarray): (4,) float64 (x0, y0, x1, y1) of ``mask``, inclusive pixel indices.
      kind (str): the referred object's kind.
      target (int): its index in ``masks``.
      masks (np.ndarray): (N, H, W) bool, every object of the image (for trivial grounders and figures).
      kinds (list[str]): N kinds.
      expression (Expression): the structured form of ``sentence``.
      source (str): "generated" or the real data set's name.
      name (str): the scene seed or image name it came from.
      image_index (int): index of the image within the list the samples were made from (samples of
        one image share it, so embeddings can be computed once per image).
    """

    image: np.ndarray
    sentence: str
    mask: np.ndarray
    box: np.ndarray
    kind: str
    target: int
    masks: np.ndarray
    kinds: list[str]
    expression: Expression
    source: str = "generated"
    name: str = ""
    image_index: int = 0
    meta: dict[str, object] = field(default_factory=dict)

    @property
    def area_fraction(self) -> float:
        """The referred object's share of the image area."""
        return float(self.mask.sum()) / float(self.mask.size)


def size_group(area_fraction: float) -> str:
    """ "small", "medium" or "large" by the object's share of the image (:data:`SIZE_GROUPS`)."""
    for name, upper in SIZE_GROUPS:
        if area_fraction < upper:
            return name
    return SIZE_GROUPS[-1][0]


def objects_from_masks(
    masks: np.ndarray, kinds: Sequence[str], colours: Sequence[str | None] | None = None
) -> list[ReferringObject]:
    """:class:`ReferringObject` per mask of an (N, H, W) stack (masks must be non-empty)."""
    masks = np.asarray(masks)
    if masks.ndim != 3:
        raise InvalidInputError(f"masks must be an (N, H, W) stack, got shape {masks.shape}.")
    if len(kinds) != len(masks) or (colours is not None and len(colours) != len(masks)):
        raise InvalidInputError("need one kind (and one colour, if given) per mask.")
    out = []
    for i, m in enumerate(masks):
        ys, xs = np.nonzero(m)
        if len(xs) == 0:
            raise InvalidInputError(f"mask {i} is empty: drop empty instances first.")
        box = np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float64)
        colour = None if colours is None else colours[i]
        out.append(
            ReferringObject(kinds[i], colour, float(len(xs)), (float(xs.mean()), float(ys.mean())), box)
        )
    return out


# ------------------------------------------------------------------------------------- matching rules


def _cell(x: float, y: float, width: int, height: int, slack: float) -> list[str]:
    """Cells whose region, grown by ``slack`` (fraction of the side), contains (x, y)."""
    names = []
    for r in range(3):
        for c in range(3):
            x0, x1 = (c / 3 - slack) * width, ((c + 1) / 3 + slack) * width
            y0, y1 = (r / 3 - slack) * height, ((r + 1) / 3 + slack) * height
            if x0 <= x < x1 and y0 <= y < y1:
                names.append(POSITIONS[r][c])
    return names


def _coordinate(obj: ReferringObject, direction: str) -> float:
    """Sort key so that the first object "from the <direction>" has the smallest value."""
    x, y = obj.centre
    return {"left": x, "right": -x, "top": y, "bottom": -y}[direction]


def _relation_holds(obj: ReferringObject, relation: str, ref: ReferringObject, slack: float) -> bool:
    """``obj`` is entirely beyond the reference box's side, with ``slack`` pixels of tolerance."""
    b, r = obj.box, ref.box
    if relation == "left of":
        return b[2] < r[0] + slack
    if relation == "right of":
        return b[0] > r[2] - slack
    if relation == "above":
        return b[3] < r[1] + slack
    return b[1] > r[3] - slack  # below


def matching_objects(
    expression: Expression,
    objects: Sequence[ReferringObject],
    image_size: tuple[int, int],
    loose: bool = False,
    margin: float = 0.05,
    size_ratio: float = 1.4,
) -> list[int]:
    """Indices of the objects ``expression`` describes.

    ``loose=True`` widens every rule by its margin (cells grow by ``margin`` of the side, "largest"
    admits objects within ``size_ratio`` of the largest, ordinals admit objects whose coordinate is
    within ``margin`` of the k-th, relations tolerate ``margin`` x the side): a sentence is clear only if
    its loose match is the same single object as its strict match.

    Arguments:
      expression (Expression): the description.
      objects (Sequence[ReferringObject]): every object of the image.
      image_size (tuple[int, int]): (H, W).

    Returns:
      (list[int]): matching indices, ascending.
    """
    height, width = image_size
    side = float(max(height, width))
    pool = [
        i
        for i, o in enumerate(objects)
        if o.kind == expression.kind and (expression.colour is None or o.colour == expression.colour)
    ]
    if expression.position is not None:
        slack = margin if loose else 0.0
        pool = [i for i in pool if expression.position in _cell(*objects[i].centre, width, height, slack)]
    if expression.relation is not None:
        relation, ref_expr = expression.relation
        refs = matching_objects(ref_expr, objects, image_size, loose, margin, size_ratio)
        if len(refs) != 1:
            return [] if not loose else pool
        ref = objects[refs[0]]
        slack = margin * side if loose else 0.0
        pool = [i for i in pool if i != refs[0] and _relation_holds(objects[i], relation, ref, slack)]
    if expression.size is not None and pool:
        areas = np.array([objects[i].area for i in pool])
        if expression.size == "largest":
            best = areas.max()
            keep = areas >= best / size_ratio if loose else areas == best
        else:
            best = areas.min()
            keep = areas <= best * size_ratio if loose else areas == best
        pool = [i for i, k in zip(pool, keep) if k]
    if expression.ordinal is not None and pool:
        k, direction = expression.ordinal
        if len(pool) < k:
            return []
        keys = np.array([_coordinate(objects[i], direction) for i in pool])
        order = np.argsort(keys, kind="stable")
        kth = keys[order[k - 1]]
        if loose:
            pool = [i for i, v in zip(pool, keys) if abs(v - kth) <= margin * side]
        else:
            pool = [pool[int(order[k - 1])]]
    return sorted(pool)


def _is_clear(
    expr: Expression, target: int, objects: Sequence[ReferringObject], size: tuple[int, int]
) -> bool:
    return matching_objects(expr, objects, size) == [target] and matching_objects(
        expr, objects, size, loose=True
    ) == [target]


def describe(
    target: int,
    objects: Sequence[ReferringObject],
    image_size: tuple[int, int],
    use_colour: bool = True,
) -> list[Expression]:
    """Every clear (unambiguous with a margin) expression from the templates for object ``target``.

    Templates: kind; colour + kind; largest/smallest (with or without colour); position; ordinal from
    each side (1st to 4th); relation to another object that is itself clearly described by kind, colour
    + kind or size rank. Colour words are used only when ``use_colour`` and the objects have colours.

    Returns:
      (list[Expression]): possibly empty (an object no template singles out clearly).
    """
    if not 0 <= target < len(objects):
        raise InvalidInputError(f"target {target} out of range for {len(objects)} objects.")
    obj = objects[target]
    colours: list[str | None] = [None]
    if use_colour and obj.colour is not None:
        colours.append(obj.colour)
    candidates: list[Expression] = []
    for colour in colours:
        candidates.append(Expression(obj.kind, colour))
        for size in ("largest", "smallest"):
            candidates.append(Expression(obj.kind, colour, size=size))
        row = [name for row in POSITIONS for name in row]
        for name in row:
            candidates.append(Expression(obj.kind, colour, position=name))
        for k in range(1, len(ORDINALS) + 1):
            for direction in DIRECTIONS:
                candidates.append(Expression(obj.kind, colour, ordinal=(k, direction)))
    clear = []
    for e in candidates:
        if (e.size is not None or e.ordinal is not None) and len(
            matching_objects(Expression(e.kind, e.colour), objects, image_size)
        ) < 2:
            continue  # "the largest" / "the first from the left" of a single object reads oddly
        if _is_clear(e, target, objects, image_size):
            clear.append(e)
    # Relations: only to references that are clear on their own, and only if no simpler form exists
    # with the same kind/colour (keeps the sentence set from exploding).
    for j, ref in enumerate(objects):
        if j == target:
            continue
        ref_forms = [Expression(ref.kind)]
        if use_colour and ref.colour is not None:
            ref_forms.append(Expression(ref.kind, ref.colour))
        ref_forms += [Expression(ref.kind, size="largest"), Expression(ref.kind, size="smallest")]
        ref_clear = [e for e in ref_forms if _is_clear(e, j, objects, image_size)]
        if not ref_clear:
            continue
        for relation in RELATIONS:
            for colour in colours:
                e = Expression(obj.kind, colour, relation=(relation, ref_clear[0]))
                if _is_clear(e, target, objects, image_size):
                    clear.append(e)
    return clear


# ------------------------------------------------------------------------------------- scene drawing


def _ground(rng: np.random.Generator, size: int) -> np.ndarray:
    """Sandy / asphalt / dry-grass ground: a smooth noise field around a muted colour, (S, S, 3) float."""
    base = np.array(
        [(0.62, 0.56, 0.46), (0.50, 0.50, 0.48), (0.55, 0.52, 0.38), (0.45, 0.42, 0.36)][rng.integers(0, 4)]
    )
    cells = max(2, size // 24)
    low = rng.random((cells, cells), dtype=np.float32)
    field_ = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    grain = rng.normal(0, 0.03, (size, size)).astype(np.float32)
    return np.clip(base[None, None] * (0.85 + 0.3 * field_[..., None]) + grain[..., None], 0, 1)


def _shape(rng: np.random.Generator, kind: str, size: int) -> tuple[np.ndarray, np.ndarray | None]:
    """A (S, S) uint8 mask of one object of ``kind`` centred at a random place, and an optional
    (S, S) uint8 mask of interior line markings (tennis courts)."""
    m = np.zeros((size, size), np.uint8)
    lines = None
    s = size / 256.0
    cx, cy = rng.uniform(0.08, 0.92, 2) * size
    angle = float(rng.uniform(0, 180))
    if kind == "building":
        w, h = rng.uniform(14, 46, 2) * s
        rect = ((cx, cy), (w, h), angle)
        cv2.fillPoly(m, [cv2.boxPoints(rect).astype(np.int32)], 1)
        if rng.random() < 0.35:  # an L-shaped wing
            wing = (
                (cx + 0.5 * w * np.cos(np.radians(angle)), cy + 0.5 * w * np.sin(np.radians(angle))),
                (w * 0.5, h * 1.6),
                angle,
            )
            cv2.fillPoly(m, [cv2.boxPoints(wing).astype(np.int32)], 1)
    elif kind == "vehicle":
        w, h = rng.uniform(11, 17) * s, rng.uniform(5, 8) * s
        cv2.fillPoly(m, [cv2.boxPoints(((cx, cy), (w, h), angle)).astype(np.int32)], 1)
    elif kind == "ship":
        length, beam = rng.uniform(22, 48) * s, rng.uniform(6, 11) * s
        a = np.radians(angle)
        u, v = np.array([np.cos(a), np.sin(a)]), np.array([-np.sin(a), np.cos(a)])
        pts = [(-0.5, -0.5), (0.25, -0.5), (0.5, 0.0), (0.25, 0.5), (-0.5, 0.5)]
        poly = np.array([[cx, cy] + px * length * u + py * beam * v for px, py in pts], np.int32)
        cv2.fillPoly(m, [poly], 1)
    elif kind == "storage tank":
        r = rng.uniform(6, 22) * s
        cv2.circle(m, (int(cx), int(cy)), int(r), 1, -1)
    else:  # tennis court: a rectangle with white lines inside
        w, h = rng.uniform(34, 48) * s, rng.uniform(18, 26) * s
        rect = ((cx, cy), (w, h), angle)
        cv2.fillPoly(m, [cv2.boxPoints(rect).astype(np.int32)], 1)
        lines = np.zeros_like(m)
        cv2.polylines(
            lines, [cv2.boxPoints(((cx, cy), (w * 0.8, h * 0.75), angle)).astype(np.int32)], True, 1
        )
        a = np.radians(angle)
        d = np.array([np.sin(a), -np.cos(a)]) * h * 0.375
        cv2.line(
            lines, tuple((np.array([cx, cy]) - d).astype(int)), tuple((np.array([cx, cy]) + d).astype(int)), 1
        )
    return m, lines


def generate_referring_scene(
    size: int = 256, seed: int = 0, n_objects: tuple[int, int] = (5, 9), same_kind: float = 0.6
) -> ReferringScene:
    """An aerial-looking tile with several non-overlapping named objects.

    Arguments:
      size (int): side in pixels (>= 64).
      seed (int): the scene's seed.
      n_objects (tuple[int, int]): inclusive range of the object count.
      same_kind (float): probability that an object repeats an already used kind (several objects of
        one kind make colour, size, position and relations necessary).

    Returns:
      (ReferringScene): image, masks, kinds, colours.
    """
    if not isinstance(size, (int, np.integer)) or size < 64:
        raise InvalidInputError(f"size must be an integer >= 64, got {size!r}.")
    lo, hi = n_objects
    if not 1 <= lo <= hi:
        raise InvalidInputError(f"n_objects must be (lo, hi) with 1 <= lo <= hi, got {n_objects}.")
    rng = np.random.default_rng(seed)
    image = _ground(rng, size)
    occupied = np.zeros((size, size), np.uint8)
    gap = np.ones((5, 5), np.uint8)
    masks: list[np.ndarray] = []
    kinds: list[str] = []
    colours: list[str | None] = []
    names = list(COLOURS)
    for _ in range(int(rng.integers(lo, hi + 1))):
        kind = (
            kinds[int(rng.integers(len(kinds)))]
            if kinds and rng.random() < same_kind
            else KINDS[int(rng.integers(len(KINDS)))]
        )
        for _attempt in range(30):  # rejection sampling: no overlap, a gap of two pixels
            m, lines = _shape(rng, kind, size)
            if m.sum() < 12 or np.logical_and(cv2.dilate(m, gap), occupied).any():
                continue
            ys, xs = np.nonzero(m)
            if xs.min() == 0 or ys.min() == 0 or xs.max() == size - 1 or ys.max() == size - 1:
                continue  # keep objects whole: positions and sizes are then what a reader sees
            colour = names[int(rng.integers(len(names)))]
            rgb = np.array(COLOURS[colour], np.float32) / 255.0
            if kind in ("building", "storage tank") and rng.random() < 0.7:  # a cast shadow
                shift = np.array([[1, 0, 3 * size / 256], [0, 1, 3 * size / 256]], np.float32)
                shadow = cv2.warpAffine(m, shift, (size, size)) & (1 - m) & (1 - occupied)
                image[shadow > 0] *= 0.55
            texture = 1 + rng.normal(0, 0.04, (size, size, 1)).astype(np.float32)
            sel = m > 0
            image[sel] = np.clip(rgb[None] * texture[sel], 0, 1)
            if kind == "building" and rng.random() < 0.5:  # a gabled roof: one half in shade
                a = rng.uniform(0, np.pi)
                yy, xx = np.mgrid[0:size, 0:size]
                half = sel & (((xx - xs.mean()) * np.sin(a) - (yy - ys.mean()) * np.cos(a)) > 0)
                image[half] *= 0.78
            if kind == "storage tank":  # a darker rim reads as a tank roof
                rim = (m - cv2.erode(m, np.ones((3, 3), np.uint8))) > 0
                image[rim] *= 0.7
            if lines is not None:
                image[(lines > 0) & sel] = (0.95, 0.95, 0.95)
            occupied |= m
            masks.append(sel)
            kinds.append(kind)
            colours.append(colour)
            break
    blurred = np.asarray(cv2.GaussianBlur(image, (0, 0), 0.6))
    noisy = blurred + rng.normal(0, 0.015, blurred.shape).astype(np.float32)
    img8 = np.clip(noisy * 255 + 0.5, 0, 255).astype(np.uint8)
    stack = np.stack(masks) if masks else np.zeros((0, size, size), bool)
    return ReferringScene(img8, stack, kinds, colours, seed)


# ------------------------------------------------------------------------------------- samples


def template_name(expression: Expression) -> str:
    """The template an expression was built from: "kind", "colour", "size", "position", "ordinal" or
    "relation"."""
    for name in ("relation", "ordinal", "size", "position"):
        if getattr(expression, name) is not None:
            return name
    return "colour" if expression.colour is not None else "kind"


def _pick(rng: np.random.Generator, expressions: list[Expression], per_object: int) -> list[Expression]:
    """Up to ``per_object`` expressions, each from a different template where possible (templates drawn
    uniformly, so the many relation sentences do not crowd out the rest)."""
    by_template: dict[str, list[Expression]] = {}
    for e in expressions:
        by_template.setdefault(template_name(e), []).append(e)
    names = [str(n) for n in rng.permutation(sorted(by_template))]
    out: list[Expression] = []
    while len(out) < per_object and any(by_template.values()):
        for n in names:
            if by_template[n] and len(out) < per_object:
                out.append(by_template[n].pop(int(rng.integers(len(by_template[n])))))
    return out


def _samples_of(
    image: np.ndarray,
    masks: np.ndarray,
    objects: list[ReferringObject],
    targets: Sequence[int],
    rng: np.random.Generator,
    per_object: int,
    use_colour: bool,
    source: str,
    name: str,
    image_index: int,
) -> list[ReferringSample]:
    size = (int(image.shape[0]), int(image.shape[1]))
    kinds = [o.kind for o in objects]
    out = []
    for t in targets:
        for e in _pick(rng, describe(t, objects, size, use_colour), per_object):
            out.append(
                ReferringSample(
                    image=image,
                    sentence=e.text(),
                    mask=masks[t],
                    box=objects[t].box.copy(),
                    kind=objects[t].kind,
                    target=int(t),
                    masks=masks,
                    kinds=kinds,
                    expression=e,
                    source=source,
                    name=name,
                    image_index=image_index,
                )
            )
    return out


def referring_samples(
    n_scenes: int, seed: int = 0, size: int = 256, per_object: int = 1, **scene_options: object
) -> tuple[list[ReferringScene], list[ReferringSample]]:
    """Generated scenes (seeds ``seed .. seed + n_scenes - 1``) and up to ``per_object`` clear sentences
    for each of their objects (drawn at random among the clear ones).

    Returns:
      (list[ReferringScene], list[ReferringSample]): the scenes and the samples
        (``sample.image_index`` indexes the scenes).
    """
    if n_scenes < 1 or per_object < 1:
        raise InvalidInputError(f"n_scenes and per_object must be >= 1, got {n_scenes}, {per_object}.")
    rng = np.random.default_rng([seed, 7])
    scenes, samples = [], []
    for i in range(n_scenes):
        scene = generate_referring_scene(size, seed + i, **scene_options)  # type: ignore[arg-type]
        scenes.append(scene)
        objects = scene.objects()
        samples += _samples_of(
            scene.image,
            scene.masks,
            objects,
            range(len(objects)),
            rng,
            per_object,
            True,
            "generated",
            str(seed + i),
            i,
        )
    return scenes, samples


def referring_samples_from_instances(
    images: Sequence[np.ndarray],
    instance_masks: Sequence[np.ndarray],
    kind: str,
    source: str,
    names: Sequence[str] | None = None,
    seed: int = 0,
    per_image: int = 3,
    min_area: int = 20,
    min_target_area: int = 64,
) -> list[ReferringSample]:
    """Sentences for real images with instance masks (one kind, no colour names): size rank, position,
    ordinal and relations, each clear among *all* instances of the image.

    Arguments:
      images (Sequence[np.ndarray]): (H, W, 3) uint8 RGB each.
      instance_masks (Sequence[np.ndarray]): (N_i, H, W) bool each.
      kind (str): the noun, e.g. "building" or "ship".
      source (str): the data set's name, kept in each sample.
      names (Sequence[str] | None): image names, kept in each sample.
      seed (int): which clear sentences are kept.
      per_image (int): at most this many sentences per image (different targets first).
      min_area (int): instances smaller than this are dropped (specks of the annotation).
      min_target_area (int): only instances at least this large are referred to.

    Returns:
      (list[ReferringSample]): ``image_index`` indexes ``images``.
    """
    if len(images) != len(instance_masks):
        raise InvalidInputError("need one instance-mask stack per image.")
    rng = np.random.default_rng([seed, 11])
    out: list[ReferringSample] = []
    for i, (image, masks) in enumerate(zip(images, instance_masks)):
        masks = np.asarray(masks, bool)
        if masks.ndim != 3 or masks.shape[1:] != image.shape[:2]:
            raise InvalidInputError(f"image {i}: masks must be (N, H, W) matching the image.")
        masks = masks[masks.reshape(len(masks), -1).sum(1) >= min_area]
        if len(masks) == 0:
            continue
        objects = objects_from_masks(masks, [kind] * len(masks))
        order = [int(t) for t in rng.permutation(len(objects)) if objects[int(t)].area >= min_target_area]
        name = names[i] if names is not None else str(i)
        picked: list[ReferringSample] = []
        for t in order:
            if len(picked) >= per_image:
                break
            picked += _samples_of(image, masks, objects, [t], rng, 1, False, source, name, i)
        out += picked
    return out
