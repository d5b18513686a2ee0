"""Property-based tests (hypothesis) of samlib's public entry points: whatever the input, every call
either returns a valid result or raises a :class:`SamlibError` whose message names the bad argument,
never another exception type, never a hang (a per-example deadline)."""

from __future__ import annotations

import os
import re
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import samlib
from samlib import data, losses, metrics, results
from samlib.errors import SamlibError
from samlib.predict import PromptPredictor
from samlib.utils import as_uint8_rgb

FAST = settings(
    max_examples=15,
    deadline=timedelta(seconds=10),  # generous: the test machine is shared and loaded
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,  # the same examples every run
)

DTYPES = st.sampled_from(
    [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32, np.float64, np.bool_]
)


def _names(error: SamlibError, *names: str) -> bool:
    text = str(error).lower()
    return any(n.lower() in text for n in names)


@st.composite
def images(draw: Any) -> np.ndarray:
    dtype = draw(DTYPES)
    shape = draw(
        st.one_of(
            hnp.array_shapes(min_dims=2, max_dims=2, min_side=0, max_side=12),
            st.tuples(st.integers(0, 12), st.integers(0, 12), st.sampled_from([1, 2, 3, 4, 5])),
            hnp.array_shapes(min_dims=1, max_dims=4, min_side=1, max_side=5),
        )
    )
    elements = None
    if np.dtype(dtype).kind == "f":
        width = np.dtype(dtype).itemsize * 8
        elements = st.one_of(st.floats(-2, 300, width=width), st.sampled_from([np.nan, np.inf, 0.0, 1.0]))
    return draw(hnp.arrays(dtype, shape, elements=elements))


@FAST
@given(image=images())
def test_as_uint8_rgb_returns_rgb_or_names_the_image(image: np.ndarray) -> None:
    try:
        out = as_uint8_rgb(image)
    except SamlibError as e:
        assert _names(e, "image")
        return
    assert out.dtype == np.uint8 and out.ndim == 3 and out.shape[2] == 3 and out.shape[:2] == image.shape[:2]
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3:
        np.testing.assert_array_equal(out, image)


@FAST
@given(image=images(), low=st.floats(0, 60), width=st.floats(1, 40))
def test_stretch_to_uint8_is_monotonic_or_refuses(image: np.ndarray, low: float, width: float) -> None:
    from samlib.utils import stretch_to_uint8

    try:
        out = stretch_to_uint8(image, percentiles=(low, low + width))
    except SamlibError as e:
        assert _names(e, "array", "image", "percentiles")
        return
    assert out.shape == image.shape and out.dtype == np.uint8
    band = image if image.ndim == 2 else image[..., 0]
    flat, mapped = band.astype(np.float64).ravel(), (out if out.ndim == 2 else out[..., 0]).ravel()
    finite = np.isfinite(flat)
    order = np.argsort(flat[finite], kind="stable")
    assert np.all(np.diff(mapped[finite][order].astype(int)) >= 0)


@pytest.fixture(scope="module")
def predictor() -> PromptPredictor:
    from samlib.teaching import TeachingConfig, build_teaching_sam

    torch.manual_seed(0)
    sam = build_teaching_sam(TeachingConfig.tiny()).eval()
    sam.samlib_name = "hypothesis-tiny"
    p = PromptPredictor(sam)
    p.set_image(np.random.default_rng(0).integers(0, 256, (24, 32, 3), dtype=np.uint8))
    return p


COORD = st.one_of(
    st.floats(-50, 90), st.sampled_from([np.nan, np.inf, -np.inf, 1e30, -1e30, 0.0, 32.0, 24.0])
)


