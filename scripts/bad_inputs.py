"""Bad-input harness: feed samlib's public entry points what an attacker or a careless user would.

Not a test (it has no pass/fail): it prints how each of a few hundred cases ended.

* ``ok``: a valid input gave a valid result;
* ``clear``: a :class:`samlib.SamlibError` (for the command line: an argparse error or a samlib error
  as the last line, no other traceback);
* ``raw``: any other exception (a raw numpy / torch / PIL / json traceback);
* ``silent``: a result came back where an error was due, or the result is wrong (truncated image,
  NaN metric, a file written outside its folder, code run from a pickle);
* ``refused``: a clear error for a valid input;
* ``hang``: the case ran past its time limit.

    PYTHONPATH=. python scripts/bad_inputs.py            # this checkout
    PYTHONPATH=/path/to/other python scripts/bad_inputs.py --quiet

Only APIs that exist since the first release are called, so the same script measures older code.
Under load the whole run takes a few minutes (command-line cases start Python processes).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.server
import io
import json
import os
import pickle
import signal
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import samlib  # before torch / segment_anything (see samlib._compat)

# isort: split
import numpy as np
import torch
from PIL import Image

from samlib import SamlibError, metrics, results
from samlib.teaching import TeachingConfig, build_teaching_sam

torch.set_num_threads(1)

ERROR = "error"  # the case expects a SamlibError
CLI_TIMEOUT_S = 150.0  # a command-line case that runs longer counts as a hang
Check = Callable[[Any], bool]


@dataclass
class Case:
    group: str
    name: str
    run: Callable[[], Any]
    expect: str | Check = ERROR  # ERROR, or a check of the returned value
    limit_s: float = 30.0
    either: bool = False  # a clear error is as good as a result that passes ``expect``


class _Hang(BaseException):
    pass


def _alarm(signum: int, frame: Any) -> None:
    raise _Hang()


def classify(case: Case) -> tuple[str, str]:
    signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, case.limit_s)
    try:
        value = case.run()
    except _Hang:
        return "hang", f"> {case.limit_s:g} s"
    except SamlibError as e:
        kind = "clear" if case.expect == ERROR or case.either else "refused"
        return kind, f"{type(e).__name__}: {str(e)[:150]}"
    except Exception as e:
        tb = traceback.extract_tb(e.__traceback__)[-1]
        return "raw", f"{type(e).__name__}: {str(e)[:120]} ({Path(tb.filename).name}:{tb.lineno})"
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
    if case.expect == ERROR:
        return "silent", f"returned {_short(value)}"
    try:
        good = bool(case.expect(value))  # type: ignore[operator]
    except Exception as e:
        good, value = False, f"check failed: {type(e).__name__}: {e}"
    return ("ok" if good else "silent"), _short(value)


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"array{value.shape} {value.dtype}"
    text = " ".join(repr(value).split())
    return text[:120]


# --------------------------------------------------------------------------------------------- fixtures

TMP = Path(tempfile.mkdtemp(prefix="samlib-bad-inputs-"))


def tiny_sam() -> Any:
    torch.manual_seed(0)
    sam = build_teaching_sam(TeachingConfig.tiny()).eval()
    sam.samlib_name = "harness-tiny"
    return sam


SAM = tiny_sam()
PREDICTOR = samlib.PromptPredictor(SAM)
H, W = 48, 64
RGB = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
PREDICTOR.set_image(RGB)


def valid_rgb(h: int, w: int) -> Check:
    return lambda out: isinstance(out, np.ndarray) and out.shape == (h, w, 3) and out.dtype == np.uint8


def same_as(expected: np.ndarray) -> Check:
    return lambda out: (
        isinstance(out, np.ndarray) and out.shape == expected.shape and np.array_equal(out, expected)
    )


def not_truncated(source: np.ndarray) -> Check:
    """A conversion keeps the image's contrast: ordering of values kept, the range well used."""

    def check(out: Any) -> bool:
        if not (isinstance(out, np.ndarray) and out.dtype == np.uint8 and out.ndim == 3):
            return False
        grey = out[..., 0].astype(float).ravel()
        src = np.asarray(source, float)
        src = (src if src.ndim == 2 else src[..., 0]).ravel()
        spread = np.percentile(grey, 95) - np.percentile(grey, 5)
        corr = np.corrcoef(grey, src)[0, 1] if grey.std() > 0 else 0.0
        saturated = np.mean(grey >= 255)
        return bool(spread > 100 and corr > 0.9 and saturated < 0.2)

    return check


def prediction_ok(batch: bool) -> Check:
    def check(p: Any) -> bool:
        masks, scores = p.masks, p.scores
        ndim = 4 if batch else 3
        return bool(
            masks.ndim == ndim
            and masks.shape[-2:] == (H, W)
            and masks.dtype == np.bool_
            and np.isfinite(scores).all()
        )

    return check


def finite_number(x: Any) -> bool:
    return isinstance(x, float) and np.isfinite(x)


def finite_dict(d: Any) -> bool:
    return isinstance(d, dict) and all(np.isfinite(v) for v in d.values())


# ----------------------------------------------------------------------------------------------- images


