"""PromptPredictor, the embedding cache and embed_images, on a tiny random SAM."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from segment_anything import SamPredictor
from segment_anything.modeling import Sam

from samlib.embeddings import EmbeddedImages, embed_images
from samlib.errors import InvalidInputError, SamlibError
from samlib.predict import CachedEmbedding, EmbeddingCache, Prediction, PromptPredictor


@pytest.fixture
def image(rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, size=(48, 80, 3), dtype=np.uint8)


def test_second_set_image_uses_cache(tiny_sam: Sam, image: np.ndarray, encoder_calls: list[int]) -> None:
    pred = PromptPredictor(tiny_sam)
    pred.set_image(image)
    first = pred.embedding.clone()
    assert encoder_calls[0] == 1
    pred.set_image(image.copy())  # equal content, different object
    assert encoder_calls[0] == 1
    assert torch.equal(pred.embedding, first)
    pred.set_image(255 - image)
    assert encoder_calls[0] == 2
    pred.set_image(image)
    assert encoder_calls[0] == 2 and pred.cache.hits == 2


def test_cache_is_shared_and_keyed_by_model(
    tiny_sam: Sam, image: np.ndarray, encoder_calls: list[int]
) -> None:
    cache = EmbeddingCache(maxsize=4)
    PromptPredictor(tiny_sam, cache).set_image(image)
    PromptPredictor(tiny_sam, cache).set_image(image)
    assert encoder_calls[0] == 1
    tiny_sam.samlib_name = "other-model"
    PromptPredictor(tiny_sam, cache).set_image(image)
    assert encoder_calls[0] == 2 and len(cache) == 2


def test_cache_never_serves_embeddings_of_changed_encoder_weights(
    tiny_sam: Sam, image: np.ndarray, encoder_calls: list[int]
) -> None:
    """Fine-tuning the encoder in place (an optimiser step, a LoRA adapter) must invalidate the cache."""
    from peft import LoraConfig, inject_adapter_in_model

    pred = PromptPredictor(tiny_sam)
    pred.set_image(image)
    before = pred.embedding.clone()
    pred.set_image(image)
    assert encoder_calls[0] == 1  # unchanged weights: served from the cache
    with torch.no_grad():  # an in-place update, as an optimiser step makes
        tiny_sam.image_encoder.patch_embed.proj.weight.mul_(1.5)
    pred.set_image(image)
    assert encoder_calls[0] == 2 and not torch.equal(pred.embedding, before)
    inject_adapter_in_model(LoraConfig(r=2, target_modules=["qkv"]), tiny_sam.image_encoder)
    pred.set_image(image)
    assert encoder_calls[0] == 3  # new adapter modules: a new fingerprint


def test_lru_eviction() -> None:
    cache = EmbeddingCache(maxsize=2)
    entry = CachedEmbedding(torch.zeros(1, 1, 1, 1), (1, 1), (1, 1))
    cache.put(("m", "a"), entry)
    cache.put(("m", "b"), entry)
    assert cache.get(("m", "a")) is entry  # a becomes most recent
    cache.put(("m", "c"), entry)
    assert ("m", "b") not in cache and ("m", "a") in cache and ("m", "c") in cache
    with pytest.raises(InvalidInputError):
        EmbeddingCache(maxsize=0)


def test_predict_matches_sam_predictor(tiny_sam: Sam, image: np.ndarray) -> None:
    pts, labels, box = (
        np.array([[10.0, 20.0], [60.0, 30.0]]),
        np.array([1, 0]),
        np.array([5.0, 4.0, 70.0, 40.0]),
    )
    ours = PromptPredictor(tiny_sam)
    ours.set_image(image)
    result = ours.predict(point_coords=pts, point_labels=labels, box=box)
    ref = SamPredictor(tiny_sam)
    ref.set_image(image)
    masks, scores, logits = ref.predict(point_coords=pts, point_labels=labels, box=box)
    assert result.masks.shape == (3, 48, 80) and result.masks.dtype == bool
    assert result.scores.shape == (3,) and result.low_res_logits.shape == (3, 16, 16)
    np.testing.assert_array_equal(result.masks, masks)
    np.testing.assert_allclose(result.scores, scores, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(result.low_res_logits, logits, rtol=1e-5, atol=1e-5)
    best = result.best()
    assert best.shape == (48, 80)
    np.testing.assert_array_equal(best, masks[int(np.argmax(scores))])
    assert result.best_logits().shape == (1, 16, 16)


def test_predict_batch_is_one_call_and_matches_single(tiny_sam: Sam, image: np.ndarray) -> None:
    pred = PromptPredictor(tiny_sam)
    pred.set_image(image)
    boxes = np.array([[0.0, 0.0, 30.0, 20.0], [10.0, 5.0, 79.0, 47.0], [40.0, 10.0, 60.0, 30.0]])
    calls = [0]
    tiny_sam.mask_decoder.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    batch = pred.predict_batch(boxes=boxes)
    assert calls[0] == 1
    assert batch.masks.shape == (3, 1, 48, 80) and batch.scores.shape == (3, 1)
    assert batch.low_res_logits.shape == (3, 1, 16, 16)
    assert batch.best().shape == (3, 48, 80)
    for i, b in enumerate(boxes):
        single = pred.predict(box=b, multimask_output=False)
        np.testing.assert_allclose(single.low_res_logits, batch.low_res_logits[i], atol=1e-5)
    pts = np.array([[[5.0, 5.0]], [[70.0, 40.0]], [[30.0, 20.0]]])
    both = pred.predict_batch(
        boxes=boxes,
        point_coords=pts,
        point_labels=np.ones((3, 1)),
        mask_inputs=batch.low_res_logits,
        multimask_output=True,
    )
    assert both.masks.shape == (3, 3, 48, 80)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({}, "at least one prompt"),
        ({"boxes": np.zeros((2, 3))}, r"boxes must have shape \(B, 4\)"),
        ({"boxes": np.array([[10.0, 0.0, 5.0, 5.0]])}, "x1 >= x0"),
        ({"point_coords": np.zeros((2, 1, 2))}, "given together"),
        (
            {"point_coords": np.zeros((2, 1, 2)), "point_labels": np.ones((2, 2))},
            r"point_labels must have shape",
        ),
        ({"point_coords": np.zeros((1, 1, 2)), "point_labels": np.full((1, 1), 2)}, "must be 1"),
        (
            {"boxes": np.zeros((2, 4)), "point_coords": np.zeros((3, 1, 2)), "point_labels": np.ones((3, 1))},
            "same batch",
        ),
        ({"mask_inputs": np.zeros((1, 1, 8, 8))}, r"\(B, 1, 16, 16\)"),
        ({"boxes": np.full((1, 4), np.nan)}, "NaN"),
    ],
)
def test_predict_batch_validation(tiny_sam: Sam, image: np.ndarray, kwargs: dict, match: str) -> None:
    pred = PromptPredictor(tiny_sam)
    pred.set_image(image)
    with pytest.raises(InvalidInputError, match=match):
        pred.predict_batch(**kwargs)


def test_predict_validation_and_state_errors(tiny_sam: Sam, image: np.ndarray) -> None:
    pred = PromptPredictor(tiny_sam)
    with pytest.raises(SamlibError, match="set_image"):
        pred.predict(box=np.array([0, 0, 5, 5]))
    with pytest.raises(SamlibError, match="set_image"):
        _ = pred.embedding
    with pytest.raises(InvalidInputError, match=r"\(H, W, 3\)"):
        pred.set_image(np.zeros((3, 48, 80), dtype=np.uint8))
    pred.set_image(image)
    with pytest.raises(InvalidInputError, match=r"point_coords must have shape \(N, 2\)"):
        pred.predict(point_coords=np.zeros(2), point_labels=np.ones(1))
    with pytest.raises(InvalidInputError, match=r"box must have shape \(4,\)"):
        pred.predict(box=np.zeros(5))


def test_prediction_best_single() -> None:
    masks = np.zeros((3, 2, 2), dtype=bool)
    masks[1, 0, 0] = True
    p = Prediction(masks, np.array([0.1, 0.9, 0.5], dtype=np.float32), np.zeros((3, 4, 4), dtype=np.float32))
    assert p.best()[0, 0] and p.best().sum() == 1


def test_embed_images_matches_predictor(
    tiny_sam: Sam, rng: np.random.Generator, encoder_calls: list[int]
) -> None:
    images = [rng.integers(0, 256, size=s, dtype=np.uint8) for s in [(48, 80, 3), (64, 64, 3), (30, 20, 3)]]
    emb = embed_images(tiny_sam, images, batch_size=2, progress=False)
    assert encoder_calls[0] == 2  # batches of 2 + 1
    assert emb.embeddings.shape == (3, 16, 4, 4) and emb.embeddings.device.type == "cpu"
    assert emb.original_sizes == [(48, 80), (64, 64), (30, 20)]
    assert emb.input_sizes == [(38, 64), (64, 64), (64, 43)]
    assert not emb.embeddings.is_inference()  # usable as input of a trainable decoder
    for i, img in enumerate(images):
        pred = PromptPredictor(tiny_sam)
        pred.set_image(img)
        torch.testing.assert_close(emb.embeddings[i : i + 1], pred.embedding, atol=1e-5, rtol=1e-4)
        assert pred.input_size == emb.input_sizes[i]
    logits = torch.randn(2, 1, 16, 16)
    up = emb.logits_to_original(logits, 0)
    assert up.shape == (2, 1, 48, 80)
    ref = tiny_sam.postprocess_masks(logits, emb.input_sizes[0], emb.original_sizes[0])
    torch.testing.assert_close(up, ref)
    with pytest.raises(InvalidInputError):
        embed_images(tiny_sam, [], progress=False)


def test_as_uint8_rgb_conversions_and_errors() -> None:
    from samlib.utils import as_uint8_rgb

    grey = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = as_uint8_rgb(grey)
    assert out.shape == (3, 4, 3) and (out[..., 2] == grey).all()
    rgba = np.zeros((3, 4, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    assert as_uint8_rgb(rgba).shape == (3, 4, 3) and as_uint8_rgb(rgba).max() == 0
    assert as_uint8_rgb(np.full((2, 2, 3), 0.5)).tolist()[0][0] == [128, 128, 128]
    assert as_uint8_rgb(np.full((2, 2), 200, dtype=np.int64)).dtype == np.uint8
    with pytest.raises(InvalidInputError, match=r"\[0, 1\]"):
        as_uint8_rgb(np.full((2, 2, 3), 200.0))
    with pytest.raises(InvalidInputError, match="outside"):
        as_uint8_rgb(np.full((2, 2, 3), 4000, dtype=np.uint16))
    with pytest.raises(InvalidInputError, match="transpose"):
        as_uint8_rgb(np.zeros((3, 8, 8), dtype=np.uint8))
    with pytest.raises(InvalidInputError, match="NaN"):
        as_uint8_rgb(np.full((2, 2, 3), np.nan))


def test_device_seed_and_autocast_helpers() -> None:
    import random

    from samlib.utils import autocast_context, default_device, resolve_device, seed_everything

    assert default_device().type in ("cuda", "mps", "cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InvalidInputError, match="Unknown device"):
        resolve_device("gpu-please")
    seed_everything(3)
    a = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_everything(3)
    assert a == (random.random(), np.random.rand(), torch.rand(1).item())
    with autocast_context("cpu"):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_embedded_images_concat_keeps_order_and_geometry(tiny_sam: Sam, rng: np.random.Generator) -> None:
    small = rng.integers(0, 256, (40, 60, 3), dtype=np.uint8)
    big = rng.integers(0, 256, (80, 50, 3), dtype=np.uint8)
    a, b = (
        embed_images(tiny_sam, [small], progress=False),
        embed_images(tiny_sam, [big, small], progress=False),
    )
    both = EmbeddedImages.concat([a, b])
    assert len(both) == 3 and both.original_sizes == [(40, 60), (80, 50), (40, 60)]
    assert both.input_sizes == a.input_sizes + b.input_sizes
    assert torch.equal(both.embeddings[1:], b.embeddings) and torch.equal(
        both.subset([0]).embeddings, a.embeddings
    )
    with pytest.raises(InvalidInputError, match="at least one"):
        EmbeddedImages.concat([])
    other = EmbeddedImages(a.embeddings[:, :4], a.original_sizes, a.input_sizes, a.img_size)
    with pytest.raises(InvalidInputError, match="same SAM"):
        EmbeddedImages.concat([a, other])
