"""Chapter 03 (PSLG-SAM): referring sentences, CFPG, MBO, referring metrics, grounders, then the notebook."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from samlib import metrics, postprocess, prompts, referring
from samlib.errors import InvalidInputError
from samlib.experts import grounding as G
from samlib.methods import pslg_sam as P
from samlib.predict import PromptPredictor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_runner import run_notebook  # noqa: E402

CHAPTER = "03_pslg_sam"


# ------------------------------------------------------------------------------------------ sentences

_PATTERN = re.compile(
    r"^the (?:(?P<ord>first|second|third|fourth) )?(?:(?P<size>largest|smallest) )?"
    r"(?:(?P<colour>red|blue|green|white|yellow|black) )?"
    r"(?P<kind>building|vehicle|ship|storage tank|tennis court)"
    r"(?: from the (?P<dir>left|right|top|bottom))?"
    r"(?: (?:at the|in the) "
    r"(?P<pos>top left|top right|bottom left|bottom right|top|bottom|left|right|centre))?"
    r"(?: (?P<rel>left of|right of|above|below) (?P<ref>.+))?$"
)


def _parse_and_match(
    sentence: str, objects: list[referring.ReferringObject], size: tuple[int, int]
) -> list[int]:
    """An independent reading of a sentence: parse the text and apply each rule to the objects."""
    m = _PATTERN.match(sentence)
    assert m, f"sentence outside the templates: {sentence!r}"
    h, w = size
    pool = [
        i
        for i, o in enumerate(objects)
        if o.kind == m["kind"] and (m["colour"] is None or o.colour == m["colour"])
    ]
    if m["pos"]:
        names = [
            ["top left", "top", "top right"],
            ["left", "centre", "right"],
            ["bottom left", "bottom", "bottom right"],
        ]
        pool = [
            i
            for i in pool
            if names[min(2, int(3 * objects[i].centre[1] / h))][min(2, int(3 * objects[i].centre[0] / w))]
            == m["pos"]
        ]
    if m["rel"]:
        (ref,) = _parse_and_match(m["ref"], objects, size)
        r = objects[ref].box
        test = {
            "left of": lambda b: b[2] < r[0],
            "right of": lambda b: b[0] > r[2],
            "above": lambda b: b[3] < r[1],
            "below": lambda b: b[1] > r[3],
        }[m["rel"]]
        pool = [i for i in pool if i != ref and test(objects[i].box)]
    if m["size"]:
        areas = [objects[i].area for i in pool]
        pick = max(areas) if m["size"] == "largest" else min(areas)
        pool = [i for i in pool if objects[i].area == pick]
    if m["ord"]:
        k = ["first", "second", "third", "fourth"].index(m["ord"])
        sign = 1 if m["dir"] in ("left", "top") else -1
        axis = 0 if m["dir"] in ("left", "right") else 1
        pool = sorted(pool, key=lambda i: sign * objects[i].centre[axis])[k : k + 1]
    return pool


def test_generated_sentences_are_never_ambiguous() -> None:
    count = 0
    for seed in range(60):
        scenes, samples = referring.referring_samples(1, seed=seed * 13, per_object=4)
        objects = scenes[0].objects()
        for s in samples:
            assert _parse_and_match(s.sentence, objects, s.image.shape[:2]) == [s.target], s.sentence
            count += 1
    assert count > 500  # many sentences were checked, of every template
    kinds = {referring.template_name(s.expression) for s in samples}
    assert len(kinds) >= 3


def test_real_style_sentences_are_unambiguous_without_colours() -> None:
    rng = np.random.default_rng(0)
    images, stacks = [], []
    for _ in range(6):
        img = np.zeros((120, 160, 3), np.uint8)
        masks = []
        for _ in range(int(rng.integers(3, 9))):
            m = np.zeros((120, 160), np.uint8)
            x, y = int(rng.integers(5, 140)), int(rng.integers(5, 100))
            cv2.rectangle(m, (x, y), (x + int(rng.integers(4, 18)), y + int(rng.integers(4, 18))), 1, -1)
            masks.append(m > 0)
        images.append(img)
        stacks.append(np.stack(masks))
    samples = referring.referring_samples_from_instances(
        images, stacks, "building", "test", per_image=5, min_target_area=16
    )
    assert samples
    for s in samples:
        objects = referring.objects_from_masks(s.masks, s.kinds)
        assert " red " not in s.sentence and _parse_and_match(s.sentence, objects, s.image.shape[:2]) == [
            s.target
        ]


def test_scenes_are_deterministic_and_objects_disjoint() -> None:
    a, b = referring.generate_referring_scene(seed=5), referring.generate_referring_scene(seed=5)
    assert np.array_equal(a.image, b.image) and a.kinds == b.kinds
    assert a.masks.sum(0).max() == 1
    with pytest.raises(InvalidInputError):
        referring.generate_referring_scene(size=16)


# ------------------------------------------------------------------------------------------ CFPG


def test_cfpg_picks_the_convex_object_not_the_concave_background() -> None:
    # A grey disc on a dark background inside a box: the background ring is concave, the disc convex.
    img = np.full((80, 80, 3), 30, np.uint8)
    cv2.circle(img, (40, 40), 22, (200, 200, 200), -1)
    img = np.clip(img + np.random.default_rng(0).normal(0, 4, img.shape), 0, 255).astype(np.uint8)
    disc = np.zeros((80, 80), np.uint8)
    cv2.circle(disc, (40, 40), 22, 1, -1)
    res = prompts.cluster_foreground_point(img, (5, 5, 75, 75))
    x, y = res.point.astype(int)
    assert disc[y, x] == 1
    assert res.solidity[res.chosen - 1] > 0.9
    assert res.region_mask(img.shape).sum() > 0.8 * disc.sum()


def test_cfpg_point_stays_inside_a_ring_shaped_choice() -> None:
    # Only one region (a thick ring) is large enough: its centroid is outside it -> distance maximum.
    img = np.full((60, 60, 3), 20, np.uint8)
    cv2.circle(img, (30, 30), 24, (220, 220, 220), 10)
    res = prompts.cluster_foreground_point(img, (0, 0, 59, 59), min_relative_area=0.9)
    x, y = res.point.astype(int)
    assert res.region_mask(img.shape)[y, x]


def test_cfpg_rejects_bad_input() -> None:
    img = np.zeros((10, 10, 3), np.uint8)
    with pytest.raises(InvalidInputError):
        prompts.cluster_foreground_point(img, (0, 0, 5))
    with pytest.raises(InvalidInputError):
        prompts.cluster_foreground_point(img, (0, 0, 5, 5), colour_space="xyz")
    flat = prompts.cluster_foreground_point(img, (2, 2, 7, 7))  # a flat crop still gives a point
    assert 2 <= flat.point[0] <= 7


# ------------------------------------------------------------------------------------------ MBO


def _two_colour(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    img = np.zeros((100, 100, 3), np.uint8)
    img[:] = (60, 120, 60)
    truth = np.zeros((100, 100), np.uint8)
    cv2.rectangle(truth, (30, 25), (70, 75), 1, -1)
    img[truth > 0] = (200, 60, 60)
    noise = np.random.default_rng(seed).normal(0, 6, img.shape)
    return np.clip(img + noise, 0, 255).astype(np.uint8), truth > 0


def test_mbo_keeps_a_mask_that_already_matches_the_boundary() -> None:
    img, truth = _two_colour()
    res = postprocess.grabcut_refine(img, truth, box=(30, 25, 70, 75))
    assert metrics.iou(res.mask, truth) > 0.98


def test_mbo_fixes_a_dilated_mask() -> None:
    img, truth = _two_colour(1)
    grown = postprocess.dilate(truth, 9)
    assert metrics.iou(grown, truth) < 0.85
    res = postprocess.grabcut_refine(img, grown, box=(26, 21, 74, 79))
    assert metrics.iou(res.mask, truth) > 0.95
    assert res.passes >= 1


def test_mbo_validates_and_leaves_empty_masks_alone() -> None:
    img, truth = _two_colour()
    assert not postprocess.grabcut_refine(img, np.zeros_like(truth)).mask.any()
    with pytest.raises(InvalidInputError):
        postprocess.grabcut_refine(img, truth[:50])
    with pytest.raises(InvalidInputError):
        postprocess.grabcut_refine(img[..., 0], truth)


# ------------------------------------------------------------------------------------------ metrics


def test_referring_scores_protocol() -> None:
    a = np.zeros((10, 10), bool)
    a[:5] = True  # 50 px
    b = np.zeros((10, 10), bool)
    b[:2, :2] = True  # 4 px
    preds = [a, np.zeros_like(b)]
    gts = [a, b]
    s = metrics.referring_scores(preds, gts)
    assert s["miou"] == pytest.approx(0.5)
    assert s["oiou"] == pytest.approx(50 / 54)
    assert s["p50"] == 0.5 and s["p90"] == 0.5
    assert set(s) == {"miou", "oiou", "p50", "p60", "p70", "p80", "p90"}
    with pytest.raises(InvalidInputError):
        metrics.referring_scores([a], [])


def test_box_iou() -> None:
    assert float(metrics.box_iou([0, 0, 10, 10], [0, 0, 10, 10])) == 1.0
    assert float(metrics.box_iou([0, 0, 10, 10], [5, 0, 15, 10])) == pytest.approx(1 / 3)
    assert float(metrics.box_iou([0, 0, 1, 1], [2, 2, 3, 3])) == 0.0


# ------------------------------------------------------------------------------------------ grounders


def _samples(n: int = 3) -> list[referring.ReferringSample]:
    return referring.referring_samples(n, seed=42)[1]


def test_oracle_grounder_exact_and_noisy() -> None:
    samples = _samples()
    exact = G.OracleGrounder(samples)
    noisy = G.OracleGrounder(samples, scale_noise=0.3, shift_noise=0.2, seed=1)
    for s in samples:
        assert np.array_equal(exact.ground(s.image, s.sentence).box, s.box)
    a = [noisy.ground(s.image, s.sentence).box for s in samples]
    b = [noisy.ground(s.image, s.sentence).box for s in reversed(samples)][::-1]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))  # the noise does not depend on query order
    assert G.grounding_scores(exact, samples) == {"acc50": 1.0, "mean_box_iou": pytest.approx(1.0)}
    assert G.grounding_scores(noisy, samples)["mean_box_iou"] < 0.95
    with pytest.raises(InvalidInputError):
        exact.ground(samples[0].image, "no such sentence")
    assert isinstance(exact, G.Grounder)


def test_trivial_grounders() -> None:
    samples = _samples()
    s = samples[0]
    assert G.named_kind("the ship left of the blue building") == "ship"
    box = G.RandomKindGrounder(samples).ground(s.image, s.sentence).box
    kinds = [k for k, m in zip(s.kinds, s.masks) if np.array_equal(prompts.box_from_mask(m), box)]
    assert kinds == [s.kind]
    centre = G.CentreBoxGrounder(0.5).ground(s.image, s.sentence).box
    assert np.allclose(centre, [64, 64, 192, 192])


def test_grounding_head_shapes_and_box_frame() -> None:
    head = G.GroundingHead(16, text_dim=8, dim=16, grid=4, n_queries=3, layers=1, heads=2)
    boxes, scores, logits = head(
        torch.zeros(2, 19, 4, 4), torch.zeros(2, 5, 8), torch.zeros(2, 5, dtype=torch.bool), torch.zeros(2, 8)
    )
    assert boxes.shape == (2, 3, 4) and scores.shape == (2, 3) and logits.shape == (2, 3, 16)
    assert float(boxes.detach().min()) >= 0 and float(boxes.detach().max()) <= 1
    # a box in a non-square image survives the trip to the unit frame and back
    box = np.array([[10.0, 20.0, 59.0, 39.0]])
    unit = G._boxes_to_unit(box, (100, 200))
    assert np.allclose(G._unit_to_boxes(unit, (100, 200)), box)
    loss = G.generalized_box_iou_loss(torch.tensor([0.0, 0, 1, 1]), torch.tensor([0.0, 0, 1, 1]))
    assert float(loss) == pytest.approx(0.0)
    assert float(G.generalized_box_iou_loss(torch.tensor([0.0, 0, 1, 1]), torch.tensor([2.0, 2, 3, 3]))) > 1


def test_grounding_head_encodes_each_image_once_for_many_sentences() -> None:
    torch.manual_seed(0)
    head = G.GroundingHead(16, text_dim=8, dim=16, grid=4, n_queries=2, layers=1, heads=2).eval()
    images, tokens = torch.randn(2, 19, 4, 4), torch.randn(3, 5, 8)
    pad, sentences = torch.zeros(3, 5, dtype=torch.bool), torch.randn(3, 8)
    index = torch.tensor([1, 0, 1])  # sentences 0 and 2 refer into image 1
    with torch.no_grad():
        shared = head(images, tokens, pad, sentences, image_index=index)
        one_by_one = head(images[index], tokens, pad, sentences)
    for a, b in zip(shared, one_by_one):
        assert torch.allclose(a, b, atol=1e-5)
    with pytest.raises(InvalidInputError, match="image_index"):
        head(images, tokens, pad, sentences)  # 2 images, 3 sentences, no index


def test_grounding_head_gradients_are_reproducible_when_sentences_share_images() -> None:
    # many sentences per image: the head's backward must sum their gradients in a fixed order (plain
    # indexing's backward on CPU adds repeated rows in thread order, so seeded training runs drifted apart)
    torch.manual_seed(0)
    head = G.GroundingHead(32, text_dim=16, dim=64, grid=8, n_queries=2, layers=1, heads=2)
    images, tokens = torch.randn(3, 35, 8, 8), torch.randn(60, 5, 16)
    pad, sentences = torch.zeros(60, 5, dtype=torch.bool), torch.randn(60, 16)
    index = torch.arange(60) % 3

    def grads() -> list[torch.Tensor]:
        head.zero_grad()
        boxes, scores, logits = head(images, tokens, pad, sentences, image_index=index)
        (boxes.sum() + scores.sum() + logits.sum()).backward()
        return [p.grad.clone() for p in head.parameters() if p.grad is not None]

    first = grads()
    for _ in range(5):
        assert all(torch.equal(a, b) for a, b in zip(first, grads()))


def test_mbo_does_not_depend_on_earlier_opencv_draws() -> None:
    # GrabCut seeds its colour models by k-means++ from OpenCV's global RNG, which every call advances
    rng = np.random.default_rng(0)
    img = (rng.random((80, 80, 3)) * 255).astype(np.uint8)
    img[20:60, 20:60] = (np.array([200, 50, 50]) + rng.random((40, 40, 3)) * 55).astype(np.uint8)
    mask = np.zeros((80, 80), bool)
    mask[18:55, 22:62] = True
    first = postprocess.grabcut_refine(img, mask).mask
    for _ in range(5):
        assert np.array_equal(postprocess.grabcut_refine(img, mask).mask, first)


# ------------------------------------------------------------------------------------------ pipeline


def test_segment_samples_runs_every_variant(tiny_sam) -> None:
    samples = _samples(1)[:2]
    predictor = PromptPredictor(tiny_sam)
    run = P.segment_samples(predictor, samples, {"oracle": G.OracleGrounder(samples)}, progress=False)
    scores = run.scores("generated")
    assert set(scores) == {f"{m}_oracle_generated" for m in P.STAGE2_METHODS}
    filled = scores["filled_box_oracle_generated"]
    assert 0 < filled["miou"] <= 1 and filled["oiou"] > 0  # the box covers its object
    sizes = run.by_size("oracle")
    assert sum(sizes["box_only"][f"n_{g}"] for g in ("small", "medium", "large")) == len(samples)
    with pytest.raises(InvalidInputError):
        P.segment_referred(predictor, samples[0].image, samples[0].box, methods=["nope"])


def test_sam_with_mask_decoder_shares_the_encoder(tiny_sam) -> None:
    import copy

    other = P.sam_with_mask_decoder(tiny_sam, copy.deepcopy(tiny_sam.mask_decoder))
    assert other.image_encoder is tiny_sam.image_encoder and other.mask_decoder is not tiny_sam.mask_decoder
    assert other.samlib_name == tiny_sam.samlib_name


# ------------------------------------------------------------------------------------------ notebook


@pytest.mark.notebook
def test_chapter_records_every_contract_key() -> None:
    res = run_notebook(CHAPTER)["results"]
    for method in (
        "box_only",
        "box_cfpg",
        "box_mbo",
        "pslg_sam",
        "pslg_sam_ft10",
        "pslg_sam_ft100",
        "filled_box",
    ):
        for g in ("oracle", "noisy", "grounder"):
            row = res[f"{method}_{g}_generated"]
            assert set(row) >= {"miou", "oiou", "p50", "p60", "p70", "p80", "p90"}
            assert all(0.0 <= v <= 1.0 for v in row.values())
    assert set(res["grounding_generated"]) >= {"acc50", "mean_box_iou"}


@pytest.mark.notebook
def test_chapter_trained_grounder_beats_the_centre_box() -> None:
    """Smoke seeds 0 / 1 / 2 (re-measured 2026-12-06 after the grounder's training became bit-reproducible):
    Acc@0.5 0.245 / 0.036 / 0.127 and mean box IoU 0.200 / 0.062 / 0.133 against the centre box's 0.000 and
    0.005 / 0.028 / 0.013. (The named-kind guess, 0.377 / 0.429 / 0.429, is not beaten in smoke.)"""
    res = run_notebook(CHAPTER)["results"]
    grounder, centre = res["grounding_generated"], res["grounding_centre_box_generated"]
    assert grounder["acc50"] > centre["acc50"], (grounder, centre)
    assert grounder["mean_box_iou"] > centre["mean_box_iou"], (grounder, centre)


@pytest.mark.notebook
def test_chapter_cfpg_and_mbo_beat_box_only_sam_with_oracle_boxes() -> None:
    """The paper's ablation claim (CFPG + MBO over box-only SAM), on the generated test scenes with oracle
    boxes. Smoke seeds 0 / 1 / 2 measured mIoU gains of +0.052 / +0.050 / +0.054 and oIoU gains of +0.034 /
    +0.028 / +0.023 (almost all from MBO; CFPG alone: +0.003 / -0.002 / +0.000; MBO now seeds OpenCV's RNG
    itself); 0.02 holds for each."""
    res = run_notebook(CHAPTER)["results"]
    ours, base = res["pslg_sam_oracle_generated"], res["box_only_oracle_generated"]
    assert ours["miou"] > base["miou"] + 0.02 or ours["oiou"] > base["oiou"] + 0.02, (ours, base)
