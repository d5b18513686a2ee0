"""Performance of samlib's fast paths as ratios against the reference they replace, on this machine.

Each line times a samlib path (A) and its reference (B) interleaved in one process (A, B, A, B, ...)
and reports medians, so that a loaded or throttled machine slows both alike and the ratio stays
meaningful. Run ``python benchmarks/perf.py`` (``--quick`` for a few minutes; ``--json out.json``).

The goals (issue 18) are for a 2-core CPU and the book's teaching model unless stated.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import samlib  # noqa: E402  (before torchvision / segment_anything)

# isort: split
import numpy as np  # noqa: E402
import torch  # noqa: E402
from segment_anything import SamAutomaticMaskGenerator, SamPredictor  # noqa: E402

from samlib.amg import AutomaticMaskGenerator  # noqa: E402
from samlib.embeddings import embed_images  # noqa: E402
from samlib.predict import EmbeddingCache, PromptPredictor  # noqa: E402
from samlib.scenes import generate_scene  # noqa: E402


def interleaved(a: Callable[[], object], b: Callable[[], object], repeats: int) -> tuple[float, float]:
    """Median seconds of ``a`` and of ``b``, run alternately ``repeats`` times each (after one warm-up)."""
    a(), b()
    ta, tb = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        a()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        b()
        tb.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


def time_pair(what: str, a: Callable[[], object], b: Callable[[], object], repeats: int, goal: float) -> dict:
    """One result row: a samlib path ``a`` against its reference ``b``, timed by :func:`interleaved`.

    Arguments:
      what (str): the row's description.
      goal (float): the speed-up (reference / samlib) the row should reach.

    Returns:
      (dict): "what", "samlib_s", "reference_s" (median seconds), "speedup" and "goal".
    """
    ta, tb = interleaved(a, b, repeats)
    return {"what": what, "samlib_s": ta, "reference_s": tb, "speedup": tb / ta, "goal": goal}


def random_boxes(rng: np.random.Generator, n: int, size: int) -> np.ndarray:
    x0, y0 = rng.uniform(0, 0.8 * size, n), rng.uniform(0, 0.8 * size, n)
    side = rng.uniform(0.03, 0.2, (2, n)) * size
    return np.stack([x0, y0, x0 + side[0], y0 + side[1]], 1)


def scene_image(size: int, seed: int = 0) -> np.ndarray:
    """A generated scene, resized to ``size`` px (so large rasters have real structure)."""
    import cv2

    return cv2.resize(
        generate_scene("source", 256, seed=seed).image, (size, size), interpolation=cv2.INTER_LINEAR
    )


def bench_prompts(sam: torch.nn.Module, n: int, size: int, repeats: int, kind: str) -> dict:
    rng = np.random.default_rng(0)
    image = scene_image(size)
    meta, ours = SamPredictor(sam), PromptPredictor(sam)
    meta.set_image(image)
    ours.set_image(image)
    boxes = random_boxes(rng, n, size)
    points = rng.uniform(0, size, (n, 1, 2))

    def a() -> np.ndarray:
        if kind == "box":
            return ours.predict_batch(boxes=boxes, multimask_output=True).best()
        return ours.predict_batch(
            point_coords=points, point_labels=np.ones((n, 1)), multimask_output=True
        ).best()

    def b() -> list[np.ndarray]:
        out = []
        for i in range(n):
            if kind == "box":
                m, s, _ = meta.predict(box=boxes[i])
            else:
                m, s, _ = meta.predict(point_coords=points[i], point_labels=np.ones(1))
            out.append(m[np.argmax(s)])
        return out

    return time_pair(
        f"{n} {kind} prompts, {size} px: predict_batch(...).best() vs {n} x Meta predict", a, b, repeats, 3.0
    )


def bench_one_box(sam: torch.nn.Module, size: int, repeats: int) -> dict:
    image = scene_image(size)
    meta, ours = SamPredictor(sam), PromptPredictor(sam)
    meta.set_image(image)
    ours.set_image(image)
    box = np.array([0.3, 0.3, 0.5, 0.6]) * size
    return time_pair(
        f"predict, one box, {size} px raster (3 masks)",
        lambda: ours.predict(box=box).masks,
        lambda: meta.predict(box=box),
        repeats,
        1.0,
    )


def bench_amg(sam: torch.nn.Module, pps: int, repeats: int) -> dict:
    image = generate_scene("source", 256, seed=0).image
    cache = EmbeddingCache()
    ours = AutomaticMaskGenerator(sam, points_per_side=pps, cache=cache)
    meta = SamAutomaticMaskGenerator(sam, points_per_side=pps)

    def a() -> object:
        cache.clear()  # both encode the image: the comparison is of the whole call
        return ours.generate(image)

    return time_pair(
        f"automatic masks, 256 px, {pps} points/side: samlib.amg vs SamAutomaticMaskGenerator",
        a,
        lambda: meta.generate(image),
        repeats,
        3.0,
    )


def bench_cache(sam: torch.nn.Module, size: int, repeats: int) -> dict:
    image = scene_image(size)
    cache = EmbeddingCache()
    pred = PromptPredictor(sam, cache)

    def miss() -> None:
        cache.clear()
        pred.set_image(image)

    def hit() -> None:
        pred.set_image(image)

    pred.set_image(image)
    return time_pair(f"embedding cache hit vs miss, {size} px", hit, miss, repeats, 20.0)


def bench_finetune(sam: torch.nn.Module, n_images: int, batch: int, epochs: int, repeats: int) -> dict:
    """Decoder fine-tuning per epoch on cached embeddings (A: ``epochs`` epochs of GeoSAM.finetune,
    divided by ``epochs``, so the one-time dense prompts of the prompt pool are amortised over them) vs
    the same epoch plus encoding every image it draws (B = A + the encoder time of an epoch's images).
    Also the bound the FLOPs allow: 1 + encoder FLOPs / (3 x decoder forward FLOPs of one image's prompts)."""
    from torch.utils.flop_counter import FlopCounterMode

    from samlib.methods.geosam import GeoSAM
    from samlib.scenes import generate_scenes

    scenes = generate_scenes("mobility", n_images, 256, seed=0)
    images = [s.image for s in scenes]
    targets = [s.semantic for s in scenes]
    # a stand-in CNN: the ground truth, blurred into probabilities (the timing does not depend on it)
    probs = [np.stack([(t == c).astype(np.float32) * 0.8 + 0.1 for c in range(4)]) for t in targets]
    embedded = embed_images(sam, images, progress=False)
    geo = GeoSAM(sam)
    steps = max(1, n_images // batch)
    ta, te = interleaved(
        lambda: geo.finetune(
            embedded, probs, targets, steps=epochs * steps, batch_size=batch, progress=False
        ),
        lambda: embed_images(sam, images[: steps * batch], progress=False),
        repeats,
    )
    ta /= epochs
    pr = geo.make_prompts(embedded.subset([0]), probs[:1])[0]
    with torch.no_grad(), FlopCounterMode(display=False) as dec:
        geo.decode(
            sam.mask_decoder,
            embedded.embeddings[:1],
            embedded.original_sizes[0],
            pr.coords,
            pr.labels,
            pr.dense,
        )
    enc = encoder_gflop(sam) * 1e9
    bound = 1 + enc / (3 * dec.get_total_flops())
    return {
        "what": f"GeoSAM.finetune per epoch ({n_images} tiles, batch {batch}): cached vs re-encoding",
        "samlib_s": ta,
        "reference_s": ta + te,
        "speedup": (ta + te) / ta,
        "goal": 10.0,
        "flop_bound": bound,
    }


def matmul_gflops(n: int = 2048, repeats: int = 3) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def encoder_gflop(sam: torch.nn.Module) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    s = int(sam.image_encoder.img_size)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        sam.image_encoder(torch.zeros(1, 3, s, s))
    return counter.get_total_flops() / 1e9


def bench_encoder(sam: torch.nn.Module, batches: list[int], n_images: int) -> list[dict]:
    images = [generate_scene("source", 256, seed=i).image for i in range(n_images)]
    gflop = encoder_gflop(sam)
    ceiling = matmul_gflops()
    rows = []
    for bs in batches:
        embed_images(sam, images[:bs], batch_size=bs, progress=False)  # warm-up
        t = time.perf_counter()
        embed_images(sam, images, batch_size=bs, progress=False)
        per_s = n_images / (time.perf_counter() - t)
        rows.append(
            {
                "what": f"embed_images, batch {bs}",
                "images_per_s": per_s,
                "gflop_per_s": per_s * gflop,
                "matmul_ceiling_gflop_per_s": ceiling,
                "fraction_of_ceiling": per_s * gflop / ceiling,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="smaller sizes and fewer repeats (a few minutes)"
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    parser.add_argument("--repeats", type=int, default=None, help="timed repeats of every A/B pair")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument(
        "--only", default="", help="comma-separated subset: prompts,box,amg,cache,finetune,encoder"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    q = args.quick

    def reps(quick: int, full: int) -> int:
        return args.repeats or (quick if q else full)

    only = set(filter(None, args.only.split(",")))
    sam = samlib.load_sam("teaching", device="cpu")
    load = os.getloadavg()
    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}"
    )
    rows: list[dict] = []
    plan: list[tuple[str, Callable[[], object]]] = [
        ("prompts", lambda: rows.append(bench_prompts(sam, 16 if q else 64, 1024, reps(2, 5), "box"))),
        ("prompts", lambda: rows.append(bench_prompts(sam, 16 if q else 64, 1024, reps(2, 5), "point"))),
        ("box", lambda: rows.append(bench_one_box(sam, 4096 if q else 8192, reps(2, 5)))),
        ("amg", lambda: rows.append(bench_amg(sam, 8 if q else 16, reps(1, 3)))),
        ("cache", lambda: rows.append(bench_cache(sam, 4096 if q else 8192, reps(3, 7)))),
        ("finetune", lambda: rows.append(bench_finetune(sam, 8 if q else 32, 4, 3, reps(1, 3)))),
        ("encoder", lambda: rows.extend(bench_encoder(sam, [1, 4] if q else [1, 4, 16], 8 if q else 32))),
    ]
    for name, run in plan:
        if not only or name in only:
            run()
            r = rows[-1]
            if "speedup" in r:
                ok = "meets" if r["speedup"] >= r["goal"] else "BELOW"
                print(
                    f"{r['what']:<90} samlib {r['samlib_s']:8.3f} s  reference {r['reference_s']:8.3f} s  "
                    f"{r['speedup']:6.2f}x  (goal {r['goal']:.0f}x: {ok})",
                    flush=True,
                )
                if "flop_bound" in r:
                    print(
                        f"{'':<90} FLOP bound on this ratio (encoder vs 3x decoder forward): "
                        f"{r['flop_bound']:.1f}x"
                    )
            else:
                for r in [r for r in rows if "images_per_s" in r]:
                    print(
                        f"{r['what']:<90} {r['images_per_s']:6.2f} images/s  {r['gflop_per_s']:6.1f} GFLOP/s"
                        f" = {100 * r['fraction_of_ceiling']:.0f} % of a 2048^3 matmul"
                        f" ({r['matmul_ceiling_gflop_per_s']:.0f} GFLOP/s)"
                    )
    load_end = os.getloadavg()
    print(f"load average at the end: {load_end[0]:.1f} {load_end[1]:.1f} {load_end[2]:.1f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "quick": q,
            "load_start": load,
            "load_end": load_end,
        }
        args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
