"""Regression tests of issue 21 (hardening), one block per numbered item: each bad input of the issue
gets a clear samlib error (naming the file, line or argument) or a correct result, never a raw
traceback or a silently wrong answer."""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

import samlib
from samlib import data, losses, metrics, models, results
from samlib.errors import (
    CheckpointUnavailableError,
    CorruptFileError,
    DataNotFoundError,
    InvalidInputError,
    SamlibError,
    TrainingDivergedError,
)
from samlib.predict import PromptPredictor
from samlib.teaching import TeachingConfig, build_teaching_sam
from samlib.utils import as_uint8_rgb, resolve_device, stretch_to_uint8

# ---------------------------------------------------------------------------------- 1. code in pickles


class _Evil:
    def __init__(self, sentinel: Path) -> None:
        self.sentinel = sentinel

    def __reduce__(self) -> Any:
        return (os.system, (f"touch {self.sentinel}",))


def _evil_file(tmp_path: Path, payload: dict[str, Any]) -> tuple[Path, Path]:
    sentinel = tmp_path / "PWNED"
    path = tmp_path / "evil.pt"
    with path.open("wb") as f:
        pickle.dump({k: (_Evil(sentinel) if v is None else v) for k, v in payload.items()}, f)
    return path, sentinel


@pytest.mark.parametrize("payload", [{"config": {}, "model": None}, {"model": None}])
def test_load_sam_refuses_a_code_running_pickle(tmp_path: Path, payload: dict[str, Any]) -> None:
    path, sentinel = _evil_file(tmp_path, payload)
    with pytest.raises(InvalidInputError, match="weights_only"):
        samlib.load_sam(str(path), device="cpu")
    with pytest.raises(InvalidInputError, match="weights_only"):
        samlib.teaching.load_teaching_sam(path)
    assert not sentinel.exists()


def test_adapter_and_training_state_readers_refuse_a_code_running_pickle(tmp_path: Path) -> None:
    from samlib import adapters
    from samlib.methods import pointsam
    from samlib.utils import torch_load_safe

    path, sentinel = _evil_file(tmp_path, {"format": None})
    sam = samlib.load_sam("teaching", device="cpu")
    with pytest.raises(InvalidInputError, match="weights_only"):
        adapters.load_adapters(sam, path)
    with pytest.raises(InvalidInputError, match="PointSAM training state"):
        pointsam.train_pointsam(
            sam, pointsam.generated_point_set("dense_objects", 1, 64), pointsam.PointSAMConfig(
                steps=1, images_per_step=1, pbr=False), progress=False, checkpoint=path,
        )  # fmt: skip
    assert not sentinel.exists()
    with pytest.raises(InvalidInputError, match="does not exist"):
        torch_load_safe(tmp_path / "missing.pt")


