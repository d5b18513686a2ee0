"""Shared fixtures: a tiny random SAM (fast on CPU), the real-data root (tests skip without it) and a
local HTTP server that serves a checkpoint slowly (download faults)."""

from __future__ import annotations

import socketserver
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from http.server import BaseHTTPRequestHandler
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


@contextmanager
def serve_payload(
    payload: bytes, delay: float = 0.0, chunk: int = 512, name: str = "ckpt.pth"
) -> Iterator[str]:
    """A local HTTP server that answers every GET with ``payload``.

    Arguments:
      payload (bytes): the response body (its length is sent as Content-Length).
      delay (float): seconds to wait after each ``chunk`` bytes, so that a download stalls or can be killed
        midway; 0: the whole body at once.
      chunk (int): bytes per write when ``delay`` > 0.
      name (str): the file name in the URL (the download's file name in the cache).

    Returns:
      (Iterator[str]): yields the URL; the server stops on exit.
    """

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            step = chunk if delay else len(payload)
            try:
                for i in range(0, len(payload), step):
                    self.wfile.write(payload[i : i + step])
                    self.wfile.flush()
                    if delay:
                        time.sleep(delay)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up or was killed: what these tests provoke

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/{name}"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def payload_server() -> Callable[..., AbstractContextManager[str]]:
    """:func:`serve_payload` as a fixture, so test modules need not import conftest."""
    return serve_payload


@pytest.fixture
def encoder_calls(tiny_sam: Sam) -> list[int]:
    """Counts the forward passes of ``tiny_sam``'s image encoder during the test (the list's one item)."""
    calls = [0]

    def hook(*_: object) -> None:
        calls[0] += 1

    tiny_sam.image_encoder.register_forward_hook(hook)
    return calls