def image_cases() -> Iterator[Case]:
    rng = np.random.default_rng(1)
    as_rgb = samlib.utils.as_uint8_rgb
    shapes = {"grey": (H, W), "grey1": (H, W, 1), "rgb": (H, W, 3), "rgba": (H, W, 4)}
    for sname, shape in shapes.items():
        u8 = rng.integers(0, 256, shape, dtype=np.uint8)
        expected = u8 if sname == "rgb" else None
        yield Case(
            "image",
            f"uint8 {sname}",
            lambda a=u8: as_rgb(a),
            same_as(expected) if expected is not None else valid_rgb(H, W),
        )
        yield Case("image", f"bool {sname}", lambda a=u8 > 127: as_rgb(a), valid_rgb(H, W))
        f01 = rng.random(shape)
        for dt in (np.float32, np.float64, np.float16):
            cast = f01.astype(dt)
            yield Case(
                "image", f"{np.dtype(dt).name} [0,1] {sname}", lambda a=cast: as_rgb(a), valid_rgb(H, W)
            )
        yield Case("image", f"float 0..255 {sname}", lambda a=f01 * 255: as_rgb(a))
        yield Case("image", f"float negative {sname}", lambda a=f01 - 0.5: as_rgb(a))
        nan = f01.copy()
        nan[0, 0] = np.nan
        yield Case("image", f"float NaN {sname}", lambda a=nan: as_rgb(a))
        inf = f01.copy()
        inf[1, 1] = np.inf
        yield Case("image", f"float inf {sname}", lambda a=inf: as_rgb(a))
        for dt, hi in (
            (np.uint16, 2047),
            (np.uint16, 65535),
            (np.int16, 4000),
            (np.int32, 70000),
            (np.uint32, 300),
        ):
            a = rng.integers(0, hi + 1, shape).astype(dt)
            yield Case("image", f"{np.dtype(dt).name} 0..{hi} {sname}", lambda a=a: as_rgb(a))
        neg = rng.integers(-100, 100, shape).astype(np.int16)
        yield Case("image", f"int16 negative {sname}", lambda a=neg: as_rgb(a))
        small = rng.integers(0, 256, shape).astype(np.int64)
        yield Case("image", f"int64 0..255 {sname}", lambda a=small: as_rgb(a), valid_rgb(H, W))
        cplx = f01.astype(np.complex64)
        yield Case("image", f"complex {sname}", lambda a=cplx: as_rgb(a))
    for name, arr in {
        "channels first (3,H,W)": np.zeros((3, H, W), np.uint8),
        "2 channels": np.zeros((H, W, 2), np.uint8),
        "5 channels": np.zeros((H, W, 5), np.uint8),
        "1-D": np.zeros(W, np.uint8),
        "4-D batch": np.zeros((2, H, W, 3), np.uint8),
        "empty rows": np.zeros((0, W, 3), np.uint8),
        "empty cols": np.zeros((H, 0, 3), np.uint8),
        "0-d": np.array(5, np.uint8),
        "object dtype": np.array([[object()]], dtype=object),
        "string dtype": np.full((H, W), "a"),
        "RGBN uint16": rng.integers(0, 2048, (H, W, 4)).astype(np.uint16),
    }.items():
        yield Case("image", name, lambda a=arr: as_rgb(a))
    yield Case("image", "None", lambda: as_rgb(None))
    yield Case("image", "nested list ragged", lambda: as_rgb([[1, 2], [3]]))
    yield Case("image", "1x1 uint8", lambda: as_rgb(np.zeros((1, 1, 3), np.uint8)), valid_rgb(1, 1))
    yield Case(
        "image",
        "torch tensor uint8 HWC",
        lambda: as_rgb(torch.zeros(H, W, 3, dtype=torch.uint8)),
        valid_rgb(H, W),
    )
    # PIL images: 8-bit modes are fine; 16-bit / float modes must not be truncated by convert("RGB")
    grad16 = (np.linspace(0, 2047, H * W).reshape(H, W)).astype(np.uint16)
    gradf = np.linspace(0, 1, H * W, dtype=np.float32).reshape(H, W)
    for mode, img, check in (
        ("L", Image.fromarray(RGB[..., 0]), valid_rgb(H, W)),
        ("RGB", Image.fromarray(RGB), same_as(RGB)),
        ("RGBA", Image.fromarray(np.dstack([RGB, np.full((H, W), 255, np.uint8)])), same_as(RGB)),
        ("P", Image.fromarray(RGB).convert("P"), valid_rgb(H, W)),
        ("1", Image.fromarray(RGB[..., 0] > 127), valid_rgb(H, W)),
        ("I;16 0..2047", Image.fromarray(grad16), not_truncated(grad16)),
        ("I 0..70000", Image.fromarray(grad16.astype(np.int32) * 34), not_truncated(grad16)),
        ("F 0..1", Image.fromarray(gradf), not_truncated(gradf)),
        ("F 0..1000", Image.fromarray(gradf * 1000), not_truncated(gradf)),
    ):
        # a valid result or a clear error are both acceptable for the wide modes; truncation is not
        wide = mode[0] in "IF"
        yield Case("image-pil", f"PIL {mode}", lambda im=img: as_rgb(im), check, either=wide)
    # the same through PromptPredictor.set_image and embed_images
    for name, arr, exp in (
        ("uint8", RGB, lambda _: True),
        ("uint16 0..2047", grad16, ERROR),
        ("float 0..255", RGB.astype(np.float32), ERROR),
        ("NaN", np.full((H, W, 3), np.nan, np.float32), ERROR),
        ("(3,H,W)", RGB.transpose(2, 0, 1), ERROR),
    ):
        yield Case(
            "image-set", f"set_image {name}", lambda a=arr: samlib.PromptPredictor(SAM).set_image(a), exp
        )
        yield Case(
            "image-set",
            f"embed_images {name}",
            lambda a=arr: samlib.embed_images(SAM, [a], progress=False),
            (lambda e: len(e) == 1) if exp is not ERROR else ERROR,
        )
    yield Case("image-set", "embed_images []", lambda: samlib.embed_images(SAM, [], progress=False))
    yield Case(
        "image-set",
        "embed_images batch_size 0",
        lambda: samlib.embed_images(SAM, [RGB], batch_size=0, progress=False),
    )


# ---------------------------------------------------------------------------------------------- prompts


def prompt_cases() -> Iterator[Case]:
    p = PREDICTOR
    pts = {
        "x=10000": [[10000.0, 10.0]],
        "negative": [[-5.0, -5.0]],
        "1e30": [[1e30, 1e30]],
        "NaN": [[np.nan, 3.0]],
        "inf": [[np.inf, 3.0]],
        "y below": [[10.0, H + 50.0]],
    }
    for name, c in pts.items():
        yield Case("prompt", f"point {name}", lambda c=c: p.predict(np.array(c), np.array([1])))
        yield Case(
            "prompt-batch",
            f"point {name}",
            lambda c=c: p.predict_batch(point_coords=np.array([c]), point_labels=np.array([[1]])),
        )
    valid_pts = np.array([[10.0, 10.0], [30.0, 20.0]])
    yield Case("prompt", "valid points", lambda: p.predict(valid_pts, np.array([1, 0])), prediction_ok(False))
    yield Case(
        "prompt",
        "point on far border",
        lambda: p.predict(np.array([[W, H]], float), np.array([1])),
        prediction_ok(False),
    )
    yield Case(
        "prompt-batch",
        "valid points",
        lambda: p.predict_batch(point_coords=valid_pts[None], point_labels=np.array([[1, 0]])),
        prediction_ok(True),
    )
    yield Case("prompt", "empty points (0,2)", lambda: p.predict(np.zeros((0, 2)), np.zeros(0)))
    yield Case(
        "prompt-batch",
        "empty points (1,0,2)",
        lambda: p.predict_batch(point_coords=np.zeros((1, 0, 2)), point_labels=np.zeros((1, 0))),
    )
    yield Case("prompt", "only padding labels", lambda: p.predict(valid_pts, np.array([-1, -1])))
    yield Case(
        "prompt-batch",
        "only padding labels",
        lambda: p.predict_batch(point_coords=valid_pts[None], point_labels=np.array([[-1, -1]])),
    )
    yield Case(
        "prompt-batch",
        "padding + box",
        lambda: p.predict_batch(
            boxes=np.array([[5, 5, 30, 30.0]]),
            point_coords=valid_pts[None],
            point_labels=np.array([[-1, -1]]),
        ),
        prediction_ok(True),
    )
    for name, lab in {
        "label 2": [2, 1],
        "label 0.5": [0.5, 1],
        "label NaN": [np.nan, 1],
        "label str": ["a", "b"],
        "labels True": [True, False],
    }.items():
        yield Case("prompt", name, lambda lab=lab: p.predict(valid_pts, np.array(lab)))
    for name, (c, lab) in {
        "coords (2,)": ([10.0, 10.0], [1]),
        "coords (1,3)": ([[1.0, 2.0, 3.0]], [1]),
        "labels longer": ([[1.0, 2.0]], [1, 1]),
        "labels 2-D": ([[1.0, 2.0]], [[1]]),
        "coords str": ([["a", "b"]], [1]),
    }.items():
        yield Case("prompt", name, lambda c=c, lab=lab: p.predict(np.array(c), np.array(lab)))
    yield Case("prompt", "coords without labels", lambda: p.predict(valid_pts))
    yield Case("prompt", "labels without coords", lambda: p.predict(point_labels=np.array([1])))
    yield Case("prompt", "no prompt", lambda: p.predict())
    boxes = {
        "outside right": [W + 10, 0, W + 40, 20],
        "outside negative": [-50, -50, -10, -10],
        "inverted": [30, 30, 10, 10],
        "NaN": [np.nan, 0, 10, 10],
        "1e30": [0, 0, 1e30, 1e30],
    }
    for name, b in boxes.items():
        yield Case("prompt", f"box {name}", lambda b=b: p.predict(box=np.array(b, float)))
        yield Case("prompt-batch", f"box {name}", lambda b=b: p.predict_batch(boxes=np.array([b], float)))
    yield Case(
        "prompt",
        "box partly outside (clipped)",
        lambda: p.predict(box=np.array([-10, -10, 30, 30.0])),
        prediction_ok(False),
    )
    yield Case("prompt", "valid box", lambda: p.predict(box=np.array([5, 5, 30, 30.0])), prediction_ok(False))
    yield Case(
        "prompt-batch",
        "valid boxes",
        lambda: p.predict_batch(boxes=np.array([[5, 5, 30, 30.0], [0, 0, W, H]])),
        prediction_ok(True),
    )
    for name, b in {
        "(5,)": np.zeros(5),
        "(2,2)": np.zeros((2, 2)),
        "str": np.array(["a"] * 4),
        "(1,1,4)": np.zeros((1, 1, 4)),
    }.items():
        yield Case("prompt", f"box shape {name}", lambda b=b: p.predict(box=b))
    yield Case("prompt-batch", "boxes (0,4)", lambda: p.predict_batch(boxes=np.zeros((0, 4))))
    yield Case("prompt-batch", "boxes (4,)", lambda: p.predict_batch(boxes=np.array([1, 1, 5, 5.0])))
    yield Case(
        "prompt-batch",
        "batch sizes differ",
        lambda: p.predict_batch(
            boxes=np.array([[1, 1, 5, 5.0]] * 2),
            point_coords=valid_pts[None],
            point_labels=np.array([[1, 0]]),
        ),
    )
    size = SAM.prompt_encoder.mask_input_size
    yield Case(
        "prompt",
        "mask_input wrong size",
        lambda: p.predict(valid_pts, np.array([1, 0]), mask_input=np.zeros((1, 7, 7))),
    )
    yield Case(
        "prompt",
        "mask_input NaN",
        lambda: p.predict(valid_pts, np.array([1, 0]), mask_input=np.full((1, *size), np.nan)),
    )
    yield Case(
        "prompt",
        "mask_input valid",
        lambda: p.predict(valid_pts, np.array([1, 0]), mask_input=np.zeros((1, *size))),
        prediction_ok(False),
    )
    yield Case(
        "prompt", "no image set", lambda: samlib.PromptPredictor(SAM).predict(box=np.array([1, 1, 5, 5.0]))
    )


