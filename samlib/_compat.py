"""Make ``torchvision`` (and therefore ``segment_anything``) importable when its C++ ops cannot load.

The torchvision wheel in some environments is built for CUDA while torch is a CPU build. Its native
extension ``_C.so`` then fails to load, and ``import torchvision`` crashes inside
``torchvision/_meta_registrations.py``, which registers fake kernels for ``torchvision::nms`` and
``torchvision::qnms`` and so needs those operator schemas to exist. ``segment_anything`` imports
torchvision, so nothing in this book would work.

:func:`ensure_torchvision_ops` must run before anything imports torchvision. It first tries to load the
native extension; only if that fails does it define the two schemas itself, backed by a pure-torch greedy
NMS, and unlocks :func:`torchvision.ops.nms`. Other torchvision C++ ops (``roi_align`` ...) stay
unavailable, as they would be without the shim; SAM does not use them.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import torch

__all__ = ["ensure_torchvision_ops", "nms_reference", "torchvision_ops_mode"]

# "native": torchvision's own extension is loaded; "fallback": this module's pure-torch NMS is
# registered; "missing": torchvision is not installed; None: not run yet.
_MODE: str | None = None
# The DEF library must stay referenced for the whole process: when it is garbage collected, torch
# removes the operators it defined.
_FALLBACK_LIB: torch.library.Library | None = None

_NMS_SCHEMA = "(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"


def nms_reference(dets: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy non-maximum suppression in plain torch, with torchvision's semantics.

    Arguments:
      dets (torch.Tensor): Boxes, shape (N, 4), in (x1, y1, x2, y2) format.
      scores (torch.Tensor): Scores, shape (N,).
      iou_threshold (float): A box is dropped when its IoU with an already kept, higher scoring box is
        strictly greater than this value.

    Returns:
      (torch.Tensor): int64 indices of the kept boxes, shape (K,), sorted by decreasing score, on the
        device of ``dets``.
    """
    if dets.dim() != 2 or dets.size(1) != 4:
        raise RuntimeError(f"boxes should be a (N, 4) tensor, got shape {tuple(dets.shape)}")
    if scores.dim() != 1 or scores.size(0) != dets.size(0):
        raise RuntimeError(
            f"scores should be a 1d tensor with {dets.size(0)} elements, got shape {tuple(scores.shape)}"
        )
    if dets.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=dets.device)
    # Low precision or integer (qnms passes int_repr) boxes: compute IoUs in float32 at least.
    low_precision = not dets.is_floating_point() or dets.dtype in (torch.float16, torch.bfloat16)
    boxes = dets.float() if low_precision else dets
    order = torch.sort(scores, descending=True, stable=True).indices
    x1, y1, x2, y2 = boxes.unbind(1)
    areas = (x2 - x1) * (y2 - y1)
    keep: list[torch.Tensor] = []
    # One iteration per kept box: memory stays O(N), unlike a full N x N IoU matrix.
    while order.numel() > 0:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        if rest.numel() == 0:
            break
        w = (torch.minimum(x2[i], x2[rest]) - torch.maximum(x1[i], x1[rest])).clamp(min=0)
        h = (torch.minimum(y2[i], y2[rest]) - torch.maximum(y1[i], y1[rest])).clamp(min=0)
        inter = w * h
        iou = inter / (areas[i] + areas[rest] - inter)
        # NaN (two empty boxes) compares False and keeps the box, as torchvision's kernel does.
        order = rest[~(iou > iou_threshold)]
    return torch.stack(keep).to(torch.int64)


def _native_extension() -> Path | None:
    """Path of torchvision's compiled ``_C`` extension, found without importing torchvision."""
    spec = importlib.util.find_spec("torchvision")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        for pattern in ("_C*.so", "_C*.pyd"):
            candidates = sorted(Path(location).glob(pattern))
            if candidates:
                return candidates[0]
    return None


def _op_exists(name: str) -> bool:
    try:
        getattr(torch.ops.torchvision, name)
    except (AttributeError, RuntimeError):
        return False
    return True


def _define_fallback_ops() -> None:
    global _FALLBACK_LIB
    lib = torch.library.Library("torchvision", "DEF")
    for name in ("nms", "qnms"):
        if _op_exists(name):
            continue
        lib.define(name + _NMS_SCHEMA)
        # CompositeExplicitAutograd: one kernel for every backend (CPU and CUDA); the output is an
        # integer index tensor, so no autograd formula is needed.
        lib.impl(name, nms_reference, "CompositeExplicitAutograd")
    _FALLBACK_LIB = lib


def torchvision_ops_mode() -> str | None:
    """How :func:`ensure_torchvision_ops` provided NMS: "native", "fallback", "missing" or None (not run)."""
    return _MODE


def ensure_torchvision_ops() -> str:
    """Make ``import torchvision`` and :func:`torchvision.ops.nms` work; idempotent.

    Returns:
      (str): "native" when torchvision's own extension is usable, "fallback" when this module's
        pure-torch NMS was registered, "missing" when torchvision is not installed.
    """
    global _MODE
    if _MODE is not None:
        return _MODE
    if "torchvision" not in sys.modules and importlib.util.find_spec("torchvision") is None:
        _MODE = "missing"
        return _MODE
    if "torchvision" in sys.modules:
        # Imported before us (successfully, or it would not be in sys.modules): only patch if needed.
        loaded = _op_exists("nms")
    else:
        loaded = False
        extension = _native_extension()
        if extension is not None:
            try:
                torch.ops.load_library(str(extension))
                loaded = _op_exists("nms")
            except (OSError, RuntimeError, ImportError):
                loaded = False
    if not loaded:
        _define_fallback_ops()
        # torchvision.ops.boxes.nms calls a module-level _assert_has_ops that raises without the
        # extension; our kernel is registered, so the check no longer applies to nms (roi_align etc.
        # still raise). Importing torchvision here would cost seconds (it imports torch._dynamo), so
        # the patch is applied when torchvision.ops.boxes is first imported, by whoever imports it.
        if "torchvision.ops.boxes" in sys.modules:
            _unlock_nms(sys.modules["torchvision.ops.boxes"])
        else:
            sys.meta_path.insert(0, _PatchOnImport())
    _MODE = "native" if loaded else "fallback"
    return _MODE


def _unlock_nms(boxes_module: types.ModuleType) -> None:
    boxes_module._assert_has_ops = lambda: None  # type: ignore[attr-defined]


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Finds nothing itself; when ``torchvision.ops.boxes`` is imported it wraps that module's loader
    so that :func:`_unlock_nms` runs right after the module has executed."""

    def find_spec(
        self, fullname: str, path: Any, target: Any = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname != "torchvision.ops.boxes":
            return None
        sys.meta_path.remove(self)  # once only; the other finders locate the real module
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        original = loader.exec_module

        def exec_module(module: types.ModuleType) -> None:
            original(module)
            _unlock_nms(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec
