"""GeoSAM (samlib.methods.geosam): prompts, dense prompts, decoder-only fine-tuning, the claim."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from samlib.decoders import trainable_decoder
from samlib.embeddings import embed_images
from samlib.errors import InvalidInputError
from samlib.methods.geosam import GeoSAM, labels_from_logits, sample_class_prompts
from samlib.metrics import semantic_scores

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_runner import run_notebook  # noqa: E402


def _probs(h: int = 40, w: int = 48) -> np.ndarray:
    """(4, H, W) probabilities: class 1 confident in a band, class 2 weak everywhere, class 3 absent."""
    p = np.zeros((4, h, w), np.float32)
    p[1, 10:20, :] = 0.9
    p[2] = 0.3
    p[0] = 1.0 - p[1:].sum(0).clip(0, 1)
    return p


def _scenes(n: int, sizes: list[tuple[int, int]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    images, labels = [], []
    for i in range(n):
        h, w = sizes[i % len(sizes)]
        img = rng.integers(60, 90, (h, w, 3)).astype(np.uint8)
        lab = np.zeros((h, w), np.int64)
        lab[h // 3 : h // 3 + 8, :] = 1
        lab[:, w // 2 : w // 2 + 5] = 2
        img[lab == 1] = 200
        img[lab == 2] = (30, 200, 30)
        images.append(img)
        labels.append(lab)
    return images, labels


def _one_hot(labels: np.ndarray, n: int = 4) -> np.ndarray:
    return np.stack([(labels == c) for c in range(n)]).astype(np.float32)


# ------------------------------------------------------------------------------------ sparse prompts


def test_point_sampling_ratio_and_regions() -> None:
    p = _probs()
    rng = np.random.default_rng(0)
    pr = sample_class_prompts(p, (1, 2, 3), n_fg=8, n_bg=4, rng=rng, fg_thresh=0.5, bg_thresh=0.2)
    # class 2 is never confident (0.3 < 0.5) and class 3 absent: only class 1 is prompted
    assert pr.class_ids.tolist() == [1]
    assert pr.coords.shape == (1, 12, 2) and pr.labels.shape == (1, 12)
    assert (pr.labels[0] == 1).sum() == 8 and (pr.labels[0] == 0).sum() == 4  # 2:1
    x, y = pr.coords[0, :, 0].astype(int), pr.coords[0, :, 1].astype(int)
    assert (p[1][y[pr.labels[0] == 1], x[pr.labels[0] == 1]] >= 0.5).all()  # fg on confident foreground
    assert (p[1][y[pr.labels[0] == 0], x[pr.labels[0] == 0]] < 0.2).all()  # bg on confident background


def test_point_counts_are_parameters_and_missing_background_is_padding() -> None:
    p = np.zeros((2, 10, 10), np.float32)
    p[1] = 0.95  # the class covers the whole image: no confident background
    pr = sample_class_prompts(p, (1,), n_fg=3, n_bg=6, rng=np.random.default_rng(0))
    assert pr.labels.tolist() == [[1, 1, 1, -1, -1, -1, -1, -1, -1]]
    with pytest.raises(InvalidInputError):
        sample_class_prompts(p, (1,), n_fg=0, n_bg=1, rng=np.random.default_rng(0))
    with pytest.raises(InvalidInputError):
        sample_class_prompts(p, (5,), n_fg=1, n_bg=1, rng=np.random.default_rng(0))


# ------------------------------------------------------------------------------------ label maps, scores


def test_labels_from_logits_argmax_threshold_and_priority() -> None:
    logits = np.full((2, 1, 4), -5.0, np.float32)
    logits[0, 0] = [3.0, 3.0, -1.0, -5.0]  # road
    logits[1, 0] = [1.0, 4.0, 2.0, -5.0]  # crosswalk
    ids = (1, 3)
    assert labels_from_logits(logits, ids).tolist() == [[1, 3, 3, 0]]
    assert labels_from_logits(logits, ids, priority=(3,)).tolist() == [[3, 3, 3, 0]]
    assert labels_from_logits(logits, ids, threshold=2.5).tolist() == [[1, 3, 0, 0]]
    with pytest.raises(InvalidInputError):
        labels_from_logits(logits, (1, 2, 3))


def test_semantic_scores_by_hand() -> None:
    gt = np.array([[0, 1, 1, 2]])
    pred = np.array([[0, 1, 2, 2]])
    s = semantic_scores([pred], [gt], ("background", "road", "sidewalk", "crosswalk"))
    assert s["iou_road"] == pytest.approx(0.5) and s["iou_sidewalk"] == pytest.approx(0.5)
    assert "iou_crosswalk" not in s  # absent from both: not scored, not averaged
    assert s["miou"] == pytest.approx(0.5)
    assert s["iou_background"] == pytest.approx(1.0)


# ------------------------------------------------------------------------------------ dense prompts, decoding


def test_dense_prompt_shape_follows_the_model_geometry(tiny_sam) -> None:
    images, labels = _scenes(2, [(48, 64), (70, 40)])  # not square, not the encoder size
    emb = embed_images(tiny_sam, images, progress=False)
    geo = GeoSAM(tiny_sam, class_ids=(1, 2), n_fg=2, n_bg=1)
    prompts = geo.make_prompts(emb, [_one_hot(lab) for lab in labels], seed=0)
    h, w = tiny_sam.prompt_encoder.mask_input_size
    for pr in prompts:
        assert pr.dense is not None and pr.dense.shape == (2, 1, h, w)
        assert np.isfinite(pr.dense).all()
    logits = geo.class_logits(emb, prompts, finetuned=False)
    assert [lg.shape for lg in logits] == [(2, 48, 64), (2, 70, 40)]
    maps = geo.predict(emb, prompts, finetuned=False, use_dense=False)
    assert [m.shape for m in maps] == [(48, 64), (70, 40)]
    assert set(np.unique(np.concatenate([m.ravel() for m in maps]))) <= {0, 1, 2}
    with pytest.raises(InvalidInputError):
        geo.class_logits(emb, prompts)  # not fine-tuned yet


def test_unprompted_class_is_never_predicted(tiny_sam) -> None:
    images, labels = _scenes(1, [(64, 64)])
    emb = embed_images(tiny_sam, images, progress=False)
    geo = GeoSAM(tiny_sam, class_ids=(1, 2, 3), n_fg=2, n_bg=1)
    prompts = geo.make_prompts(emb, [_one_hot(labels[0])], seed=0)
    assert prompts[0].class_ids.tolist() == [1, 2]  # no class-3 pixel: no prompt
    assert not (geo.predict(emb, prompts, finetuned=False)[0] == 3).any()


# ------------------------------------------------------------------------------------ fine-tuning


def test_trainable_decoder_freezes_sam_and_copies_the_decoder(tiny_sam) -> None:
    decoder = trainable_decoder(tiny_sam)
    assert not any(p.requires_grad for p in tiny_sam.parameters())
    assert all(p.requires_grad for p in decoder.parameters())
    assert decoder is not tiny_sam.mask_decoder
    assert {id(p) for p in decoder.parameters()}.isdisjoint({id(p) for p in tiny_sam.parameters()})


def test_finetune_changes_only_the_decoder_copy_and_lowers_the_loss(tiny_sam) -> None:
    images, labels = _scenes(4, [(64, 64), (48, 64)])
    emb = embed_images(tiny_sam, images, progress=False)
    probs = [_one_hot(lab) for lab in labels]
    before = {k: v.clone() for k, v in tiny_sam.state_dict().items()}
    geo = GeoSAM(tiny_sam, class_ids=(1, 2), n_fg=4, n_bg=2)
    history = geo.finetune(emb, probs, labels, steps=60, batch_size=2, lr=1e-2, seed=0, progress=False)
    for k, v in tiny_sam.state_dict().items():  # encoder, prompt encoder and zero-shot decoder untouched
        assert torch.equal(v, before[k]), f"{k} changed"
    assert geo.decoder is not None
    tuned = geo.decoder.state_dict()
    assert any(not torch.equal(tuned[k], before[f"mask_decoder.{k}"]) for k in tuned)
    assert np.mean(history[-5:]) < 0.8 * np.mean(history[:5])
    prompts = geo.make_prompts(emb, probs, seed=1)
    zero = semantic_scores(geo.predict(emb, prompts, finetuned=False), labels, ("bg", "a", "b"))["miou"]
    tuned_miou = semantic_scores(geo.predict(emb, prompts), labels, ("bg", "a", "b"))["miou"]
    assert tuned_miou > zero + 0.2  # a random tiny SAM learns these easy scenes in 60 steps (0.03 -> 0.56)


def test_finetune_resumes_from_its_saved_decoder(
    tiny_sam, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import samlib.methods.geosam as geosam_module

    images, labels = _scenes(3, [(64, 64)])
    emb = embed_images(tiny_sam, images, progress=False)
    probs = [_one_hot(lab) for lab in labels]
    token = geosam_module.class_token(tiny_sam, (1, 2), seed=0)
    first = GeoSAM(tiny_sam, class_ids=(1, 2), prompt_token=token)
    kw = dict(steps=4, batch_size=2, lr=1e-2, seed=0, progress=False, resume_dir=tmp_path)
    history = first.finetune(emb, probs, labels, **kw)
    assert len(list(tmp_path.glob("geosam_decoder_*.pt"))) == 1

    def no_training(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(geosam_module, "fit", no_training)
    again = GeoSAM(
        tiny_sam, class_ids=(1, 2), prompt_token=geosam_module.class_token(tiny_sam, (1, 2), seed=0)
    )
    assert again.finetune(emb, probs, labels, **kw) == history
    assert first.decoder is not None and again.decoder is not None
    for a, b in ((first.decoder, again.decoder), (token, again.prompt_token)):
        assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    with pytest.raises(AssertionError, match="trained again"):  # another setting, another file
        GeoSAM(tiny_sam, class_ids=(1, 2)).finetune(emb, probs, labels, **{**kw, "lr": 1e-3})


def test_resumed_finetune_tells_a_frozen_projection_from_a_trained_one(tiny_sam, tmp_path: Path) -> None:
    import samlib.methods.geosam as geosam_module

    images, labels = _scenes(2, [(64, 64)])
    emb = embed_images(tiny_sam, images, progress=False)
    probs = [_one_hot(lab) for lab in labels]
    text = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    kw = dict(steps=3, batch_size=2, lr=1e-2, seed=0, progress=False, resume_dir=tmp_path)
    whole = geosam_module.text_token(tiny_sam, text, (1, 2), seed=0)
    GeoSAM(tiny_sam, class_ids=(1, 2), prompt_token=whole).finetune(emb, probs, labels, **kw)
    # the same token with its projection frozen: same state dict at the start, but another training
    frozen = geosam_module.text_token(tiny_sam, text, (1, 2), freeze_projection=True, seed=0)
    assert frozen.proj is not None
    start = frozen.proj.weight.detach().clone()
    GeoSAM(tiny_sam, class_ids=(1, 2), prompt_token=frozen).finetune(emb, probs, labels, **kw)
    assert len(list(tmp_path.glob("geosam_decoder_*.pt"))) == 2
    assert torch.equal(frozen.proj.weight, start)


def test_finetune_ablations_need_one_prompt_kind(tiny_sam) -> None:
    images, labels = _scenes(2, [(64, 64)])
    emb = embed_images(tiny_sam, images, progress=False)
    geo = GeoSAM(tiny_sam, class_ids=(1, 2))
    with pytest.raises(InvalidInputError):
        geo.finetune(
            emb, [_one_hot(lab) for lab in labels], labels, steps=1, use_sparse=False, use_dense=False
        )
    geo.finetune(emb, [_one_hot(lab) for lab in labels], labels, steps=2, use_sparse=False, progress=False)
    maps = geo.predict(emb, geo.make_prompts(emb, [_one_hot(lab) for lab in labels]), use_sparse=False)
    assert maps[0].shape == (64, 64)


# ------------------------------------------------------------------------------------ the chapter

# Smoke setting on CPU with the shipped teaching SAM (8 px patches, 6 blocks), seeds 0, 1, 2, measured
# 2026-12-06 on the quiet 2-core machine (opencv 5.0, 40 fine-tuning steps): GeoSAM (v2) minus the better
# zero-shot variant, in mIoU,
#   unseen region:   +0.023, +0.041, +0.013   -> UNSEEN_MARGIN
#   familiar region: +0.043, +0.046, +0.036
# (at 100 steps seeds 1 / 2 gave +0.049 / +0.004 unseen: longer smoke training is not more reliable here.)
# geosam_text (sparse + text token) minus the better zero-shot variant:
#   unseen region:   +0.040, +0.042, +0.014   -> TEXT_UNSEEN_MARGIN
#   familiar region: +0.034, +0.031, +0.008
# geosam_text minus geosam_class_token (the control without text), familiar / unseen:
#   -0.001 / -0.001, -0.003 / +0.013, +0.018 / -0.002   -> |difference| < TOKEN_LEVEL (the chapter's
#   "level" threshold).
# The full setting's >= +0.05 is checked on its recorded run
# (test_recorded_full_run_meets_the_chapter_target).
# Real roads (same seeds), road IoU with ground-truth points: fine-tuned decoder 0.313 / 0.326 / 0.291 on
# roads-eth against zero-shot 0.278 / 0.274 / 0.264; on DeepGlobe 0.089 / 0.123 / 0.076 against zero-shot
# 0.124 / 0.118 / 0.114 (below it in two seeds of three: not asserted); the scale-augmented decoder 0.067 /
# 0.075 / 0.074 on DeepGlobe (below zero-shot by 0.040 or more in every seed -> MULTISCALE_BELOW); magnifying
# the DeepGlobe sub-windows x2 takes zero-shot SAM from 0.052 / 0.048 / 0.055 to 0.094 / 0.068 / 0.071.
UNSEEN_MARGIN = 0.01
FAMILIAR_MARGIN = 0.0
TEXT_UNSEEN_MARGIN = 0.01
TOKEN_LEVEL = 0.02
MULTISCALE_BELOW = 0.02
TEXT_ROWS = ("geosam_text", "geosam_text_dense", "geosam_text_frozen_proj", "geosam_class_token")


def _gain_over_zero_shot(res: dict[str, dict[str, float]], split: str, method: str = "geosam") -> float:
    """``method``'s mIoU minus the better zero-shot variant's, on ``split`` of a chapter's results."""
    zero_shot = max(res[f"zero_shot_sparse_{split}"]["miou"], res[f"zero_shot_sparse_dense_{split}"]["miou"])
    return res[f"{method}_{split}"]["miou"] - zero_shot


