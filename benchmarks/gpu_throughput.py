"""GPU throughput of milr's generation loops on a 7B-shaped random Janus, against the weight-read floor.

One command on one GPU (about 16 GB of bf16 weights plus KV; meant to finish in under 8
minutes on an H100):

    python benchmarks/gpu_throughput.py
    python benchmarks/gpu_throughput.py --tiny        # the same script end to end on a CPU

Model: the real Janus-Pro-7B config (shared data ``janus-pro/7b``: hidden 4096, 30 layers,
576 image tokens) with random weights in bfloat16 (``--tiny``: milr's tiny random Janus in
float32 on the CPU). For each loop (``eager``: dynamic KV cache; ``static``: static KV cache;
``compiled``: static cache and compiled per-token steps, CUDA graphs on CUDA) and each B
(``--batch``, default 1 4 16 64 prompts, one CFG pair each) it times one image's token loop
after a warm-up image (which holds the compile time, printed apart) and prints milliseconds per
token and their ratio to the weight-read floor: the bytes of the language model and image head
divided by the device's copy bandwidth (measured here: a large on-device copy, counted as
read + write). Then, for each B, a 5-step MILR run (mode ``both``, critic ``color``, threshold
never reached) of B prompts at once with the ``--milr-loop`` loop: prompts per hour, the
speed-up over B = 1, and the peak memory (GPU: ``torch.cuda.max_memory_allocated``; CPU: the
process's peak resident set).

Targets when it runs on an H100: compiled B = 1 within 1.3x of the floor per token; B = 16 at
least 10x the prompts per hour of B = 1.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_batched import SHARED, build_generator, prompts  # noqa: E402

LOOPS = {
    "eager": {"kv_cache": "dynamic"},
    "static": {"kv_cache": "static"},
    "compiled": {"compile": True},
}


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def copy_bandwidth(device: str, nbytes: int) -> float:
    """Bytes per second an on-device copy moves (read + write), best of 5."""
    import torch

    src = torch.empty(nbytes // 4, dtype=torch.float32, device=device).fill_(1.0)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(5):
        sync(device)
        t = time.perf_counter()
        dst.copy_(src)
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * src.numel() * 4 / best


def weight_bytes(gen) -> int:
    """Bytes one token step reads: the language model and the image head."""
    parts = [gen.lm, gen.model.model.generation_head]
    return sum(p.numel() * p.element_size() for m in parts for p in m.parameters())


def peak_gib(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def image_ms_per_token(gen, texts: list[str], device: str) -> tuple[float, float]:
    """(ms per token of one image loop for len(texts) rows, seconds of the warm-up call)."""
    rngs = [gen.rng(i) for i in range(len(texts))]
    sync(device)
    t = time.perf_counter()
    gen.sample_image_tokens_batch(texts, [None] * len(texts), rngs)  # warm-up (compiles)
    sync(device)
    warm = time.perf_counter() - t
    rngs = [gen.rng(i) for i in range(len(texts))]
    t = time.perf_counter()
    gen.sample_image_tokens_batch(texts, [None] * len(texts), rngs)
    sync(device)
    return (time.perf_counter() - t) / gen.image_token_count * 1000, warm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tiny", action="store_true", help="tiny random Janus on the CPU")
    parser.add_argument("--batch", type=int, nargs="+", default=None)
    parser.add_argument("--loops", nargs="+", default=list(LOOPS), choices=list(LOOPS))
    parser.add_argument("--milr-loop", default="compiled", choices=list(LOOPS))
    parser.add_argument("--steps", type=int, default=5, help="MILR steps per prompt")
    parser.add_argument("--layers", type=int, default=None, help="default: the config's")
    parser.add_argument("--image-tokens", type=int, default=576)
    parser.add_argument("--reasoning-tokens", type=int, default=64)
    parser.add_argument("--config", default=str(SHARED / "janus-pro" / "7b"))
    parser.add_argument("--critic", default="color:target=red,min_fraction=0.2")
    parser.add_argument("--device", default=None, help="default: cuda (cpu with --tiny)")
    parser.add_argument("--dtype", default=None, help="default: bfloat16 (float32 with --tiny)")
    args = parser.parse_args()
    import torch
    from transformers import JanusConfig

    from milr.engine import BatchedMILR, Job
    from milr.optimizer import MILRConfig
    from milr.specs import build_critic

    args.device = args.device or ("cpu" if args.tiny else "cuda")
    args.dtype = args.dtype or ("float32" if args.tiny else "bfloat16")
    args.batch = args.batch or ([1, 2, 4] if args.tiny else [1, 4, 16, 64])
    if args.layers is None and not args.tiny:
        args.layers = int(JanusConfig.from_pretrained(args.config).text_config.num_hidden_layers)
    args.quick = args.tiny
    gen = build_generator(args)
    critic = build_critic([args.critic])
    texts = prompts(max(args.batch))
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    wbytes = weight_bytes(gen)
    bw = copy_bandwidth(args.device, 2**30 if args.device.startswith("cuda") else 2**26)
    floor_ms = wbytes / bw * 1000
    print(
        f"{name}: {'tiny random Janus' if args.tiny else 'random ' + Path(args.config).name}, "
        f"hidden {gen.hidden_size}, {gen.image_token_count} image tokens, {gen.dtype}; "
        f"step weights {wbytes / 2**30:.3f} GiB, copy bandwidth {bw / 1e9:.1f} GB/s, "
        f"weight-read floor {floor_ms:.3f} ms/token"
    )
    print("\n| loop | B | ms/token | x floor | warm-up s (compile) |")
    print("|---|---|---|---|---|")
    for loop in args.loops:
        gen.set_loop_options(**LOOPS[loop])
        for b in args.batch:
            gen.clear_cache()
            ms, warm = image_ms_per_token(gen, texts[:b], args.device)
            print(f"| {loop} | {b} | {ms:.3f} | {ms / floor_ms:.2f} | {warm:.1f} |")
            sys.stdout.flush()
    gen.set_loop_options(**LOOPS[args.milr_loop])
    print(f"\nMILR, {args.steps} steps, mode both, loop {args.milr_loop}:")
    print("| B | wall s | prompts/h | speed-up | reasoning | image | update | peak GiB |")
    print("|---|---|---|---|---|---|---|---|")
    base = None
    for b in args.batch:
        jobs = [
            Job(p, {}, MILRConfig(mode="both", max_steps=args.steps, threshold=0.0, seed=i), key=i)
            for i, p in enumerate(texts[:b])
        ]
        gen.clear_cache()
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        engine = BatchedMILR(gen, critic, b)
        sync(args.device)
        t0 = time.perf_counter()
        done = list(engine.run(jobs))
        sync(args.device)
        wall = time.perf_counter() - t0
        failed = [d.error for d in done if d.error is not None]
        if failed:
            print(f"| {b} | failed: {failed[0]!r} |")
            continue
        rate = b / wall * 3600
        base = rate if base is None else base
        st = engine.stats
        print(
            f"| {b} | {wall:.1f} | {rate:.0f} | {rate / base:.2f}x | {st.get('reasoning', 0):.1f} "
            f"| {st.get('image_tokens', 0):.1f} | {st.get('update', 0):.1f} "
            f"| {peak_gib(args.device):.2f} |"
        )
        sys.stdout.flush()
    print(
        f"\ncompile seconds in all (included in the warm-up and MILR columns): {gen.compile_s:.1f}"
    )


if __name__ == "__main__":
    main()
