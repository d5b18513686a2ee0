"""Command line of the teaching SAM.

python -m samlib.teaching train --minutes 60 --seed 0 --out runs/teaching.pt
python -m samlib.teaching eval --checkpoint runs/teaching.pt --json runs/eval.json
python -m samlib.teaching export runs/teaching.pt   # fp16 copy into samlib/weights/
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

import torch

from samlib.teaching.evaluate import EVAL_SECTIONS, evaluate
from samlib.teaching.model import (
    TEACHING_CHECKPOINT,
    TeachingConfig,
    config_from_dict,
    load_teaching_sam,
    read_checkpoint,
)
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
    tr.add_argument(
        "--photo-ratio",
        type=float,
        default=TrainSettings.photo_ratio,
        help="share of each batch drawn from real photos (natural/ and camvid/train)",
    )
    tr.add_argument(
        "--data-root", default="", help="folder holding natural/ and camvid/ (default: SAMLIB_DATA)"
    )
    tr.add_argument(
        "--checkpoint-every", type=int, default=TrainSettings.checkpoint_every, help="steps between saves"
    )
    tr.add_argument("--pool-size", type=int, default=TrainSettings.pool_size, help="scenes kept in memory")
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
    ev.add_argument(
        "--sections",
        nargs="+",
        default=["source", "targets", "real"],
        choices=EVAL_SECTIONS,
        help="parts of the report to run (photos: held-out real photos; remote: zero-shot remote sensing)",
    )
    ev.add_argument("--n-photos", type=int, default=20, help="held-out photos per real-photo set")
    ev.add_argument("--n-remote", type=int, default=10, help="images per remote-sensing set")
    ev.add_argument("--max-instances", type=int, default=20, help="instances per remote-sensing image")
    ev.add_argument("--zoom-margin", type=float, default=0.5)
    ev.add_argument("--zoom-min-crop", type=int, default=64)
    ev.add_argument("--threads", type=int, default=0)
    ex = sub.add_parser("export", help="write the fp16 shipped checkpoint from a training checkpoint")
    ex.add_argument("training_checkpoint")
    ex.add_argument("--dest", default=str(TEACHING_CHECKPOINT))
    args = parser.parse_args(argv)
    _check_args(parser, args)
    if args.cmd == "train":
        config = TeachingConfig(patch_size=args.patch_size, window_size=args.window_size,
                                encoder_depth=args.depth,
                                encoder_global_attn=tuple(args.global_attn))  # fmt: skip
        # A trained start does not need the early object-pixel weighting (balance_decay_steps=0).
        balance_steps = 0 if args.init else TrainSettings.balance_decay_steps
        settings = TrainSettings(seed=args.seed, steps=args.steps, minutes=args.minutes, threads=args.threads,
                                 batch_images=args.batch_images, lr=args.lr, warmup_steps=args.warmup_steps,
                                 init_from=args.init, config=config, photo_ratio=args.photo_ratio,
                                 data_root=args.data_root, balance_decay_steps=balance_steps,
                                 checkpoint_every=args.checkpoint_every,
                                 pool_size=args.pool_size)  # fmt: skip
        if not args.no_resume:
            _check_resumable(parser, Path(args.out), config)
        train(settings, args.out, resume=not args.no_resume, device=args.device)
    elif args.cmd == "eval":
        if args.threads:
            torch.set_num_threads(args.threads)
        sam = load_teaching_sam(args.checkpoint)
        report = evaluate(sam, args.n, args.n_targets, args.data_root, args.first_scene, args.sections,
                          args.n_photos, args.n_remote, args.max_instances, args.zoom_margin,
                          args.zoom_min_crop)  # fmt: skip
        report["settings"] = {
            "checkpoint": args.checkpoint or "shipped",
            "sections": args.sections,
            "source_scenes": args.n,
            "target_scenes": args.n_targets,
            "first_scene": args.first_scene,
            "n_photos": args.n_photos,
            "n_remote": args.n_remote,
            "max_instances": args.max_instances,
            "zoom_margin": args.zoom_margin,
            "zoom_min_crop": args.zoom_min_crop,
        }
        text = json.dumps(report, indent=2)
        print(text)
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(text)
    else:
        print(export(args.training_checkpoint, args.dest))


def _check_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Refuse values that would train nothing, diverge or write NaN reports (argparse-style errors)."""
    if args.cmd == "train":
        for flag in ("batch_images", "checkpoint_every", "pool_size", "depth", "patch_size"):
            if getattr(args, flag) < 1:
                parser.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
        for flag in ("steps", "warmup_steps", "threads", "window_size"):
            if getattr(args, flag) < 0:
                parser.error(f"--{flag.replace('_', '-')} must be >= 0, got {getattr(args, flag)}")
        if not (math.isfinite(args.lr) and 0 < args.lr <= 1):
            parser.error(f"--lr must be a finite number in (0, 1], got {args.lr}")
        if not (math.isfinite(args.minutes) and args.minutes > 0):
            parser.error(f"--minutes must be a positive number, got {args.minutes}")
        if args.pool_size < max(args.batch_images, TrainSettings.pool_refresh):
            parser.error(
                f"--pool-size must be >= --batch-images and >= {TrainSettings.pool_refresh} (scenes "
                f"refreshed per step), got {args.pool_size}"
            )
        if any(not 0 <= i < args.depth for i in args.global_attn):
            parser.error(f"--global-attn blocks must be in 0..{args.depth - 1}, got {args.global_attn}")
        if TeachingConfig.img_size % args.patch_size:
            parser.error(
                f"--patch-size must divide the {TeachingConfig.img_size} px input, got {args.patch_size}"
            )
        if args.init and not Path(args.init).is_file():
            parser.error(f"--init {args.init}: no such file")
    elif args.cmd == "eval":
        if args.n < 1 or args.n_targets < 1:
            parser.error(f"--n and --n-targets must be >= 1, got {args.n} and {args.n_targets}")
        if args.first_scene < 0:
            parser.error(f"--first-scene must be >= 0, got {args.first_scene}")
    elif not Path(args.training_checkpoint).is_file():
        parser.error(f"{args.training_checkpoint}: no such file")


def _check_resumable(parser: argparse.ArgumentParser, out: Path, config: TeachingConfig) -> None:
    """A checkpoint at ``out`` is resumed: its architecture must be the one asked for."""
    if not out.is_file():
        return
    try:
        state = read_checkpoint(out)
        saved = config_from_dict(state["config"], source=str(out))
    except Exception as e:  # unreadable, a code-running pickle, no config: say so instead of a traceback
        parser.error(
            f"--out {out} exists but is not a readable training checkpoint ({type(e).__name__}: {e}); "
            "move it away or pass --no-resume"
        )
    if saved != config:
        diff = {k: (v, getattr(config, k)) for k, v in asdict(saved).items() if getattr(config, k) != v}
        parser.error(
            f"--out {out} holds a run with another architecture (saved vs asked: {diff}); pass the same "
            "--depth/--patch-size/... to resume it, or --no-resume to start over"
        )


if __name__ == "__main__":
    main()
