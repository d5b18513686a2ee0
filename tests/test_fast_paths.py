"""The fast paths of issue 18 give the reference's answers: lazy windowed mask upsampling (= Meta's
SamPredictor), the automatic mask generator (= SamAutomaticMaskGenerator's masks), the image
fingerprint, batched decoding across images, and reproducible GeoSAM fine-tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamAutomaticMaskGenerator, SamPredictor
from segment_anything.modeling import Sam

import samlib
from samlib.amg import AutomaticMaskGenerator
from samlib.decoders import decode_many
from samlib.embeddings import embed_images
from samlib.predict import EmbeddingCache, MaskUpsampler, PromptPredictor
from samlib.scenes import generate_scene


@pytest.mark.parametrize("size", [(64, 64), (256, 256), (128, 96), (50, 70), (512, 256)])
def test_mask_upsampler_equals_sam_postprocess(tiny_sam: Sam, size: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(0)
    h, w = size
    long = max(h, w)
    input_size = (int(h * 64 / long + 0.5), int(w * 64 / long + 0.5))
    for shift in (0.0, 2.0, 5.0):
        low = torch.randn(2, 3, 16, 16, generator=gen) * 3 - shift
        ref = tiny_sam.postprocess_masks(low, input_size, size)
        up = MaskUpsampler(low, 64, input_size, size)
        b, k = np.repeat(np.arange(2), 3), np.tile(np.arange(3), 2)
        for t in (-1.0, 0.0, 1.0):
            assert np.array_equal(up.masks(b, k, t).reshape(2, 3, h, w), (ref > t).numpy())
            win = up.window(1, 2, t)
            if win is not None:
                rows, cols, logits = win
                torch.testing.assert_close(logits, ref[1, 2][rows, cols], rtol=0, atol=1e-5)
                outside = ref[1, 2].clone()
                outside[rows, cols] = -torch.inf
                assert bool((outside <= t).all())


@pytest.mark.parametrize("size", [(64, 64), (256, 256), (50, 70)])
def test_predict_masks_identical_to_meta(tiny_sam: Sam, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    meta, ours = SamPredictor(tiny_sam), PromptPredictor(tiny_sam)
    meta.set_image(image)
    ours.set_image(image)
    h, w = size
    for _ in range(5):
        x0, y0 = rng.uniform(0, w / 2), rng.uniform(0, h / 2)
        box = np.array([x0, y0, x0 + rng.uniform(4, w / 2), y0 + rng.uniform(4, h / 2)])
        point = rng.uniform(0, [w, h], (1, 2))
        for kwargs in ({"box": box}, {"point_coords": point, "point_labels": np.ones(1)}):
            m_ref, s_ref, l_ref = meta.predict(**kwargs)
            p = ours.predict(**kwargs)
            assert np.array_equal(p.masks, m_ref)
            # Meta maps prompts in float64, samlib in float32: scores and logits agree to rounding
            np.testing.assert_allclose(p.scores, s_ref, atol=1e-5)
            np.testing.assert_allclose(p.low_res_logits, l_ref, atol=1e-4)


def test_predict_batch_is_lazy_and_matches_meta(tiny_sam: Sam) -> None:
    """A batched decoder call rounds differently from single calls (~1e-7), so pixels may differ only
    where Meta's own logit is within 1e-4 of the threshold."""
    rng = np.random.default_rng(2)
    image = rng.integers(0, 256, (256, 256, 3), dtype=np.uint8)
    meta, ours = SamPredictor(tiny_sam), PromptPredictor(tiny_sam)
    meta.set_image(image)
    ours.set_image(image)
    x0, y0 = rng.uniform(0, 200, 16), rng.uniform(0, 200, 16)
    boxes = np.stack([x0, y0, x0 + rng.uniform(8, 56, 16), y0 + rng.uniform(8, 56, 16)], 1)
    pred = ours.predict_batch(boxes=boxes, multimask_output=True)
    assert pred._masks is None  # nothing upsampled yet
    best = pred.best()
    assert pred._masks is None and best.shape == (16, 256, 256)
    assert np.array_equal(best, pred.masks[np.arange(16), pred.best_index()])
    for i, b in enumerate(boxes):
        logits, scores, _ = meta.predict(box=b, return_logits=True)
        np.testing.assert_allclose(pred.scores[i], scores, atol=1e-5)
        differ = pred.masks[i] != (logits > tiny_sam.mask_threshold)
        assert np.all(np.abs(logits[differ]) < 1e-4)


