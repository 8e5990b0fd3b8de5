"""Benchmark the MILR loop against the authors' loop structure on a Janus-Pro-1B-wide random model.

Both runs use the same `milr.MILR` optimizer, seed and critic; only the generator differs:

- ``milr``: `JanusGenerator` — KV cache while writing/continuing the reasoning, prompt KV
  computed once and reused (reasoning prompt always; image prompt while it is unchanged).
- ``reference``: the structure of the authors' code — the reasoning is regenerated with a full
  forward pass per new token (no KV cache) and every prompt is recomputed on every call; image
  tokens use a KV cache, as Janus's own sampler does.

Prints seconds per ``both`` step (CPU seconds of the process by default, since wall time on a
shared machine swings several-fold; ``--clock wall`` for elapsed time) and its breakdown, the speedup, whether the tokens are
identical, the bookkeeping share (latent capture + loss + backward + Adam + prefix sampling)
and resident memory after 3 vs after ``--mem-steps`` steps.

The model: Janus-Pro-1B text width (hidden 2048, MLP 5632, 16 heads, vocabulary 102400), but
only ``--layers`` transformer layers (Janus-Pro-1B has 24), a narrower VQ decoder
(``--vq-channels``, real: 128), 64 image tokens by default (``--image-size 384`` for the real
576) and 48 reasoning tokens, so a run fits a few minutes on 2 CPU cores. The memory run uses a
1-layer, 16-image-token variant of the same width so that 30 steps are affordable.

A third loop, ``milr, no memo``, disables the reuse of an identical reasoning rollout, to show
the KV cache's share of the speedup on its own.

    python benchmarks/bench_optimizer.py                                   # CPU defaults
    python benchmarks/bench_optimizer.py --image-size 384 --steps 1 --mem-steps 0 --skip-nomemo
    python benchmarks/bench_optimizer.py --layers 24 --vq-channels 128 --image-size 384 --device cuda
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time


def rss_mb() -> float:
    """Current resident set size (MB) from /proc (falls back to the peak)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def build(args):
    import torch
    from transformers import (
        JanusConfig,
        JanusForConditionalGeneration,
        JanusImageProcessor,
        JanusProcessor,
        JanusVisionConfig,
        JanusVQVAEConfig,
        LlamaConfig,
    )

    from milr.models.janus import JanusSettings
    from milr.testing.tiny_janus import BOI, BOS, EOS, IMAGE, PAD, _tokenizer, _vocab

    vocab = _vocab(args.vocab)
    text = LlamaConfig(
        vocab_size=args.vocab, hidden_size=args.hidden, intermediate_size=args.mlp,
        num_hidden_layers=args.layers, num_attention_heads=16, num_key_value_heads=16,
        max_position_embeddings=4096, bos_token_id=vocab[BOS], eos_token_id=vocab[EOS],
        pad_token_id=vocab[PAD],
    )  # fmt: skip
    n_img = (args.image_size // 16) ** 2
    vision = JanusVisionConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=args.image_size,
        patch_size=16, projection_dim=args.hidden, num_image_tokens=n_img,
    )  # fmt: skip
    vq = JanusVQVAEConfig(
        embed_dim=8, num_embeddings=16384, base_channels=args.vq_channels,
        latent_channels=256, channel_multiplier=[1, 1, 2, 2, 4], num_res_blocks=1,
        projection_dim=args.hidden, image_token_embed_dim=args.hidden,
    )  # fmt: skip
    config = JanusConfig(
        text_config=text, vision_config=vision, vq_config=vq, image_token_id=vocab[IMAGE]
    )
    torch.manual_seed(0)
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    model = JanusForConditionalGeneration(config).to(device=args.device, dtype=dtype).eval()
    processor = JanusProcessor(
        image_processor=JanusImageProcessor(),
        tokenizer=_tokenizer(args.vocab),
        num_image_tokens=n_img,
    )
    settings = JanusSettings(
        max_reasoning_tokens=args.reason_tokens,
        bos_token_id=vocab[BOS], eos_token_id=vocab[EOS], pad_token_id=vocab[PAD],
        boi_token_id=vocab[BOI],
    )  # fmt: skip
    return model, processor, settings


