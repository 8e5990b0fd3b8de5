"""Pick the README's showcase prompts from measured runs, and probe why a reasoning text stays put.

    python benchmarks/showcase_shapes.py                       # the candidate table
    python benchmarks/showcase_shapes.py --probe "a photo of two red circles"

The table: MILR ``both`` with the ``shapes`` critic (the README's `milr generate` / `run_milr`
settings: 20 steps, seed 42, paper defaults) on each candidate prompt, one run at a time on
one thread. Columns: first score, last score, best score and its step, steps taken, how many
distinct reasoning texts the run produced, and the wall time.

``--probe PROMPT``: per step, the optimised text prefix tokens, the margin between the text
head's top logit and the runner-up at each prefix position (how far the argmax is from
flipping), how far Adam has moved the prefix latents from their start (L2 and max |.|), and the
change of the top-1 logit margin since step 0. The reasoning can only change when a margin
reaches zero.
"""

from __future__ import annotations

import argparse
import time

CANDIDATES = (
    "a photo of two red circles",
    "a photo of a green circle",
    "a photo of three triangles",
    "a photo of a yellow circle below a blue square",
    "a photo of a blue diamond and an orange square",
    "a photo of a purple square",
    "a photo of two blue triangles",
    "a photo of a red circle left of a green square",
)


def run(prompt: str, steps: int, seed: int, probe: bool) -> dict:
    import torch

    from milr.generator import load_generator
    from milr.optimizer import MILR, MILRConfig
    from milr.registry import get_registry

    gen = _gen_cache.get("g") or _gen_cache.setdefault("g", load_generator("shapes", device="cpu"))
    critic = get_registry().create_critic("shapes")
    meta = critic.metadata_for(prompt, {})
    milr = MILR(gen, critic, MILRConfig(mode="both", max_steps=steps, seed=seed))
    rows: list[dict] = []

    def cb(record, result) -> None:
        if not probe or milr.latents.get("text") is None:
            return
        z = milr.latents["text"].detach()
        z0 = milr.initial_latents["text"]
        with torch.no_grad():
            logits = gen.text_head(z)
            top2 = logits.topk(2, dim=-1)
            margin = (top2.values[:, 0] - top2.values[:, 1]).tolist()
            logits0 = gen.text_head(z0)
            a0 = logits0.argmax(-1)
            own = logits.gather(-1, a0[:, None]).squeeze(-1)
            other = logits.scatter(-1, a0[:, None], float("-inf")).max(-1).values
            margin_a0 = (own - other).tolist()
        rows.append(
            {
                "step": record.step,
                "score": record.score,
                "prefix": [gen.processor.tokenizer.decode([t]) for t in top2.indices[:, 0]],
                "margin": margin,
                "margin_of_step0_token": margin_a0,
                "dz_l2": float((z - z0).norm()),
                "dz_max": float((z - z0).abs().max()),
                "z_l2": float(z0.norm()),
                "reasoning": record.reasoning,
            }
        )

    t0 = time.perf_counter()
    result = milr.run(prompt, meta, callback=cb)
    return {
        "prompt": prompt,
        "first": result.initial_score,
        "last": result.final_score,
        "best": result.best_score,
        "best_step": result.best_step,
        "steps": result.n_steps,
        "reasonings": len({s.reasoning for s in result.steps}),
        "seconds": time.perf_counter() - t0,
        "probe": rows,
        "m": result.text_prefix_len,
    }


_gen_cache: dict = {}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("prompts", nargs="*", default=list(CANDIDATES))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--probe", default=None, metavar="PROMPT")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    if args.probe:
        r = run(args.probe, args.steps, args.seed, probe=True)
        print(f"{r['prompt']}: text prefix M={r['m']} token(s)")
        print("step score prefix  margin(top1-top2)  margin(step-0 token)  |dz|2  max|dz|  |z0|2")
        for row in r["probe"]:
            print(
                f"{row['step']:4d} {row['score']:.3f} {'|'.join(row['prefix']):7s}"
                f" {', '.join(f'{m:6.2f}' for m in row['margin']):>17s}"
                f" {', '.join(f'{m:6.2f}' for m in row['margin_of_step0_token']):>21s}"
                f"  {row['dz_l2']:5.3f}  {row['dz_max']:6.3f}  {row['z_l2']:5.2f}"
                f"  {row['reasoning']!r}"
            )
        return
    print(f"{'prompt':48s} first  last  best@step steps texts   s")
    for prompt in args.prompts:
        r = run(prompt, args.steps, args.seed, probe=False)
        print(
            f"{r['prompt']:48s} {r['first']:.3f} {r['last']:.3f} {r['best']:.3f}@{r['best_step']:<3d}"
            f" {r['steps']:5d} {r['reasonings']:5d} {r['seconds']:5.1f}"
        )


if __name__ == "__main__":
    main()
