"""Run by tests/test_distributed.py, alone or under ``python -m torch.distributed.run``: a tiny teaching
run (2 steps, then resumed to 3), then :func:`samlib.fit` on a small decoder; rank 0 writes the loss
histories to ``OUT/result.json``.

python tests/ddp_worker.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import samlib  # noqa: F401  (before segment_anything)

# isort: split
import torch

from samlib import distributed
from samlib.decoders import DomainDecoder
from samlib.losses import bce_dice_loss
from samlib.teaching import TeachingConfig
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


if __name__ == "__main__":
    with distributed.session():  # one group for the whole script: the trainers' own sessions reuse it
        main(Path(sys.argv[1]))
