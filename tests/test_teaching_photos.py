"""Real-photo pretraining data of the teaching SAM, on tiny fake data folders; trainer hardening."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import samlib  # noqa: F401  (registers the torchvision ops shim first)
from samlib import teaching
from samlib.errors import DataNotFoundError, InvalidInputError
from samlib.teaching import photos as tp
from samlib.teaching import train as tt

TINY = teaching.TeachingConfig.tiny()


def _save_rgb(path: Path, h: int, w: int, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(path)


def _save_index(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _bsds_map(h: int, w: int) -> np.ndarray:
    """Two regions: the left half (0) and the right half (1), as BSDS stores them (uint16)."""
    lab = np.zeros((h, w), np.uint16)
    lab[:, w // 2 :] = 1
    return lab


@pytest.fixture
def fake_root(tmp_path: Path) -> Path:
    """A data root with every photo set in miniature (and a remote-sensing folder that must stay unread)."""
    root = tmp_path / "data"
    nat = root / "natural"
    for i in range(5):
        _save_rgb(nat / "bsds500/images" / f"train_{i}.jpg", 30, 40, i)
        for a in range(2):
            _save_index(nat / "bsds500/segmentations" / f"train_{i}_a{a}.png", _bsds_map(30, 40))
    # A portrait photo whose maps are stored landscape (a counter-clockwise quarter turn), as in BSDS500.
    _save_rgb(nat / "bsds500/images/val_9.jpg", 40, 30, 9)
    _save_index(nat / "bsds500/segmentations/val_9_a0.png", np.ascontiguousarray(np.rot90(_bsds_map(40, 30))))
    for i in range(5):
        _save_rgb(nat / "coco128-seg/images" / f"{i:03d}.jpg", 40, 60, 10 + i)
        (nat / "coco128-seg/labels").mkdir(parents=True, exist_ok=True)
        # A big square and a small one inside it (drawn later, so it stays visible).
        (nat / "coco128-seg/labels" / f"{i:03d}.txt").write_text(
            "0 0.1 0.1 0.9 0.1 0.9 0.9 0.1 0.9\n1 0.4 0.4 0.6 0.4 0.6 0.6 0.4 0.6\n"
        )
    for seq in ("bear", "cows", "dog", "goat", "horse"):
        for f in range(3):
            _save_rgb(nat / "davis2016/images" / f"{seq}_{f * 10:05d}.jpg", 24, 40, f)
            m = np.zeros((24, 40), np.uint8)
            m[5:15, 10:30] = 255
            _save_index(nat / "davis2016/masks" / f"{seq}_{f * 10:05d}.png", m)
    for i in range(5):
        _save_rgb(nat / "davis2017-first/images" / f"s{i}.jpg", 24, 40, 20 + i)
        m = np.zeros((24, 40), np.uint8)
        m[2:12, 2:12], m[12:22, 20:38] = 1, 2
        _save_index(nat / "davis2017-first/masks" / f"s{i}.png", m)
    for sub, prefix in (("camvid/train", "t"), ("camvid", "v")):
        for i in range(3):
            _save_rgb(root / sub / "images" / f"{prefix}{i}.jpg", 30, 40, 30 + i)
            sem = np.full((30, 40), 3, np.uint8)  # road everywhere
            sem[:, :8] = 11  # unlabelled: never an instance
            sem[2:8, 10:16] = 8  # a car
            sem[2:8, 30:36] = 8  # another car, a separate component
            _save_index(root / sub / "labels" / f"{prefix}{i}.png", sem)
    (root / "ships-hrsid").mkdir()
    return root


def test_every_set_lists_reads_and_splits_without_overlap(fake_root: Path) -> None:
    for name in tp.PHOTO_SETS:
        train, held = tp.photo_split(name, fake_root)
        assert train and held, name
        assert not {it.group for it in train} & {it.group for it in held}, name
        image, labels = tp.read_labels(held[0])
        assert labels.shape == image.shape[:2] and labels.dtype == np.int64
        assert labels.max() >= 1
    # DAVIS 2016 is split by sequence: whole sequences (3 frames each) land on one side.
    _, held = tp.photo_split("davis2016", fake_root)
    assert len(held) % 3 == 0 and len({it.group for it in held}) == len(held) // 3
    # The same seed gives the same split, another seed another one.
    names = [it.name for it in tp.photo_split("coco128", fake_root, seed=0)[1]]
    assert names == [it.name for it in tp.photo_split("coco128", fake_root, seed=0)[1]]
    # CamVid's held-out images are its val folder, never the training folder.
    train, held = tp.photo_split("camvid", fake_root)
    assert all("train" in it.image.parts for it in train) and not any(
        "train" in it.image.parts for it in held
    )


def test_training_photos_come_only_from_natural_sets(fake_root: Path) -> None:
    items = tp.training_photos(fake_root)
    assert {it.dataset for it in items} == set(tp.PHOTO_SETS)
    assert all("ships-hrsid" not in str(it.image) for it in items)


def test_label_maps_match_their_sources(fake_root: Path) -> None:
    bsds = {it.name: it for it in tp.list_photos("bsds500", fake_root)}
    image, labels = tp.read_labels(bsds["val_9"])  # the portrait photo: map turned back upright
    assert labels.shape == (40, 30)
    np.testing.assert_array_equal(labels, _bsds_map(40, 30).astype(np.int64) + 1)  # regions 1 and 2
    coco = tp.list_photos("coco128", fake_root)[0]
    _, labels = tp.read_labels(coco)
    assert set(np.unique(labels)) == {0, 1, 2}
    assert labels[20, 30] == 2 and labels[8, 10] == 1  # the small square stays on top of the big one
    cam = tp.list_photos("camvid", fake_root)[0]
    _, labels = tp.read_labels(cam)
    assert labels[:, :8].max() == 0  # ignore pixels belong to no instance
    assert len(np.unique(labels[labels > 0])) == 3  # road + two separate cars
    _, labels = tp.read_labels(tp.list_photos("davis2017", fake_root)[0])
    assert set(np.unique(labels)) == {0, 1, 2}


def test_photo_scene_is_square_with_masks_and_boxes() -> None:
    image = np.zeros((60, 120, 3), np.uint8)
    labels = np.zeros((60, 120), np.int64)
    labels[10:50, 80:110] = 4  # the centred crop keeps original columns 30-89: this one is cut at 90
    labels[0:2, 0:2] = 7  # a speck: dropped by min_area
    scene = tp.photo_scene(image, labels, 32, None, min_area=4)
    assert scene.image.shape == (32, 32, 3)
    assert scene.masks.shape[1:] == (32, 32) and scene.masks.dtype == bool
    assert len(scene.kinds) == len(scene.boxes) == len(scene.masks) == 1
    x0, y0, x1, y1 = scene.boxes[0]
    assert scene.masks[0, int(y0) : int(y1) + 1, int(x0) : int(x1) + 1].all()
    with pytest.raises(InvalidInputError, match="labels shape"):
        tp.photo_scene(image, labels[:10], 32)


def test_photo_pool_draws_seeded_scenes_of_every_set(fake_root: Path) -> None:
    items = tp.training_photos(fake_root)
    pool = tp.PhotoPool(items, 32, pool_size=40, refresh=2, seed=0)
    again = tp.PhotoPool(items, 32, pool_size=40, refresh=2, seed=0)
    a, b = pool.draw(4), again.draw(4)
    assert all(np.array_equal(x.image, y.image) for x, y in zip(a, b))
    assert all(s.image.shape == (32, 32, 3) and len(s.kinds) > 0 for s in a)
    assert len({s.domain for s in pool.scenes}) >= 4  # sqrt weighting: no set crowds out the others
    with pytest.raises(InvalidInputError, match="at least one photo"):
        tp.PhotoPool([], 32, 4, 1, 0)


def test_missing_photo_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataNotFoundError, match="SAMLIB_DATA"):
        tp.list_photos("bsds500", tmp_path)
    with pytest.raises(InvalidInputError, match="unknown photo set"):
        tp.list_photos("ships-hrsid", tmp_path)


def _settings(**kw: object) -> tt.TrainSettings:
    base = tt.TrainSettings(
        batch_images=2, prompts_per_image=2, pool_size=4, pool_refresh=1, warmup_steps=1, config=TINY,
        photo_pool_size=6,
    )  # fmt: skip
    return replace(base, **kw)


def test_training_mixes_photos_by_ratio(
    fake_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[list[str]] = []
    real_step = tt.training_step

    def spy(sam, scenes, settings, rng, balance):  # type: ignore[no-untyped-def]
        seen.append([s.domain for s in scenes])
        return real_step(sam, scenes, settings, rng, balance)

    monkeypatch.setattr(tt, "training_step", spy)
    out = tmp_path / "t.pt"
    tt.train(_settings(steps=2, photo_ratio=0.5, data_root=str(fake_root)), out, resume=False)
    assert len(seen) == 2
    for domains in seen:
        assert domains.count("source") == 1 and len(domains) == 2
    state = torch.load(out, weights_only=True)  # plain types only: the safe loader reads it
    assert state["settings"]["photo_ratio"] == 0.5
    with pytest.raises(InvalidInputError, match="photo_ratio"):
        tt.train(_settings(steps=1, photo_ratio=1.5), tmp_path / "u.pt", resume=False)


class _RunsCode:
    """Unpickling this calls ``Path.touch`` on a marker file: what a malicious checkpoint would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (Path.touch, (self.marker,))