@pytest.mark.notebook
def test_chapter_geosam_beats_zero_shot() -> None:
    rec = run_notebook("01_geosam", smoke=True)
    res = rec["results"]
    assert rec["chapter"] == "01_geosam" and rec["setting"] == "smoke"
    for method in ("cnn", "zero_shot_sparse", "zero_shot_sparse_dense", "geosam", "geosam_no_dense",
                   *TEXT_ROWS):  # fmt: skip
        for split in ("familiar", "unseen"):
            for name in (f"{method}_{split}", f"{method}_post_{split}"):
                assert {"miou", "iou_road", "iou_sidewalk", "iou_crosswalk", "iou_pedestrian"} <= set(
                    res[name]
                ), name
    gain = {split: _gain_over_zero_shot(res, split) for split in ("familiar", "unseen")}
    assert gain["unseen"] >= UNSEEN_MARGIN, gain
    assert gain["familiar"] > FAMILIAR_MARGIN, gain
    text_gain = {split: _gain_over_zero_shot(res, split, "geosam_text") for split in ("familiar", "unseen")}
    assert text_gain["unseen"] >= TEXT_UNSEEN_MARGIN, text_gain
    assert text_gain["familiar"] > 0.0, text_gain
    for split in ("familiar", "unseen"):  # the words do not matter beyond a token per class
        diff = res[f"geosam_text_{split}"]["miou"] - res[f"geosam_class_token_{split}"]["miou"]
        assert abs(diff) < TOKEN_LEVEL, (split, diff)