# ---------------------------------------------------------------------------------------------- metrics


def metric_cases() -> Iterator[Case]:
    rng = np.random.default_rng(2)
    a = rng.random((16, 16)) > 0.5
    b = rng.random((16, 16)) > 0.5
    prob = rng.random((16, 16))
    for fn in (metrics.iou, metrics.dice):
        n = fn.__name__
        yield Case("metric", f"{n} valid", lambda fn=fn: fn(a, b), finite_number)
        yield Case("metric", f"{n} shape mismatch", lambda fn=fn: fn(a, b[:8]))
        yield Case("metric", f"{n} probabilities", lambda fn=fn: fn(prob, b))
        yield Case("metric", f"{n} NaN", lambda fn=fn: fn(np.full((4, 4), np.nan), b[:4, :4]))
        yield Case("metric", f"{n} strings", lambda fn=fn: fn(np.full((4, 4), "x"), b[:4, :4]))
        yield Case("metric", f"{n} None", lambda fn=fn: fn(None, b))
    yield Case("metric", "binary_scores valid", lambda: metrics.binary_scores([a], [b]), finite_dict)
    yield Case("metric", "binary_scores unequal lists", lambda: metrics.binary_scores([a, a], [b]))
    yield Case("metric", "binary_scores empty", lambda: metrics.binary_scores([], []))
    yield Case("metric", "binary_scores average=x", lambda: metrics.binary_scores([a], [b], average="x"))
    yield Case("metric", "overall_iou unequal", lambda: metrics.overall_iou([a, a], [b]))
    yield Case("metric", "segmentation_scores unequal", lambda: metrics.segmentation_scores([a, a], [b]))
    yield Case(
        "metric", "segmentation_scores valid", lambda: metrics.segmentation_scores([a], [b]), finite_dict
    )
    for name, ious in {
        "1.7": [0.5, 1.7],
        "-3": [-3.0, 0.2],
        "NaN": [np.nan],
        "empty": [],
        "strings": ["a"],
    }.items():
        yield Case("metric", f"precision_at_iou {name}", lambda ious=ious: metrics.precision_at_iou(ious))
    yield Case("metric", "precision_at_iou valid", lambda: metrics.precision_at_iou([0.4, 0.9]), finite_dict)
    labels = rng.integers(0, 3, (16, 16))
    for name, n in {"0": 0, "-1": -1, "10**5": 10**5, "2.5": 2.5, "None": None}.items():
        yield Case(
            "metric",
            f"confusion_matrix num_classes={name}",
            lambda n=n: metrics.confusion_matrix(labels, labels, n),
        )
    yield Case(
        "metric",
        "confusion_matrix labels >= num_classes",
        lambda: metrics.confusion_matrix(labels, labels, 2),
    )
    yield Case(
        "metric", "confusion_matrix float labels", lambda: metrics.confusion_matrix(labels * 0.5, labels, 3)
    )
    yield Case(
        "metric", "confusion_matrix shape mismatch", lambda: metrics.confusion_matrix(labels, labels[:4], 3)
    )
    yield Case("metric", "mean_iou valid", lambda: metrics.mean_iou(labels, labels, 3), finite_number)
    yield Case(
        "metric",
        "semantic_scores float preds 0.7",
        lambda: metrics.semantic_scores([np.full((4, 4), 0.7)], [np.ones((4, 4), int)], ["bg", "fg"]),
    )
    yield Case(
        "metric",
        "semantic_scores unequal",
        lambda: metrics.semantic_scores([labels, labels], [labels], ["a", "b", "c"]),
    )
    yield Case(
        "metric",
        "semantic_scores valid",
        lambda: metrics.semantic_scores([labels], [labels], ["a", "b", "c"]),
        finite_dict,
    )
    yield Case(
        "metric", "semantic_scores no classes", lambda: metrics.semantic_scores([labels], [labels], [])
    )
    nanbox = [np.array([[np.nan, 40.5, np.nan, 49.5]])]
    yield Case("metric", "object_scores NaN box", lambda: metrics.object_scores([a], nanbox))
    yield Case("metric", "object_scores unequal", lambda: metrics.object_scores([a, a], [np.zeros((0, 4))]))
    yield Case("metric", "object_scores box shape (3,)", lambda: metrics.object_scores([a], [np.zeros(3)]))
    yield Case(
        "metric",
        "object_scores probabilities",
        lambda: metrics.object_scores([prob], [np.array([[0, 0, 5, 5]])]),
    )
    yield Case(
        "metric",
        "object_scores valid",
        lambda: metrics.object_scores([a], [np.array([[0, 0, 5, 5]])]),
        finite_dict,
    )
    yield Case(
        "metric", "best_match_ious shape mismatch", lambda: metrics.best_match_ious(a[None], b[None, :8])
    )
    yield Case("metric", "best_match_ious 2-D", lambda: metrics.best_match_ious(a, b))


