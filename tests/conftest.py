"""Shared fixtures: a tiny random SAM (fast on CPU) and the real-data root (tests skip without it)."""

from __future__ import annotations

import sys
from collections.abc import Callable
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
from segment_anything.modeling import Sam  # noqa: E402

from samlib.teaching import TeachingConfig, build_teaching_sam  # noqa: E402


def build_tiny_sam(seed: int = 0) -> Sam:
    """A randomly initialised SAM: 64 px input, 4 x 4 x 16 embedding, 16 x 16 low-res masks."""
    torch.manual_seed(seed)
    return build_teaching_sam(TeachingConfig.tiny()).eval()


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