def test_automatic_masks_match_meta() -> None:
    """Each of Meta's masks is one of ours (IoU >= 0.95), at the same thresholds, and vice versa."""
    torch.manual_seed(0)
    sam = samlib.load_sam("teaching", device="cpu")
    image = generate_scene("source", 256, seed=0).image
    settings = {"points_per_side": 8, "pred_iou_thresh": 0.7, "stability_score_thresh": 0.85}
    ref = SamAutomaticMaskGenerator(sam, **settings).generate(image)
    ours = AutomaticMaskGenerator(sam, **settings).generate(image)
    assert len(ref) >= 3 and len(ours) == len(ref)
    r = np.stack([m["segmentation"] for m in ref])
    o = np.stack([m["segmentation"] for m in ours])
    iou = (r[:, None] & o[None]).sum((2, 3)) / np.maximum((r[:, None] | o[None]).sum((2, 3)), 1)
    assert (iou.max(1) >= 0.95).all() and (iou.max(0) >= 0.95).all()
    np.testing.assert_allclose(
        sorted(m["stability_score"] for m in ours), sorted(m["stability_score"] for m in ref), atol=1e-6
    )


def test_image_key_reads_every_byte() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    key = EmbeddingCache.image_key(image)
    assert EmbeddingCache.image_key(image.copy()) == key
    assert EmbeddingCache.image_key(np.asfortranarray(image)) == key  # same content, other layout
    for y, x, c in [(0, 0, 0), (151, 77, 2), (299, 199, 1)]:
        edited = image.copy()
        edited[y, x, c] ^= 1
        assert EmbeddingCache.image_key(edited) != key
    assert EmbeddingCache.image_key(image.reshape(200, 300, 3)) != key
    assert EmbeddingCache.image_key(image.astype(np.uint16)) != key


def test_decode_many_equals_one_decoder_call_per_image(tiny_sam: Sam) -> None:
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    emb = embed_images(tiny_sam, images, progress=False).embeddings
    pe = tiny_sam.prompt_encoder
    coords = torch.as_tensor(rng.uniform(0, 64, (6, 2, 2)), dtype=torch.float32)
    labels = torch.ones(6, 2, dtype=torch.int64)
    with torch.no_grad():
        sparse, dense = pe(points=(coords, labels), boxes=None, masks=None)
        owner = torch.tensor([0, 0, 1, 2, 2, 2])
        many, _ = decode_many(tiny_sam.mask_decoder, emb[owner], pe.get_dense_pe(), sparse, dense)
        for i in range(3):
            rows = owner == i
            one, _ = tiny_sam.mask_decoder(
                emb[i : i + 1], pe.get_dense_pe(), sparse[rows], dense[rows], False
            )
            torch.testing.assert_close(many[rows], one, rtol=1e-4, atol=1e-5)


def test_geosam_finetune_is_reproducible(tiny_sam: Sam) -> None:
    from samlib.methods.geosam import GeoSAM

    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (64, 64, 3), dtype=np.uint8) for _ in range(4)]
    targets = [rng.integers(0, 3, (64, 64)) for _ in range(4)]
    probs = [np.stack([(t == c) * 0.8 + 0.1 for c in range(3)]) for t in targets]
    emb = embed_images(tiny_sam, images, progress=False)

    def run(seed: int) -> list[float]:
        return GeoSAM(tiny_sam, class_ids=(1, 2), n_fg=2, n_bg=1).finetune(
            emb, probs, targets, steps=4, batch_size=2, lr=1e-3, seed=seed, progress=False
        )

    first = run(0)
    assert len(first) == 4 and all(np.isfinite(first))
    assert run(0) == first
    assert run(1) != first
