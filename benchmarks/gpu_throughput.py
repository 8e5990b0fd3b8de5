"""GPU throughput of the batched MILR engine on a 7B-shaped random Janus (prepared, not yet run).

Run on a CUDA machine (about 16 GB of weights in bf16 plus KV):

    python benchmarks/gpu_throughput.py                      # B = 1, 4, 16, 64
    python benchmarks/gpu_throughput.py --batch 1 4 --prompts 8 --steps 2   # a short check

Model: the real Janus-Pro-7B config (shared data ``janus-pro/7b``: hidden 4096, 30 layers,
text vocabulary 102400, 576 image tokens) with random weights in bfloat16; reasoning capped at
``--reasoning-tokens``; critic ``color`` (weight-free, on CPU). For each B the same jobs run
(``--prompts`` prompts × ``--steps`` MILR steps, threshold never reached). Prints wall time,
image tokens per second (all CFG pairs sampled, forced prefixes excluded), prompts per hour,
speed-up over the first B, seconds per phase and peak GPU memory.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_batched import SHARED, build_generator, prompts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--prompts", type=int, default=64)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--layers", type=int, default=None, help="default: the config's")
    parser.add_argument("--image-tokens", type=int, default=576)
    parser.add_argument("--reasoning-tokens", type=int, default=64)
    parser.add_argument("--config", default=str(SHARED / "janus-pro" / "7b"))
    parser.add_argument("--critic", default="color:target=red,min_fraction=0.2")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtype", default="bfloat16")
    args = parser.parse_args()
    import torch
    from transformers import JanusConfig

    from milr.engine import BatchedMILR, Job
    from milr.optimizer import MILRConfig
    from milr.specs import build_critic

    if args.layers is None:
        args.layers = int(JanusConfig.from_pretrained(args.config).text_config.num_hidden_layers)
    args.quick = False
    gen = build_generator(args)
    critic = build_critic([args.critic])
    texts = prompts(args.prompts)
    print(
        f"{torch.cuda.get_device_name()}: random {Path(args.config).name}, {args.layers} layers, "
        f"hidden {gen.hidden_size}, {gen.image_token_count} image tokens, {gen.dtype}; "
        f"{len(texts)} prompts x {args.steps} steps"
    )
    print(
        "| B | wall s | image tok/s | prompts/h | speed-up | reasoning | image | decode | critic | peak GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    base = None
    for b in args.batch:
        jobs = [
            Job(p, {}, MILRConfig(mode="both", max_steps=args.steps, threshold=0.0, seed=i), key=i)
            for i, p in enumerate(texts)
        ]
        gen.clear_cache()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        engine = BatchedMILR(gen, critic, b)
        t0 = time.perf_counter()
        done = list(engine.run(jobs))
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        failed = [d.error for d in done if d.error is not None]
        if failed:
            print(f"| {b} | failed: {failed[0]!r} |")
            continue
        tokens = sum(d.result.tokens_generated for d in done)
        base = wall if base is None else base
        st = engine.stats
        print(
            f"| {b} | {wall:.1f} | {tokens / wall:.0f} | {len(texts) / wall * 3600:.0f} | "
            f"{base / wall:.2f}x | {st.get('reasoning', 0):.1f} | {st.get('image_tokens', 0):.1f} | "
            f"{st.get('decode', 0):.1f} | {st.get('critic', 0):.1f} | "
            f"{torch.cuda.max_memory_allocated() / 2**30:.1f} |"
        )
        sys.stdout.flush()


if __name__ == "__main__":
    main()
