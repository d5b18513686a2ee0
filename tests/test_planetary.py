"""Chapter 04 (planetary distillation): the pieces of samlib.planetary, then the notebook's claims."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from samlib import decoders, metrics
from samlib.embeddings import EmbeddedImages, embed_images, masks_to_grid
from samlib.errors import InvalidInputError
from samlib.methods import planetary as P
from samlib.predict import PromptPredictor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from notebook_runner import run_notebook  # noqa: E402

CHAPTER = "04_planetary_distillation"


# ------------------------------------------------------------------------------------ decoder geometry


def test_domain_decoder_upsamples_8x_for_teaching_and_official_grids() -> None:
    dec = decoders.DomainDecoder(64)
    assert dec(torch.zeros(2, 64, 32, 32)).shape == (2, 1, 256, 256)
    official = decoders.DomainDecoder(256)
    assert official(torch.zeros(1, 256, 64, 64)).shape == (1, 1, 512, 512)
    with pytest.raises(InvalidInputError):
        dec(torch.zeros(1, 32, 32, 32))


def test_predict_masks_maps_padded_grid_back_to_non_square_original() -> None:
    # A 900 x 600 (H x W) image in a 256 input: resized to 256 x 171, padded right to 256 x 256.
    emb = EmbeddedImages(torch.zeros(1, 64, 32, 32), [(900, 600)], [(256, 171)], 256)

    class LeftHalf(torch.nn.Module):
        """Positive logits in the left half of the valid region (columns < 85 of 171), else negative."""

        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            out = -10 * torch.ones(x.shape[0], 1, 256, 256)
            out[..., :, :85] = 10.0
            return out + self.w

    (mask,) = decoders.predict_masks(LeftHalf(), emb)
    assert mask.shape == (900, 600)
    # the valid region (171 of 256 columns) is stretched back to 600: the left half stays the left half
    frac = mask.mean(axis=0)
    assert frac[:290].min() == 1.0 and frac[310:].max() == 0.0


def test_masks_to_grid_inverts_logits_to_original_on_padded_geometry() -> None:
    emb = EmbeddedImages(torch.zeros(1, 64, 32, 32), [(300, 450)], [(171, 256)], 256)
    truth = np.zeros((300, 450), bool)
    truth[50:200, 100:300] = True
    grid = masks_to_grid([truth], emb, 256)
    assert grid.shape == (1, 1, 256, 256)
    assert grid[0, 0, 171:].max() == 0.0  # padding rows below the valid region stay background
    logits = (grid * 2 - 1) * 10  # the target as logits, mapped back
    back = emb.logits_to_original(logits, 0)[0, 0] > 0
    assert back.shape == (300, 450)
    inter = np.logical_and(back.numpy(), truth).sum()
    assert inter / np.logical_or(back.numpy(), truth).sum() > 0.95
    with pytest.raises(InvalidInputError):
        masks_to_grid([truth.T], emb, 256)


def test_promptless_sam_decoder_shape(tiny_sam) -> None:
    dec = decoders.PromptlessSamDecoder(tiny_sam)
    x = torch.randn(3, 16, 4, 4)
    with torch.no_grad():
        out = dec(x)
        alone = torch.cat([dec(x[i : i + 1]) for i in range(3)])
    assert out.shape == (3, 1, 16, 16)
    # one batched decoder call equals decoding each image on its own
    torch.testing.assert_close(out, alone, atol=1e-5, rtol=1e-4)
    assert not torch.allclose(out[0], out[1])
    # the copy is trained, SAM itself is not touched
    assert dec.mask_decoder is not tiny_sam.mask_decoder
    assert all(not p.requires_grad for p in dec.prompt_encoder.parameters())


def test_sam_decoder_box_finetuning_runs_and_leaves_sam_untouched(tiny_sam) -> None:
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(2)]
    emb = embed_images(tiny_sam, images, progress=False)
    boxes = [np.array([[4.0, 4.0, 30.0, 30.0]]), np.array([[10.0, 20.0, 50.0, 60.0], [0.0, 0.0, 8.0, 8.0]])]
    inst = [np.zeros((len(b), 64, 64), bool) for b in boxes]
    for stack, bxs in zip(inst, boxes, strict=True):
        for m, (x0, y0, x1, y1) in zip(stack, bxs.astype(int), strict=True):
            m[y0 : y1 + 1, x0 : x1 + 1] = True
    before = {k: v.clone() for k, v in tiny_sam.mask_decoder.state_dict().items()}
    model, history = decoders.train_sam_decoder_with_boxes(
        tiny_sam, emb, boxes, inst, steps=5, lr=1e-3, seed=0
    )
    assert len(history) == 5 and np.isfinite(history).all()
    assert model.decode_boxes(emb.embeddings[:1], torch.tensor([[0.0, 0.0, 20.0, 20.0]])).shape == (
        1,
        1,
        16,
        16,
    )
    assert decoders.predict_masks(model, emb)[1].shape == (64, 64)
    # the batched (image, box) decoding used in training equals SAM's own per-image decoding
    bx = torch.tensor([[0.0, 0.0, 20.0, 20.0], [10.0, 5.0, 60.0, 40.0]])
    with torch.no_grad():
        batched = model.decode_box_batch(emb.embeddings, bx)
        alone = torch.cat([model.decode_boxes(emb.embeddings[i : i + 1], bx[i : i + 1]) for i in range(2)])
    torch.testing.assert_close(batched, alone, atol=1e-5, rtol=1e-4)
    after = tiny_sam.mask_decoder.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    changed = any(not torch.equal(before[k], v) for k, v in model.mask_decoder.state_dict().items())
    assert changed, "the copy of the decoder was not trained"
    with pytest.raises(InvalidInputError):
        decoders.train_sam_decoder_with_boxes(tiny_sam, emb, boxes[:1], inst[:1], steps=1)


def _noise_with_blob(sam, shape: tuple[int, int], rows: slice, cols: slice, seed: int):
    """Embeddings of four noise images and the same rectangular mask for each (a fixed blob in every
    image: a decoder that learns anything must find it)."""
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 255, (*shape, 3), dtype=np.uint8) for _ in range(4)]
    masks = [np.zeros(shape, bool) for _ in images]
    for m in masks:
        m[rows, cols] = True
    return embed_images(sam, images, progress=False), masks


def test_domain_decoder_learns_a_simple_target(tiny_sam) -> None:
    emb, masks = _noise_with_blob(tiny_sam, (64, 48), slice(8, 40), slice(4, 30), seed=0)
    dec, history = decoders.train_domain_decoder(emb, masks, steps=120, lr=1e-2, seed=0)
    assert np.mean(history[-10:]) < 0.5 * history[0]
    preds = decoders.predict_masks(dec, emb)
    assert preds[0].shape == (64, 48)
    assert metrics.segmentation_scores(preds, masks)["iou"] > 0.7


def test_sweep_resumes_from_saved_decoders(tiny_sam, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    emb, labels = _noise_with_blob(tiny_sam, (64, 64), slice(10, 40), slice(12, 50), seed=3)
    boxes = [np.array([[12.0, 10.0, 49.0, 39.0]]) for _ in labels]
    inst = [m[None] for m in labels]

    def sweep(**kw):
        return P.n_sweep(
            tiny_sam, emb, labels, emb, labels, n_values=(2, 3), seeds=(0,), steps=3,
            methods=tuple(P.METHODS), train_boxes=boxes, train_instances=inst, progress=False, **kw,
        )  # fmt: skip

    plain = sweep()
    first = sweep(resume_dir=tmp_path / "resume")
    saved = sorted(p.name for p in (tmp_path / "resume").iterdir())
    assert len(saved) == 6 and not any(n.endswith(".tmp") for n in saved)
    for a, b in zip(plain.records, first.records, strict=True):  # saving changes nothing
        assert {k: v for k, v in a.items() if k != "n_train_seconds"} == {
            k: v for k, v in b.items() if k != "n_train_seconds"
        }

    def no_training(*args, **kwargs):
        raise AssertionError("a saved decoder was trained again")

    for name in ("train_domain_decoder", "train_sam_decoder", "train_sam_decoder_with_boxes"):
        monkeypatch.setattr(P, name, no_training)
    resumed = sweep(resume_dir=tmp_path / "resume")
    assert resumed.records == first.records  # scores and recorded training times
    assert resumed.histories == first.histories
    assert sorted(p.name for p in (tmp_path / "resume").iterdir()) == saved
    with pytest.raises(AssertionError, match="trained again"):  # other hyper-parameters: a new key
        P.n_sweep(
            tiny_sam, emb, labels, emb, labels, n_values=(2,), seeds=(0,), steps=4,
            methods=("domain_decoder",), progress=False, resume_dir=tmp_path / "resume",
        )  # fmt: skip
    victim = tmp_path / "resume" / next(n for n in saved if n.startswith("domain_decoder_n2"))
    victim.write_bytes(b"not a torch file")
    with pytest.raises(InvalidInputError, match="save_trained"):
        sweep(resume_dir=tmp_path / "resume")


def test_sweep_findings_read_the_records() -> None:
    def rec(method: str, n: int, seed: int, f1: float) -> dict:
        return {"method": method, "n": n, "seed": seed, "f1": f1}

    records = [
        rec("domain_decoder", n, s, f1)
        for n, f1s in ((5, (0.79, 0.81)), (50, (0.80, 0.82)))
        for s, f1 in enumerate(f1s)
    ]
    records += [rec("sam_decoder_ft", 5, 0, 0.10), rec("sam_decoder_ft_promptless", 5, 0, 0.78)]
    found = P.sweep_findings(records)
    assert "(the paper's failure case reproduces)" in found["failure_case"]
    assert "difference +0.020" in found["promptless"] and "±0.010" in found["promptless"]
    assert found["handful"].startswith("domain decoder F1: 0.800 at N=5, 0.810 at N=50")
    assert found["handful"].endswith("a handful of images suffices here")
    climbing = [
        r if r["n"] == 5 else {**r, "f1": r["f1"] + 0.15} for r in records if r["method"] == "domain_decoder"
    ]
    found = P.sweep_findings(climbing)
    assert set(found) == {"handful"} and found["handful"].endswith("more images still help here")
    # a gain inside twice the seed spread: on average more helps, but the draw matters as much
    noisy = [
        {**r, "f1": r["f1"] + (0.06 if r["n"] == 50 else 0.0) + (0.1 if r["seed"] else -0.1)}
        for r in records
        if r["method"] == "domain_decoder"
    ]
    found = P.sweep_findings(noisy)
    assert "gain +0.070" in found["handful"] and "which few images are drawn matters" in found["handful"]
    # one N only: nothing to say about the curve
    assert "handful" not in P.sweep_findings([r for r in records if r["n"] == 5])
    assert P.sweep_findings([]) == {}


# ------------------------------------------------------------------------------------ pseudo-labels


def test_pseudo_labels_union_of_box_prompts(tiny_sam) -> None:
    image = np.random.default_rng(1).integers(0, 255, (60, 80, 3), dtype=np.uint8)
    pred = PromptPredictor(tiny_sam)
    boxes = np.array([[5, 5, 20, 25], [40, 30, 70, 55]], float)
    (label,) = P.pseudo_labels(pred, [image], [boxes])
    assert label.shape == (60, 80) and label.dtype == bool
    pred.set_image(image)
    each = pred.predict_batch(boxes=boxes, multimask_output=False).masks[:, 0]
    np.testing.assert_array_equal(label, each[0] | each[1])
    (empty,) = P.pseudo_labels(pred, [image], [np.zeros((0, 4))])
    assert not empty.any()


# ------------------------------------------------------------------------------------ object metrics


def test_object_scores_hand_made() -> None:
    pred = np.zeros((100, 100), bool)
    pred[10:30, 10:30] = True  # fills box A
    pred[60:64, 60:64] = True  # covers 16 / 400 = 4% of box B: a miss at cover=0.2, but a good component
    pred[80:95, 0:15] = True  # a component outside every box: a false positive
    boxes = np.array([[10, 10, 30, 30], [50, 50, 70, 70], [0, 40, 10, 50]], float)
    s = metrics.object_scores(pred, boxes, cover=0.2, min_area=10)
    assert s["object_recall"] == pytest.approx(1 / 3)
    assert s["object_precision"] == pytest.approx(2 / 3)
    assert s["n_components"] == 3 and s["n_boxes"] == 3
    # min_area drops the small component: precision 1 of 2
    assert metrics.object_scores(pred, boxes, min_area=20)["object_precision"] == pytest.approx(1 / 2)
    # pooled over images, empty conventions
    empty = np.zeros((20, 20), bool)
    assert metrics.object_scores([empty], [np.zeros((0, 4))])["object_precision"] == 1.0
    assert metrics.object_scores([empty], [np.array([[0, 0, 5, 5]])])["object_recall"] == 0.0
    pooled = metrics.object_scores([pred, empty], [boxes, np.array([[0, 0, 5, 5]])], min_area=10)
    assert pooled["object_recall"] == pytest.approx(1 / 4)


def test_segmentation_scores_miou_averages_both_classes() -> None:
    gt = np.zeros((10, 10), bool)
    gt[:5] = True
    pred = np.zeros((10, 10), bool)
    pred[:4] = True
    s = metrics.segmentation_scores([pred], [gt])
    assert s["iou"] == pytest.approx(40 / 50)
    assert s["miou"] == pytest.approx(0.5 * (40 / 50 + 50 / 60))
    assert s["precision"] == 1.0 and s["recall"] == pytest.approx(0.8) and s["accuracy"] == pytest.approx(0.9)


def test_best_match_ious() -> None:
    t = np.zeros((2, 8, 8), bool)
    t[0, :4] = True
    t[1, 4:, 4:] = True
    c = np.zeros((2, 8, 8), bool)
    c[0, :4] = True
    c[1, 4:] = True
    np.testing.assert_allclose(metrics.best_match_ious(c, t), [1.0, 0.5])
    np.testing.assert_allclose(metrics.best_match_ious(np.zeros((0, 8, 8), bool), t), [0.0, 0.0])


def test_summarize_sweep_keys_and_means() -> None:
    recs = [
        {"method": "domain_decoder", "n": 5, "seed": s, "miou": v, "f1": v} for s, v in ((0, 0.6), (1, 0.8))
    ]
    out = P.summarize_sweep(recs, suffix="_generated")
    assert set(out) == {"domain_decoder_n5_generated"}
    assert out["domain_decoder_n5_generated"]["miou"] == pytest.approx(0.7)
    assert out["domain_decoder_n5_generated"]["miou_std"] == pytest.approx(0.1)


# ------------------------------------------------------------------------------------ the chapter


@pytest.mark.notebook
def test_chapter_domain_decoder_beats_promptless_sam_decoder() -> None:
    # The paper's contrast: SAM's decoder fine-tuned with box prompts, run without a prompt. In smoke
    # runs with seeds 0-2 (sweep N = 5, 10, 15; shipped teaching model) it scored F1 0.004-0.010 and
    # mIoU 0.49 against F1 0.89-0.91 and mIoU 0.90-0.91 for the domain decoder, whose F1 stayed within
    # 0.01-0.04 of the pseudo-labels' (0.92-0.93). The margins below leave room for other checkpoints
    # while still failing if either method changes its nature (domain decoder not learning, or the
    # prompt-less SAM decoder segmenting pits).
    res = run_notebook(CHAPTER)["results"]
    swept = [k for k in res if k.startswith("domain_decoder_n") and k.endswith("_generated")]
    assert len(swept) >= 3, swept  # the smoke sweep covers at least three values of N
    dd = res["domain_decoder_n5_generated"]
    ft = res["sam_decoder_ft_n5_generated"]
    assert dd["f1"] > ft["f1"] + 0.3, (dd, ft)
    assert dd["miou"] > ft["miou"] + 0.1, (dd, ft)
    # the domain decoder learns from SAM's labels: not far below their own quality
    assert dd["f1"] > res["pseudo_labels_generated"]["f1"] - 0.15, (dd, res["pseudo_labels_generated"])


@pytest.mark.notebook
def test_chapter_box_prompts_beat_automatic_mode() -> None:
    # Smoke runs (5 scenes, 13 pits) gave box - auto IoU gaps of 0.12, 0.13 and 0.15 for seeds 0-2 with
    # the shipped teaching model (other checkpoints gave 0.09-0.32: the gap moves with the teaching
    # model); 0.05 leaves room for that.
    res = run_notebook(CHAPTER)["results"]
    assert res["prompt_box_generated"]["iou"] > res["prompt_auto_generated"]["iou"] + 0.05
    for key in ("prompt_auto_generated", "prompt_point_generated", "prompt_box_generated"):
        assert 0.0 <= res[key]["iou"] <= 1.0


@pytest.mark.notebook
@pytest.mark.data
def test_chapter_real_pits_recorded(real_data_root: Path) -> None:
    res = run_notebook(CHAPTER)["results"]
    real = res["domain_decoder_n5_mars_pits"]
    for metric in ("miou", "f1", "accuracy", "precision", "recall", "object_recall", "object_precision"):
        assert 0.0 <= real[metric] <= 1.0