def test_malicious_training_checkpoint_is_refused_without_running_code(tmp_path: Path) -> None:
    out, marker = tmp_path / "t.pt", tmp_path / "ran"
    tt.train(_settings(steps=1), out, resume=False)
    state = torch.load(out, weights_only=True)
    state["settings"]["evil"] = _RunsCode(marker)
    torch.save(state, out)
    with pytest.raises(InvalidInputError, match="weights_only=True"):
        tt.train(_settings(steps=2), out, resume=True)
    with pytest.raises(InvalidInputError, match="weights_only=True"):
        tt.export(out, tmp_path / "e.pt")
    with pytest.raises(InvalidInputError, match="weights_only=True"):
        teaching.load_teaching_sam(out)
    assert not marker.exists()


def test_non_finite_loss_stops_training(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def nan_step(sam, scenes, settings, rng, balance):  # type: ignore[no-untyped-def]
        p = next(sam.parameters())
        return tt.TrainStepResult(p.sum() * float("nan"), 0.0)

    monkeypatch.setattr(tt, "training_step", nan_step)
    out = tmp_path / "t.pt"
    with pytest.raises(tt.TrainingDivergedError, match="nan at step 1"):
        tt.train(_settings(steps=3, checkpoint_every=1), out, resume=False)
    assert not out.exists()  # nothing broken was saved


def test_photo_eval_scores_every_held_out_set(fake_root: Path, tiny_sam_factory) -> None:  # type: ignore[no-untyped-def]
    from samlib.teaching import evaluate as te

    sam = tiny_sam_factory()
    report = te.evaluate_photos(sam, fake_root, n_photos=2)
    assert set(report) == {*tp.PHOTO_SETS, "mean"}
    for name in tp.PHOTO_SETS:
        r = report[name]
        assert r["instances"] >= 1
        for k in ("box_iou", "point_iou", "points3_iou", "box_baseline_iou"):
            assert 0.0 <= r[k] <= 1.0, (name, k, r[k])
    assert report["mean"]["box_iou"] == pytest.approx(np.mean([report[n]["box_iou"] for n in tp.PHOTO_SETS]))


def test_remote_eval_scores_boxes_whole_and_zoomed(tmp_path: Path, tiny_sam_factory) -> None:  # type: ignore[no-untyped-def]
    from samlib.teaching import evaluate as te

    root = tmp_path / "data"
    b = root / "buildings-spacenet-rio"
    _save_rgb(b / "images/t0.tif", 120, 160, 0)
    m = np.zeros((120, 160), np.uint8)
    m[10:20, 10:22], m[60:100, 90:150] = 255, 255
    _save_index(b / "masks/t0.tif", m)
    pits = root / "mars-pits/test"
    _save_rgb(pits / "images/p0.jpg", 90, 90, 1)
    (pits / "labels").mkdir(parents=True)
    (pits / "labels/p0.txt").write_text("0 0.5 0.5 0.2 0.3\n1 0.2 0.2 0.1 0.1\n")
    report = te.evaluate_remote(tiny_sam_factory(), root, n_images=1, max_instances=5, zoom_min_crop=32)
    assert set(report) == {"buildings-spacenet-rio", "mars-pits"}  # missing sets are skipped
    r = report["buildings-spacenet-rio"]
    assert r["instances"] == 2
    for k in ("box_iou", "box_iou_zoom", "box_baseline_iou"):
        assert 0.0 <= r[k] <= 1.0
    assert r["box_baseline_iou"] == pytest.approx(1.0)  # rectangles: the filled box is exact
    p = report["mars-pits"]
    assert p["instances"] == 2
    assert p["ellipse_baseline_iou"] == pytest.approx(np.pi / 4, abs=0.08)
    for k in ("nonempty_share", "fill_ratio", "ellipse_iou", "nonempty_share_zoom", "fill_ratio_zoom"):
        assert 0.0 <= p[k] <= 1.0
