"""The torchvision NMS shim: correctness against brute force, and that SAM's stack imports."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import samlib
from samlib import _compat


def brute_force_nms(boxes: torch.Tensor, scores: torch.Tensor, thr: float) -> list[int]:
    """Textbook greedy NMS with Python floats."""
    order = sorted(range(len(scores)), key=lambda i: -float(scores[i]))
    b = boxes.tolist()

    def iou(i: int, j: int) -> float:
        w = max(0.0, min(b[i][2], b[j][2]) - max(b[i][0], b[j][0]))
        h = max(0.0, min(b[i][3], b[j][3]) - max(b[i][1], b[j][1]))
        inter = w * h
        area = lambda k: (b[k][2] - b[k][0]) * (b[k][3] - b[k][1])  # noqa: E731
        return inter / (area(i) + area(j) - inter)

    keep: list[int] = []
    for i in order:
        if all(iou(i, k) <= thr for k in keep):
            keep.append(i)
    return keep


def random_boxes(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 50
    wh = torch.rand(n, 2, generator=g) * 30 + 1
    return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=g)


def test_ensure_is_idempotent_and_reports_mode() -> None:
    mode = _compat.ensure_torchvision_ops()
    assert mode in ("native", "fallback")
    assert _compat.ensure_torchvision_ops() == mode
    assert _compat.torchvision_ops_mode() == mode


@pytest.mark.parametrize("seed,thr", list(itertools.product(range(4), (0.1, 0.3, 0.5, 0.7))))
def test_nms_matches_brute_force(seed: int, thr: float) -> None:
    from torchvision.ops import nms

    boxes, scores = random_boxes(80, seed)
    keep = nms(boxes, scores, thr)
    assert keep.dtype == torch.int64
    assert keep.tolist() == brute_force_nms(boxes, scores, thr)
    # The pure-torch kernel itself, whichever implementation torchvision uses here.
    assert _compat.nms_reference(boxes, scores, thr).tolist() == keep.tolist()


def test_nms_suppresses_strictly_greater_iou_only() -> None:
    from torchvision.ops import nms

    # IoU of the two boxes is exactly 0.5: kept at threshold 0.5, suppressed at 0.49.
    boxes = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    scores = torch.tensor([0.9, 0.8])
    assert nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert nms(boxes, scores, 0.49).tolist() == [0]


def test_nms_empty_and_low_precision() -> None:
    from torchvision.ops import nms

    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []
    boxes, scores = random_boxes(40, 7)
    expected = brute_force_nms(boxes.half().float(), scores.half().float(), 0.4)
    assert nms(boxes.half(), scores.half(), 0.4).tolist() == expected


def test_batched_nms_matches_per_class_brute_force() -> None:
    from torchvision.ops import batched_nms

    boxes, scores = random_boxes(120, 3)
    idxs = torch.arange(120) % 3
    keep = batched_nms(boxes, scores, idxs, 0.3).tolist()
    expected: list[int] = []
    for c in range(3):
        members = [i for i in range(120) if idxs[i] == c]
        kept = brute_force_nms(boxes[members], scores[members], 0.3)
        expected += [members[k] for k in kept]
    assert keep == sorted(expected, key=lambda i: -float(scores[i]))


def test_segment_anything_imports_and_amg_utils_work() -> None:
    import segment_anything
    from segment_anything.utils.amg import batched_mask_to_box

    assert hasattr(segment_anything, "SamPredictor")
    masks = torch.zeros(1, 5, 5, dtype=torch.bool)
    masks[0, 1:3, 2:4] = True
    assert batched_mask_to_box(masks).tolist() == [[2, 1, 3, 2]]
    assert samlib.__version__ == "0.1.0"


def test_fresh_interpreter_import_order() -> None:
    """`import samlib` then `import segment_anything` works in a clean process, without matplotlib."""
    code = (
        "import sys, samlib, segment_anything, torch, torchvision;"
        "from torchvision.ops import nms;"
        "assert nms(torch.tensor([[0.,0.,1.,1.]]), torch.tensor([1.]), 0.5).tolist() == [0];"
        "assert 'matplotlib' not in sys.modules;"
        "print(samlib._compat.torchvision_ops_mode())"
    )
    repo = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], cwd=repo, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() in ("native", "fallback")
