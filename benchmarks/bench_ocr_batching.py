"""Batched vs per-image scoring of the `ocr` critic: 16 rendered 384 px images on CPU.

Usage::

    python benchmarks/bench_ocr_batching.py [--backend easyocr|tesseract] [--n 16] [--repeats 3]
                                            [--threads N]

Prints the median wall time of one `score_batch` call over all images and of one call per
image (after a warm-up that loads the weights), the speed-up, and checks both agree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

FONT = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf")
TEXTS = [
    "OPEN 24 HOURS",
    "STOP",
    "Hello World",
    "MILR",
    "EXIT",
    "Coffee",
    "SALE 50%",
    "NO PARKING",
    "Welcome",
    "Bakery",
    "PUSH",
    "Library",
    "Fresh Fruit",
    "Taxi",
    "Main Street",
    "Gate 7",
]


def render(text: str, size: int = 384):
    from PIL import Image, ImageDraw, ImageFont

    im = Image.new("RGB", (size, size), "white")
    font = ImageFont.truetype(str(FONT), 36) if FONT.is_file() else ImageFont.load_default()
    ImageDraw.Draw(im).text((16, size // 2 - 20), text, fill="black", font=font)
    return im


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="easyocr", choices=["easyocr", "tesseract"])
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--size", type=int, default=384)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from milr.critics.ocr import OCRCritic

    texts = [TEXTS[i % len(TEXTS)] for i in range(args.n)]
    images = [render(t, args.size) for t in texts]
    prompts = [f'a sign that says "{t}"' for t in texts]
    meta = [{} for _ in texts]
    critic = OCRCritic(backend=args.backend, batch_size=args.n)

    t0 = time.perf_counter()
    critic.score_batch(images[:1], prompts[:1], meta[:1])  # loads weights
    load_s = time.perf_counter() - t0

    batched, single = [], []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        res_b = critic.score_batch(images, prompts, meta)
        batched.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        res_s = [critic.score_batch([im], [p], [m])[0] for im, p, m in zip(images, prompts, meta)]
        single.append(time.perf_counter() - t0)
    agree = all(abs(a.score - b.score) < 1e-6 for a, b in zip(res_b, res_s))
    exact = sum(bool(r.passed) for r in res_b)
    mb, ms = statistics.median(batched), statistics.median(single)
    print(
        f"ocr backend={args.backend} images={args.n} size={args.size}px "
        f"torch_threads={torch.get_num_threads()} repeats={args.repeats}"
    )
    print(f"  first call (weights load + 1 image): {load_s:.2f} s")
    print(
        f"  batched  (1 call x {args.n}):  median {mb:.2f} s  ({mb / args.n * 1000:.0f} ms/image)"
    )
    print(
        f"  per-image ({args.n} calls x 1): median {ms:.2f} s  ({ms / args.n * 1000:.0f} ms/image)"
    )
    print(f"  speed-up batched vs per-image: {ms / mb:.2f}x")
    print(f"  read exactly: {exact}/{args.n}; batched == per-image scores: {agree}")
    return 0 if agree else 1


if __name__ == "__main__":
    sys.exit(main())
