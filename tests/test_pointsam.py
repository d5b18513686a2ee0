"""Chapter 02 (PointSAM): the generic pieces (adapters, NPC, point sampling, FINCH, augmentation,
rotated boxes), the method module, then the notebook's claims."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from samlib import adapters, augment, clustering
from samlib.errors import InvalidInputError
from samlib.methods import pointsam as P
from samlib.metrics import mask_iou_matrix, rotated_box, rotated_box_iou
from samlib.prompts import calibrate_negative_prompts, sample_instance_points

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_runner import run_notebook  # noqa: E402

CHAPTER = "02_pointsam"


# ------------------------------------------------------------------------------------------------ prompts


def _two_touching_squares() -> np.ndarray:
    masks = np.zeros((3, 40, 40), bool)
    masks[0, 5:20, 5:20] = True
    masks[1, 5:20, 20:35] = True  # touches instance 0
    masks[2, 30:38, 30:38] = True  # far away
    return masks


def test_sample_instance_points_positives_inside_negatives_outside(rng) -> None:
    masks = _two_touching_squares()
    coords, labels = sample_instance_points(masks, 3, rng)
    assert coords.shape == (3, 6, 2) and labels.tolist() == [[1, 1, 1, 0, 0, 0]] * 3
    for m, c in zip(masks, coords.astype(int)):
        assert m[c[:3, 1], c[:3, 0]].all()  # (x, y) indexes the mask as [y, x]
        assert not m[c[3:, 1], c[3:, 0]].any()
    with pytest.raises(InvalidInputError):
        sample_instance_points(np.ones((1, 8, 8), bool), 1, rng)


def test_npc_swaps_in_the_neighbours_positive_on_two_overlapping_instances() -> None:
    masks = _two_touching_squares()
    coords = np.array(
        [
            [[10.0, 10.0], [2.0, 38.0]],  # instance 0: positive, own negative far away
            [[28.0, 12.0], [38.0, 2.0]],  # instance 1: positive, own negative
            [[33.0, 33.0], [2.0, 2.0]],  # instance 2: no overlap with anyone
        ]
    )
    labels = np.array([[1, 0], [1, 0], [1, 0]])
    # the decoder confused 0 and 1: both predicted masks cover both squares
    pred = masks.copy()
    pred[0] |= masks[1]
    pred[1] |= masks[0]
    picked = set()
    for seed in range(20):
        new, new_labels = calibrate_negative_prompts(pred, coords, labels, np.random.default_rng(seed))
        assert np.array_equal(new_labels, labels)
        assert np.array_equal(new[:, 0], coords[:, 0])  # positives never move
        assert np.array_equal(new[2], coords[2])  # the non-overlapping instance keeps its prompts
        # a new negative is the instance's own negative or the neighbour's positive
        assert tuple(new[0, 1]) in {(2.0, 38.0), (28.0, 12.0)}
        assert tuple(new[1, 1]) in {(38.0, 2.0), (10.0, 10.0)}
        picked.add(tuple(new[0, 1]))
    assert (28.0, 12.0) in picked  # the neighbour's positive does get swapped in
    # predicted masks that do not overlap leave every prompt as it was
    same, _ = calibrate_negative_prompts(masks, coords, labels, np.random.default_rng(0))
    assert np.array_equal(same, coords)


def test_mask_iou_matrix() -> None:
    masks = _two_touching_squares()
    m = mask_iou_matrix(np.stack([masks[0], masks[0] | masks[1], masks[2]]))
    assert np.allclose(np.diag(m), 1) and np.allclose(m, m.T)
    assert m[0, 1] == pytest.approx(0.5) and m[0, 2] == 0.0


def test_rotated_box_iou_of_a_diagonal_bar() -> None:
    import cv2

    bar = np.zeros((64, 64), np.uint8)
    cv2.fillPoly(bar, [cv2.boxPoints(((32, 32), (40, 8), 45)).astype(np.int32)], 1)
    box = rotated_box(bar)
    assert box is not None
    assert box[1][0] * box[1][1] < 0.6 * (np.ptp(np.nonzero(bar)[0]) + 1) ** 2  # tighter than upright
    assert rotated_box_iou(box, box) == pytest.approx(1.0)
    shifted = ((box[0][0] + 100, box[0][1]), box[1], box[2])
    assert rotated_box_iou(box, shifted) == 0.0
    assert rotated_box_iou(box, None) == 0.0 and rotated_box(np.zeros((4, 4))) is None


# ------------------------------------------------------------------------------------------------ FINCH


def test_finch_partitions_on_three_blobs() -> None:
    rng = np.random.default_rng(0)
    centres = np.array([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0]])
    x = np.concatenate([rng.normal(c, 0.1, (20, 3)) for c in centres])
    truth = np.repeat(np.arange(3), 20)
    labels, counts = clustering.finch_partitions(x)
    assert labels.shape == (60, len(counts)) and (np.diff(counts) < 0).all()
    for col in range(labels.shape[1]):  # no cluster of any partition mixes two blobs
        for c in np.unique(labels[:, col]):
            assert len(np.unique(truth[labels[:, col] == c])) == 1 or counts[col] < 3
    protos, chosen = clustering.finch_prototypes(x)
    assert len(protos) == len(np.unique(chosen)) > 1
    for blob in range(3):  # the chosen partition never splits a blob
        assert len(np.unique(chosen[truth == blob])) == 1
    assert np.allclose(protos, clustering.cluster_means(x, chosen))
    with pytest.raises(InvalidInputError):
        clustering.finch_partitions(x[:1])


# ------------------------------------------------------------------------------------------------ PBR


def test_hungarian_prototype_loss_zero_at_targets_and_differentiable() -> None:
    torch.manual_seed(0)
    target = torch.randn(4, 8)
    same = target[[2, 0, 3, 1]].clone().requires_grad_(True)
    assert P.hungarian_prototype_loss(same, target).item() == pytest.approx(0.0, abs=1e-6)
    moved = (target[:3] + 0.5 * torch.randn(3, 8)).requires_grad_(True)
    loss = P.hungarian_prototype_loss(moved, target)
    assert loss.item() > 0
    loss.backward()
    assert moved.grad is not None and moved.grad.abs().sum() > 0


def test_online_prototypes_pass_gradients_to_the_features() -> None:
    rng = np.random.default_rng(1)
    feats = torch.tensor(
        np.concatenate([rng.normal([4.0, 0], 0.1, (6, 2)), rng.normal([0, 4.0], 0.1, (6, 2))]),
        dtype=torch.float32,
        requires_grad=True,
    )
    protos = P.online_prototypes(feats)
    assert protos.shape[1] == 2 and 1 < protos.shape[0] < 12
    P.hungarian_prototype_loss(protos, torch.tensor([[1.0, 1.0], [-1.0, 2.0]])).backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ augment


def test_flip_keeps_points_on_their_masks_and_strong_augment_keeps_geometry(rng) -> None:
    masks = _two_touching_squares()
    coords, _ = sample_instance_points(masks, 2, rng)
    flipped_masks = augment.hflip_masks(masks)
    flipped = augment.hflip_points(coords, masks.shape[2]).astype(int)
    for m, c in zip(flipped_masks, flipped):
        assert m[c[:2, 1], c[:2, 0]].all()
    image = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
    assert np.array_equal(augment.hflip_image(augment.hflip_image(image)), image)
    for n_ops in (0, 2, len(augment.PHOTOMETRIC_OPS)):
        out = augment.strong_augment(image, rng, n_ops)
        assert out.shape == image.shape and out.dtype == np.uint8
    with pytest.raises(InvalidInputError):
        augment.strong_augment(image.astype(np.float32), rng)


def test_strong_augment_draws_only_the_named_ops(rng) -> None:
    from PIL import Image, ImageOps

    image = (rng.random((40, 40, 3)) * 255).astype(np.uint8)
    out = augment.strong_augment(image, rng, 1, ops=("equalize",))
    assert np.array_equal(out, np.asarray(ImageOps.equalize(Image.fromarray(image))))
    with pytest.raises(InvalidInputError, match="unknown photometric"):
        augment.strong_augment(image, rng, 1, ops=("blur",))
    with pytest.raises(InvalidInputError, match="n_ops"):
        augment.strong_augment(image, rng, 2, ops=("equalize",))


# ------------------------------------------------------------------------------------------------ adapters


def _encode(sam, seed: int = 0) -> torch.Tensor:
    x = torch.randn(
        1, 3, sam.image_encoder.img_size, sam.image_encoder.img_size, generator=torch.manual_seed(seed)
    )
    with torch.no_grad():
        return sam.image_encoder(x)


def test_lora_starts_as_identity_and_freezes_everything_else(tiny_sam) -> None:
    before = _encode(tiny_sam)
    names = adapters.add_encoder_lora(tiny_sam, rank=2, blocks=[0])
    assert names == ["image_encoder.blocks.0.attn.qkv"]
    assert torch.equal(_encode(tiny_sam), before)  # B starts at zero
    trainable = [n for n, p in tiny_sam.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    with pytest.raises(InvalidInputError):
        adapters.encoder_lora_targets(tiny_sam, [5])


def test_adapters_save_load_round_trip_and_merge(tiny_sam, tiny_sam_factory, tmp_path) -> None:
    adapters.add_encoder_lora(tiny_sam, rank=2, blocks=[0])
    with torch.no_grad():
        for p in adapters.lora_parameters(tiny_sam):
            p.normal_(0, 0.5)
    adapted = _encode(tiny_sam)
    path = adapters.save_adapters(tiny_sam, tmp_path / "lora.pt", meta={"note": "test"})
    assert path.stat().st_size < 50_000  # the adapter alone, not the model
    fresh = tiny_sam_factory()  # same seed: same base weights, no adapters
    assert not torch.allclose(_encode(fresh), adapted)
    assert adapters.load_adapters(fresh, path) == {"note": "test"}
    assert torch.allclose(_encode(fresh), adapted, atol=1e-6)
    assert adapters.merge_adapters(fresh) == 1
    assert torch.allclose(_encode(fresh), adapted, atol=1e-5)
    with pytest.raises(InvalidInputError):
        adapters.load_adapters(tiny_sam_factory(), tmp_path / "missing.pt")


# ------------------------------------------------------------------------------------------------ method


def _toy_set(n: int = 3, size: int = 64) -> P.PointSet:
    rng = np.random.default_rng(0)
    images, masks = [], []
    for _ in range(n):
        image = (rng.random((size, size, 3)) * 60).astype(np.uint8)
        ms = np.zeros((3, size, size), bool)
        for j in range(3):
            y, x = rng.integers(4, size - 20, 2)
            ms[j, y : y + 14, x : x + 14] = True
            image[ms[j]] = 200 - 40 * j
        for j in range(3):  # later squares cover earlier ones
            ms[j] &= ~ms[j + 1 :].any(0) if j < 2 else True
        keep = ms.reshape(3, -1).sum(1) > 4
        images.append(image)
        masks.append(ms[keep])
    return P.PointSet(images, masks)


@pytest.mark.parametrize("variant", ["pointsam", "supervised"])
def test_training_changes_only_the_lora_weights(tiny_sam, variant) -> None:
    toy = _toy_set()
    protos = P.target_prototypes(tiny_sam, toy, progress=False)
    base = P.PointSAMConfig(steps=3, images_per_step=2, blocks=(0,), bank_size=4, pbr_every=1, lr=1e-2)
    before = {n: p.detach().clone() for n, p in tiny_sam.named_parameters()}
    result = P.train_pointsam(tiny_sam, toy, P.variant_config(variant, base), protos, progress=False)
    check = P.weight_check(tiny_sam, result.sam)
    assert check["lora_b_max_abs"] > 0
    assert check["frozen_max_abs_diff"] == 0.0 and check["frozen_tensors"] == len(before)
    for n, p in tiny_sam.named_parameters():  # the source model itself is untouched
        assert torch.equal(p, before[n])
    assert len(result.history["loss"]) == 3 and np.isfinite(result.history["loss"]).all()
    if variant == "pointsam":
        assert np.isfinite(result.history["pbr"]).any()  # the bank filled and PBR ran


def test_release_pbr_without_gradient_trains_exactly_like_no_pbr(tiny_sam) -> None:
    # The public release computes PBR from detached numbers: a constant added to the loss.
    toy = _toy_set()
    protos = P.target_prototypes(tiny_sam, toy, progress=False)
    base = P.PointSAMConfig(steps=3, images_per_step=2, blocks=(0,), bank_size=4, pbr_every=1, lr=1e-2)
    release = P.train_pointsam(tiny_sam, toy, replace(base, pbr_gradient=False), protos, progress=False)
    without = P.train_pointsam(tiny_sam, toy, replace(base, pbr=False), None, progress=False)
    ours = P.train_pointsam(tiny_sam, toy, base, protos, progress=False)
    assert np.isfinite(release.history["pbr"]).any()
    a, b, c = (adapters.adapter_state_dict(r.sam) for r in (release, without, ours))
    assert all(torch.equal(a[n], b[n]) for n in a)
    assert any(not torch.equal(a[n], c[n]) for n in a)  # the differentiable PBR does change training


def test_resumed_training_continues_exactly(tiny_sam, tmp_path, monkeypatch) -> None:
    # A run stopped right after its step-2 checkpoint, then resumed, equals an uninterrupted run: adapters,
    # optimizer, the shared random stream and the PBR bank all come back from the checkpoint.
    toy = _toy_set()
    protos = P.target_prototypes(tiny_sam, toy, progress=False)
    cfg = P.PointSAMConfig(steps=4, images_per_step=2, blocks=(0,), bank_size=4, pbr_every=1, lr=1e-2)
    straight = P.train_pointsam(tiny_sam, toy, cfg, protos, progress=False)
    state = tmp_path / "state.pt"
    real_save = P._save_state

    def save_then_crash(path, config, step, *args):  # type: ignore[no-untyped-def]
        real_save(path, config, step, *args)
        if step == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(P, "_save_state", save_then_crash)
    with pytest.raises(KeyboardInterrupt):
        P.train_pointsam(tiny_sam, toy, cfg, protos, progress=False, checkpoint=state, checkpoint_every=1)
    monkeypatch.setattr(P, "_save_state", real_save)
    resumed = P.train_pointsam(tiny_sam, toy, cfg, protos, progress=False, checkpoint=state)
    np.testing.assert_equal(resumed.history, straight.history)
    a, b = adapters.adapter_state_dict(resumed.sam), adapters.adapter_state_dict(straight.sam)
    assert all(torch.equal(a[n], b[n]) for n in a)
    with pytest.raises(InvalidInputError, match="another config"):
        P.train_pointsam(tiny_sam, toy, replace(cfg, lr=1e-3), protos, progress=False, checkpoint=state)


def test_evaluate_points_scores_and_shapes(tiny_sam) -> None:
    toy = _toy_set(2)
    scores = P.evaluate_points(tiny_sam, toy, (1, 2), seed=0, progress=False)
    again = P.evaluate_points(tiny_sam, toy, (1, 2), seed=0, progress=False)
    for k in (1, 2):
        s = scores[k]
        assert 0 <= s.miou <= 1 and 0 <= s.f1 <= 1 and 0 <= s.rbox_p50 <= 1
        assert s.f1 >= s.miou - 1e-9  # Dice >= IoU per instance
        assert s.masks[0].shape == toy.masks[0].shape and s.coords[0].shape[1] == 2 * k
        assert s.miou == again[k].miou  # seeded points


def test_instance_crops_cover_every_instance() -> None:
    masks = np.zeros((3, 100, 100), bool)
    masks[0, 10:14, 10:14] = masks[1, 16:20, 12:16] = masks[2, 80:90, 80:90] = True
    image = np.zeros((100, 100, 3), np.uint8)
    crops = P.instance_crops(image, masks, crop=40, out_size=80)
    assert sum(len(m) for _, m, _ in crops) == 3 and len(crops) == 2  # the two close ones share a crop
    assert all(im.shape == (80, 80, 3) and m.shape[1:] == (80, 80) for im, m, _ in crops)
    with pytest.raises(InvalidInputError):
        P.instance_crops(image, masks, crop=200, out_size=80)


# ------------------------------------------------------------------------------------------------ notebook


SPLITS = ("generated", "hrsid", "spacenet")
ROWS = ("direct_sam", "self_train", "self_train_npc", "self_train_pbr", "pointsam", "supervised")


@pytest.mark.notebook
def test_notebook_records_every_row_and_keeps_frozen_weights() -> None:
    rec = run_notebook(CHAPTER)
    res = rec["results"]
    present = {s for s in SPLITS if f"direct_sam_1pt_{s}" in res}
    assert "generated" in present
    for split in present:
        for row in ROWS:
            for k in (1, 2, 3):
                assert set(res[f"{row}_{k}pt_{split}"]) == {"miou", "f1"}
        for method in ("direct_sam", "pointsam"):
            assert set(res[f"point_to_box_{method}_{split}"]) == {"rbox_iou", "rbox_p50"}
    for check in rec["extra"]["weight_checks"].values():
        assert check["lora_b_max_abs"] > 0 and check["frozen_max_abs_diff"] == 0.0


# Smoke setting, seeds 0 / 1 / 2 (this machine, teaching SAM; re-measured 2026-12-06 after NPC got a
# generator per step and image for torchrun): PointSAM minus direct SAM, 1-point mIoU,
# generated +0.032 / +0.011 / +0.021, spacenet +0.015 / +0.001 / +0.068, hrsid -0.035 / -0.003 / -0.044
# (PointSAM does not beat direct SAM on the HRSID crops in the smoke setting: not asserted; neither does the
# supervised upper bound, -0.036 / -0.007 / -0.023: 4 steps at lr 1e-2 are too few to adapt the encoder
# to SAR; the strong-view study below finds one reason). Test-time NPC on direct SAM, generated: +0.066 /
# +0.040 / +0.041. (Unchanged by the study's addition: the same numbers were re-measured after it.)
MARGIN_GENERATED = 0.01
MARGIN_TEST_NPC_GENERATED = 0.03


@pytest.mark.notebook
def test_pointsam_beats_direct_sam_on_generated_dense_scenes() -> None:
    res = run_notebook(CHAPTER)["results"]
    gain = res["pointsam_1pt_generated"]["miou"] - res["direct_sam_1pt_generated"]["miou"]
    assert gain > MARGIN_GENERATED


@pytest.mark.notebook
def test_test_time_npc_helps_direct_sam_on_crowded_scenes() -> None:
    res = run_notebook(CHAPTER)["results"]
    gain = res["direct_sam_test_npc_1pt_generated"]["miou"] - res["direct_sam_1pt_generated"]["miou"]
    assert gain > MARGIN_TEST_NPC_GENERATED


# The HRSID strong-view study (smoke: every crop, 20 steps, frozen teacher), seeds 0 / 1 / 2, 1-point mIoU
# minus direct SAM: no photometric op +0.003 / +0.014 / +0.008, the paper's 7 ops -0.010 / -0.013 / -0.002,
# the 5 order-keeping ops +0.002 / +0.017 / +0.006, solarize alone -0.064 / -0.052 / -0.035, no photometric
# op + NPC +0.003 / +0.009 / +0.007 (NPC: no effect that holds in every seed, not asserted).
MARGIN_SOLARIZE_COST = 0.03  # no photometric op minus solarize alone: 0.067 / 0.066 / 0.043
MARGIN_ORDER_KEEPING = 0.004  # order-keeping ops minus the paper's 7: 0.012 / 0.030 / 0.008


@pytest.mark.notebook
def test_strong_view_study_solarize_hurts_sar_ships() -> None:
    res = run_notebook(CHAPTER)["results"]
    if "study_direct_sam_1pt_hrsid" not in res:
        pytest.skip("ships-hrsid not found under the data root: the study did not run")
    miou = {
        k[len("study_") : -len("_1pt_hrsid")]: v["miou"] for k, v in res.items() if k.startswith("study_")
    }
    assert set(miou) == {"direct_sam", *P.STRONG_VIEW_STUDY}
    assert miou["self_train_no_photometric"] - miou["self_train_solarize"] > MARGIN_SOLARIZE_COST
    assert miou["self_train_order_keeping"] - miou["self_train"] > MARGIN_ORDER_KEEPING
