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

__all__ = ["Choice", "Slider", "choice", "interactive_figure", "slider", "widgets_available"]


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