@FAST
@given(
    n=st.integers(0, 4),
    coords=st.lists(st.tuples(COORD, COORD), min_size=0, max_size=4),
    labels=st.lists(st.sampled_from([-1, 0, 1, 2, 0.5]), min_size=0, max_size=4),
    box=st.one_of(st.none(), st.lists(COORD, min_size=3, max_size=5)),
    multimask=st.booleans(),
)
def test_predict_returns_masks_or_names_the_prompt(
    predictor: PromptPredictor, n: int, coords: list, labels: list, box: list | None, multimask: bool
) -> None:
    pc = np.array(coords[:n], dtype=np.float64).reshape(-1, 2) if coords else None
    pl = np.array(labels[:n]) if coords else None
    b = None if box is None else np.array(box, dtype=np.float64)
    try:
        pred = predictor.predict(pc, pl, box=b, multimask_output=multimask)
    except SamlibError as e:
        assert _names(e, "point_coords", "point_labels", "box", "prompt")
        return
    k = 3 if multimask else 1
    assert pred.masks.shape == (k, 24, 32) and pred.masks.dtype == np.bool_
    assert np.isfinite(pred.scores).all()
    if pc is not None:  # accepted points lie on the image
        real = pl != -1
        assert np.all((pc[real] >= -0.5) & (pc[real] <= np.array([32.5, 24.5])))


@FAST
@given(
    b=st.integers(0, 3),
    boxes=hnp.arrays(np.float64, st.tuples(st.integers(0, 3), st.sampled_from([3, 4])), elements=COORD),
    labels=hnp.arrays(np.int64, st.tuples(st.integers(0, 3), st.integers(0, 3)), elements=st.integers(-2, 2)),
)
def test_predict_batch_returns_masks_or_names_the_prompt(
    predictor: PromptPredictor, b: int, boxes: np.ndarray, labels: np.ndarray
) -> None:
    rng = np.random.default_rng(b)
    coords = rng.uniform(-10, 40, (*labels.shape, 2))
    try:
        pred = predictor.predict_batch(boxes=boxes, point_coords=coords, point_labels=labels)
    except SamlibError as e:
        assert _names(e, "boxes", "point_coords", "point_labels", "prompt", "batch")
        return
    assert pred.masks.shape == (boxes.shape[0], 1, 24, 32) and np.isfinite(pred.scores).all()


MASKS = hnp.arrays(
    st.sampled_from([np.bool_, np.uint8, np.int32, np.float32, np.float64]),
    hnp.array_shapes(min_dims=1, max_dims=3, min_side=0, max_side=6),
)


@FAST
@given(pred=MASKS, gt=MASKS)
def test_pixel_metrics_are_ratios_or_name_the_masks(pred: np.ndarray, gt: np.ndarray) -> None:
    for fn in (metrics.iou, metrics.dice):
        try:
            value = fn(pred, gt)
        except SamlibError as e:
            assert _names(e, "pred", "gt")
            continue
        assert 0.0 <= value <= 1.0


@FAST
@given(
    preds=st.lists(MASKS, max_size=3),
    gts=st.lists(MASKS, max_size=3),
    average=st.sampled_from(["micro", "macro", "x"]),
)
def test_binary_scores_are_ratios_or_clear_errors(preds: list, gts: list, average: str) -> None:
    try:
        scores = metrics.binary_scores(preds, gts, average=average)
    except SamlibError as e:
        assert _names(e, "pred", "gt", "average", "mask", "pair")
        return
    assert all(0.0 <= v <= 1.0 for v in scores.values())


@FAST
@given(
    labels=hnp.arrays(np.int64, st.tuples(st.integers(0, 5), st.integers(0, 5)), elements=st.integers(-2, 6)),
    n=st.one_of(st.integers(-2, 8), st.just(10**5)),
    ignore=st.one_of(st.none(), st.integers(-1, 6)),
)
def test_confusion_matrix_counts_or_names_the_labels(labels: np.ndarray, n: int, ignore: int | None) -> None:
    try:
        cm = metrics.confusion_matrix(labels, labels[::-1], n, ignore_index=ignore)
    except SamlibError as e:
        assert _names(e, "num_classes", "labels", "label maps")
        return
    assert cm.shape == (n, n) and cm.sum() == (
        labels.size if ignore is None else np.sum(labels[::-1] != ignore)
    )


@FAST
@given(ious=st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=6))
def test_precision_at_iou_is_a_fraction_or_names_the_ious(ious: list[float]) -> None:
    try:
        out = metrics.precision_at_iou(ious)
    except SamlibError as e:
        assert _names(e, "iou")
        return
    assert all(0.0 <= v <= 1.0 for v in out.values())


