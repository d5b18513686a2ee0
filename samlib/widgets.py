"""Interactive figures with ipywidgets, and a static figure wherever widgets cannot run.

A chapter's "Try it" cell calls :func:`interactive_figure` with a function that draws a matplotlib figure
from some keyword values, and slider specifications for those values::

    from samlib.widgets import interactive_figure, slider

    def draw(n_fg, kernel):
        ...
        return fig

    interactive_figure(draw, n_fg=slider(8, 1, 32), kernel=slider(5, 1, 15, step=2))

A control is a :func:`slider` (numbers) or a :func:`choice` (one of a list of options: a dropdown).

The figure for the default values is always drawn and displayed as an ordinary output, so a built
(static) book shows something useful. In a live notebook with ipywidgets installed, sliders appear
under it and moving one redraws that same output in place (an IPython display handle is updated, so
no second figure appears). Without ipywidgets, or with ``live=False``, only the static figure is shown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from samlib.errors import InvalidInputError

__all__ = [
    "Choice",
    "ClickPrompter",
    "Slider",
    "choice",
    "click_widgets_available",
    "interactive_figure",
    "slider",
    "widgets_available",
]


@dataclass(frozen=True)
class Slider:
    """A numeric control: default ``value`` within [``min``, ``max``] in steps of ``step``.

    Integer specs (all of value, min, max, step integers) give an ``IntSlider``, others a ``FloatSlider``.
    """

    value: float
    min: float
    max: float
    step: float = 1
    description: str | None = None

    @property
    def is_int(self) -> bool:
        return all(
            isinstance(v, int) and not isinstance(v, bool)
            for v in (self.value, self.min, self.max, self.step)
        )


def slider(value: float, min: float, max: float, step: float = 1, description: str | None = None) -> Slider:
    """A :class:`Slider` spec, checked: ``min <= value <= max`` and ``step > 0``."""
    if not min <= value <= max:
        raise InvalidInputError(f"slider value {value} outside [{min}, {max}].")
    if step <= 0:
        raise InvalidInputError(f"slider step must be > 0, got {step}.")
    return Slider(value, min, max, step, description)


@dataclass(frozen=True)
class Choice:
    """A control that picks one of ``options`` (a dropdown), ``value`` first."""

    options: tuple[Any, ...]
    value: Any
    description: str | None = None


def choice(options: Sequence[Any], value: Any = None, description: str | None = None) -> Choice:
    """A :class:`Choice` spec, checked: ``options`` not empty, ``value`` (default: the first) among them."""
    opts = tuple(options)
    if not opts:
        raise InvalidInputError("choice() needs at least one option.")
    value = opts[0] if value is None else value
    if value not in opts:
        raise InvalidInputError(f"choice value {value!r} is not one of the options {list(opts)}.")
    return Choice(opts, value, description)


def widgets_available() -> bool:
    """True when ipywidgets and IPython can be imported."""
    try:
        import ipywidgets  # noqa: F401
        from IPython.display import display  # noqa: F401
    except ImportError:
        return False
    return True


def _make_widget(name: str, spec: Slider | Choice) -> Any:
    import ipywidgets as w

    if isinstance(spec, Choice):
        return w.Dropdown(
            options=list(spec.options), value=spec.value, description=spec.description or name,
            style={"description_width": "initial"},
        )  # fmt: skip
    cls = w.IntSlider if spec.is_int else w.FloatSlider
    return cls(
        value=spec.value, min=spec.min, max=spec.max, step=spec.step, description=spec.description or name,
        continuous_update=False, style={"description_width": "initial"},
    )  # fmt: skip


def interactive_figure(
    draw: Callable[..., Any], live: bool = True, **controls: Slider | Choice | Any
) -> dict[str, Any]:
    """Show ``draw(**defaults)`` now, and controls that redraw it when widgets can run.

    Arguments:
      draw (Callable): returns a matplotlib Figure (or anything IPython can display) for keyword values.
      live (bool): False shows only the static figure (e.g. for headless runs).
      **controls: a :class:`Slider` or :class:`Choice` per keyword of ``draw``; any other value is
        passed through fixed.

    Returns:
      (dict[str, Any]): ``{"values": defaults, "widgets": {name: widget} or {}}``.
    """
    from IPython.display import display

    values = {k: (v.value if isinstance(v, Slider | Choice) else v) for k, v in controls.items()}
    handle = display(_render(draw, values), display_id=True)
    sliders = {k: v for k, v in controls.items() if isinstance(v, Slider | Choice)}
    if not (live and sliders and widgets_available()):
        return {"values": values, "widgets": {}}
    import ipywidgets as w

    made = {k: _make_widget(k, spec) for k, spec in sliders.items()}

    def update(_change: Any = None) -> None:
        current = dict(values, **{k: wd.value for k, wd in made.items()})
        if handle is not None:
            handle.update(_render(draw, current))

    for wd in made.values():
        wd.observe(update, names="value")
    display(w.HBox(list(made.values())))
    return {"values": values, "widgets": made}


def _render(draw: Callable[..., Any], values: dict[str, Any]) -> Any:
    """Call ``draw`` and close a returned matplotlib figure (so it is not shown twice by the backend)."""
    out = draw(**values)
    try:
        import matplotlib.pyplot as plt
        from matplotlib.figure import Figure
    except ImportError:  # pragma: no cover - matplotlib is a dependency
        return out
    if isinstance(out, Figure):
        plt.close(out)
    return out


# --- Click-to-prompt: points and boxes on an image, the mask live from the cached embedding -------------


class ClickPrompter:
    """Prompt SAM by clicking on an image in JupyterLab: left click = positive point, right click (or
    the "negative" toggle) = negative point, drag = box; the mask is re-predicted from the cached
    embedding after every click (the encoder ran once, in the constructor). "accept" keeps the current
    mask as one object and starts the next; undo / clear / export act on the prompts and the objects
    (the "export" button writes :meth:`export_masks` as ``.npy``, and GeoJSON beside it when the image
    is georeferenced).

    Built on ``ipyevents`` (mouse events on an ``ipywidgets.Image``): a maintained, small extension
    that reports clicks with button and image pixel coordinates (``dataX``/``dataY``), so no canvas
    drawing code is needed. The logic (:meth:`click`, :meth:`drag`, :meth:`undo`, ...) is plain Python
    and works without a browser; :meth:`widget` only wires events to it.

    Arguments:
      predictor (PromptPredictor): a :class:`samlib.predict.PromptPredictor`.
      image (np.ndarray): (H, W, 3) uint8 RGB.
      transform (Sequence[float] | None): affine pixel -> map transform when the image is georeferenced
        (e.g. a :class:`samlib.geo.GeoImage`'s), for GeoJSON export.
      crs (str | None): its CRS.
    """

    def __init__(
        self, predictor: Any, image: Any, transform: Sequence[float] | None = None, crs: str | None = None
    ) -> None:
        import numpy as np

        self.predictor = predictor
        self.image = np.ascontiguousarray(image)
        self.transform = transform
        self.crs = crs
        self.points: list[tuple[float, float]] = []
        self.labels: list[int] = []
        self.box: tuple[float, float, float, float] | None = None
        self.objects: list[Any] = []  # accepted (H, W) bool masks
        self.negative_mode = False
        self._history: list[str] = []  # "point" / "box" / "accept", for undo
        self._mask: Any = None
        self._image_widget: Any = None
        self._status: Any = None
        predictor.set_image(self.image)

    # --- prompting (no browser needed) ---------------------------------------------------------------

    @property
    def mask(self) -> Any:
        """(H, W) bool mask of the current prompts (all False without any)."""
        import numpy as np

        return self._mask if self._mask is not None else np.zeros(self.image.shape[:2], dtype=bool)

    def _predict(self) -> None:
        import numpy as np

        if not self.points and self.box is None:
            self._mask = None
            return
        coords = np.array(self.points, dtype=np.float32).reshape(-1, 2) if self.points else None
        labels = np.array(self.labels) if self.points else None
        box = np.array(self.box, dtype=np.float32) if self.box is not None else None
        multimask = box is None and len(self.points) == 1  # one click is ambiguous: take the best of 3
        pred = self.predictor.predict(coords, labels, box=box, multimask_output=multimask)
        self._mask = pred.best()
        self._refresh()

    def click(self, x: float, y: float, positive: bool | None = None) -> Any:
        """Add a point at pixel (x, y); ``positive`` None follows the negative toggle. Returns the mask."""
        label = (not self.negative_mode) if positive is None else positive
        self.points.append((float(x), float(y)))
        self.labels.append(int(label))
        self._history.append("point")
        self._predict()
        return self.mask

    def drag(self, x0: float, y0: float, x1: float, y1: float) -> Any:
        """Set the box (replaces a previous one) from a drag between two pixels. Returns the mask."""
        self.box = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        self._history.append("box")
        self._predict()
        return self.mask

    def accept(self) -> None:
        """Keep the current mask as an object and start a new one."""
        if self._mask is not None and self._mask.any():
            self.objects.append(self._mask.copy())
            self._history.append("accept")
        self.points, self.labels, self.box, self._mask = [], [], None, None
        self._refresh()

    def undo(self) -> None:
        """Take back the last point, box or accepted object."""
        if not self._history:
            return
        last = self._history.pop()
        if last == "point":
            self.points.pop()
            self.labels.pop()
        elif last == "box":
            self.box = None
        else:
            self._mask = self.objects.pop()
            self._refresh()
            return
        self._predict()
        self._refresh()

    def clear(self) -> None:
        """Remove every prompt and object."""
        self.points, self.labels, self.box, self._mask = [], [], None, None
        self.objects, self._history = [], []
        self._refresh()

    def export_masks(self) -> Any:
        """(N, H, W) bool: the accepted objects, then the current mask if it is not empty."""
        import numpy as np

        masks = list(self.objects) + ([self._mask] if self._mask is not None and self._mask.any() else [])
        return np.stack(masks) if masks else np.zeros((0, *self.image.shape[:2]), dtype=bool)

    def export_geojson(self, path: str, simplify_tolerance: float = 0.0) -> str:
        """Write the exported masks as polygons (label = object number) in the image's CRS."""
        if self.transform is None:
            raise InvalidInputError(
                "The image is not georeferenced: pass transform= and crs= to export GeoJSON."
            )
        from samlib import geo

        polys = []
        for k, m in enumerate(self.export_masks(), start=1):
            polys += [(p, k) for p, _ in geo.masks_to_polygons(m, self.transform, simplify_tolerance)]
        return str(geo.write_vectors(path, polys, self.crs))

    def export(self, path: str = "clicked_masks.npy") -> list[str]:
        """Write :meth:`export_masks` to ``path`` (``.npy``) and, when the image is georeferenced, the
        polygons to ``path`` with ``.geojson``; returns the files written."""
        from pathlib import Path

        import numpy as np

        target = Path(path).with_suffix(".npy")
        target.parent.mkdir(parents=True, exist_ok=True)
        masks = self.export_masks()
        np.save(target, masks)
        written = [str(target)]
        if self.transform is not None and len(masks):
            written.append(self.export_geojson(str(target.with_suffix(".geojson"))))
        return written

    def render(self) -> Any:
        """(H, W, 3) uint8: the image with accepted objects (green), the current mask (blue) and the
        points (positive green, negative red) drawn over it."""
        import numpy as np

        out = self.image.astype(np.float32).copy()
        for m in self.objects:
            out[m] = 0.5 * out[m] + 0.5 * np.array([40, 200, 60])
        if self._mask is not None:
            out[self._mask] = 0.45 * out[self._mask] + 0.55 * np.array([30, 144, 255])
        h, w = self.image.shape[:2]
        r = max(2, min(h, w) // 100)
        for (x, y), lab in zip(self.points, self.labels, strict=True):
            y0, x0 = int(round(y)), int(round(x))
            out[max(0, y0 - r) : y0 + r + 1, max(0, x0 - r) : x0 + r + 1] = (
                (0, 230, 0) if lab else (230, 0, 0)
            )
        return out.astype(np.uint8)

    # --- the widget ----------------------------------------------------------------------------------

    def _refresh(self) -> None:
        if self._image_widget is not None:
            self._image_widget.value = _png_bytes(self.render())
        if self._status is not None:
            self._status.value = (
                f"points: {len(self.points)}, box: {'yes' if self.box else 'no'}, "
                f"mask: {int(self.mask.sum())} px, objects: {len(self.objects)}"
            )

    def widget(self, export_path: str = "clicked_masks.npy") -> Any:
        """The ipywidgets box: the clickable image, a status line and negative / accept / undo / clear /
        export buttons ("export" calls :meth:`export` with ``export_path``)."""
        import ipywidgets as W
        from ipyevents import Event

        self._status = W.Label(value="click inside an object (right click: negative point; drag: box)")
        self._image_widget = W.Image(value=_png_bytes(self.render()), format="png")
        self._image_widget.layout.max_width = f"{self.image.shape[1]}px"
        events = Event(
            source=self._image_widget,
            watched_events=["mousedown", "mouseup", "contextmenu"],
            prevent_default_action=True,
        )
        start: dict[str, float] = {}

        def on_event(ev: dict[str, Any]) -> None:
            if ev["type"] == "mousedown":
                start.update(x=ev["dataX"], y=ev["dataY"])
            elif ev["type"] == "mouseup" and start:
                x0, y0, x1, y1 = start["x"], start["y"], ev["dataX"], ev["dataY"]
                start.clear()
                if abs(x1 - x0) + abs(y1 - y0) > 6:
                    self.drag(x0, y0, x1, y1)
                else:
                    self.click(x1, y1, positive=False if ev.get("button") == 2 else None)

        events.on_dom_event(on_event)
        toggle = W.ToggleButton(description="negative", tooltip="clicks add negative points")
        toggle.observe(lambda ch: setattr(self, "negative_mode", bool(ch["new"])), names="value")
        buttons = []
        for name, action in [("accept", self.accept), ("undo", self.undo), ("clear", self.clear)]:
            button = W.Button(description=name)
            button.on_click(lambda _b, act=action: act())
            buttons.append(button)

        def on_export(_b: Any) -> None:
            files = self.export(export_path)
            n = len(self.export_masks())
            self._status.value = f"exported {n} mask{'' if n == 1 else 's'} to {', '.join(files)}"

        export = W.Button(description="export", tooltip=f"write the masks to {export_path}")
        export.on_click(on_export)
        box = W.VBox([self._image_widget, W.HBox([toggle, *buttons, export]), self._status])
        box._samlib_events = events  # keep the listener alive with the widget
        return box


def _png_bytes(image: Any) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", image[..., ::-1])
    if not ok:  # pragma: no cover - cv2 encodes any uint8 RGB array
        raise InvalidInputError("could not encode the image as PNG")
    return bytes(buf)


def click_widgets_available() -> bool:
    """True when :meth:`ClickPrompter.widget` can run (ipywidgets and ipyevents installed)."""
    try:
        import ipyevents  # noqa: F401
    except ImportError:
        return False
    return widgets_available()
