"""Verify the `shapes` critic against ground truth.

    python benchmarks/verify_shapes_critic.py [--n 3000] [--model DIR]

Draws N random ShapesEval-style records (all six tags), renders for each a scene that
satisfies it or, half of the time, a near-miss (one object recoloured, reshaped, moved, added,
removed or swapped), and compares the critic's verdict with the scene's truth (the GenEval
rules applied to the exact object list). Then the same scenes go through the shipped model's
VQ encoder and decoder and are judged again. Prints both agreement rates, the share of true
verdicts, and a breakdown of disagreements by tag. Targets: ≥ 99 % clean, ≥ 95 % after VQ.
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter


def truth_of(meta, objs) -> bool:
    """The scene's verdict: GenEval rules on the exact objects (confidence 1)."""
    from milr.geneval_rules import GENEVAL_COLORS, Detection, evaluate_rules
    from milr.shapes import world

    dets = [
        Detection(d["class"], tuple(d["box"]), d["confidence"], d["color"])
        for d in world.ground_truth(objs)
    ]
    return evaluate_rules(meta, dets, classes=world.SHAPES, colors=GENEVAL_COLORS).passed


def make_cases(n: int, seed: int):
    """`n` (metadata, objects, truth) cases, half correct scenes and half near-misses."""
    from milr.shapes import world
    from milr.shapes.evalset import random_metadata

    rng = random.Random(seed)
    cases = []
    for _ in range(n):
        meta = random_metadata(rng)
        objs = world.scene_for(meta, rng)
        if rng.random() < 0.5:
            objs = world.corrupt(objs, rng)
        cases.append((meta, objs, truth_of(meta, objs)))
    return cases


def agreement(images, cases) -> tuple[float, Counter]:
    """Share of cases where the critic's verdict equals the truth; misses by tag."""
    from milr.critics.shapes import ShapesCritic

    critic = ShapesCritic()
    ok, misses = 0, Counter()
    for img, (meta, _objs, truth) in zip(images, cases, strict=True):
        got = critic.score(img, meta["prompt"], meta).passed
        ok += got == truth
        if got != truth:
            misses[meta["tag"]] += 1
    return ok / len(cases), misses


def vq_round_trip(model_dir, arrays, batch: int = 64):
    """Images after the model's VQ encode (transformers' nearest code) and decode."""
    import numpy as np
    import torch
    from PIL import Image
    from transformers import JanusForConditionalGeneration

    from milr.shapes.train import to_tensor

    model = JanusForConditionalGeneration.from_pretrained(model_dir).eval()
    vq = model.model.vqmodel
    out = []
    with torch.no_grad():
        for i in range(0, len(arrays), batch):
            x = to_tensor(arrays[i : i + batch])
            tokens = vq.encode(x).image_tokens.view(x.shape[0], -1)
            px = model.decode_image_tokens(tokens)
            arr = ((px.float() + 1) / 2 * 255).clamp(0, 255).round().to(torch.uint8)
            out.extend(
                Image.fromarray(a) for a in arr.numpy().astype(np.uint8)
            )  # decode_image_tokens gives NHWC
    return out


def main(argv: list[str] | None = None) -> None:
    from milr.shapes import world
    from milr.shapes.model import model_path

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--model", default=None, help="model directory (default: shipped weights)")
    args = parser.parse_args(argv)

    t0 = time.time()
    cases = make_cases(args.n, args.seed)
    arrays = [world.render_array(objs) for _m, objs, _t in cases]
    share_true = sum(t for *_x, t in cases) / len(cases)
    clean, miss_clean = agreement([world.render(o) for _m, o, _t in cases], cases)
    print(f"cases: {len(cases)} (truth passes on {share_true:.1%})")
    print(f"clean renders:    agreement {clean:.2%}  misses by tag {dict(miss_clean)}")
    model_dir = model_path(args.model)
    decoded = vq_round_trip(model_dir, arrays)
    vq, miss_vq = agreement(decoded, cases)
    print(f"VQ encode/decode: agreement {vq:.2%}  misses by tag {dict(miss_vq)}")
    print(f"({time.time() - t0:.0f}s)")


if __name__ == "__main__":
    main()