@FAST
@given(
    target=hnp.arrays(
        np.float32,
        st.sampled_from([(2, 1, 4, 4), (2, 4, 4), (1, 1, 4, 4)]),
        elements=st.floats(-1, 300, width=32),
    ),
)
def test_losses_are_finite_or_name_the_target(target: np.ndarray) -> None:
    logits = torch.zeros(2, 1, 4, 4)
    for fn in (losses.dice_loss, losses.bce_dice_loss, losses.dice_focal_loss):
        try:
            value = fn(logits, torch.from_numpy(target))
        except SamlibError as e:
            assert _names(e, "target")
            continue
        assert torch.isfinite(value) and float(value) >= -1e-6


@FAST
@given(
    chapter=st.text(min_size=0, max_size=40), value=st.one_of(st.floats(), st.integers(), st.text(max_size=3))
)
def test_write_results_stays_in_its_folder_or_names_the_argument(
    tmp_path_factory: pytest.TempPathFactory, chapter: str, value: Any
) -> None:
    folder = tmp_path_factory.mktemp("res")
    os.environ["SAMLIB_RESULTS_DIR"] = str(folder / "out")
    try:
        path = results.write_results(None, chapter=chapter, setting="s", results={"m": {"x": value}})
    except SamlibError as e:
        assert _names(e, "chapter", "results", "setting")
        return
    finally:
        os.environ.pop("SAMLIB_RESULTS_DIR", None)
    assert path is not None and path.resolve().parent == (folder / "out").resolve()
    assert results.read_results(path)["results"]["m"]["x"] == float(value)


CORRUPT = st.one_of(
    st.binary(max_size=300),
    st.sampled_from(
        [b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff\xe0", b"II*\x00", b"MM\x00*", b"{", b"[" * 5000]
    ),
)


@FAST
@given(content=CORRUPT, suffix=st.sampled_from([".png", ".jpg", ".tif"]))
def test_corrupt_image_files_are_clear_errors_naming_the_file(
    tmp_path_factory: pytest.TempPathFactory, content: bytes, suffix: str
) -> None:
    path = tmp_path_factory.mktemp("img") / f"bad{suffix}"
    path.write_bytes(content)
    try:
        img = data._read_image(path)
    except SamlibError as e:
        assert path.name in str(e)
        return
    assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


@FAST
@given(content=CORRUPT)
def test_corrupt_results_and_checkpoints_are_clear_errors(
    tmp_path_factory: pytest.TempPathFactory, content: bytes
) -> None:
    folder = tmp_path_factory.mktemp("files")
    (folder / "r.json").write_bytes(content)
    (folder / "c.pt").write_bytes(content)
    (folder / "boxes_coco.json").write_bytes(content)
    for call in (
        lambda: results.read_results(folder / "r.json"),
        lambda: samlib.load_sam(str(folder / "c.pt"), device="cpu"),
        lambda: data._coco_boxes(str(folder / "boxes_coco.json")),
    ):
        with pytest.raises(SamlibError) as info:
            call()
        assert re.search(r"r\.json|c\.pt|boxes_coco\.json", str(info.value))
    data._coco_boxes.cache_clear()


TOKEN = st.one_of(
    st.sampled_from(["0", "1", "4", "7", "-1", "1.5", "nan", "inf", "0.5", "0.0", "1.0", "450", "-0.2", "x"]),
    st.floats(-2, 2).map(lambda v: f"{v:.3f}"),
)


@FAST
@given(lines=st.lists(st.lists(TOKEN, min_size=0, max_size=7).map(" ".join), max_size=4))
def test_yolo_labels_load_in_the_image_or_name_file_and_line(
    tmp_path_factory: pytest.TempPathFactory, lines: list[str]
) -> None:
    path = tmp_path_factory.mktemp("yolo") / "p.txt"
    path.write_text("\n".join(lines))
    try:
        boxes, labels = data._read_yolo(path, 90, 60)
    except SamlibError as e:
        assert "p.txt, line" in str(e)
        return
    assert np.isfinite(boxes).all() and len(boxes) == len(labels)
    assert np.all(
        (boxes[:, [0, 2]] >= 0)
        & (boxes[:, [0, 2]] <= 90)
        & (boxes[:, [1, 3]] >= 0)
        & (boxes[:, [1, 3]] <= 60)
    )
    assert np.all((labels >= 0) & (labels < data.MARS_NUM_CLASSES))
