"""Benchmark the MILR loop against the authors' loop structure on a Janus-Pro-1B-wide random model.

Both runs use the same `milr.MILR` optimizer, seed and critic; only the generator differs:

- ``milr``: `JanusGenerator` — KV cache while writing/continuing the reasoning, prompt KV
  computed once and reused (reasoning prompt always; image prompt while it is unchanged).
- ``reference``: the structure of the authors' code — the reasoning is regenerated with a full
  forward pass per new token (no KV cache) and every prompt is recomputed on every call; image
  tokens use a KV cache, as Janus's own sampler does.

Prints seconds per ``both`` step and its breakdown, the speedup, whether the tokens are
identical, the bookkeeping share (latent capture + loss + backward + Adam + prefix sampling)
and resident memory after 3 vs after ``--mem-steps`` steps.

The model: Janus-Pro-1B text width (hidden 2048, MLP 5632, 16 heads, vocabulary 102400),
576 image tokens (384 px), but only ``--layers`` transformer layers (Janus-Pro-1B has 24) and a
narrower VQ decoder (``--vq-channels``, real: 128) so a run fits a few minutes on 2 CPU cores.

    python benchmarks/bench_optimizer.py                  # defaults below
    python benchmarks/bench_optimizer.py --layers 24 --vq-channels 128 --device cuda
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
        image_processor=JanusImageProcessor(), tokenizer=_tokenizer(args.vocab), num_image_tokens=n_img
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

        def continue_reasoning(self, prompt, prefix_tokens):
            prompt_ids = self._encode(self.reasoning_prompt(prompt))
            budget = min(self.max_reasoning_tokens, self.context - len(prompt_ids))
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


def run(gen, critic, args, steps, label, record_mem=False):
    from milr.optimizer import MILR, MILRConfig

    cfg = MILRConfig(
        mode="both", max_steps=steps, threshold=0.0, seed=42, text_k=0.1, image_k=0.01,
        max_reasoning_tokens=args.reason_tokens,
    )  # fmt: skip
    mem = {}

    def cb(rec, res):
        if record_mem and rec.step in (3, steps):
            import gc

            gc.collect()
            mem[rec.step] = (rss_mb(), _cuda_peak(args.device))
        print(f"  [{label}] step {rec.step}: {sum(rec.timings.values()):.2f}s", flush=True)

    t = time.perf_counter()
    res = MILR(gen, critic, cfg).run("a red square left of a blue circle", callback=cb)
    return res, time.perf_counter() - t, mem


def _cuda_peak(device: str) -> float | None:
    if not str(device).startswith("cuda"):
        return None
    import torch

    return torch.cuda.max_memory_allocated() / 2**20


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=2048)
    ap.add_argument("--mlp", type=int, default=5632)
    ap.add_argument("--vocab", type=int, default=102400)
    ap.add_argument("--vq-channels", type=int, default=32)
    ap.add_argument("--image-size", type=int, default=384, help="384: 576 image tokens")
    ap.add_argument("--reason-tokens", type=int, default=64)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per loop")
    ap.add_argument("--mem-steps", type=int, default=30, help="steps of the memory run (0: skip)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    import milr
    from milr.models.janus import JanusGenerator

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model, processor, settings = build(args)
    print(
        f"model: hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}, "
        f"{(args.image_size // 16) ** 2} image tokens, "
        f"VQ channels {args.vq_channels}, {args.dtype} on {args.device}, {args.threads} threads "
        f"(built in {time.perf_counter() - t0:.1f}s)"
    )
    critic = milr.build_critic(["color:target=red"])
    mine = JanusGenerator(model, processor, settings, checkpoint="random-1B-wide")
    ref = reference_class()(model, processor, settings, checkpoint="random-1B-wide")

    res_m, wall_m, _ = run(mine, critic, args, args.steps, "milr")
    res_r, wall_r, _ = run(ref, critic, args, args.steps, "reference")

    def per_step(res):
        steps = res.steps[1:]
        keys = ("reasoning", "image_tokens", "decode", "critic", "update")
        tot = {k: sum(s.timings.get(k, 0.0) for s in steps) / len(steps) for k in keys}
        return tot, sum(tot.values())

    bm, sm = per_step(res_m)
    br, sr = per_step(res_r)
    same = [
        (a.reasoning, a.text_prefix, a.image_prefix, a.score)
        == (b.reasoning, b.text_prefix, b.image_prefix, b.score)
        for a, b in zip(res_m.steps, res_r.steps)
    ]
    identical = all(same) and res_m.final_image.tobytes() == res_r.final_image.tobytes()
    print(f"\nseconds per `both` step (mean over steps 1..{args.steps})")
    print(f"{'phase':<14}{'milr':>10}{'reference':>12}")
    for k in bm:
        print(f"{k:<14}{bm[k]:>10.3f}{br[k]:>12.3f}")
    print(f"{'total':<14}{sm:>10.3f}{sr:>12.3f}")
    print(f"speedup per step: {sr / sm:.2f}x   identical tokens/images/scores: {identical}")
    print(f"bookkeeping (update: loss+backward+Adam+prefix sampling): {bm['update'] / sm:.2%} of a step")
    print(f"reasoning tokens per step: {len(res_m.steps[1].text_prefix)} forced + "
          f"{args.reason_tokens - len(res_m.steps[1].text_prefix)} regenerated")  # fmt: skip

    if args.mem_steps:
        print(f"\nmemory run: {args.mem_steps} steps (milr loop)")
        _, wall, mem = run(mine, critic, args, args.mem_steps, "mem", record_mem=True)
        (r3, c3), (rn, cn) = mem[3], mem[args.mem_steps]
        print(f"resident memory after 3 steps: {r3:.0f} MB, after {args.mem_steps}: {rn:.0f} MB "
              f"({(rn - r3) / r3:+.1%}); process peak {peak_mb():.0f} MB")  # fmt: skip
        if c3 is not None:
            print(f"CUDA peak allocated after 3: {c3:.0f} MB, after {args.mem_steps}: {cn:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
