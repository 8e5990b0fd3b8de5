"""Batched vs per-image time of the transformers-backed critics (`grounding`, `vqa`, `geneval`).

Usage::

    OMP_NUM_THREADS=2 python benchmarks/bench_vision_critics.py            # all, CPU
    python benchmarks/bench_vision_critics.py --critics vqa-blip --images 16 --repeats 3

Weights are random (no hub here); the checkpoints are the real transformers architectures at
their real widths with one or two layers per stack (`milr.testing.tiny_vision`), so the
per-forward overheads that batching removes are realistic while the run stays short on a CPU:

* ``grounding-gdino``: GroundingDINO, d_model 256, BERT text width 768, Swin-T width (96),
  900 queries, images resized to 256 px (800 in the real processor);
* ``grounding-owlv2``: OWLv2, vision 768 / text 512, patch 16, 256 px (960 real);
* ``vqa-blip``: BLIP VQA, width 768, 384 px (as ``Salesforce/blip-vqa-base``);
* ``vqa-git``: GIT, width 1024, 224 px;
* ``geneval-m2f``: ``geneval:detector=mask2former``, Mask2Former hidden 256, Swin-T width,
  100 queries, 256 px (384/800 real).

Each image gets two questions or two classes. Per critic: one warm-up call (loads the model),
then the median of ``--repeats`` timings of (a) one ``evaluate`` over all images with
``batch_size`` = number of images, (b) one call per image. Prints one JSON line per critic.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from batch_timing import median_batched_vs_single  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def make_images(n: int, size: int = 256) -> list[Any]:
    """Deterministic RGB images with two coloured shapes each."""
    from PIL import Image, ImageDraw

    palette = [(220, 30, 30), (30, 70, 220), (40, 170, 60), (240, 220, 30), (130, 50, 180)]
    images = []
    for i in range(n):
        im = Image.new("RGB", (size, size), (235, 235, 230))
        d = ImageDraw.Draw(im)
        d.rectangle([20 + i, 30, 110 + 2 * i, 140], fill=palette[i % 5])
        d.ellipse([140, 120 - i, 230, 220], fill=palette[(i + 2) % 5])
        images.append(im)
    return images


META = {
    "tag": "color_attr",
    "include": [{"class": "car", "count": 1, "color": "red"}, {"class": "dog", "count": 1, "color": "blue"}],
}  # fmt: skip


def _critic_factories(tmp: str) -> dict[str, Callable[[], tuple[Any, list[dict[str, Any]]]]]:
    from milr.testing import tiny_vision as tv

    def gdino():
        from milr.critics.grounding import GroundingCritic

        path = tv.grounding_dino(f"{tmp}/gdino", width=256, text_width=768, image_size=256,
                                 num_queries=900, backbone_width=96, heads=8)  # fmt: skip
        return GroundingCritic(weights=str(path), device="cpu"), META

    def owl():
        from milr.critics.grounding import GroundingCritic

        path = tv.owlv2(f"{tmp}/owl", width=768, text_width=512, heads=8, image_size=256)
        return GroundingCritic(weights=str(path), device="cpu"), META

    def blip():
        from milr.critics.vqa import VQACritic

        path = tv.blip_vqa(f"{tmp}/blip", width=768, heads=12, image_size=384)
        return VQACritic(weights=str(path), device="cpu", mode="phrases"), {
            "phrases": ["a red car", "a blue dog"]
        }

    def git():
        from milr.critics.vqa import VQACritic

        path = tv.git_vqa(f"{tmp}/git", width=1024, heads=16, image_size=224)
        return VQACritic(weights=str(path), device="cpu"), META

    def m2f():
        from milr.critics.geneval import GenEvalCritic

        path = tv.mask2former(f"{tmp}/m2f", width=256, image_size=256, num_queries=100,
                              backbone_width=96, heads=8)  # fmt: skip
        return GenEvalCritic(detector="mask2former", weights=str(path), device="cpu"), META

    return {
        "grounding-gdino": gdino, "grounding-owlv2": owl, "vqa-blip": blip, "vqa-git": git,
        "geneval-m2f": m2f,
    }  # fmt: skip


def bench(
    name: str, factory: Callable[[], tuple[Any, Any]], n: int, repeats: int
) -> dict[str, Any]:
    from milr import evaluate

    critic, meta = factory()
    images = make_images(n)
    prompts = ["a red car and a blue dog"] * n
    metas = [dict(meta) for _ in range(n)]
    batched_critic = type(critic)(**{**critic.config(), "batch_size": n})
    evaluate(batched_critic, images[:1], prompts[:1], metas[:1])  # load + warm up

    def single() -> None:
        for im, p, m in zip(images, prompts, metas, strict=True):
            evaluate(batched_critic, [im], [p], [m])

    b, s = median_batched_vs_single(
        lambda: evaluate(batched_critic, images, prompts, metas), single, repeats
    )
    return {
        "critic": name, "images": n, "batched_s": round(b, 3), "per_image_s": round(s, 3),
        "speedup": round(s / b, 2), "threads": int(os.environ.get("OMP_NUM_THREADS", "0") or 0),
    }  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--critics", default="all", help="comma list of " + "all|grounding-gdino|...")
    ap.add_argument("--images", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    args = ap.parse_args()
    import transformers

    transformers.logging.set_verbosity_error()
    with tempfile.TemporaryDirectory(prefix="milr-bench-vision-") as tmp:
        factories = _critic_factories(tmp)
        names = list(factories) if args.critics == "all" else args.critics.split(",")
        for name in names:
            print(json.dumps(bench(name, factories[name], args.images, args.repeats)), flush=True)


if __name__ == "__main__":
    main()
