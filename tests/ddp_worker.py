"""Run by tests/test_distributed.py, alone or under ``python -m torch.distributed.run``: a tiny teaching
run (2 steps, then resumed to 3), then :func:`samlib.fit` on a small decoder; rank 0 writes the loss
histories to ``OUT/result.json``. With ``pointsam``: PointSAM's LoRA trainer on a tiny random SAM instead
(NPC and PBR on, 3 images per step over the ranks, 2 steps, then resumed to 3).

python tests/ddp_worker.py OUT [pointsam]
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import samlib  # noqa: F401  (before segment_anything)

# isort: split
import torch

from samlib import adapters, distributed
from samlib.decoders import DomainDecoder
from samlib.losses import bce_dice_loss
from samlib.methods import pointsam
from samlib.teaching import TeachingConfig
from samlib.teaching.model import build_teaching_sam
from samlib.teaching.train import TrainSettings, train
from samlib.training import fit


def main(out: Path) -> None:
    torch.set_num_threads(1)
    # No correction rounds: a correction click is drawn from the thresholded prediction's error region,
    # so a logit within rounding of 0 (the encoder sees batches of 1 here, 2 there; BLAS results can
    # differ in the last bit) moves the click and the loss by ~1e-3. Everything else is continuous.
    settings = TrainSettings(seed=3, steps=2, batch_images=2, prompts_per_image=2, pool_size=4,
                             pool_refresh=1, warmup_steps=1, checkpoint_every=1, correction_rounds=0,
                             config=TeachingConfig.tiny())  # fmt: skip
    ckpt = out / "teaching.pt"
    train(settings, ckpt, resume=False, device="cpu")
    settings.steps = 3
    train(settings, ckpt, resume=True, device="cpu")  # every rank loads the step-2 checkpoint
    teaching = [json.loads(line) for line in ckpt.with_suffix(".log.jsonl").read_text().splitlines()]

    g = torch.Generator().manual_seed(0)
    emb = torch.randn(6, 8, 4, 4, generator=g)
    target = (torch.rand(6, 1, 32, 32, generator=g) > 0.5).float()
    torch.manual_seed(0)
    decoder = DomainDecoder(8, hidden=8)
    # batch 3 over 2 ranks: shares of 2 and 1 items, weighted by size
    history = fit(decoder.parameters(), lambda idx: bce_dice_loss(decoder(emb[idx]), target[idx]), n_items=6,
                  steps=4, batch_size=3, lr=1e-2, warmup=1, seed=0, progress=False)  # fmt: skip
    weights = torch.cat([p.detach().flatten() for p in decoder.parameters()])
    if distributed.is_main_process():
        result = {"teaching": teaching, "fit": history, "fit_weights": weights.tolist(),
                  "world_size": distributed.world_size() if distributed.is_distributed() else 1}  # fmt: skip
        (out / "result.json").write_text(json.dumps(result))


def _all_ranks(value: object) -> list:
    """``value`` of every rank (``[value]`` alone)."""
    if not distributed.is_distributed():
        return [value]
    out: list = [None] * distributed.world_size()
    torch.distributed.all_gather_object(out, value)
    return out


def main_pointsam(out: Path) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    source = build_teaching_sam(TeachingConfig.tiny()).eval()  # as tests/conftest.py's build_tiny_sam
    before = {n: p.detach().clone() for n, p in source.named_parameters()}
    data = pointsam.generated_point_set("dense_objects", 3, 64, seed=0)
    protos = pointsam.target_prototypes(source, data, seed=0, progress=False)
    saves = []
    real_save = pointsam._save_state

    def counting_save(path: Path, *args: object, **kwargs: object) -> None:
        saves.append(str(path))
        real_save(path, *args, **kwargs)  # type: ignore[arg-type]

    pointsam._save_state = counting_save  # type: ignore[assignment]
    # 3 images per step over 2 ranks: shares of 2 and 1; a bank of 4 features fills after one step
    config = pointsam.PointSAMConfig(steps=2, images_per_step=3, blocks=(0,), bank_size=4, pbr_every=1,
                                     max_instances=4, lr=1e-2, seed=5)  # fmt: skip
    state = out / "pointsam_state.pt"
    pointsam.train_pointsam(
        source, data, config, protos, progress=False, checkpoint=state, checkpoint_every=1
    )
    run = pointsam.train_pointsam(source, data, replace(config, steps=3), protos, progress=False,
                                  checkpoint=state)  # fmt: skip
    pointsam._save_state = real_save  # type: ignore[assignment]  # (the test imports this module)
    lora = torch.cat([p.detach().flatten() for p in adapters.lora_parameters(run.sam)])
    untouched = all(torch.equal(p, before[n]) for n, p in source.named_parameters())
    ranks = _all_ranks({"history": run.history, "saves": saves, "lora": lora.tolist(), "untouched": untouched,
                        "check": pointsam.weight_check(source, run.sam)})  # fmt: skip
    if distributed.is_main_process():
        saved = torch.load(state, weights_only=True)
        result = {"ranks": ranks, "bank": torch.cat(saved["bank"]).flatten().tolist(), "step": saved["step"],
                  "world_size": distributed.world_size()}  # fmt: skip
        (out / "result.json").write_text(json.dumps(result))


if __name__ == "__main__":
    with distributed.session():  # one group for the whole script: the trainers' own sessions reuse it
        if sys.argv[2:] == ["pointsam"]:
            main_pointsam(Path(sys.argv[1]))
        else:
            main(Path(sys.argv[1]))
