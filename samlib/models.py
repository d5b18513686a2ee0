"""Loading SAM models: Meta's official checkpoints (downloaded and verified), the book's teaching model,
or a checkpoint file on disk.

Checkpoints are cached in :func:`cache_dir` (env ``SAMLIB_CACHE``, else ``$XDG_CACHE_HOME/samlib`` or
``~/.cache/samlib``). With ``SAMLIB_OFFLINE=1`` samlib never touches the network; it then only uses files
already in the cache, and says where to put one by hand when it is missing.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import tempfile
import time
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from segment_anything import sam_model_registry
from segment_anything.modeling import Sam
from tqdm.auto import tqdm

from samlib.errors import CheckpointUnavailableError, InvalidInputError
from samlib.teaching.model import load_teaching_sam
from samlib.utils import check_finite_weights, resolve_device, torch_load_safe

__all__ = [
    "SAM_CHECKPOINTS",
    "CheckpointSpec",
    "cache_dir",
    "checkpoint_path",
    "download_checkpoint",
    "infer_sam_arch",
    "load_sam",
    "model_name",
    "sha256_file",
]


@dataclass(frozen=True)
class CheckpointSpec:
    """An official SAM checkpoint: builder name, download URL and expected sha256 (None: not checked)."""

    arch: str
    url: str
    sha256: str | None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]


# sha256 values as published alongside these URLs by several independent projects (e.g. micro-sam's
# pooch registry, micro_sam/util.py); the URLs are those of the segment-anything README.
SAM_CHECKPOINTS: dict[str, CheckpointSpec] = {
    "vit_h": CheckpointSpec(
        "vit_h",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_h_4b8939.pth",
        "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e",
    ),
    "vit_l": CheckpointSpec(
        "vit_l",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_l_0b3195.pth",
        "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622",
    ),
    "vit_b": CheckpointSpec(
        "vit_b",
        "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    ),
}

# (number of image-encoder blocks, embedding dim) -> builder name.
_ARCH_BY_SHAPE = {(12, 768): "vit_b", (24, 1024): "vit_l", (32, 1280): "vit_h"}
_DOWNLOAD_TIMEOUT_S = 10.0
_DOWNLOAD_DEADLINE_S = 4 * 3600.0  # ViT-H is 2.4 GB: ~1.4 h at 4 Mbit/s
_MIN_RATE_BYTES_PER_S = 1024.0
_CHUNK = 1 << 20


def cache_dir() -> Path:
    """Where checkpoints are cached.

    ``$SAMLIB_CACHE``, else ``$XDG_CACHE_HOME/samlib``, else ``~/.cache/samlib``. The directory is
    not created here (only when something is downloaded).
    """
    env = os.environ.get("SAMLIB_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "samlib"


def _spec(name: str) -> CheckpointSpec:
    try:
        return SAM_CHECKPOINTS[name]
    except KeyError:
        raise InvalidInputError(
            f"Unknown SAM checkpoint {name!r}; known: {', '.join(sorted(SAM_CHECKPOINTS))}."
        ) from None


def checkpoint_path(name: str) -> Path:
    """Path of official checkpoint ``name`` ("vit_b", "vit_l", "vit_h") in the cache (may not exist yet)."""
    return cache_dir() / "checkpoints" / _spec(name).filename


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _offline() -> bool:
    return os.environ.get("SAMLIB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _manual_instructions(spec: CheckpointSpec, path: Path) -> str:
    sha = spec.sha256 or "(not recorded: the file's hash is not checked)"
    return (
        f"Download it by hand from\n  {spec.url}\n"
        f"(expected sha256: {sha})\n"
        f"and place it at\n  {path}\n"
        "or set SAMLIB_CACHE to a directory whose checkpoints/ folder holds it."
    )


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _stamp(path: Path, digest: str) -> str:
    """What the marker records: the digest and the file's identity (inode, size, mtime and ctime).

    The ctime cannot be set by a user (``touch`` / ``os.utime`` set it to *now*), so replacing or
    touching the file always invalidates the marker, and a copied-in marker from another file never
    matches; the file is then hashed again.
    """
    st = path.stat()
    return (
        f"sha256={digest} ino={st.st_ino} size={st.st_size} mtime_ns={st.st_mtime_ns} "
        f"ctime_ns={st.st_ctime_ns}"
    )


def _write_marker(path: Path, digest: str) -> None:
    marker = _marker(path)
    tmp = marker.with_name(f".{marker.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(_stamp(path, digest) + "\n")
        os.replace(tmp, marker)
    except OSError:  # read-only cache: just hash again next time
        tmp.unlink(missing_ok=True)


def _verified(path: Path, expected: str | None) -> str | None:
    """None if ``path`` has the expected hash, else its actual sha256.

    Hashing a 2.4 GB file takes seconds, so a successful check is remembered in a marker file next to
    it (:func:`_stamp`); when the file's identity differs from what the marker says, it is hashed again.
    """
    if expected is None:
        return None
    try:
        if _marker(path).read_text().strip() == _stamp(path, expected):
            return None
    except OSError:
        pass
    actual = sha256_file(path)
    if actual != expected:
        return actual
    _write_marker(path, expected)
    return None


def _remove_stale_parts(folder: Path, filename: str, older_than_s: float) -> None:
    """Delete partial downloads of ``filename`` left by a killed process (untouched for a while, so
    not one another process is still writing)."""
    now = time.time()
    for part in folder.glob(f".{filename}.*.part"):
        with contextlib.suppress(OSError):
            if now - part.stat().st_mtime > older_than_s:
                part.unlink()


def download_checkpoint(
    name: str,
    progress: bool = True,
    timeout: float = _DOWNLOAD_TIMEOUT_S,
    deadline: float | None = None,
    min_rate: float = _MIN_RATE_BYTES_PER_S,
) -> Path:
    """Return the path of official checkpoint ``name``, downloading and verifying it if needed.

    A cached file is returned only if its sha256 matches. A download goes to a temporary ``.part`` file
    in the cache directory, is verified, then renamed into place atomically, so no partial file is ever
    left at the final path; ``.part`` files of an earlier, killed download are removed. With env
    ``SAMLIB_OFFLINE=1`` the network is not tried.

    Arguments:
      name (str): "vit_b", "vit_l" or "vit_h".
      progress (bool): show a tqdm bar.
      timeout (float): seconds to wait for the connection and for each read.
      deadline (float | None): seconds the whole download may take; None: env
        ``SAMLIB_DOWNLOAD_DEADLINE`` or 4 hours.
      min_rate (float): bytes per second below which a download counts as stalled, averaged over
        windows of ``max(2 * timeout, 5)`` s (a server that trickles a byte at a time never trips the
        per-read timeout).

    Raises:
      CheckpointUnavailableError: offline, network failure, stall, deadline, or hash mismatch. The message
        gives the URL, the expected sha256 and the exact path where the file can be placed by hand.
    """
    spec = _spec(name)
    path = checkpoint_path(name)
    if deadline is None:
        deadline = _env_float("SAMLIB_DOWNLOAD_DEADLINE", _DOWNLOAD_DEADLINE_S)
    if not deadline > 0 or not timeout > 0:
        raise InvalidInputError(f"deadline and timeout must be > 0 seconds, got {deadline} and {timeout}.")
    if path.is_file():
        actual = _verified(path, spec.sha256)
        if actual is None:
            return path
        raise CheckpointUnavailableError(
            f"The cached checkpoint {path} has sha256 {actual}, but {spec.filename} should have "
            f"{spec.sha256}: the file is corrupt or a different model. Delete it to download again.\n"
            + _manual_instructions(spec, path)
        )
    if _offline():
        raise CheckpointUnavailableError(
            f"SAM checkpoint {name!r} is not in the cache and SAMLIB_OFFLINE is set, so it was not "
            "downloaded.\n" + _manual_instructions(spec, path)
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CheckpointUnavailableError(
            f"Cannot create the cache directory {path.parent}: {e}.\n" + _manual_instructions(spec, path)
        ) from e
    window = max(2 * timeout, 5.0)
    _remove_stale_parts(path.parent, spec.filename, older_than_s=2 * window)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{spec.filename}.", suffix=".part", dir=path.parent)
    tmp = Path(tmp_name)
    start = time.monotonic()
    try:
        digest = hashlib.sha256()
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(spec.url, timeout=timeout) as response:
            total = int(response.headers.get("Content-Length") or 0) or None
            with tqdm(
                total=total, unit="B", unit_scale=True, desc=spec.filename, disable=not progress
            ) as bar:
                mark_t, mark_n, received = start, 0, 0
                # read1: whatever has arrived (read(n) would wait for all n bytes, however slowly they come)
                for chunk in iter(lambda: response.read1(_CHUNK), b""):
                    out.write(chunk)
                    digest.update(chunk)
                    bar.update(len(chunk))
                    received += len(chunk)
                    now = time.monotonic()
                    if now - start > deadline:
                        raise _Stalled(
                            f"the download took longer than its deadline of {deadline:g} s "
                            f"({received} bytes received; set SAMLIB_DOWNLOAD_DEADLINE for a slower link)"
                        )
                    if now - mark_t >= window:
                        if (received - mark_n) / (now - mark_t) < min_rate:
                            raise _Stalled(
                                f"the download stalled: {received - mark_n} bytes in the last "
                                f"{now - mark_t:.0f} s (below {min_rate:g} bytes/s)"
                            )
                        mark_t, mark_n = now, received
        if total is not None and received != total:
            raise _Stalled(f"the server closed the connection after {received} of {total} bytes")
        actual = digest.hexdigest()
        if spec.sha256 is not None and actual != spec.sha256:
            raise CheckpointUnavailableError(
                f"Downloaded {spec.url} but its sha256 is {actual}, expected {spec.sha256} "
                "(truncated or altered download).\n" + _manual_instructions(spec, path)
            )
        os.replace(tmp, path)
    except CheckpointUnavailableError:
        raise
    except (_Stalled, OSError, ValueError, http.client.HTTPException) as e:  # URLError, timeouts, disk full
        raise CheckpointUnavailableError(
            f"Could not download SAM checkpoint {name!r} ({type(e).__name__}: {e}).\n"
            + _manual_instructions(spec, path)
        ) from None  # the message already names the cause; the urllib traceback only buries it
    finally:
        tmp.unlink(missing_ok=True)  # no-op after a successful os.replace
    if spec.sha256 is not None:
        _write_marker(path, spec.sha256)
    return path


class _Stalled(Exception):
    """A download that is too slow or too long (turned into CheckpointUnavailableError)."""


def _env_float(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise InvalidInputError(f"${name} must be a number of seconds, got {raw!r}.") from None


def infer_sam_arch(state_dict: Mapping[str, Any]) -> str:
    """Guess "vit_b", "vit_l" or "vit_h" from a SAM state dict (encoder block count and width)."""
    blocks = {
        int(m.group(1)) for key in state_dict if (m := re.match(r"image_encoder\.blocks\.(\d+)\.", key))
    }
    weight = state_dict.get("image_encoder.patch_embed.proj.weight")
    if not blocks or not isinstance(weight, torch.Tensor):
        raise InvalidInputError(
            "This state dict is not a SAM checkpoint: it has no 'image_encoder.blocks.*' / "
            "'image_encoder.patch_embed.proj.weight' entries."
        )
    depth, dim = max(blocks) + 1, int(weight.shape[0])
    try:
        return _ARCH_BY_SHAPE[(depth, dim)]
    except KeyError:
        raise InvalidInputError(
            f"SAM checkpoint with {depth} encoder blocks of width {dim} matches none of vit_b (12x768), "
            "vit_l (24x1024), vit_h (32x1280). Teaching-size checkpoints must be saved as a dict with a "
            "'config' key (see samlib.teaching.model)."
        ) from None


def _build_sam(arch: str) -> Sam:
    """An untrained SAM of the given architecture (weights are loaded separately)."""
    return sam_model_registry[arch](checkpoint=None)


def _load_state(sam: Sam, state_dict: Mapping[str, Any], source: str) -> None:
    check_finite_weights(state_dict, source)
    try:
        sam.load_state_dict(state_dict, strict=True)
    except RuntimeError as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
        raise InvalidInputError(f"The weights in {source} do not fit the model: {first_line}") from e


def _read_checkpoint(path: Path) -> Any:
    return torch_load_safe(
        path, "a SAM state dict (or a dict with 'model'/'state_dict'), or a teaching checkpoint with 'config'"
    )


def _set_name(sam: Sam, name: str) -> None:
    setattr(sam, "samlib_name", name)  # noqa: B010  (Sam declares no such attribute)


def load_sam(name: str | os.PathLike[str] = "teaching", device: str | torch.device | None = None) -> Sam:
    """Load a SAM model in eval mode on ``device`` (None: :func:`samlib.utils.default_device`).

    Arguments:
      name (str): "vit_b", "vit_l" or "vit_h" (Meta's checkpoints, downloaded to :func:`cache_dir`);
        "teaching" (the book's small model, :func:`samlib.teaching.model.load_teaching_sam`); or the path of a
        ``.pth``/``.pt`` file: an official-style SAM state dict (architecture inferred) or a teaching
        checkpoint (a dict with a "config" key).

    Returns:
      (Sam): the model, with ``sam.samlib_name`` set (used as the embedding-cache key).
    """
    if isinstance(name, os.PathLike):
        name = os.fspath(name)
    if not isinstance(name, str) or not name.strip():
        raise InvalidInputError(
            f"name must be 'teaching', {', '.join(repr(k) for k in SAM_CHECKPOINTS)} or the path of a "
            f".pth/.pt checkpoint file, got {name!r}."
        )
    dev = resolve_device(device)
    if name in SAM_CHECKPOINTS:
        path = download_checkpoint(name)
        sam = _build_sam(SAM_CHECKPOINTS[name].arch)
        _load_state(sam, _read_checkpoint(path), str(path))
        _set_name(sam, name)
    elif name == "teaching":
        sam = load_teaching_sam(device=dev)
        _set_name(sam, getattr(sam, "samlib_name", None) or "teaching")
    else:
        path = Path(name).expanduser()
        if path.suffix not in {".pth", ".pt"} and not path.exists():
            raise InvalidInputError(
                f"Unknown model {name!r}. Use one of 'teaching', "
                f"{', '.join(repr(k) for k in SAM_CHECKPOINTS)}, or the path of a .pth/.pt checkpoint file."
            )
        if not path.is_file():
            raise InvalidInputError(f"Checkpoint file {path} does not exist (or is not a file).")
        obj = _read_checkpoint(path)
        if isinstance(obj, dict) and "config" in obj:
            sam = load_teaching_sam(path, device=dev)
            # The full path, not just the file name: two runs' "teaching.pt" must not share cached embeddings.
            _set_name(sam, f"teaching:{path.resolve()}")
        else:
            state = obj
            if isinstance(obj, dict) and not any(str(k).startswith("image_encoder.") for k in obj):
                state = obj.get("model", obj.get("state_dict", obj))
            if not isinstance(state, Mapping):
                raise InvalidInputError(
                    f"Checkpoint {path} holds a {type(state).__name__}, not a state dict."
                )
            check_finite_weights(state, str(path))
            arch = infer_sam_arch(state)
            sam = _build_sam(arch)
            _load_state(sam, state, str(path))
            _set_name(sam, f"{arch}:{path.resolve()}")
    return sam.to(dev).eval()


def model_name(sam: torch.nn.Module) -> str:
    """A name for ``sam`` usable as a cache key: ``sam.samlib_name`` if set by :func:`load_sam`, else one
    unique to this Python object (so two unnamed models never share cached embeddings)."""
    name = getattr(sam, "samlib_name", None)
    return str(name) if name else f"unnamed-{type(sam).__name__}-{id(sam):x}"
