"""Shared fixtures: a tiny random SAM (fast on CPU) and the real-data root (tests skip without it)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
import pytest

# Make the repository importable when pytest runs from a fresh clone without an install.
_REPO = Path(__file__).resolve().parent.parent
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

# samlib must be imported before torchvision / segment_anything (it makes torchvision importable when
# its C++ ops cannot load); the isort split keeps import sorting from moving it down.
import samlib  # noqa: E402

# isort: split
import torch  # noqa: E402
from segment_anything.modeling import (  # noqa: E402
    ImageEncoderViT,
    MaskDecoder,
    PromptEncoder,
    Sam,
    TwoWayTransformer,
)


def build_tiny_sam(seed: int = 0) -> Sam:
    """A randomly initialised SAM: 64 px input, 4 x 4 x 16 embedding, 16 x 16 low-res masks."""
    torch.manual_seed(seed)
    sam = Sam(
        image_encoder=ImageEncoderViT(
            img_size=64,
            patch_size=16,
            embed_dim=32,
            depth=1,
            num_heads=2,
            mlp_ratio=2.0,
            out_chans=16,
            qkv_bias=True,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6),
            use_rel_pos=True,
            window_size=0,
            global_attn_indexes=(),
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=16, image_embedding_size=(4, 4), input_image_size=(64, 64), mask_in_chans=4
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=16, mlp_dim=32, num_heads=2),
            transformer_dim=16,
            iou_head_depth=1,
            iou_head_hidden_dim=16,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


@pytest.fixture
def tiny_sam_factory() -> Callable[..., Sam]:
    """:func:`build_tiny_sam` as a fixture, so test modules need not import conftest."""
    return build_tiny_sam


@pytest.fixture
def tiny_sam() -> Sam:
    sam = build_tiny_sam()
    sam.samlib_name = "tiny-test"
    return sam


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture
def isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty SAMLIB_CACHE, so tests never see (or write to) the user's real cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SAMLIB_CACHE", str(cache))
    monkeypatch.delenv("SAMLIB_OFFLINE", raising=False)
    return cache


@pytest.fixture(scope="session")
def real_data_root() -> Path:
    """The real sample-data root; skips the test with a clear message when it is absent."""
    root = samlib.data_root()
    if root is None or not root.is_dir():
        pytest.skip(
            "Real sample data not found: set SAMLIB_DATA to the folder holding roads-eth/, ships-hrsid/, ... "
            "(in the project workspace it is ../shared/data)."
        )
    return root
