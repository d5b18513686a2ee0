"""Checkpoint registry, cache, download failures and load_sam dispatch (no real network, no big models)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from segment_anything.modeling import Sam

from samlib import models
from samlib.errors import CheckpointUnavailableError, InvalidInputError
from samlib.models import SAM_CHECKPOINTS, CheckpointSpec

TinySam = Callable[..., Sam]


def test_registry_has_official_urls_and_hashes() -> None:
    assert set(SAM_CHECKPOINTS) == {"vit_b", "vit_l", "vit_h"}
    assert (
        SAM_CHECKPOINTS["vit_b"].url == "https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth"
    )
    assert SAM_CHECKPOINTS["vit_h"].filename == "sam_vit_h_4b8939.pth"
    for spec in SAM_CHECKPOINTS.values():
        assert spec.sha256 is None or (len(spec.sha256) == 64 and int(spec.sha256, 16) >= 0)


def test_cache_dir_env_and_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SAMLIB_CACHE", str(tmp_path / "c"))
    assert models.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("SAMLIB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_dir() == tmp_path / "xdg" / "samlib"
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert models.cache_dir() == Path.home() / ".cache" / "samlib"


def test_load_vit_b_offline_fails_fast_with_instructions(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SAMLIB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(CheckpointUnavailableError) as info:
        models.load_sam("vit_b", device="cpu")
    assert time.monotonic() - start < 15
    msg = str(info.value)
    spec = SAM_CHECKPOINTS["vit_b"]
    assert spec.url in msg
    assert str(spec.sha256) in msg
    assert str(isolated_cache / "checkpoints" / "sam_vit_b_01ec64.pth") in msg
    assert "SAMLIB_CACHE" in msg
    assert not (isolated_cache / "checkpoints").exists() or not any(
        (isolated_cache / "checkpoints").iterdir()
    )


def test_network_failure_is_fast_and_leaves_no_file(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Port 9 on localhost refuses connections: a network failure without touching the internet.
    spec = CheckpointSpec("vit_b", "http://127.0.0.1:9/sam_vit_b_01ec64.pth", "0" * 64)
    monkeypatch.setitem(SAM_CHECKPOINTS, "vit_b", spec)
    start = time.monotonic()
    with pytest.raises(CheckpointUnavailableError) as info:
        models.download_checkpoint("vit_b", progress=False, timeout=5)
    assert time.monotonic() - start < 15
    assert spec.url in str(info.value) and "0" * 64 in str(info.value)
    assert list((isolated_cache / "checkpoints").iterdir()) == []


def _fake_remote(tmp_path: Path, payload: bytes) -> str:
    src = tmp_path / "remote" / "sam_vit_b_01ec64.pth"
    src.parent.mkdir(parents=True)
    src.write_bytes(payload)
    return src.as_uri()


def test_download_verifies_and_places_file_atomically(
    isolated_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    payload = b"pretend checkpoint" * 1000
    url = _fake_remote(tmp_path, payload)
    monkeypatch.setitem(
        SAM_CHECKPOINTS, "vit_b", CheckpointSpec("vit_b", url, hashlib.sha256(payload).hexdigest())
    )
    path = models.download_checkpoint("vit_b", progress=False)
    assert path == isolated_cache / "checkpoints" / "sam_vit_b_01ec64.pth"
    assert path.read_bytes() == payload
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".part")]
    # Second call: served from the cache (the remote is gone).
    Path(url.removeprefix("file://")).unlink()
    assert models.download_checkpoint("vit_b", progress=False) == path


def test_download_with_wrong_hash_raises_and_leaves_nothing(
    isolated_cache: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = _fake_remote(tmp_path, b"truncated")
    monkeypatch.setitem(SAM_CHECKPOINTS, "vit_b", CheckpointSpec("vit_b", url, "a" * 64))
    with pytest.raises(CheckpointUnavailableError, match="sha256"):
        models.download_checkpoint("vit_b", progress=False)
    assert list((isolated_cache / "checkpoints").iterdir()) == []


def test_cached_file_with_wrong_hash_is_rejected(isolated_cache: Path) -> None:
    path = models.checkpoint_path("vit_b")
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not the real model")
    with pytest.raises(CheckpointUnavailableError) as info:
        models.load_sam("vit_b", device="cpu")
    msg = str(info.value)
    assert hashlib.sha256(b"not the real model").hexdigest() in msg
    assert str(SAM_CHECKPOINTS["vit_b"].sha256) in msg and str(path) in msg
    assert path.read_bytes() == b"not the real model"  # the user's file is left alone


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(InvalidInputError) as info:
        models.load_sam("vit_x", device="cpu")
    for name in ("teaching", "vit_b", "vit_l", "vit_h"):
        assert name in str(info.value)


def test_missing_checkpoint_path(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="does not exist"):
        models.load_sam(str(tmp_path / "nope.pth"), device="cpu")


def test_infer_arch_from_state_dict_keys() -> None:
    def fake(depth: int, dim: int) -> dict[str, torch.Tensor]:
        sd = {f"image_encoder.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(depth)}
        sd["image_encoder.patch_embed.proj.weight"] = torch.zeros(dim, 3, 1, 1)
        return sd

    assert models.infer_sam_arch(fake(12, 768)) == "vit_b"
    assert models.infer_sam_arch(fake(24, 1024)) == "vit_l"
    assert models.infer_sam_arch(fake(32, 1280)) == "vit_h"
    with pytest.raises(InvalidInputError, match="1 encoder blocks of width 32"):
        models.infer_sam_arch(fake(1, 32))
    with pytest.raises(InvalidInputError, match="not a SAM checkpoint"):
        models.infer_sam_arch({"foo": torch.zeros(1)})


def test_local_state_dict_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_sam_factory: TinySam
) -> None:
    """A plain state dict on disk: architecture inferred, weights loaded, name set."""
    source = tiny_sam_factory(seed=1)
    path = tmp_path / "finetuned.pth"
    torch.save({"model": source.state_dict()}, path)
    monkeypatch.setattr(models, "infer_sam_arch", lambda sd: "vit_b")
    monkeypatch.setattr(models, "_build_sam", lambda arch: tiny_sam_factory(seed=2))
    sam = models.load_sam(str(path), device="cpu")
    assert not sam.training
    assert models.model_name(sam) == f"vit_b:{path.resolve()}"
    for key, value in source.state_dict().items():
        assert torch.equal(sam.state_dict()[key], value), key


def test_tiny_state_dict_is_not_a_standard_sam(tmp_path: Path, tiny_sam_factory: TinySam) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(tiny_sam_factory().state_dict(), path)
    with pytest.raises(InvalidInputError, match="matches none of vit_b"):
        models.load_sam(str(path), device="cpu")


def test_official_name_builds_and_loads(
    isolated_cache: Path, monkeypatch: pytest.MonkeyPatch, tiny_sam_factory: TinySam
) -> None:
    source = tiny_sam_factory(seed=3)
    path = isolated_cache / "weights.pth"
    path.parent.mkdir(parents=True)
    torch.save(source.state_dict(), path)
    monkeypatch.setattr(models, "download_checkpoint", lambda name: path)
    monkeypatch.setattr(models, "_build_sam", lambda arch: tiny_sam_factory(seed=4))
    sam = models.load_sam("vit_b", device="cpu")
    assert models.model_name(sam) == "vit_b"
    key = "mask_decoder.iou_token.weight"
    assert torch.equal(sam.state_dict()[key], source.state_dict()[key])


def test_teaching_dispatch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny_sam_factory: TinySam
) -> None:
    calls: list[tuple[object, object]] = []

    def load_teaching_sam(path: object = None, device: object = None) -> torch.nn.Module:
        calls.append((path, device))
        return tiny_sam_factory()

    monkeypatch.setattr(models, "load_teaching_sam", load_teaching_sam)
    sam = models.load_sam("teaching", device="cpu")
    assert models.model_name(sam) == "teaching"
    assert calls[-1] == (None, torch.device("cpu"))
    ckpt = tmp_path / "teach.pth"
    torch.save({"config": {"embed_dim": 32}, "model": tiny_sam_factory().state_dict()}, ckpt)
    sam = models.load_sam(str(ckpt), device="cpu")
    assert calls[-1] == (ckpt, torch.device("cpu"))
    assert models.model_name(sam).startswith("teaching:")


def test_model_name_unnamed_models_differ(tiny_sam_factory: TinySam) -> None:
    a, b = tiny_sam_factory(), tiny_sam_factory()
    assert models.model_name(a) != models.model_name(b)
