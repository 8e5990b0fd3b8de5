"""ShapesEval results table: base model vs MILR text / image / both vs best-of-N.

    python benchmarks/bench_shapes.py --out shapes-bench.json [--limit-per-tag N] [--steps 30]
        [--dtype bf16] [--latent-dtype model|float32] [--text-prefix paper|at_least_one]

The dtype comparison (the model in bf16, latents in the model's dtype vs float32, `both`,
30 steps; CPU bf16 runs the VQ decoder in fp32)::

    python benchmarks/bench_shapes.py --modes both --dtype bf16 --latent-dtype model \
        --out shapes-bf16-model.json
    python benchmarks/bench_shapes.py --modes both --dtype bf16 --latent-dtype float32 \
        --out shapes-bf16-float32.json

For every ShapesEval record (or the first N per tag) and the same seed:
  (a) base: the model's first sample (reasoning + image, i.e. step 0 of the `both` run);
  (b) MILR `text`, (c) MILR `image`, (d) MILR `both` (paper defaults, `shapes` critic,
      last image returned, stop when the verdict passes: r > -0.1);
  (e) best-of-N: a fixed N = steps + 1 draws per prompt (MILR's largest budget: step 0 and
      one image per step), images sampled with the same reasoning, passes when any of the N
      passes (the `shapes` critic, reward and evaluation, picks the best). N does not depend
      on MILR's per-prompt call count, which would give fewer draws exactly where MILR
      stopped early. `milr bench --control best-of-n` runs the same control inside the
      MILR loop, beside MILR, with intervals.
Prints per-tag and overall accuracy (overall = mean of per-tag accuracies, as GenEval), mean
steps and seconds per prompt, and writes every per-prompt record to --out as JSON.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import defaultdict
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="shapes-bench.json")
    parser.add_argument("--limit-per-tag", type=int, default=None, help="first N records per tag")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--modes", default="base,text,image,both,best_of_n")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", default="shapes")
    parser.add_argument("--dtype", default=None, help="model dtype (bf16, fp32...; default fp32)")
    parser.add_argument("--latent-dtype", default="model", choices=["model", "float32"])
    parser.add_argument(
        "--text-prefix",
        default=None,
        choices=["paper", "at_least_one"],
        help="default: the checkpoint's (at_least_one for shapes); paper: M=int(text_k*L), "
        "M=0 for plans under 9 tokens (left unoptimised)",
    )
    parser.add_argument("--shard", default="0/1", help="I/N: run every N-th record from I")
    parser.add_argument(
        "--merge", nargs="*", default=None, help="only merge JSON outputs and print"
    )
    args = parser.parse_args(argv)
    modes = args.modes.split(",")
    if args.merge is not None:
        from milr.shapes.evalset import TAGS

        rows = [r for f in args.merge for r in json.loads(Path(f).read_text())]
        print(
            table(
                rows,
                [m for m in ("base", "text", "image", "both", "best_of_n") if m in modes],
                TAGS,
            )
        )
        return

    import torch

    from milr.critics.shapes import ShapesCritic
    from milr.generator import load_generator
    from milr.optimizer import MILR, MILRConfig
    from milr.shapes.evalset import TAGS, make_shapeseval

    torch.set_num_threads(args.threads)
    records = make_shapeseval()
    if args.limit_per_tag:
        seen: dict[str, int] = defaultdict(int)
        subset = []
        for r in records:
            if seen[r["tag"]] < args.limit_per_tag:
                subset.append(r)
                seen[r["tag"]] += 1
        records = subset
    shard, n_shards = (int(v) for v in args.shard.split("/"))
    records = records[shard::n_shards]
    gen = load_generator(args.model, device="cpu", dtype=args.dtype)
    critic = ShapesCritic()
    rows = []
    out = Path(args.out)
    t_all = time.time()
    for i, rec in enumerate(records):
        row: dict = {"prompt": rec["prompt"], "tag": rec["tag"]}
        for mode in ("both", "text", "image"):
            if mode not in modes:
                continue
            cfg = MILRConfig(
                mode=mode,
                max_steps=args.steps,
                seed=args.seed,
                latent_dtype=args.latent_dtype,
                text_prefix=args.text_prefix,
            )
            res = MILR(gen, critic, cfg).run(rec["prompt"], rec)
            row[mode] = {
                "passed": bool(res.steps[res.selected_step].passed),
                "initial_passed": bool(res.steps[0].passed),
                "steps": res.n_steps,
                "critic_calls": res.critic_calls,
                "seconds": res.wall_seconds,
            }
        if "base" in modes:  # exactly step 0 of a `both` run with the same seed
            t0 = time.time()
            rng = gen.rng(args.seed)
            reasoning = gen.write_reasoning(rec["prompt"])
            text = gen.image_text(rec["prompt"], reasoning.text)
            toks = gen.sample_image_tokens(text, batch=1, generator=rng).tokens
            res = critic.score(gen.decode(toks)[0], rec["prompt"], rec)
            row["base"] = {
                "passed": bool(res.passed),
                "reasoning": reasoning.text,
                "seconds": time.time() - t0,
            }
            if "both" in row:
                assert row["both"]["initial_passed"] == row["base"]["passed"]
        if "best_of_n" in modes:
            n = args.steps + 1  # fixed: not MILR's per-prompt call count
            t0 = time.time()
            rng = gen.rng(args.seed)
            reasoning = gen.write_reasoning(rec["prompt"])
            text = gen.image_text(rec["prompt"], reasoning.text)
            toks = gen.sample_image_tokens(text, batch=n, generator=rng).tokens
            verdicts = [
                r.passed
                for r in critic.score_batch(gen.decode(toks), [rec["prompt"]] * n, [rec] * n)
            ]
            row["best_of_n"] = {"passed": any(verdicts), "n": n, "seconds": time.time() - t0}
        rows.append(row)
        if i % 10 == 9 or i == len(records) - 1:
            out.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
            print(f"{i + 1}/{len(records)} prompts ({time.time() - t_all:.0f}s)", flush=True)
    print(
        table(rows, [m for m in ("base", "text", "image", "both", "best_of_n") if m in modes], TAGS)
    )


def table(rows: list[dict], modes: list[str], tags) -> str:
    """Markdown table: per-tag and overall accuracy per method, mean steps and seconds."""
    lines = [
        "| method | " + " | ".join(tags) + " | overall | mean steps | s/prompt |",
        "|---" * (len(tags) + 4) + "|",
    ]
    for m in modes:
        accs = []
        cells = []
        for t in tags:
            rs = [r[m]["passed"] for r in rows if r["tag"] == t and m in r]
            acc = sum(rs) / len(rs) if rs else float("nan")
            accs.append(acc)
            cells.append(f"{acc:.2f}")
        overall = sum(accs) / len(accs)
        steps = [r[m]["steps"] for r in rows if "steps" in r.get(m, {})]
        secs = [r[m]["seconds"] for r in rows if "seconds" in r.get(m, {})]
        ms = f"{sum(steps) / len(steps):.1f}" if steps else "-"
        ss = f"{sum(secs) / len(secs):.1f}" if secs else "-"
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {overall:.3f} | {ms} | {ss} |")
    lines.append(f"\n{len(rows)} prompts")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