# ----------------------------------------------------------------------------------------------- losses


def loss_cases() -> Iterator[Case]:
    from samlib import losses

    logits = torch.randn(2, 1, 8, 8)
    target = (torch.rand(2, 1, 8, 8) > 0.5).float()

    def non_negative(x: Any) -> bool:
        return isinstance(x, torch.Tensor) and bool(torch.isfinite(x)) and float(x) >= 0

    for fn in (losses.dice_loss, losses.bce_dice_loss, losses.dice_focal_loss, losses.sigmoid_focal_loss):
        n = fn.__name__
        yield Case("loss", f"{n} valid", lambda fn=fn: fn(logits, target), non_negative)
        yield Case("loss", f"{n} (B,H,W) target", lambda fn=fn: fn(logits, target[:, 0]), non_negative)
        yield Case("loss", f"{n} 0/255 target", lambda fn=fn: fn(logits, target * 255))
        yield Case("loss", f"{n} NaN target", lambda fn=fn: fn(logits, torch.full_like(target, float("nan"))))
        yield Case("loss", f"{n} shape mismatch", lambda fn=fn: fn(logits, target[:1]))
        yield Case("loss", f"{n} numpy target", lambda fn=fn: fn(logits, target.numpy()))
    yield Case("loss", "focal reduction=x", lambda: losses.sigmoid_focal_loss(logits, target, reduction="x"))
    yield Case("loss", "mask_iou_logits mismatch", lambda: losses.mask_iou_logits(logits, target[..., :4]))


# ------------------------------------------------------------------------------------ training entry points


def training_cases() -> Iterator[Case]:
    from samlib.decoders import train_domain_decoder
    from samlib.experts import unet

    rng = np.random.default_rng(3)
    imgs = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    emb = samlib.embed_images(SAM, imgs, progress=False)
    m01 = [(rng.random((32, 32)) > 0.5).astype(np.uint8) for _ in range(2)]

    def losses_ok(out: Any) -> bool:
        hist = out[1]
        return all(np.isfinite(h) and h >= 0 for h in hist)

    yield Case(
        "train", "domain decoder 0/1 masks", lambda: train_domain_decoder(emb, m01, steps=2), losses_ok
    )
    yield Case(
        "train",
        "domain decoder 0/255 masks",
        lambda: train_domain_decoder(emb, [m * 255 for m in m01], steps=2),
    )
    yield Case(
        "train",
        "domain decoder NaN masks",
        lambda: train_domain_decoder(emb, [np.full((32, 32), np.nan)] * 2, steps=2),
    )
    yield Case(
        "train", "domain decoder 1 mask for 2 images", lambda: train_domain_decoder(emb, m01[:1], steps=2)
    )
    yield Case(
        "train",
        "domain decoder wrong mask size",
        lambda: train_domain_decoder(emb, [m[:16] for m in m01], steps=2),
    )
    yield Case("train", "domain decoder steps=0", lambda: train_domain_decoder(emb, m01, steps=0))
    yield Case(
        "train", "domain decoder lr=nan", lambda: train_domain_decoder(emb, m01, steps=2, lr=float("nan"))
    )
    kw = dict(n_classes=2, steps=2, crop=16, base=4, seed=0, device="cpu")
    yield Case("train", "unet int labels", lambda: unet.train_unet(imgs, m01, **kw), losses_ok)
    yield Case("train", "unet float labels 0.7", lambda: unet.train_unet(imgs, [m * 0.7 for m in m01], **kw))
    yield Case("train", "unet labels out of range", lambda: unet.train_unet(imgs, [m * 5 for m in m01], **kw))
    yield Case("train", "unet unequal lists", lambda: unet.train_unet(imgs, m01[:1], **kw))
    yield Case("train", "unet ragged labels", lambda: unet.train_unet(imgs, [m01[0], m01[1][:16]], **kw))


# ------------------------------------------------------------------------------------------------- files


def _png(path: Path, arr: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)
    return path


