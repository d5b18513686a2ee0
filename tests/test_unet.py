"""The task-specific CNN of GeoSAM: a small U-Net (samlib.unet)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from samlib.errors import InvalidInputError
from samlib.experts.unet import UNet, predict_labels, predict_proba, segmentation_loss, train_unet


def _toy_set(n: int = 4, size: int = 32) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Bright squares (class 1) and dark bars (class 2) on mid-grey noise (class 0)."""
    rng = np.random.default_rng(0)
    images, labels = [], []
    for _ in range(n):
        img = rng.integers(100, 140, (size, size, 3)).astype(np.uint8)
        lab = np.zeros((size, size), np.int64)
        y, x = rng.integers(2, size - 12, 2)
        img[y : y + 10, x : x + 10] = 230
        lab[y : y + 10, x : x + 10] = 1
        r = int(rng.integers(0, size - 3))
        img[r : r + 3, :] = 20
        lab[r : r + 3, :] = 2
        images.append(img)
        labels.append(lab)
    return images, labels


@pytest.mark.parametrize("shape", [(2, 3, 32, 32), (1, 3, 37, 50), (1, 3, 9, 70)])
def test_unet_keeps_spatial_size_for_any_input(shape: tuple[int, int, int, int]) -> None:
    net = UNet(3, 4, base=4, depth=3).eval()
    with torch.no_grad():
        out = net(torch.randn(shape))
    assert out.shape == (shape[0], 4, *shape[2:])


def test_unet_rejects_bad_config_and_input() -> None:
    with pytest.raises(InvalidInputError):
        UNet(3, 1)
    with pytest.raises(InvalidInputError):
        UNet(3, 4, base=4)(torch.randn(3, 16, 16))


def test_segmentation_loss_prefers_the_right_answer() -> None:
    target = torch.zeros(1, 8, 8, dtype=torch.int64)
    target[0, 2:5, 2:5] = 1
    good = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float() * 10
    bad = torch.roll(good, 1, dims=1)
    assert segmentation_loss(good, target) < segmentation_loss(bad, target)
    with pytest.raises(InvalidInputError):
        segmentation_loss(good, target[0])


def test_a_few_training_steps_lower_the_loss_and_learn_the_classes() -> None:
    images, labels = _toy_set()
    net, history = train_unet(images, labels, n_classes=3, steps=40, batch_size=4, crop=None, base=4, depth=2,
                              lr=1e-2, augment=False, seed=0, device="cpu", progress=False)  # fmt: skip
    assert len(history) == 40
    assert np.mean(history[-5:]) < 0.6 * np.mean(history[:5])
    pred = predict_labels(net, images)
    acc = np.mean([np.mean(p == lab) for p, lab in zip(pred, labels, strict=True)])
    background_share = np.mean([np.mean(lab == 0) for lab in labels])
    assert acc > background_share + 0.05  # better than predicting background everywhere


def test_training_resumes_from_the_saved_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import samlib.experts.unet as unet_module

    images, labels = _toy_set()
    kw = dict(
        n_classes=3, steps=3, batch_size=2, crop=None, base=4, depth=2, seed=0, device="cpu", progress=False
    )
    net, history = train_unet(images, labels, resume_dir=tmp_path, **kw)
    assert len(list(tmp_path.glob("unet_*.pt"))) == 1
    monkeypatch.setattr(
        unet_module, "fit", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again"))
    )
    loaded, again = train_unet(images, labels, resume_dir=tmp_path, **kw)
    assert again == history and not loaded.training
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in net.state_dict().items())
    with pytest.raises(AssertionError, match="trained again"):  # other labels: another file
        train_unet(images, [np.roll(lab, 1, axis=0) for lab in labels], resume_dir=tmp_path, **kw)


def test_predict_proba_handles_mixed_sizes_and_sums_to_one() -> None:
    net = UNet(3, 4, base=4, depth=2)
    rng = np.random.default_rng(1)
    images = [rng.integers(0, 255, s + (3,)).astype(np.uint8) for s in [(20, 30), (33, 17), (20, 30)]]
    probs = predict_proba(net, images, batch_size=2)
    assert [p.shape for p in probs] == [(4, 20, 30), (4, 33, 17), (4, 20, 30)]
    for p in probs:
        assert p.dtype == np.float32
        np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-5)


def test_train_unet_validates_labels() -> None:
    images, labels = _toy_set(2)
    with pytest.raises(InvalidInputError):
        train_unet(images, labels, n_classes=2, steps=1, progress=False)  # label 2 >= n_classes
    with pytest.raises(InvalidInputError):
        train_unet(images, labels[:1], n_classes=3, steps=1, progress=False)
