"""Command line of the teaching SAM.

python -m samlib.teaching train --minutes 60 --seed 0 --out runs/teaching.pt
python -m samlib.teaching eval --checkpoint runs/teaching.pt --json runs/eval.json
python -m samlib.teaching export runs/teaching.pt   # fp16 copy into samlib/weights/
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

from samlib.teaching.evaluate import evaluate
from samlib.teaching.model import TEACHING_CHECKPOINT, TeachingConfig, load_teaching_sam
from samlib.teaching.train import TrainSettings, export, train


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m samlib.teaching", description="Train, evaluate and export the teaching SAM."
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="pretrain the teaching model on generated source scenes")
    tr.add_argument("--minutes", type=float, default=10.0)
    tr.add_argument("--steps", type=int, default=0, help="fixed step count (overrides --minutes)")
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--out", default="runs/teaching.pt")
    tr.add_argument("--threads", type=int, default=0)
    tr.add_argument("--batch-images", type=int, default=TrainSettings.batch_images)
    tr.add_argument("--lr", type=float, default=TrainSettings.lr)
    tr.add_argument("--warmup-steps", type=int, default=TrainSettings.warmup_steps)
    tr.add_argument("--init", default="", help="start from this teaching checkpoint (fine-tuning)")
    tr.add_argument("--depth", type=int, default=TeachingConfig.encoder_depth, help="encoder blocks")
    tr.add_argument("--patch-size", type=int, default=TeachingConfig.patch_size)
    tr.add_argument("--window-size", type=int, default=TeachingConfig.window_size)
    tr.add_argument(
        "--global-attn", type=int, nargs="*", default=[], help="encoder blocks with global attention"
    )
    tr.add_argument("--no-resume", action="store_true")
    tr.add_argument("--device", default=None)
    ev = sub.add_parser("eval", help="evaluate a checkpoint (default: the shipped one)")
    ev.add_argument("--checkpoint", default=None)
    ev.add_argument("--json", default=None)
    ev.add_argument("--n", type=int, default=200)
    ev.add_argument("--n-targets", type=int, default=50)
    ev.add_argument("--data-root", default=None)
    ev.add_argument(
        "--first-scene",
        type=int,
        default=0,
        help="start of the held-out scene range (another set: e.g. 1000)",
    )
    ex = sub.add_parser("export", help="write the fp16 shipped checkpoint from a training checkpoint")
    ex.add_argument("training_checkpoint")
    ex.add_argument("--dest", default=str(TEACHING_CHECKPOINT))
    args = parser.parse_args(argv)
    if args.cmd == "train":
        config = TeachingConfig(patch_size=args.patch_size, window_size=args.window_size,
                                encoder_depth=args.depth,
                                encoder_global_attn=tuple(args.global_attn))  # fmt: skip
        # A trained start does not need the early object-pixel weighting (balance_decay_steps=0).
        balance_steps = 0 if args.init else TrainSettings.balance_decay_steps
        settings = TrainSettings(seed=args.seed, steps=args.steps, minutes=args.minutes, threads=args.threads,
                                 batch_images=args.batch_images, lr=args.lr, warmup_steps=args.warmup_steps,
                                 init_from=args.init, config=config,
                                 balance_decay_steps=balance_steps)  # fmt: skip
        train(settings, args.out, resume=not args.no_resume, device=args.device)
    elif args.cmd == "eval":
        sam = load_teaching_sam(args.checkpoint)
        report = evaluate(sam, args.n, args.n_targets, args.data_root, args.first_scene)
        text = json.dumps(report, indent=2)
        print(text)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(text)
    else:
        print(export(args.training_checkpoint, args.dest))


if __name__ == "__main__":
    main()