def reference_class():
    """`JanusGenerator` with the authors' loop structure (no reasoning KV cache, no prompt reuse)."""
    import torch

    from milr.generator import Reasoning
    from milr.models.janus import JanusGenerator

    class ReferenceJanus(JanusGenerator):
        def _prefill(self, rows):
            self._kv.clear()  # the prompt is recomputed on every call
            return super()._prefill(rows)

        def _rollout(self, prompt, prefix_tokens, max_tokens):
            prompt_ids = self._encode(self.reasoning_prompt(prompt))
            cap = self.max_reasoning_tokens if max_tokens is None else max_tokens
            budget = min(cap, self.context - len(prompt_ids))
            eos = self._ids["eos"]
            tokens = [int(t) for t in prefix_tokens][:budget]
            latents = []
            with torch.no_grad():
                while True:
                    ids = torch.tensor([prompt_ids + tokens], device=self.device)
                    hs = self.lm(inputs_embeds=self.embed(ids), use_cache=False).last_hidden_state
                    if len(latents) < len(tokens):  # latents of the forced prefix
                        latents.extend(hs[0, len(prompt_ids) - 1 : -1])
                    h = hs[:, -1]
                    if len(tokens) >= budget:
                        break
                    nxt = int(self.model.lm_head(h).argmax(-1)[0])
                    if nxt == eos:
                        break
                    latents.append(h[0])
                    tokens.append(nxt)
            lat = torch.stack(latents[: len(tokens)])
            text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
            return Reasoning(tokens=tokens, latents=lat, text=text)

    return ReferenceJanus


def run(gen, critic, args, steps, label, lr=0.01):
    from milr.optimizer import MILR, MILRConfig

    cfg = MILRConfig(
        mode="both", max_steps=steps, threshold=0.0, seed=42, text_k=0.1, image_k=0.01,
        max_reasoning_tokens=args.reason_tokens, lr=lr,
    )  # fmt: skip
    mem: dict[int, float] = {}

    def cb(rec, res):
        print(f"  [{label}] step {rec.step}: {sum(rec.timings.values()):.2f}s", flush=True)

    gen.clear_cache()  # no prompt KV or rollout carried over from an earlier run
    t = time.perf_counter()
    res = MILR(gen, critic, cfg).run("a red square left of a blue circle", callback=cb)
    return res, time.perf_counter() - t, mem


def live_tensor_mb() -> float:
    """Bytes of all live torch tensors (model included), after a garbage collection."""
    import gc
    import warnings

    import torch

    gc.collect()
    total = 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for obj in gc.get_objects():
            try:
                if isinstance(obj, torch.Tensor):
                    total += obj.numel() * obj.element_size()
            except Exception:
                continue
    return total / 2**20


def per_step(res):
    steps = res.steps[1:]
    keys = ("reasoning", "image_tokens", "decode", "critic", "update")
    tot = {k: sum(s.timings.get(k, 0.0) for s in steps) / len(steps) for k in keys}
    return tot, sum(tot.values())


