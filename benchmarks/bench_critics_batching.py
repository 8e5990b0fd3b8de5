"""Batched vs per-image scoring of the neural critics, and peak memory of a tiny ensemble.

Usage::

    python benchmarks/bench_critics_batching.py                 # geneval, clip, hps on CPU
    python benchmarks/bench_critics_batching.py --critics clip --threads 4
    python benchmarks/bench_critics_batching.py --hps-arch ViT-H-14   # the real HPS size (slow)
    python benchmarks/bench_critics_batching.py --memory-only

Weights are random (no hub here) but the architectures are the real ones where affordable:
``geneval`` runs yolov8n (from ``yolov8n.yaml``, class head biased so every image yields
confident detections and the NMS, rules and colour paths all run), ``clip`` and ``hps`` run
open_clip ViT-B-32 (HPS is ViT-H-14 in reality; pass ``--hps-arch ViT-H-14`` to time it).
Each critic adds one ``bench_<name>`` function to ``BENCHES``; add yours the same way.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_timing import median_batched_vs_single  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("YOLO_OFFLINE", "1")
os.environ.setdefault("YOLO_AUTOINSTALL", "false")
os.environ.setdefault("YOLO_VERBOSE", "false")
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="milr-bench-yolo-"))

N_IMAGES = 16
SIZE = 384
TINY_ARCH = "milr-bench-tiny-clip"
TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}
GENEVAL_PROMPTS = [
    "a photo of a dog", "a photo of a red dog", "a photo of two dogs", "a photo of a dog and a cat",
    "a photo of a dog left of a dog", "a photo of a blue dog", "a photo of four dogs",
    "a photo of a cat", "a photo of a green dog and a red dog", "a photo of a dog below a dog",
    "a photo of three dogs", "a photo of a white dog", "a photo of a dog above a cat",
    "a photo of a yellow dog", "a photo of a dog right of a dog", "a photo of a black dog",
]  # fmt: skip


def make_images(n: int = N_IMAGES, size: int = SIZE) -> list[Any]:
    """Deterministic 384 px RGB images with coloured shapes on a textured background."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(0)
    images = []
    for _ in range(n):
        arr = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
        im = Image.fromarray(arr)
        d = ImageDraw.Draw(im)
        for _ in range(3):
            x, y = (int(v) for v in rng.integers(0, size - 100, 2))
            color = tuple(int(v) for v in rng.integers(0, 255, 3))
            d.ellipse([x, y, x + 100, y + 100], fill=color)
        images.append(im)
    return images


def biased_yolo(path: Path, class_index: int = 16) -> str:
    """yolov8n.yaml with random weights whose class head fires confidently for one class."""
    import torch
    from ultralytics import YOLO

    torch.manual_seed(0)
    model = YOLO("yolov8n.yaml")
    with torch.no_grad():
        for seq in model.model.model[-1].cv3:  # type: ignore[union-attr]
            seq[-1].bias.fill_(-10.0)
            seq[-1].bias[class_index] = 8.0
    model.save(str(path))
    return str(path)


def register_tiny_clip(root: Path) -> str:
    import open_clip

    cfg = root / f"{TINY_ARCH}.json"
    cfg.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(cfg)
    return TINY_ARCH


def time_batched_vs_single(
    critic: Any, images: list[Any], prompts: list[str], repeats: int
) -> dict[str, Any]:
    """Median seconds for one batched call and for one call per image (after a warm-up)."""
    from milr import evaluate

    meta: list[dict[str, Any]] = [{} for _ in images]
    evaluate(critic, images[:2], prompts[:2], meta[:2])  # load weights, warm up

    def single() -> None:
        for im, p in zip(images, prompts, strict=True):
            critic.score(im, p)

    b, s = median_batched_vs_single(
        lambda: evaluate(critic, images, prompts, meta), single, repeats
    )
    return {"batched_s": b, "per_image_s": s, "speedup": s / b}


# -- one function per critic (add yours: name -> function(images, args, tmp) -> figures) -------


