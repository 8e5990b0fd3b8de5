"""MILR against the resample control on the shapes knowledge suite, with intervals.

    python benchmarks/bench_knowledge.py --out runs/knowledge            # run every arm, then the table
    python benchmarks/bench_knowledge.py --out runs/knowledge --table    # the table from finished runs
    python benchmarks/bench_knowledge.py --out runs/knowledge --probe k003 --text-k 0.4

Each arm is one ``milr bench run`` of the knowledge suite (``python -m milr.shapes.evalset
--suite knowledge``, 64 prompts) with the `shapes` model and critic, 30 steps, seed 42,
``--batch-prompts 16``; every run also draws the base image (the same seed in every arm, so
the base column is one set of images). Arms:

- ``control``: the ``both`` loop with ``lr`` 1e-9, so the latents never move: the same plan,
  a fresh image every step until the critic passes (resampling with the critic as a filter);
- ``both``, ``text``, ``image``: MILR with the paper defaults (``lr`` 0.01);
- ``image-control``: the ``image`` loop with ``lr`` 1e-9 (``image`` mode conditions images on
  the prompt alone, so it has its own control);
- ``text-k0.4``: ``text`` with ``text_k`` 0.4, so the optimised prefix (M = 2 of a 5-token
  plan) reaches the plan's shape word.

Table: accuracy with a 95 % Clopper-Pearson interval; for each MILR arm, the paired
difference against its control with a 95 % bootstrap interval over prompts (10,000 resamples,
scipy) and the exact McNemar p-value on the discordant prompts; and how many prompts' final
plan names a different shape than the step-0 plan (``plan flips``) and how many of those
name the right shape.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ARMS: dict[str, list[str]] = {
    "control": ["--mode", "both", "--opt", "lr=1e-9"],
    "both": ["--mode", "both"],
    "text": ["--mode", "text"],
    "image": ["--mode", "image"],
    "image-control": ["--mode", "image", "--opt", "lr=1e-9"],
    "text-k0.4": ["--mode", "text", "--opt", "text_k=0.4"],
}
CONTROL_OF = {
    "both": "control",
    "text": "control",
    "text-k0.4": "control",
    "image": "image-control",
}


def run_arm(suite: Path, out: Path, arm: str, args: argparse.Namespace) -> None:
    cmd = [
        sys.executable, "-m", "milr", "bench", "run", str(suite),
        "--model", args.model, "--critic", "shapes", "--steps", str(args.steps),
        "--seed", str(args.seed), "--batch-prompts", str(args.batch_prompts),
        "-o", str(out / arm), "-q", "--no-report", *ARMS[arm],
    ]  # fmt: skip
    print("$", " ".join(cmd[1:]), flush=True)
    subprocess.run(cmd, check=True)


def _plan_shape(reasoning: str) -> str | None:
    from milr.shapes.world import parse_plan

    objs = parse_plan(reasoning or "")
    return objs[0].shape if objs else None


def load_arm(out: Path, arm: str) -> dict[str, dict]:
    """prompt id → {base, milr verdicts, right shape, step-0 and final plan shapes}."""
    rows = {}
    for line in (out / arm / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        traj = json.loads(
            (out / arm / r["milr"]["image"]).with_name("0-trajectory.json").read_text()
        )
        steps = traj["steps"]
        rows[r["prompt_id"]] = {
            "base": bool(r["base"]["passed"]),
            "milr": bool(r["milr"]["passed"]),
            "right": r["metadata"]["include"][0]["class"],
            "plan0": _plan_shape(steps[0]["reasoning"]),
            "plan": _plan_shape(steps[traj["selected_step"]]["reasoning"]),
            "steps": traj["n_steps"],
        }
    return rows


def table(out: Path, arms: list[str]) -> str:
    import numpy as np
    from scipy.stats import binomtest, bootstrap

    data = {a: load_arm(out, a) for a in arms if (out / a / "results.jsonl").exists()}
    first = next(iter(data.values()))
    ids = sorted(first)
    base = np.array([first[i]["base"] for i in ids], dtype=float)
    plan_right = np.array([first[i]["plan0"] == first[i]["right"] for i in ids], dtype=float)

    def acc(v: np.ndarray) -> str:
        k, n = int(v.sum()), len(v)
        ci = binomtest(k, n).proportion_ci(method="exact")
        return f"{k / n:.3f} [{ci.low:.3f}, {ci.high:.3f}]"

    lines = [
        f"knowledge suite, {len(ids)} prompts; step-0 plan names the right shape on "
        f"{int(plan_right.sum())}/{len(ids)}",
        "",
        "| arm | accuracy [95% CI] | vs control: difference [95% bootstrap CI] | McNemar "
        "(gained/lost, p) | mean steps | plan flips (to the right shape) |",
        "|---|---|---|---|---|---|",
        f"| base (first image) | {acc(base)} | | | | |",
    ]
    for arm, rows in data.items():
        milr = np.array([rows[i]["milr"] for i in ids], dtype=float)
        flips = sum(rows[i]["plan"] != rows[i]["plan0"] for i in ids)
        to_right = sum(
            rows[i]["plan"] != rows[i]["plan0"] and rows[i]["plan"] == rows[i]["right"] for i in ids
        )
        steps = np.mean([rows[i]["steps"] for i in ids])
        diff = mcn = ""
        ctrl = CONTROL_OF.get(arm)
        if ctrl in data:
            c = np.array([data[ctrl][i]["milr"] for i in ids], dtype=float)
            d = milr - c
            if d.any():
                bs = bootstrap(
                    (d,), np.mean, n_resamples=10000, method="percentile", random_state=0
                )
                lo, hi = bs.confidence_interval
            else:
                lo = hi = 0.0
            diff = f"{d.mean():+.3f} [{lo:+.3f}, {hi:+.3f}] ({ctrl})"
            gained, lost = int((d > 0).sum()), int((d < 0).sum())
            p = binomtest(gained, gained + lost).pvalue if gained + lost else 1.0
            mcn = f"{gained}/{lost}, p={p:.3g}"
        lines.append(
            f"| {arm} | {acc(milr)} | {diff} | {mcn} | {steps:.1f} | {flips} ({to_right}) |"
        )
    return "\n".join(lines)


def probe(model: str, prompt_id: str, suite: Path, text_k: float, steps: int, seed: int) -> None:
    """Per step of MILR ``text`` on one suite prompt: the optimised prefix, each prefix
    position's top-1 − top-2 logit margin, the right shape's logit minus the top logit at the
    plan's shape word (position 2; only optimised when M >= 2), and how far Adam moved the
    prefix latents (L2 and max |.|) against their own L2 norm."""
    import torch

    from milr.generator import load_generator
    from milr.optimizer import MILR, MILRConfig
    from milr.registry import get_registry

    rec = next(
        json.loads(x) for x in suite.read_text().splitlines() if json.loads(x)["id"] == prompt_id
    )
    gen = load_generator(model, device="cpu")
    critic = get_registry().create_critic("shapes")
    right = gen.tokenize(rec["include"][0]["class"])[0]
    milr = MILR(gen, critic, MILRConfig(mode="text", max_steps=steps, seed=seed, text_k=text_k))
    print(f"{rec['prompt']!r} (right shape: {rec['include'][0]['class']})")

    def cb(record, result) -> None:
        z = milr.latents.get("text")
        if z is None:
            return
        z, z0 = z.detach(), milr.initial_latents["text"]
        with torch.no_grad():
            logits = gen.text_head(z)
        top2 = logits.topk(2, dim=-1)
        margins = (top2.values[:, 0] - top2.values[:, 1]).tolist()
        words = [gen.processor.tokenizer.decode([int(t)]) for t in top2.indices[:, 0]]
        shape = ""
        if logits.shape[0] >= 2:
            shape = f" right-top at the shape word {float(logits[1, right] - logits[1].max()):6.2f}"
        print(
            f"step {record.step:2d} score {record.score:.2f} prefix {'|'.join(words):16s} "
            f"margins {', '.join(f'{m:5.2f}' for m in margins)}{shape} "
            f"|dz| {float((z - z0).norm()):.3f} max {float((z - z0).abs().max()):.3f} "
            f"|z0| {float(z0.norm()):.2f}  {record.reasoning!r}"
        )

    torch.set_num_threads(1)
    milr.run(rec["prompt"], rec, callback=cb)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--model", default="shapes")
    p.add_argument("--arms", nargs="*", default=list(ARMS), choices=list(ARMS))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--suite-seed", type=int, default=0)
    p.add_argument("--batch-prompts", type=int, default=16)
    p.add_argument("--table", action="store_true", help="only print the table of finished runs")
    p.add_argument("--probe", metavar="ID", help="print margins per step for one prompt id")
    p.add_argument("--text-k", type=float, default=0.1, help="text_k of the --probe run")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    suite = args.out / "knowledge.jsonl"
    if args.probe:
        from milr.shapes.knowledge import write_knowledge

        write_knowledge(suite, seed=args.suite_seed)
        probe(args.model, args.probe, suite, args.text_k, args.steps, args.seed)
        return
    if not args.table:
        from milr.shapes.knowledge import write_knowledge

        write_knowledge(suite, seed=args.suite_seed)
        for arm in args.arms:
            run_arm(suite, args.out, arm, args)
    print(table(args.out, args.arms))


if __name__ == "__main__":
    main()