def same_run(a, b) -> bool:
    return (
        all(
            (x.reasoning, x.text_prefix, x.image_prefix, x.score)
            == (y.reasoning, y.text_prefix, y.image_prefix, y.score)
            for x, y in zip(a.steps, b.steps)
        )
        and a.final_image.tobytes() == b.final_image.tobytes()
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--mlp", type=int, default=5632)
    ap.add_argument("--vocab", type=int, default=102400)
    ap.add_argument("--vq-channels", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=128, help="128: 64 tokens; 384: 576")
    ap.add_argument("--reason-tokens", type=int, default=48)
    ap.add_argument("--steps", type=int, default=1, help="timed steps per loop and repeat")
    ap.add_argument("--reps", type=int, default=1, help="repeats (the best is reported)")
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--small-lr", type=float, default=1e-5, help="second scenario (0: skip)")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--skip-nomemo", action="store_true")
    ap.add_argument("--mem-steps", type=int, default=30, help="memory run steps (0: skip)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=1, help="1 keeps CPU time free of spin-waits")
    ap.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default="cpu",
        help="cpu: CPU seconds of this process (robust on a shared machine); wall: elapsed",
    )
    args = ap.parse_args(argv)
    import milr.phases

    if args.clock == "cpu":
        milr.phases.CLOCK = time.process_time

    import torch

    import milr
    from milr.models.janus import JanusGenerator

    torch.set_num_threads(args.threads)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    t0 = time.perf_counter()
    model, processor, settings = build(args)
    n_img = (args.image_size // 16) ** 2
    print(
        f"model: hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}, {n_img} image "
        f"tokens, VQ channels {args.vq_channels}, {args.dtype} on {args.device}, "
        f"{args.threads} threads, reasoning {args.reason_tokens} tokens "
        f"(built in {time.perf_counter() - t0:.1f}s; load average {load:.1f})",
        flush=True,
    )
    critic = milr.build_critic(["color:target=red"])
    mine = JanusGenerator(model, processor, settings, checkpoint="random-1B-wide")
    loops = {"milr": mine}
    if not args.skip_nomemo:
        nomemo = JanusGenerator(model, processor, settings, checkpoint="random-1B-wide")
        nomemo.memoize_reasoning = False
        loops["milr, no memo"] = nomemo
    if not args.skip_reference:
        loops["reference"] = reference_class()(
            model, processor, settings, checkpoint="random-1B-wide"
        )
    run(mine, critic, args, 1, "warm-up", lr=args.lr)  # first calls pay allocator/JIT costs
    scenarios = [(f"lr {args.lr:g}", args.lr, args.reps)]
    if args.small_lr:
        scenarios.append(
            (f"lr {args.small_lr:g} (text prefix stays: reasoning reused)", args.small_lr, 1)
        )
    bm = sm = None
    for title, lr, reps in scenarios:
        results: dict[str, list] = {name: [] for name in loops}
        for _ in range(reps):  # alternate the loops so load changes hit all of them
            for name, gen in loops.items():
                if name == "milr, no memo" and lr != args.lr:
                    continue
                results[name].append(run(gen, critic, args, args.steps, name, lr=lr)[0])
        table = {}
        for name, runs in results.items():
            if not runs:
                continue
            per = [per_step(r)[0] for r in runs]
            phases = {k: min(p[k] for p in per) for k in per[0]}  # least disturbed repeat
            table[name] = (phases, sum(phases.values()))
        unit = "CPU seconds" if args.clock == "cpu" else "seconds"
        print(f"\n== {title}: {unit} per `both` step, mean over steps 1..{args.steps}, "
              f"best of {reps} ==")  # fmt: skip
        print(f"{'phase':<14}" + "".join(f"{n:>16}" for n in table))
        for k in table["milr"][0]:
            print(f"{k:<14}" + "".join(f"{b[k]:>16.3f}" for b, _ in table.values()))
        print(f"{'total':<14}" + "".join(f"{t:>16.3f}" for _, t in table.values()))
        base = results["milr"][0]
        unchanged = sum(1 for s in base.steps[1:] if not s.text_prefix_changed)
        print(f"text prefix unchanged (reasoning reused) in {unchanged}/{base.n_steps} steps")
        for name, runs in results.items():
            if name != "milr" and runs:
                print(
                    f"speedup of milr over {name}: {table[name][1] / table['milr'][1]:.2f}x; "
                    f"identical tokens, images, scores: {same_run(base, runs[0])}"
                )
        if bm is None:
            bm, sm = table["milr"]
    print(
        f"bookkeeping (loss + backward + Adam + prefix sampling): {bm['update'] / sm:.2%} of a step"
    )

    if args.mem_steps:
        # Memory: same code path on a model that makes 30 steps affordable on a CPU.
        margs = argparse.Namespace(**{**vars(args), "layers": 1, "vocab": 32000, "image_size": 64,
                                      "reason_tokens": 16})  # fmt: skip
        del mine, loops, model
        mmodel, mproc, msettings = build(margs)
        mgen = JanusGenerator(mmodel, mproc, msettings, checkpoint="random-small")
        from milr.optimizer import MILR, MILRConfig

        mem: dict[int, tuple[float, float]] = {}
        before = live_tensor_mb()

        def cb(rec, res):
            if rec.step in (3, args.mem_steps):
                mem[rec.step] = (live_tensor_mb() - before, rss_mb())

        cfg = MILRConfig(mode="both", max_steps=args.mem_steps, threshold=0.0, seed=1)
        t = time.perf_counter()
        MILR(mgen, critic, cfg).run("a red square", callback=cb)
        (l3, r3), (ln, rn) = mem[3], mem[args.mem_steps]
        print(
            f"\nmemory, {args.mem_steps}-step `both` run (hidden {args.hidden}, 1 layer, vocab "
            f"32000, 16 image tokens; {time.perf_counter() - t:.0f}s):\n"
            f"  tensors alive beyond the model: {l3:.2f} MB after 3 steps, {ln:.2f} MB after "
            f"{args.mem_steps}\n  resident set: {r3:.0f} MB after 3 steps, {rn:.0f} MB after "
            f"{args.mem_steps} ({(rn - r3) / r3:+.1%}); process peak {peak_mb():.0f} MB"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