def test_cli_resume_refuses_a_code_running_pickle(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from samlib.teaching.__main__ import main

    path, sentinel = _evil_file(tmp_path, {"model": None})
    with pytest.raises(SystemExit) as info:
        main(["train", "--steps", "1", "--out", str(path)])
    assert info.value.code == 2
    assert "not a readable training checkpoint" in capsys.readouterr().err
    assert not sentinel.exists()


# ------------------------------------------------------------------------------ 2. non-finite weights


def _tiny_checkpoint(path: Path, transform: Any = None, **config: Any) -> Path:
    torch.manual_seed(0)
    sam = build_teaching_sam(TeachingConfig.tiny())
    state = {k: (transform(v) if transform else v).half() for k, v in sam.state_dict().items()}
    torch.save({"config": {**asdict(TeachingConfig.tiny()), **config}, "model": state}, path)
    return path


def test_load_sam_refuses_non_finite_weights(tmp_path: Path) -> None:
    path = _tiny_checkpoint(tmp_path / "nan.pt", transform=lambda v: torch.where(v > 0, torch.nan, v))
    with pytest.raises(InvalidInputError, match="not finite") as info:
        samlib.load_sam(str(path), device="cpu")
    assert "nan.pt" in str(info.value)
    state = {"image_encoder.patch_embed.proj.weight": torch.full((768, 3, 16, 16), torch.inf)}
    torch.save(state, tmp_path / "inf.pth")
    with pytest.raises(InvalidInputError, match="not finite"):
        samlib.load_sam(str(tmp_path / "inf.pth"), device="cpu")
    good = _tiny_checkpoint(tmp_path / "good.pt")
    assert samlib.load_sam(str(good), device="cpu") is not None


def test_fit_stops_with_a_samlib_error_on_a_non_finite_loss() -> None:
    from samlib.training import fit

    w = torch.nn.Parameter(torch.ones(1))
    with pytest.raises(TrainingDivergedError, match="step 0"):
        fit([w], lambda b: w.sum() * torch.tensor(float("nan")), n_items=2, steps=3, progress=False)
    with pytest.raises(InvalidInputError, match="lr"):
        fit([w], lambda b: w.sum(), n_items=2, steps=3, lr=float("nan"), progress=False)


# ------------------------------------------------------------------------ 3. 16-bit and float imagery


def test_16_bit_and_float_files_are_stretched_not_truncated(tmp_path: Path) -> None:
    import tifffile

    ramp = np.linspace(0, 2047, 40 * 40).reshape(40, 40).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")
    tifffile.imwrite(tmp_path / "rgb16.tif", np.dstack([ramp] * 3))
    tifffile.imwrite(tmp_path / "float.tif", (ramp / 2047).astype(np.float32))
    cv_rgb16 = np.dstack([ramp, ramp // 2, ramp // 4])[..., ::-1].copy()  # BGR for OpenCV
    import cv2

    cv2.imwrite(str(tmp_path / "rgb16.png"), cv_rgb16)
    for name in ("grey16.png", "rgb16.tif", "float.tif", "rgb16.png"):
        img = data._read_image(tmp_path / name)
        assert img.dtype == np.uint8 and img.shape == (40, 40, 3), name
        red = img[..., 0].astype(float)
        assert red.max() == 255 and red.min() == 0, name  # the full range is used (a >> 8 gives max 7)
        # not saturated (one 2-98 % range for all bands: red, the brightest band, takes most of the top 2 %)
        assert np.mean(red == 255) < 0.1, name
        assert np.corrcoef(red.ravel(), ramp.ravel())[0, 1] > 0.99, name
    rgb16 = data._read_image(tmp_path / "rgb16.png")
    assert rgb16[..., 0].mean() > rgb16[..., 2].mean()  # one range for all bands keeps the colour balance


def test_rgbn_rasters_are_refused_not_read_as_alpha(tmp_path: Path) -> None:
    import tifffile

    band = np.arange(900, dtype=np.uint8).reshape(30, 30)
    tifffile.imwrite(tmp_path / "rgbn.tif", np.dstack([band] * 4), photometric="rgb", extrasamples=[0])
    with pytest.raises(CorruptFileError, match="rgbn.tif"):
        data._read_image(tmp_path / "rgbn.tif")
    with pytest.raises(InvalidInputError, match="4-band"):
        as_uint8_rgb(np.dstack([band.astype(np.uint16) * 8] * 4))


def test_pil_wide_modes_keep_their_values() -> None:
    ramp = np.linspace(0, 1, 100, dtype=np.float32).reshape(10, 10)
    out = as_uint8_rgb(Image.fromarray(ramp))  # mode "F" in [0, 1]: was 0/1 after convert("RGB")
    np.testing.assert_array_equal(out[..., 0], np.round(ramp * 255).astype(np.uint8))
    with pytest.raises(InvalidInputError, match="stretch_to_uint8"):
        as_uint8_rgb(Image.fromarray((ramp * 2047).astype(np.uint16)))  # mode I;16 with values > 255


def test_stretch_to_uint8_maps_the_percentiles_to_the_ends() -> None:
    x = np.arange(1000, dtype=np.float64).reshape(10, 100) * 3.0
    out = stretch_to_uint8(x, percentiles=(0, 100))
    assert out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotonic
    assert stretch_to_uint8(np.full((4, 4), 7, np.uint16)).max() == 0  # constant band
    with pytest.raises(InvalidInputError, match="percentiles"):
        stretch_to_uint8(x, percentiles=(50, 10))


# ----------------------------------------------------------------------------------------- 4. prompts


@pytest.fixture
def predictor(tiny_sam: Any) -> PromptPredictor:
    p = PromptPredictor(tiny_sam)
    p.set_image(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8))
    return p


@pytest.mark.parametrize("point", [[10000, 10], [-5, -5], [1e30, 1e30], [10, 49]])
def test_points_off_the_image_are_errors_single_and_batched(predictor: PromptPredictor, point: list) -> None:
    with pytest.raises(InvalidInputError, match="point_coords.*outside"):
        predictor.predict(np.array([point], float), np.array([1]))
    with pytest.raises(InvalidInputError, match="point_coords.*outside"):
        predictor.predict_batch(point_coords=np.array([[point]], float), point_labels=np.array([[1]]))


def test_points_on_the_border_and_padding_points_are_fine(predictor: PromptPredictor) -> None:
    pred = predictor.predict(np.array([[64.0, 48.0], [0, 0], [-1000, -1000]]), np.array([1, 0, -1]))
    assert pred.masks.shape == (3, 48, 64)


def test_boxes_outside_are_errors_and_overhanging_boxes_are_clipped(predictor: PromptPredictor) -> None:
    for box in ([70, 0, 90, 20], [-50, -50, -10, -10], [0, 0, 1e30, 1e30]):
        with pytest.raises(InvalidInputError, match="boxes"):
            predictor.predict(box=np.array(box, float))
        with pytest.raises(InvalidInputError, match="boxes"):
            predictor.predict_batch(boxes=np.array([box], float))
    clipped = predictor.predict(box=np.array([-10, -10, 30, 30.0]))
    same = predictor.predict(box=np.array([0, 0, 30, 30.0]))
    np.testing.assert_array_equal(clipped.masks, same.masks)


def test_empty_and_padding_only_prompts_are_errors(predictor: PromptPredictor) -> None:
    with pytest.raises(InvalidInputError, match="N = 0"):
        predictor.predict(np.zeros((0, 2)), np.zeros(0))
    with pytest.raises(InvalidInputError, match="only padding"):
        predictor.predict(np.array([[5.0, 5.0]]), np.array([-1]))
    with pytest.raises(InvalidInputError, match="only padding"):
        predictor.predict_batch(point_coords=np.array([[[5.0, 5.0]]]), point_labels=np.array([[-1]]))
    ok = predictor.predict_batch(
        boxes=np.array([[1, 1, 20, 20.0]]),
        point_coords=np.array([[[5.0, 5.0]]]),
        point_labels=np.array([[-1]]),
    )
    assert ok.masks.shape == (1, 1, 48, 64)


def _mars_root(tmp_path: Path, text: str) -> Path:
    img = tmp_path / "mars-pits" / "train" / "images" / "p0.jpg"
    img.parent.mkdir(parents=True)
    Image.fromarray(np.full((90, 90, 3), 100, np.uint8)).save(img)
    lab = tmp_path / "mars-pits" / "train" / "labels" / "p0.txt"
    lab.parent.mkdir(parents=True)
    lab.write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    "line, why",
    [
        ("0 nan 0.5 0.1 0.1", "NaN"),
        ("0 1.8 1.8 0.1 0.1", "normalised"),
        ("0 1.0 1.0 0.0 0.0", "outside"),
        ("7 0.5 0.5 0.1 0.1", "class id"),
        ("0 450 450 60 60", "normalised"),
        ("0 0.5 0.5 0.1", "5 values"),
        ("pit 0.5 0.5 0.1 0.1", "number"),
    ],
)
def test_bad_yolo_lines_name_the_file_and_line(tmp_path: Path, line: str, why: str) -> None:
    root = _mars_root(tmp_path, f"0 0.5 0.5 0.1 0.1\n{line}\n")
    with pytest.raises(CorruptFileError, match=why) as info:
        data.load_mars_pits(root, split="train")
    assert "p0.txt, line 2" in str(info.value)


def test_good_yolo_lines_still_load(tmp_path: Path) -> None:
    (sample,) = data.load_mars_pits(_mars_root(tmp_path, "\n1 0.5 0.5 0.2 0.1\n"), split="train")
    np.testing.assert_allclose(sample.boxes, [[36, 40.5, 54, 49.5]])
    assert sample.box_labels.tolist() == [1]


# ---------------------------------------------------------------------------------------- 5. targets


def test_loss_targets_must_be_probabilities() -> None:
    logits, target = torch.randn(2, 1, 8, 8), (torch.rand(2, 1, 8, 8) > 0.5).float()
    for fn in (losses.dice_loss, losses.bce_dice_loss, losses.dice_focal_loss):
        with pytest.raises(InvalidInputError, match=r"\[0, 1\]"):
            fn(logits, target * 255)
        assert float(fn(logits, target[:, 0])) >= 0  # (B, H, W) target, as the docstring says


def test_training_entry_points_validate_targets(tiny_sam: Any) -> None:
    from samlib.decoders import train_domain_decoder
    from samlib.experts.unet import train_unet

    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    masks = [(rng.random((32, 32)) > 0.5).astype(np.uint8) for _ in range(2)]
    emb = samlib.embed_images(tiny_sam, imgs, progress=False)
    with pytest.raises(InvalidInputError, match="mask 0 must hold values in"):
        train_domain_decoder(emb, [m * 255 for m in masks], steps=2)
    with pytest.raises(InvalidInputError, match=r"labels\[0\].*integer"):
        train_unet(imgs, [m * 0.7 for m in masks], n_classes=2, steps=1, crop=16, base=4, device="cpu")
    with pytest.raises(InvalidInputError, match="integer label map|non-integer"):
        metrics.semantic_scores([np.full((4, 4), 0.7)], [np.ones((4, 4), int)], ["bg", "fg"])


# -------------------------------------------------------------------------------------- 6. downloads


_PAYLOAD = b"samlib" * 700


@pytest.fixture
def local_checkpoint(isolated_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    def register(url: str) -> Path:
        sha = hashlib.sha256(_PAYLOAD).hexdigest()
        monkeypatch.setitem(models.SAM_CHECKPOINTS, "local", models.CheckpointSpec("vit_b", url, sha))
        return isolated_cache / "checkpoints"

    return register


def test_a_trickling_download_stops_with_a_clear_error(local_checkpoint: Any, payload_server: Any) -> None:
    with payload_server(_PAYLOAD, delay=0.2, chunk=1, name="ckpt.pth") as url:
        folder = local_checkpoint(url)
        t0 = time.monotonic()
        with pytest.raises(CheckpointUnavailableError, match="stalled|deadline"):
            models.download_checkpoint("local", progress=False, timeout=1.0, deadline=4.0)
        assert time.monotonic() - t0 < 15
        with pytest.raises(CheckpointUnavailableError, match="deadline"):
            models.download_checkpoint("local", progress=False, timeout=1.0, deadline=1.5, min_rate=0)
    assert not list(folder.glob("*.part"))


def test_stale_part_files_are_removed_and_a_forged_marker_is_not_trusted(
    local_checkpoint: Any, payload_server: Any
) -> None:
    with payload_server(_PAYLOAD, delay=0.0, name="ckpt.pth") as url:
        folder = local_checkpoint(url)
        folder.mkdir(parents=True)
        stale = folder / ".ckpt.pth.k1ll3d.part"
        stale.write_bytes(b"half a download")
        os.utime(stale, (time.time() - 3600, time.time() - 3600))  # left by a process killed an hour ago
        path = models.download_checkpoint("local", progress=False, timeout=2.0)
        assert path.read_bytes() == _PAYLOAD and not stale.exists()
        # swap the file for another of the same size and mtime, and forge a marker in the old and new layout
        st = path.stat()
        path.write_bytes(b"X" * st.st_size)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
        good = hashlib.sha256(_PAYLOAD).hexdigest()
        for forged in (
            f"{good} {st.st_size} {st.st_mtime_ns}",
            models._stamp(path, good).replace("ctime", "c"),
        ):
            path.with_name("ckpt.pth.sha256").write_text(forged + "\n")
            with pytest.raises(CheckpointUnavailableError, match="corrupt"):
                models.download_checkpoint("local", progress=False)


# ----------------------------------------------------------------------------------- 7. chapter names


@pytest.mark.parametrize("chapter", ["../../escaped", "a/b", "/abs", "..", "x" * 200, "a\0b"])
def test_write_results_refuses_path_like_chapter_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, chapter: str
) -> None:
    monkeypatch.setenv("SAMLIB_RESULTS_DIR", str(tmp_path / "results"))
    with pytest.raises(InvalidInputError, match="chapter"):
        results.write_results(None, chapter=chapter, setting="smoke", results={"m": {"x": 1.0}})
    assert not any(p.is_file() for p in tmp_path.rglob("*"))


# ------------------------------------------------------------------------------- 8. raw tracebacks


def _roads(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    for i in range(2):
        for kind, arr in (
            ("images", rng.integers(0, 256, (20, 20, 3), np.uint8)),
            ("masks", np.zeros((20, 20), np.uint8)),
        ):
            (tmp_path / "roads-eth" / kind).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(tmp_path / "roads-eth" / kind / f"t{i}.png")
    return tmp_path


@pytest.mark.parametrize(
    "content, error",
    [(None, DataNotFoundError), (b"", CorruptFileError), (b"\x89PNG junk", CorruptFileError)],
)
def test_missing_or_corrupt_files_name_the_file(tmp_path: Path, content: bytes | None, error: type) -> None:
    root = _roads(tmp_path)
    target = root / "roads-eth" / "masks" / "t1.png"
    if content is None:
        target.unlink()
    else:
        target.write_bytes(content)
    with pytest.raises(error, match="t1.png"):
        data.load_roads_eth(root)


def test_truncated_jpeg_and_planar_tiff(tmp_path: Path) -> None:
    import tifffile

    Image.fromarray(np.zeros((50, 50, 3), np.uint8)).save(tmp_path / "a.jpg")
    raw = (tmp_path / "a.jpg").read_bytes()
    (tmp_path / "a.jpg").write_bytes(raw[: len(raw) // 3])
    with pytest.raises(CorruptFileError, match="a.jpg"):
        data._read_image(tmp_path / "a.jpg")
    planes = np.stack([np.full((20, 30), v, np.uint8) for v in (10, 20, 30)])
    tifffile.imwrite(tmp_path / "p.tif", planes, photometric="rgb", planarconfig="separate")
    img = data._read_image(tmp_path / "p.tif")
    assert img.shape == (20, 30, 3) and img[0, 0].tolist() == [10, 20, 30]


@pytest.mark.parametrize(
    "text", ["{oops", "[]", '{"images": []}', '{"images": [{"id": 1}], "annotations": []}']
)
def test_corrupt_coco_file_is_a_clear_error(tmp_path: Path, text: str) -> None:
    data._coco_boxes.cache_clear()
    (tmp_path / "boxes_coco.json").write_text(text)
    with pytest.raises(CorruptFileError, match="boxes_coco.json"):
        data._coco_boxes(str(tmp_path / "boxes_coco.json"))


def test_bad_teaching_checkpoints_are_clear_errors(tmp_path: Path) -> None:
    for name, kw in {"key": {"bogus": 1}, "shape": {"encoder_dim": 48}, "patch": {"patch_size": 0}}.items():
        path = _tiny_checkpoint(tmp_path / f"{name}.pt", **kw)
        with pytest.raises(InvalidInputError, match=f"{name}.pt"):
            samlib.load_sam(str(path), device="cpu")


def test_argument_errors_of_load_sam_devices_metrics_and_results(tmp_path: Path) -> None:
    for bad in (None, 123, ""):
        with pytest.raises(InvalidInputError, match="name"):
            samlib.load_sam(bad)  # type: ignore[arg-type]
    if not torch.cuda.is_available():
        with pytest.raises(InvalidInputError, match="CUDA is not available"):
            resolve_device("cuda")
    a = np.zeros((4, 4), bool)
    with pytest.raises(InvalidInputError, match="same length"):
        metrics.binary_scores([a, a], [a])
    with pytest.raises(InvalidInputError, match="same length"):
        metrics.overall_iou([a, a], [a])
    with pytest.raises(InvalidInputError, match="num_classes"):
        metrics.confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 2), int), 10**5)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(InvalidInputError, match="deep"):
        results.read_results(deep)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--batch-images", "0"], "--batch-images"),
        (["train", "--lr", "nan"], "--lr"),
        (["train", "--lr", "1e30"], "--lr"),
        (["eval", "--n", "0"], "--n"),
        (["export", "no-such.pt"], "no such file"),
    ],
)
def test_cli_refuses_bad_values(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    from samlib.teaching.__main__ import main

    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2 and message in capsys.readouterr().err


def test_cli_resume_with_another_depth_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from samlib.teaching.__main__ import main

    out = tmp_path / "run.pt"
    torch.save({"config": asdict(TeachingConfig()), "model": {}}, out)
    with pytest.raises(SystemExit):
        main(["train", "--steps", "1", "--depth", "6", "--out", str(out)])
    assert "encoder_depth" in capsys.readouterr().err


# --------------------------------------------------------------------------------------- 9. small ones


def test_precision_at_iou_refuses_impossible_ious() -> None:
    for bad in ([0.5, 1.7], [-3.0]):
        with pytest.raises(InvalidInputError, match=r"\[0, 1\]"):
            metrics.precision_at_iou(bad)
    assert metrics.precision_at_iou([0.4, 1.0])["P@0.5"] == 0.5


def test_cli_passes_checkpoint_every_and_pool_size(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import samlib.teaching.__main__ as cli

    seen: dict[str, Any] = {}
    monkeypatch.setattr(cli, "train", lambda settings, out, resume, device: seen.update(s=settings))
    cli.main(["train", "--checkpoint-every", "7", "--pool-size", "16", "--out", str(tmp_path / "x.pt")])
    assert seen["s"].checkpoint_every == 7 and seen["s"].pool_size == 16


def test_training_log_has_no_duplicate_steps_after_a_failed_save(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from samlib.teaching import train as tr

    torch.set_num_threads(1)
    settings = tr.TrainSettings(steps=3, batch_images=1, prompts_per_image=2, pool_size=4, checkpoint_every=1,
                                warmup_steps=1, config=TeachingConfig.tiny())  # fmt: skip
    out = tmp_path / "run.pt"
    real_replace, calls = os.replace, {"n": 0}

    def crash_on_second_save(src: Any, dst: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # the process dies after writing the temp file, before the replace
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_second_save)  # the checkpoint writer (utils) calls os.replace
    with pytest.raises(KeyboardInterrupt):
        tr.train(settings, out, device="cpu")
    monkeypatch.setattr(os, "replace", real_replace)
    tr.train(settings, out, device="cpu")  # resumes from step 1
    steps = [json.loads(line)["step"] for line in out.with_suffix(".log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3]


# -------------------------------------------------------------------------------------- 10. data root


def test_a_relative_data_root_is_made_absolute_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "d").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SAMLIB_DATA", "d")
    root = data.data_root()
    assert root == tmp_path / "d" and root.is_absolute()
    assert data.data_root("d").is_absolute()
    monkeypatch.chdir("/")  # the returned path still means the same folder elsewhere
    assert root.is_dir()


# ---------------------------------------------------------------------------------- 11. memory bound


def test_predict_batch_bounds_memory(predictor: PromptPredictor, monkeypatch: pytest.MonkeyPatch) -> None:
    boxes = np.array([[1, 1, 20, 20], [10, 5, 60, 40], [0, 0, 64, 48]], float)
    whole = predictor.predict_batch(boxes=boxes, multimask_output=True)
    one_by_one = [predictor.predict_batch(boxes=b[None], multimask_output=True) for b in boxes]
    np.testing.assert_array_equal(whole.masks, np.concatenate([p.masks for p in one_by_one]))
    monkeypatch.setenv("SAMLIB_MAX_MASK_BYTES", str(2 * 3 * 48 * 64))
    with pytest.raises(InvalidInputError, match="GiB of masks"):
        predictor.predict_batch(boxes=boxes, multimask_output=True)


def test_every_error_is_a_samlib_error() -> None:
    for cls in (CorruptFileError, TrainingDivergedError, InvalidInputError, DataNotFoundError):
        assert issubclass(cls, SamlibError)