def bench_geneval(images: list[Any], args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from milr.critics.geneval import GenEvalCritic

    weights = biased_yolo(tmp / "dog_yolov8n.pt")
    critic = GenEvalCritic(
        weights=weights, device=args.device, imgsz=args.imgsz, batch_size=args.geneval_batch
    )
    out = time_batched_vs_single(critic, images, GENEVAL_PROMPTS, args.repeats)
    out["model"] = (
        f"yolov8n (random, biased class head), imgsz {args.imgsz}, "
        f"chunks of {args.geneval_batch or 'auto'}, pixel colours"
    )
    return out


def bench_clip(images: list[Any], args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    from milr.critics.clip import ClipScoreCritic

    critic = ClipScoreCritic(weights="random", arch=args.clip_arch, device=args.device)
    prompts = [f"a photo of object number {i}" for i in range(len(images))]
    out = time_batched_vs_single(critic, images, prompts, args.repeats)
    out["model"] = f"open_clip {args.clip_arch} (random)"
    return out


def bench_hps(images: list[Any], args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import open_clip
    import torch

    from milr.critics.hps import HPSCritic

    ckpt = tmp / "hps_random.pt"
    torch.manual_seed(0)
    torch.save({"state_dict": open_clip.create_model(args.hps_arch).state_dict()}, ckpt)
    critic = HPSCritic(weights=str(ckpt), arch=args.hps_arch, device=args.device)
    prompts = [f"a beautiful painting of scene {i}" for i in range(len(images))]
    out = time_batched_vs_single(critic, images, prompts, args.repeats)
    out["model"] = f"open_clip {args.hps_arch} (random HPS-format checkpoint)"
    return out


BENCHES: dict[str, Callable[[list[Any], argparse.Namespace, Path], dict[str, Any]]] = {
    "geneval": bench_geneval,
    "clip": bench_clip,
    "hps": bench_hps,
}


# -- memory -------------------------------------------------------------------------------------


def _status_mib(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mib() -> float:
    return _status_mib("VmRSS")


def _peak_rss_mib() -> float:
    # VmHWM belongs to this process image; getrusage's ru_maxrss would inherit the parent's
    # peak across fork + exec.
    return _status_mib("VmHWM")


def memory_ensemble(args: argparse.Namespace) -> dict[str, Any]:
    """Peak RSS of one process scoring 16 images with an ensemble of tiny critics."""
    import open_clip  # noqa: F401  (imports counted in the baseline)
    import torch
    import ultralytics  # noqa: F401

    from milr import Ensemble, evaluate
    from milr.critics.clip import ClipScoreCritic
    from milr.critics.color import ColorCritic
    from milr.critics.geneval import GenEvalCritic
    from milr.critics.hps import HPSCritic

    torch.set_num_threads(args.threads)
    images = make_images()
    baseline = _rss_mib()
    tmp = Path(tempfile.mkdtemp(prefix="milr-bench-"))
    arch = register_tiny_clip(tmp)
    torch.manual_seed(0)
    ckpt = tmp / "tiny.pt"
    torch.save({"state_dict": open_clip.create_model(arch).state_dict()}, ckpt)
    members = [
        (GenEvalCritic(weights="yolov8n.yaml", device="cpu", imgsz=640), 1.0),
        (ClipScoreCritic(weights=str(ckpt), arch=arch, device="cpu"), 1.0),
        (HPSCritic(weights=str(ckpt), arch=arch, device="cpu"), 1.0),
        (ColorCritic(target="red"), 0.5),
    ]
    ens = Ensemble(members)
    t = time.perf_counter()
    results = evaluate(ens, images, GENEVAL_PROMPTS, [{} for _ in images])
    elapsed = time.perf_counter() - t
    assert len(results) == len(images)
    return {
        "members": ens.labels,
        "rss_after_imports_mib": round(baseline, 1),
        "peak_rss_mib": round(_peak_rss_mib(), 1),
        "added_by_ensemble_mib": round(_peak_rss_mib() - baseline, 1),
        "first_call_s": round(elapsed, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--critics", default=",".join(BENCHES), help="comma-separated subset")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clip-arch", default="ViT-B-32")
    parser.add_argument("--imgsz", type=int, default=640, help="YOLO input size")
    parser.add_argument(
        "--geneval-batch", type=int, default=None, help="YOLO images per forward (default: auto)"
    )
    parser.add_argument("--hps-arch", default="ViT-B-32")
    parser.add_argument(
        "--tiny",
        action="store_true",
        help="tiny models (registered 32-px open_clip config, YOLO at imgsz 64): per-call overhead",
    )
    parser.add_argument("--memory-only", action="store_true")
    parser.add_argument("--no-memory", action="store_true")
    parser.add_argument("--_memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args._memory_child:
        print(json.dumps(memory_ensemble(args)))
        return
    import torch

    torch.set_num_threads(args.threads)
    if args.tiny:
        args.clip_arch = args.hps_arch = register_tiny_clip(Path(tempfile.mkdtemp()))
        args.imgsz = 64
    print(f"# {N_IMAGES} images at {SIZE} px, device={args.device}, torch threads={args.threads}")
    if not args.memory_only:
        images = make_images()
        tmp = Path(tempfile.mkdtemp(prefix="milr-bench-"))
        print(f"{'critic':<10} {'batched s':>10} {'per-image s':>12} {'speedup':>8}  model")
        for name in [c.strip() for c in args.critics.split(",") if c.strip()]:
            if name not in BENCHES:
                raise SystemExit(f"unknown critic {name!r}; known: {', '.join(BENCHES)}")
            r = BENCHES[name](images, args, tmp)
            print(
                f"{name:<10} {r['batched_s']:>10.2f} {r['per_image_s']:>12.2f} "
                f"{r['speedup']:>7.2f}x  {r['model']}",
                flush=True,
            )
    if not args.no_memory:
        cmd = [sys.executable, __file__, "--_memory-child", "--threads", str(args.threads)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        mem = json.loads(out.stdout.strip().splitlines()[-1])
        print(
            f"ensemble of tiny critics {mem['members']}: peak RSS {mem['peak_rss_mib']} MiB "
            f"({mem['rss_after_imports_mib']} MiB after imports, +{mem['added_by_ensemble_mib']} MiB "
            f"for models and scoring 16 images; first call {mem['first_call_s']} s)"
        )


if __name__ == "__main__":
    main()
