"""The image-token phase of milr's batched loop against a bare static-cache decode loop.

Run (idle machine; about two minutes on 2 CPU cores):

    OMP_NUM_THREADS=2 python benchmarks/bench_image_phase.py          # Janus-Pro-1B width, B = 16
    OMP_NUM_THREADS=1 python benchmarks/bench_image_phase.py --quick  # tiny model, seconds

Model: the batched-engine benchmark's random Janus at Janus-Pro-1B width (``bench_batched.py``:
the real 1B config from shared data ``janus-pro/1b``, 2 text layers, 144 image tokens).
Work: ``B`` prompts (the first GenEval prompts), one image each with CFG (``2·B`` rows), no
forced prefix, every row with its own generator.

- ``milr dynamic`` / ``milr static``: `JanusGenerator.sample_image_tokens_batch` with the
  default dynamic KV cache and with ``kv_cache="static"`` — tokenising, prompt prefill, the
  per-token loop and its bookkeeping, as a MILR step runs it.
- ``bare static``: the least a decode loop of this model must do, written inline: prompts of
  one common length (no padding), one prefill into a transformers `StaticCache`, then per
  token the generation head, the CFG mix, an inverse-CDF draw from pre-drawn uniforms, the
  image embedding and one transformer position. No masks beyond the cache's, no per-row state.

Each loop runs once untimed (warm-up), then ``--reps`` times; the table gives the median
milliseconds per image token (whole call / image tokens) and the ratio to ``bare static``
measured in the same process.
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_batched import SHARED, build_generator, prompts  # noqa: E402


def bare_static_loop(gen, rows: int, prompt_len: int, seed: int = 0):
    """A minimal CFG image-token loop over a `StaticCache`; returns tokens ``[rows, n]``."""
    import torch
    from transformers import StaticCache

    from milr.models.janus_loops import cfg_sample

    model = gen.model
    lm = model.model.language_model
    n = gen.image_token_count
    g = torch.Generator().manual_seed(seed)
    vocab = int(model.config.text_config.vocab_size)
    ids = torch.randint(0, vocab, (2 * rows, prompt_len), generator=g)
    u = torch.rand(rows, n, generator=g, dtype=torch.float64)
    cache = StaticCache(config=model.config.text_config, max_cache_len=prompt_len + n)
    kw = "cache" if "cache" in inspect.signature(lm.forward).parameters else "past_key_values"
    with torch.no_grad():
        emb = lm.get_input_embeddings()(ids).to(gen.dtype)
        out = lm(inputs_embeds=emb, use_cache=True, **{kw: cache})
        h = out.last_hidden_state[:, -1]
        toks = []
        for i in range(n):
            tok = cfg_sample(model.model.generation_head(h), u[:, i], 5.0, 1.0)
            toks.append(tok)
            emb = model.prepare_embeddings_for_image_generation(torch.cat([tok, tok])[:, None])
            pos = torch.tensor([prompt_len + i])
            out = lm(inputs_embeds=emb, use_cache=True, cache_position=pos, **{kw: cache})
            h = out.last_hidden_state[:, -1]
    return torch.stack(toks, 1)


def milr_loop(gen, texts: list[str], kv_cache: str):
    import torch

    gen.set_loop_options(kv_cache=kv_cache)
    gens = [torch.Generator().manual_seed(1000 + i) for i in range(len(texts))]
    with torch.no_grad():
        return gen.sample_image_tokens_batch(
            [gen.image_text(t, None) for t in texts], [None] * len(texts), gens
        )


def timed(fn, reps: int) -> float:
    fn()  # warm-up
    walls = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t)
    return statistics.median(walls)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the tiny test model")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--image-tokens", type=int, default=144)
    parser.add_argument("--reasoning-tokens", type=int, default=32)
    parser.add_argument("--config", default=str(SHARED / "janus-pro" / "1b"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()

    import torch

    gen = build_generator(args)
    texts = prompts(args.batch)
    n = gen.image_token_count
    lengths = [len(gen.tokenize(gen.image_text(t, None))) for t in texts]
    prompt_len = round(statistics.mean(lengths))
    print(
        f"model {'tiny' if args.quick else '1B width'}, {args.layers} layers, {n} image tokens, "
        f"B = {args.batch} ({2 * args.batch} CFG rows), prompts of {min(lengths)}-{max(lengths)} "
        f"tokens (bare loop: {prompt_len}), {args.dtype} on {args.device}, "
        f"{torch.get_num_threads()} threads, median of {args.reps}"
    )
    rows = {
        "bare static": timed(lambda: bare_static_loop(gen, args.batch, prompt_len), args.reps),
        "milr dynamic": timed(lambda: milr_loop(gen, texts, "dynamic"), args.reps),
        "milr static": timed(lambda: milr_loop(gen, texts, "static"), args.reps),
    }
    bare = rows["bare static"]
    print("| loop | ms per image token | × bare static |\n|---|---:|---:|")
    for name, wall in rows.items():
        print(f"| {name} | {1000 * wall / n:.2f} | {wall / bare:.2f} |")


if __name__ == "__main__":
    main()