def _corrupt_variants(folder: Path, good: Path) -> dict[str, Path]:
    data = good.read_bytes()
    out = {}
    for name, content in {
        "0-byte": b"",
        "truncated": data[: len(data) // 3],
        "random bytes": os.urandom(300),
        "text": b"hello, I am not an image\n",
    }.items():
        p = folder / f"{name.replace(' ', '_')}{good.suffix}"
        p.write_bytes(content)
        out[name] = p
    return out


def roads_root(variant: str) -> Path:
    """A tiny roads-eth tree whose one image or mask is replaced according to ``variant``."""
    root = TMP / f"roads-{variant.replace(' ', '_')}"
    img_dir, mask_dir = root / "roads-eth" / "images", root / "roads-eth" / "masks"
    rng = np.random.default_rng(4)
    for i in range(3):
        _png(img_dir / f"t{i}.png", rng.integers(0, 256, (40, 40, 3), dtype=np.uint8))
        _png(mask_dir / f"t{i}.png", ((rng.random((40, 40)) > 0.5) * 255).astype(np.uint8))
    target_img, target_mask = img_dir / "t1.png", mask_dir / "t1.png"
    what, _, kind = variant.partition(":")
    target = target_img if what == "image" else target_mask
    if kind == "missing":
        target.unlink()
        if what == "image":  # a mask without its image is simply not listed: drop the other way round
            _png(target_img, np.zeros((40, 40, 3), np.uint8))
            target_mask.unlink()
    elif kind == "16-bit grey":
        Image.fromarray((np.linspace(0, 2047, 1600).reshape(40, 40)).astype(np.uint16)).save(target)
    elif kind == "wrong size":
        _png(target, np.zeros((20, 30), np.uint8))
    elif kind:
        data = target.read_bytes()
        content = {"0-byte": b"", "truncated": data[: len(data) // 3], "random": os.urandom(200)}[kind]
        target.write_bytes(content)
    return root


def file_cases() -> Iterator[Case]:
    from samlib import data

    def samples_ok(n: int) -> Check:
        return lambda s: len(s) == n and all(x.image.dtype == np.uint8 and x.image.ndim == 3 for x in s)

    yield Case("file", "roads-eth valid", lambda: data.load_roads_eth(roads_root("")), samples_ok(3))
    for what in ("image", "mask"):
        for kind in ("missing", "0-byte", "truncated", "random", "wrong size"):
            v = f"{what}:{kind}"
            yield Case("file", f"roads-eth {v}", lambda v=v: data.load_roads_eth(roads_root(v)))

    def grey16_ok(s: Any) -> bool:
        img = s[1].image[..., 0]
        return float(np.mean(img == 255)) < 0.2 and img.max() > 200 and img.min() < 50

    yield Case(
        "file",
        "roads-eth 16-bit grey image",
        lambda: data.load_roads_eth(roads_root("image:16-bit grey")),
        grey16_ok,
    )
    # direct image reads, all formats
    rng = np.random.default_rng(5)
    good_png = _png(TMP / "img" / "good.png", rng.integers(0, 256, (30, 30, 3), dtype=np.uint8))
    good_jpg = TMP / "img" / "good.jpg"
    Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(good_jpg)
    for good in (good_png, good_jpg):
        for name, path in _corrupt_variants(TMP / "img", good).items():
            yield Case("file", f"read {good.suffix} {name}", lambda p=path: data._read_image(p))
    yield Case("file", "read missing file", lambda: data._read_image(TMP / "img" / "nope.png"))
    import tifffile

    tif = TMP / "tif"
    tif.mkdir(exist_ok=True)
    g16 = (np.linspace(0, 2047, 900).reshape(30, 30)).astype(np.uint16)
    tifffile.imwrite(tif / "u16.tif", np.dstack([g16] * 3))
    tifffile.imwrite(tif / "u16grey.tif", g16)
    tifffile.imwrite(tif / "f32.tif", (g16 / 2047.0).astype(np.float32))
    tifffile.imwrite(tif / "rgbn.tif", np.dstack([g16] * 4), photometric="rgb", extrasamples=[0])
    tifffile.imwrite(
        tif / "rgbn8.tif", np.dstack([(g16 // 8).astype(np.uint8)] * 4), photometric="rgb", extrasamples=[0]
    )
    tifffile.imwrite(
        tif / "planar.tif", np.stack([g16.astype(np.uint8)] * 3), photometric="rgb", planarconfig="separate"
    )
    yield Case(
        "file", "tif uint16 RGB 0..2047", lambda: data._read_image(tif / "u16.tif"), not_truncated(g16)
    )
    yield Case("file", "tif uint16 grey", lambda: data._read_image(tif / "u16grey.tif"), not_truncated(g16))
    yield Case("file", "tif float32 0..1", lambda: data._read_image(tif / "f32.tif"), not_truncated(g16))
    yield Case("file", "tif RGBN uint16", lambda: data._read_image(tif / "rgbn.tif"))
    yield Case("file", "tif RGBN uint8", lambda: data._read_image(tif / "rgbn8.tif"))
    yield Case(
        "file",
        "tif planar RGB",
        lambda: data._read_image(tif / "planar.tif"),
        lambda out: out.shape == (30, 30, 3),
    )
    # YOLO labels (mars-pits)
    yolo = {
        "valid": (
            "0 0.5 0.5 0.1 0.1\n",
            lambda s: len(s) == 1 and np.isfinite(s[0].boxes).all() and len(s[0].boxes) == 1,
        ),
        "empty file": ("", lambda s: len(s) == 1 and len(s[0].boxes) == 0),
        "blank lines": ("\n0 0.5 0.5 0.1 0.1\n\n", lambda s: len(s[0].boxes) == 1),
        "NaN": ("0 nan 0.5 0.1 0.1\n", ERROR),
        "inf": ("0 0.5 inf 0.1 0.1\n", ERROR),
        "box outside": ("0 1.8 1.8 0.1 0.1\n", ERROR),
        "unknown class 7": ("7 0.5 0.5 0.1 0.1\n", ERROR),
        "class -1": ("-1 0.5 0.5 0.1 0.1\n", ERROR),
        "class 1.5": ("1.5 0.5 0.5 0.1 0.1\n", ERROR),
        "pixel coords": ("0 450 450 60 60\n", ERROR),
        "negative size": ("0 0.5 0.5 -0.1 0.1\n", ERROR),
        "4 tokens": ("0 0.5 0.5 0.1\n", ERROR),
        "6 tokens": ("0 0.5 0.5 0.1 0.1 0.9\n", ERROR),
        "words": ("pit a b c d\n", ERROR),
        "comma separated": ("0,0.5,0.5,0.1,0.1\n", ERROR),
        "ragged lines": ("0 0.5 0.5 0.1 0.1\n1 0.5\n", ERROR),
        "binary junk": (os.urandom(64).decode("latin-1"), ERROR),
    }
    for name, (text, expect) in yolo.items():
        root = TMP / f"mars-{name.replace(' ', '_')}"
        img = root / "mars-pits" / "train" / "images" / "p0.jpg"
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((90, 90, 3), 100, np.uint8)).save(img)
        lab = root / "mars-pits" / "train" / "labels" / "p0.txt"
        lab.parent.mkdir(parents=True, exist_ok=True)
        lab.write_text(text, encoding="latin-1")
        yield Case("file", f"yolo {name}", lambda r=root: data.load_mars_pits(r, split="train"), expect)
    # COCO boxes of ships-hrsid
    cocos = {
        "not JSON": "{not json",
        "a list": "[]",
        "no annotations key": json.dumps({"images": [{"id": 1, "file_name": "s0.jpg"}]}),
        "bbox strings": json.dumps(
            {
                "images": [{"id": 1, "file_name": "s0.jpg"}],
                "annotations": [{"id": 1, "image_id": 1, "bbox": ["a", 1, 2, 3]}],
                "categories": [],
            }
        ),
        "bbox NaN": '{"images": [{"id": 1, "file_name": "s0.jpg"}], '
        '"annotations": [{"id": 1, "image_id": 1, "bbox": [NaN, 1, 2, 3]}], "categories": []}',
        "0-byte": "",
    }
    for name, text in cocos.items():
        root = TMP / f"ships-{name.replace(' ', '_')}"
        img = root / "ships-hrsid" / "images" / "s0.jpg"
        img.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((40, 40, 3), 50, np.uint8)).save(img)
        _png(root / "ships-hrsid" / "masks" / "s0.png", np.zeros((40, 40), np.uint8))
        (root / "ships-hrsid" / "boxes_coco.json").write_text(text)
        yield Case("file", f"coco {name}", lambda r=root: data.load_ships_hrsid(r))
    yield Case("file", "load_dataset unknown", lambda: data.load_dataset("nope"))
    yield Case("file", "limit -1", lambda: data.load_roads_eth(roads_root(""), limit=-1))
    yield Case("file", "split bogus", lambda: data.load_roads_eth(roads_root(""), split="bogus"))
    yield Case("file", "root missing", lambda: data.load_roads_eth(TMP / "no-such-root"))

    def relative_root() -> Any:
        rel = os.path.relpath(TMP, Path.cwd())
        old = os.environ.get("SAMLIB_DATA")
        os.environ["SAMLIB_DATA"] = rel
        try:
            return data.data_root()
        finally:
            if old is None:
                os.environ.pop("SAMLIB_DATA")
            else:
                os.environ["SAMLIB_DATA"] = old

    yield Case(
        "file",
        "relative SAMLIB_DATA resolved to absolute",
        relative_root,
        lambda p: p is not None and Path(p).is_absolute(),
    )


# ---------------------------------------------------------------------------------------------- results


def results_cases() -> Iterator[Case]:
    good = {"m": {"iou": 0.5}}
    out = TMP / "results"
    out.mkdir(exist_ok=True)
    (out / "afile").write_text("x")

    def in_results_dir(chapter: str) -> Callable[[], Any]:
        def run() -> Any:
            d = out / "dir"
            d.mkdir(exist_ok=True)
            os.environ["SAMLIB_RESULTS_DIR"] = str(d)
            try:
                path = results.write_results(None, chapter=chapter, setting="smoke", results=good)
            finally:
                os.environ.pop("SAMLIB_RESULTS_DIR")
            return path

        return run

    inside = lambda p: p is not None and Path(p).resolve().parent == (out / "dir").resolve()  # noqa: E731
    yield Case("results", "chapter plain", in_results_dir("04_planetary"), inside)
    for name in ("../../escaped", "a/b", "/abs/path", "..", "x" * 300, "nul\0byte", " ", ""):
        yield Case("results", f"chapter {name[:20]!r}", in_results_dir(name))
    for name, res in {
        "NaN": {"m": {"iou": float("nan")}},
        "inf": {"m": {"iou": float("inf")}},
        "string": {"m": {"iou": "0.5"}},
        "bool": {"m": {"iou": True}},
        "empty": {},
        "empty method": {"": {"iou": 1.0}},
        "not dict": [1, 2],
        "nested too deep": {"m": {"iou": {"x": 1}}},
    }.items():
        yield Case(
            "results", f"results {name}", lambda res=res: results.write_results(out / "r.json", "c", "s", res)
        )
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    yield Case(
        "results",
        "extra 100k deep",
        lambda: results.write_results(out / "r.json", "c", "s", good, extra={"x": deep}),
    )
    yield Case(
        "results",
        "extra object",
        lambda: results.write_results(out / "r.json", "c", "s", good, extra={"x": object()}),
    )
    yield Case(
        "results",
        "path under a file",
        lambda: results.write_results(out / "afile" / "x.json", "c", "s", good),
    )
    files = {
        "valid": json.dumps({"chapter": "c", "setting": "s", "device": None, "results": good}),
        "not JSON": "{",
        "deep 200k": "[" * 200_000 + "]" * 200_000,
        "list": "[]",
        "missing keys": json.dumps({"chapter": "c"}),
        "NaN metric": '{"chapter": "c", "setting": "s", "device": null, "results": {"m": {"iou": NaN}}}',
        "0-byte": "",
        "binary": os.urandom(50).decode("latin-1"),
    }
    for name, text in files.items():
        p = out / f"read-{name.replace(' ', '_')}.json"
        p.write_text(text, encoding="latin-1")
        yield Case(
            "results",
            f"read {name}",
            lambda p=p: results.read_results(p),
            (lambda d: isinstance(d, dict)) if name == "valid" else ERROR,
        )
    yield Case("results", "read missing", lambda: results.read_results(out / "none.json"))
    yield Case("results", "results_table format x", lambda: results.results_table(good, format="x"))


# ------------------------------------------------------------------------------------------- checkpoints


def checkpoint_cases() -> Iterator[Case]:
    ck = TMP / "ckpt"
    ck.mkdir(exist_ok=True)
    sentinel = ck / "PWNED"
    from dataclasses import asdict

    from samlib.teaching import TeachingConfig as TC

    class Evil:
        def __reduce__(self) -> Any:
            return (os.system, (f"touch {sentinel}",))

    evil = ck / "evil.pt"
    with evil.open("wb") as f:
        pickle.dump({"config": {}, "model": Evil()}, f)
    (ck / "empty.pt").write_bytes(b"")
    (ck / "random.pt").write_bytes(os.urandom(500))
    (ck / "adir.pt").mkdir(exist_ok=True)
    sam = tiny_sam()
    cfg = asdict(TC.tiny())
    state = {k: v.half() for k, v in sam.state_dict().items()}
    torch.save({"config": cfg, "model": state}, ck / "good.pt")
    nan_state = {k: torch.full_like(v, float("nan")) for k, v in state.items()}
    torch.save({"config": cfg, "model": nan_state}, ck / "nan.pt")
    torch.save({"config": {**cfg, "bogus_key": 1}, "model": state}, ck / "badkey.pt")
    torch.save({"config": {**cfg, "encoder_dim": 33}, "model": state}, ck / "badshape.pt")
    torch.save({"config": {**cfg, "patch_size": 0}, "model": state}, ck / "patch0.pt")
    torch.save({"config": "not a dict", "model": state}, ck / "strconfig.pt")
    torch.save({"config": cfg, "model": {k: v for k, v in list(state.items())[:-3]}}, ck / "missing.pt")
    torch.save({"config": cfg, "model": [1, 2]}, ck / "listmodel.pt")
    torch.save({"image_encoder.blocks.0.x": torch.zeros(1)}, ck / "halfsam.pt")
    torch.save([1, 2, 3], ck / "list.pt")

    def no_code_ran(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            sentinel.unlink(missing_ok=True)
            try:
                out = fn()
            finally:
                if sentinel.exists():
                    raise AssertionError("PICKLE RAN CODE")  # a raw error: the worst outcome
            return out

        return run

    load = samlib.load_sam
    yield Case(
        "ckpt", "good teaching ckpt", lambda: load(str(ck / "good.pt"), device="cpu"), lambda s: s is not None
    )
    yield Case("ckpt", "malicious pickle", no_code_ran(lambda: load(str(evil), device="cpu")))
    for name in (
        "empty",
        "random",
        "adir",
        "nan",
        "badkey",
        "badshape",
        "patch0",
        "strconfig",
        "missing",
        "listmodel",
        "halfsam",
        "list",
    ):
        yield Case("ckpt", f"load_sam {name}.pt", lambda n=name: load(str(ck / f"{n}.pt"), device="cpu"))
    yield Case("ckpt", "load_teaching_sam nan", lambda: samlib.teaching.load_teaching_sam(ck / "nan.pt"))
    yield Case(
        "ckpt", "load_teaching_sam badkey", lambda: samlib.teaching.load_teaching_sam(ck / "badkey.pt")
    )
    for name, arg in {
        "None": None,
        "int": 123,
        "empty str": "",
        "unknown name": "vit_x",
        "missing path": str(ck / "none.pt"),
    }.items():
        yield Case("ckpt", f"load_sam({name})", lambda a=arg: load(a, device="cpu"))
    for dev in ("cuda", "cuda:7", "gpu", "mps", 3.5):
        if dev in ("cuda", "cuda:7") and torch.cuda.is_available():
            continue
        yield Case("ckpt", f"device={dev!r}", lambda d=dev: load("teaching", device=d))
    yield Case("ckpt", "load_sam teaching", lambda: load("teaching", device="cpu"), lambda s: s is not None)


# --------------------------------------------------------------------------------------------- downloads


class _Handler(http.server.BaseHTTPRequestHandler):
    payload = b"x" * 4096
    mode = "ok"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    def do_GET(self) -> None:  # noqa: N802
        mode = type(self).mode
        if mode == "404":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        try:
            if mode == "slow":  # a byte every 0.3 s: never trips a per-read timeout
                for i in range(len(self.payload)):
                    self.wfile.write(self.payload[i : i + 1])
                    self.wfile.flush()
                    time.sleep(0.3)
            elif mode == "short":
                self.wfile.write(self.payload[:100])
            else:
                self.wfile.write(self.payload)
        except (BrokenPipeError, ConnectionResetError):
            pass


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True


@contextlib.contextmanager
def http_server(mode: str) -> Iterator[str]:
    _Handler.mode = mode
    server = _Server(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/test.pth"
    finally:
        server.shutdown()
        server.server_close()


def download_cases() -> Iterator[Case]:
    from samlib import models

    good_sha = hashlib.sha256(_Handler.payload).hexdigest()

    def download(
        mode: str, sha: str | None = good_sha, prepare: Callable[[Path], None] | None = None, **kw: Any
    ) -> Callable[[], Any]:
        def run() -> Any:
            cache = Path(tempfile.mkdtemp(dir=TMP, prefix="cache-"))
            os.environ["SAMLIB_CACHE"] = str(cache)
            os.environ.pop("SAMLIB_OFFLINE", None)
            try:
                with http_server(mode) as url:
                    models.SAM_CHECKPOINTS["harness"] = models.CheckpointSpec("vit_b", url, sha)
                    if prepare is not None:
                        prepare(cache / "checkpoints")
                    try:
                        return models.download_checkpoint("harness", progress=False, timeout=2.0, **kw)
                    finally:
                        parts = list((cache / "checkpoints").glob("*.part"))
                        if parts:
                            raise AssertionError(f"left {len(parts)} .part file(s)")
            finally:
                models.SAM_CHECKPOINTS.pop("harness", None)
                os.environ.pop("SAMLIB_CACHE", None)

        return run

    ok = lambda p: Path(p).read_bytes() == _Handler.payload  # noqa: E731
    yield Case("download", "good", download("ok"), ok)
    yield Case("download", "404", download("404"))
    yield Case("download", "truncated by server", download("short"))
    yield Case("download", "wrong hash", download("ok", sha="0" * 64))
    yield Case("download", "slow trickle (1 byte / 0.3 s)", download("slow"), limit_s=20.0)

    def stale_part(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        part = folder / ".test.pth.abc123.part"
        part.write_bytes(b"half")
        old = time.time() - 3600
        os.utime(part, (old, old))

    yield Case(
        "download", "stale .part from a killed run, then retry", download("ok", prepare=stale_part), ok
    )

    def forged(folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "test.pth"
        path.write_bytes(b"y" * len(_Handler.payload))  # same size, other content
        st = path.stat()
        # what a marker keyed by size and mtime looks like, in the old and the new layout
        (folder / "test.pth.sha256").write_text(f"{good_sha} {st.st_size} {st.st_mtime_ns}\n")

    yield Case("download", "forged .sha256 marker", download("ok", prepare=forged))
    yield Case("download", "offline, not cached", lambda: _offline_download())
    yield Case("download", "unknown checkpoint", lambda: models.download_checkpoint("vit_q"))


def _offline_download() -> Any:
    from samlib import models

    os.environ["SAMLIB_OFFLINE"] = "1"
    os.environ["SAMLIB_CACHE"] = str(TMP / "offline-cache")
    try:
        return models.download_checkpoint("vit_b", progress=False)
    finally:
        os.environ.pop("SAMLIB_OFFLINE")
        os.environ.pop("SAMLIB_CACHE")


# ------------------------------------------------------------------------------------------ command line


def cli(
    args: list[str], check: Callable[[subprocess.CompletedProcess[str]], bool] | None = None
) -> Callable[[], Any]:
    """Run ``python -m samlib.teaching ARGS``; a non-zero exit is 'clear' unless a traceback other than a
    samlib error is printed."""

    def run() -> Any:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "samlib.teaching", *args],
                capture_output=True,
                text=True,
                timeout=CLI_TIMEOUT_S,
                env=env,
                cwd=TMP,
            )
        except subprocess.TimeoutExpired:
            raise _Hang() from None
        if proc.returncode == 0:
            return proc if check is None or check(proc) else "exit 0, but: " + proc.stdout[-200:]
        last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
        if "Traceback" in proc.stderr and not any(
            e in last
            for e in (
                "SamlibError",
                "InvalidInputError",
                "CorruptFileError",
                "CheckpointUnavailableError",
                "DataNotFoundError",
            )
        ):
            raise RuntimeError(last[:150])
        raise SamlibError(last[:150])

    return run


def cli_cases() -> Iterator[Case]:
    quick = ["train", "--steps", "1", "--batch-images", "1", "--no-resume", "--threads", "1"]
    yield Case(
        "cli",
        "train --batch-images 0",
        cli(["train", "--steps", "1", "--batch-images", "0", "--out", "b0.pt"]),
        limit_s=250,
    )
    yield Case("cli", "train --lr nan", cli([*quick, "--lr", "nan", "--out", "lrnan.pt"]), limit_s=250)
    yield Case("cli", "train --lr 1e30", cli([*quick, "--lr", "1e30", "--out", "lrbig.pt"]), limit_s=250)
    yield Case("cli", "train --steps -3", cli([*quick[:1], "--steps", "-3", "--out", "neg.pt"]), limit_s=250)
    yield Case(
        "cli",
        "eval --n 0",
        cli(["eval", "--n", "0", "--n-targets", "1"], check=lambda p: "NaN" not in p.stdout),
        limit_s=250,
    )
    yield Case(
        "cli",
        "train --checkpoint-every / --pool-size",
        cli([*quick, "--checkpoint-every", "1", "--pool-size", "4", "--out", "flags.pt"]),
        lambda p: isinstance(p, subprocess.CompletedProcess),
        limit_s=250,
    )
    (TMP / "resume.pt").unlink(missing_ok=True)
    # --pool-size 4: the default 768-scene pool takes minutes to build on a loaded CPU (older code lacks
    # the flag and then fails with an argparse error)
    deep = [
        "train",
        "--steps",
        "1",
        "--batch-images",
        "1",
        "--threads",
        "1",
        "--pool-size",
        "4",
        "--out",
        "resume.pt",
    ]
    yield Case(
        "cli",
        "resume with another --depth",
        lambda: (cli(deep)(), cli([*deep, "--steps", "2", "--depth", "5"])())[1],
        limit_s=480,
    )
    evil = TMP / "evil_resume.pt"

    def evil_resume() -> Any:
        sentinel = TMP / "PWNED_CLI"
        sentinel.unlink(missing_ok=True)

        class Evil:
            def __reduce__(self) -> Any:
                return (os.system, (f"touch {sentinel}",))

        with evil.open("wb") as f:
            pickle.dump({"model": Evil()}, f)
        try:
            return cli(["train", "--steps", "1", "--batch-images", "1", "--out", str(evil)])()
        finally:
            if sentinel.exists():
                raise AssertionError("PICKLE RAN CODE")

    yield Case("cli", "resume from a malicious pickle", evil_resume, limit_s=250)
    yield Case("cli", "export a missing file", cli(["export", "nope.pt", "--dest", "x.pt"]), limit_s=250)


def misc_cases() -> Iterator[Case]:
    from samlib import data
    from samlib.predict import EmbeddingCache

    p = PREDICTOR
    yield Case("misc", "predict coords as list", lambda: p.predict([[10.0, 10.0]], [1]), prediction_ok(False))
    yield Case(
        "misc",
        "predict coords as tensor",
        lambda: p.predict(torch.tensor([[10.0, 10.0]]), torch.tensor([1])),
        prediction_ok(False),
    )
    yield Case("misc", "predict box as list", lambda: p.predict(box=[5, 5, 20, 20]), prediction_ok(False))
    yield Case("misc", "predict box as string", lambda: p.predict(box="0 0 5 5"))
    yield Case("misc", "predict coords dict", lambda: p.predict({"x": 1}, [1]))
    yield Case(
        "misc",
        "predict multimask False",
        lambda: p.predict(box=[5, 5, 20, 20], multimask_output=False),
        lambda r: r.masks.shape[0] == 1,
    )
    yield Case("misc", "EmbeddingCache maxsize 0", lambda: EmbeddingCache(0))
    yield Case("misc", "split_names fraction 1.5", lambda: data.split_names(["a", "b"], 1.5))
    yield Case("misc", "split_names fraction NaN", lambda: data.split_names(["a", "b"], float("nan")))
    yield Case(
        "misc",
        "split_names valid",
        lambda: data.split_names(["a", "b", "c"], 0.3),
        lambda r: len(r[0]) + len(r[1]) == 3,
    )
    yield Case("misc", "instances_from_binary 3-D", lambda: data.instances_from_binary(np.zeros((2, 4, 4))))
    yield Case(
        "misc",
        "instances_from_binary connectivity 6",
        lambda: data.instances_from_binary(np.zeros((4, 4)), 6),
    )
    yield Case(
        "misc",
        "instances_from_binary valid",
        lambda: data.instances_from_binary(np.eye(4)),
        lambda m: m.shape[1:] == (4, 4),
    )
    yield Case("misc", "results_table NaN", lambda: results.results_table({"m": {"x": float("nan")}}))
    yield Case(
        "misc",
        "results_table valid",
        lambda: results.results_table({"m": {"x": 0.5}}),
        lambda t: "0.500" in t,
    )
    yield Case("misc", "validate_results nested None", lambda: results.validate_results({"m": None}))
    yield Case("misc", "iou lists", lambda: metrics.iou([[1, 0]], [[1, 1]]), lambda v: abs(v - 0.5) < 1e-9)
    yield Case("misc", "iou ragged list", lambda: metrics.iou([[1, 0], [1]], [[1, 1], [1]]))
    yield Case(
        "misc",
        "dice empty masks",
        lambda: metrics.dice(np.zeros((0, 0), bool), np.zeros((0, 0), bool)),
        finite_number,
    )
    yield Case(
        "misc",
        "binary_scores zero-pixel masks",
        lambda: metrics.binary_scores([np.zeros((0, 3), bool)], [np.zeros((0, 3), bool)]),
    )
    yield Case(
        "misc",
        "embed_images ragged sizes",
        lambda: samlib.embed_images(SAM, [RGB, RGB[:20]], progress=False),
        lambda e: len(e) == 2,
    )
    yield Case(
        "misc",
        "embed_images one bad of two",
        lambda: samlib.embed_images(SAM, [RGB, RGB.astype(np.float32)], progress=False),
    )
    yield Case("misc", "seed_everything -1", lambda: samlib.seed_everything(-1), lambda r: True)
    # camvid and spacenet trees
    rng = np.random.default_rng(6)
    for name, label in {
        "valid": rng.integers(0, 12, (36, 48)).astype(np.uint8),
        "wrong size": rng.integers(0, 12, (10, 48)).astype(np.uint8),
        "missing": None,
    }.items():
        root = TMP / f"camvid-{name.replace(' ', '_')}"
        _png(root / "camvid" / "images" / "c0.png", rng.integers(0, 256, (36, 48, 3), dtype=np.uint8))
        if label is not None:
            _png(root / "camvid" / "labels" / "c0.png", label)
        expect = (lambda s: len(s) == 1 and s[0].semantic.shape == (36, 48)) if name == "valid" else ERROR
        yield Case("misc", f"camvid {name}", lambda r=root: data.load_camvid(r), expect)
    import tifffile

    for name, image in {
        "uint8 RGB": rng.integers(0, 256, (30, 30, 3), dtype=np.uint8),
        "uint16 RGB": (rng.random((30, 30, 3)) * 2047).astype(np.uint16),
        "planar uint8": rng.integers(0, 256, (3, 30, 30), dtype=np.uint8),
    }.items():
        root = TMP / f"rio-{name.replace(' ', '_')}"
        (root / "buildings-spacenet-rio" / "images").mkdir(parents=True, exist_ok=True)
        kw = {"photometric": "rgb", "planarconfig": "separate"} if name.startswith("planar") else {}
        tifffile.imwrite(root / "buildings-spacenet-rio" / "images" / "b0.tif", image, **kw)
        mask = np.zeros((30, 30), np.uint8)
        mask[5:15, 5:15] = 255
        (root / "buildings-spacenet-rio" / "masks").mkdir(parents=True, exist_ok=True)
        tifffile.imwrite(root / "buildings-spacenet-rio" / "masks" / "b0.tif", mask)

        def rio_ok(s: Any, ref: np.ndarray = image) -> bool:
            img = s[0].image
            return img.shape == (30, 30, 3) and img.std() > 30 and len(s[0].masks) == 1

        yield Case("misc", f"spacenet-rio {name}", lambda r=root: data.load_buildings_spacenet_rio(r), rio_ok)


# -------------------------------------------------------------------------------------------------- main

GROUPS: dict[str, Callable[[], Iterator[Case]]] = {
    "image": image_cases,
    "prompt": prompt_cases,
    "metric": metric_cases,
    "loss": loss_cases,
    "train": training_cases,
    "file": file_cases,
    "results": results_cases,
    "ckpt": checkpoint_cases,
    "download": download_cases,
    "misc": misc_cases,
    "cli": cli_cases,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quiet", action="store_true", help="print only the summary and non-ok cases")
    parser.add_argument("--skip", nargs="*", default=[], help=f"groups to skip: {', '.join(GROUPS)}")
    parser.add_argument("--json", default=None, help="write every outcome here")
    args = parser.parse_args()
    print(f"samlib from {Path(samlib.__file__).parent}")
    outcomes: list[dict[str, str]] = []
    for group, make in GROUPS.items():
        if group in args.skip:
            continue
        for case in make():
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
                kind, detail = classify(case)
            outcomes.append({"group": case.group, "case": case.name, "outcome": kind, "detail": detail})
            if not args.quiet or kind not in ("ok", "clear"):
                print(f"{kind:8s} {case.group:10s} {case.name}: {detail}", flush=True)
    counts = Counter(o["outcome"] for o in outcomes)
    print(
        f"\ntried {len(outcomes)}: ok {counts['ok']}, clear errors {counts['clear']}, "
        f"raw tracebacks {counts['raw']}, silent wrong results {counts['silent']}, hangs {counts['hang']}, "
        f"valid input refused {counts['refused']}"
    )
    by_group = Counter((o["group"], o["outcome"]) for o in outcomes)
    for g in sorted({o["group"] for o in outcomes}):
        print(
            f"  {g:10s} "
            + ", ".join(
                f"{k} {by_group[(g, k)]}"
                for k in ("ok", "clear", "raw", "silent", "hang", "refused")
                if by_group[(g, k)]
            )
        )
    if args.json:
        Path(args.json).write_text(json.dumps(outcomes, indent=1))


if __name__ == "__main__":
    main()
