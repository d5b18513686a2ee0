"""samlib.widgets.ClickPrompter: the click / drag / undo / export logic, and its widget wiring."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from samlib.predict import PromptPredictor
from samlib.widgets import ClickPrompter


@pytest.fixture
def prompter(tiny_sam, rng) -> ClickPrompter:
    image = rng.integers(0, 256, (48, 56, 3), dtype=np.uint8)
    return ClickPrompter(
        PromptPredictor(tiny_sam), image, transform=(0.5, 0, 300000, 0, -0.5, 2780000), crs="EPSG:32640"
    )


def test_clicks_predict_from_the_cached_embedding(prompter: ClickPrompter) -> None:
    pred = prompter.predictor
    misses = pred.cache.misses
    m1 = prompter.click(20, 20)
    expected = pred.predict(np.array([[20.0, 20.0]]), np.array([1]), multimask_output=True).best()
    np.testing.assert_array_equal(m1, expected)
    prompter.click(40, 10, positive=False)
    assert prompter.labels == [1, 0]
    prompter.drag(30, 30, 5, 5)
    assert prompter.box == (5, 5, 30, 30)
    assert pred.cache.misses == misses  # no encoder run after the constructor
    prompter.undo()  # removes the box
    assert prompter.box is None and len(prompter.points) == 2
    prompter.negative_mode = True
    prompter.click(1, 1)
    assert prompter.labels[-1] == 0


def test_accept_undo_clear_and_export(prompter: ClickPrompter, tmp_path: Path) -> None:
    pytest.importorskip("fiona")
    prompter.drag(5, 5, 30, 30)
    current = prompter.mask.copy()
    prompter.accept()
    assert len(prompter.objects) == int(current.any()) and not prompter.points
    masks = prompter.export_masks()
    assert masks.shape == (len(prompter.objects), 48, 56)
    if current.any():
        out = prompter.export_geojson(str(tmp_path / "clicks.geojson"))
        assert Path(out).exists()
        prompter.undo()  # brings the accepted object back as the current mask
        np.testing.assert_array_equal(prompter.mask, current)
    prompter.clear()
    assert prompter.export_masks().shape[0] == 0 and not prompter.mask.any()
    assert prompter.render().shape == (48, 56, 3)


def test_widget_routes_mouse_events(prompter: ClickPrompter) -> None:
    pytest.importorskip("ipyevents")
    box = prompter.widget()
    events = box._samlib_events
    events._dom_handlers({"type": "mousedown", "dataX": 10, "dataY": 12, "button": 0})
    events._dom_handlers({"type": "mouseup", "dataX": 10, "dataY": 12, "button": 0})
    assert prompter.points == [(10.0, 12.0)] and prompter.labels == [1]
    events._dom_handlers({"type": "mousedown", "dataX": 30, "dataY": 30, "button": 2})
    events._dom_handlers({"type": "mouseup", "dataX": 30, "dataY": 30, "button": 2})
    assert prompter.labels == [1, 0]
    events._dom_handlers({"type": "mousedown", "dataX": 2, "dataY": 3, "button": 0})
    events._dom_handlers({"type": "mouseup", "dataX": 40, "dataY": 44, "button": 0})
    assert prompter.box == (2, 3, 40, 44)
    assert prompter._image_widget.value[:4] == b"\x89PNG"


def test_export_writes_numpy_and_geojson(prompter: ClickPrompter, tmp_path: Path) -> None:
    pytest.importorskip("fiona")
    prompter.drag(5, 5, 30, 30)
    prompter.accept()
    prompter.click(40, 30)
    files = prompter.export(str(tmp_path / "out" / "clicked.npy"))
    saved = np.load(files[0])
    np.testing.assert_array_equal(saved, prompter.export_masks())
    assert files[0].endswith(".npy")
    if len(saved):
        assert files[1].endswith(".geojson") and Path(files[1]).exists()


def test_widget_export_button_and_status(prompter: ClickPrompter, tmp_path: Path) -> None:
    pytest.importorskip("ipyevents")
    box = prompter.widget(export_path=str(tmp_path / "w.npy"))
    status = box.children[-1]
    prompter.click(20, 20)
    assert status.value.startswith("points: 1,")
    export = [b for b in box.children[1].children if getattr(b, "description", "") == "export"][0]
    export.click()
    assert (tmp_path / "w.npy").exists() and status.value.startswith("exported ")