@pytest.mark.notebook
@pytest.mark.data
def test_chapter_geosam_real_road_rows(real_data_root) -> None:
    """Every real-road row is there, and the diagnosis's findings that held for seeds 0-2 (see the numbers
    above): with ground-truth points the fine-tuned decoder beats zero-shot SAM on roads-eth, scale
    augmentation leaves it below zero-shot SAM on DeepGlobe, and magnifying DeepGlobe raises zero-shot SAM."""
    res = run_notebook("01_geosam", smoke=True)["results"]
    for method in (
        "cnn",
        "zero_shot_sparse",
        "zero_shot_sparse_dense",
        "geosam",
        *TEXT_ROWS,
        "geosam_short",
        "geosam_multiscale",
    ):
        for split in ("roads_eth", "deepglobe", "deepglobe_sub", "deepglobe_sub_x2"):
            assert {"miou", "iou_road"} <= set(res[f"{method}_{split}"]), f"{method}_{split}"
    road = lambda key: res[key]["iou_road"]  # noqa: E731
    assert road("geosam_oracle_roads_eth") > road("zero_shot_sparse_oracle_roads_eth")
    ms_gap = road("zero_shot_sparse_oracle_deepglobe") - road("geosam_multiscale_oracle_deepglobe")
    assert ms_gap > MULTISCALE_BELOW, ms_gap
    assert road("zero_shot_sparse_deepglobe_sub_x2") > road("zero_shot_sparse_deepglobe_sub")


def test_recorded_full_run_meets_the_chapter_target() -> None:
    """The committed full-setting run (results/01_geosam_full.json) shows fine-tuning >= zero-shot + 0.05.

    This checks the recorded measurement, not a new run: replacing the file with a run that misses the
    target the chapter claims fails here.
    """
    from samlib.results import find_recorded

    rec = find_recorded("01_geosam", "full", start=Path(__file__).parent)
    if rec is None:
        pytest.skip("no recorded full-setting run in results/")
    gain = {split: _gain_over_zero_shot(rec["results"], split) for split in ("familiar", "unseen")}
    assert min(gain.values()) >= 0.05, gain
