"""MILR against the resample control on the shapes knowledge suite, with intervals.

    python benchmarks/bench_knowledge.py --out runs/knowledge            # run the arms, then the table
    python benchmarks/bench_knowledge.py --out runs/knowledge --table    # the table from finished runs
    python benchmarks/bench_knowledge.py --out runs/knowledge --probe k003 --text-k 0.4

Each arm is one ``milr bench`` run of the knowledge suite (``python -m milr.shapes.evalset
--suite knowledge``, 64 prompts) with the `shapes` model and critic, 30 steps, seed 42,
``--batch-prompts 16``, with a control run beside MILR on every prompt (``--control``); every
run also draws the base image (the same seed in every arm that writes a plan, so those arms
share one base column). Arms (the default: the first four):

- ``both``, ``text``, ``image``: MILR with the paper defaults (``lr`` 0.01) beside the
  resample control (the same loop with the latent update switched off: the same plan and
  random draws, a fresh image every step until the critic passes). ``image`` mode conditions
  images on the prompt alone, so its base and control are its own;
- ``best-of-n``: MILR ``both`` beside the best-of-N control (N = 31 draws, no early stop, the
  critic keeps the best);
- ``text-k0.4``: ``text`` with ``text_k`` 0.4, so the optimised prefix (M = 2 of a 5-token
  plan) reaches the plan's shape word.

Table, from each run's summary: accuracy with the summary's 95 % nested bootstrap interval;
for each MILR arm the paired difference against its control with its interval and the exact
McNemar p-value on the discordant prompts; and how many prompts' final plan names a different
shape than the step-0 plan (``plan flips``) and how many of those name the right shape.
These are oracle runs: the reward critic is the evaluation critic.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ARMS: dict[str, list[str]] = {
    "both": ["--mode", "both", "--control", "resample"],
    "text": ["--mode", "text", "--control", "resample"],
    "image": ["--mode", "image", "--control", "resample"],
    "best-of-n": ["--mode", "both", "--control", "best-of-n"],
    "text-k0.4": ["--mode", "text", "--opt", "text_k=0.4", "--control", "resample"],
}
DEFAULT_ARMS = ["both", "text", "image", "best-of-n"]


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
    """The markdown table of finished arms, from each run's ``summary.json`` statistics (95 %
    nested bootstrap intervals, paired MILR − control difference, exact McNemar) and its
    trajectories (plan flips)."""
    data = {a: load_arm(out, a) for a in arms if (out / a / "summary.json").exists()}
    stats = {a: json.loads((out / a / "summary.json").read_text())["statistics"] for a in data}
    first = next(iter(data))
    ids = sorted(data[first])
    right = sum(data[first][i]["plan0"] == data[first][i]["right"] for i in ids)

    def ci(x: dict, key: str = "value") -> str:
        lo, hi = x["ci95"]
        sign = "+" if key == "difference" else ""
        return f"{x[key]:{sign}.3f} [{lo:{sign}.3f}, {hi:{sign}.3f}]"

    lines = [
        f"knowledge suite, {len(ids)} prompts; step-0 plan names the right shape on {right}/"
        f"{len(ids)}",
        "",
        "| run | accuracy [95% CI] | MILR − its control [95% CI] | McNemar p (MILR only / "
        "control only) | mean steps | plan flips (to the right shape) | resample fixes / fixes |",
        "|---|---|---|---|---|---|---|",
    ]
    planned = [a for a in stats if a != "image"]  # these share one base image per prompt
    if planned:
        base = ci(stats[planned[0]]["sides"]["base"])
        lines.append(f"| base (first image, with the plan) | {base} | | | | | |")
    for arm, st in stats.items():
        rows = data[arm]
        flips = sum(rows[i]["plan"] != rows[i]["plan0"] for i in ids)
        to_right = sum(
            rows[i]["plan"] != rows[i]["plan0"] and rows[i]["plan"] == rows[i]["right"] for i in ids
        )
        steps = sum(rows[i]["steps"] for i in ids) / len(ids)
        ctl = st.get("control") or "?"
        d = st["paired"].get("milr-control")
        mcn = f"{d['mcnemar_p']:.3g} ({d['only_a']} / {d['only_b']})" if d else ""
        cstep = (st.get("control_optimizer") or {}).get("mean_steps")
        lines.append(
            f"| {ctl} control (of the `{arm}` run) | {ci(st['sides']['control'])} | | | "
            f"{cstep if cstep is None else f'{cstep:.1f}'} | | |"
        )
        if arm == "best-of-n":
            continue
        at = st["attribution"]
        if arm == "image":
            lines.append(f"| base of `image` (no plan) | {ci(st['sides']['base'])} | | | | | |")
        lines.append(
            f"| MILR `{arm}` | {ci(st['sides']['milr'])} | {ci(d, 'difference') if d else ''} | "
            f"{mcn} | {steps:.1f} | {flips} ({to_right}) | {at['resample_fixes']} / {at['fixes']} |"
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


def plan_reading(model_dir: str | None, n: int, seed: int) -> None:
    """Does the image model draw the shape the plan names? For `n` random one-object plans,
    the probability the guided image distribution (CFG 5, the adapter's unconditional row)
    puts on the plan's shape at the plan's cell, teacher-forced on the plan scene's earlier
    tokens, with four kinds of prompt: the plan's shape named ("a photo of a circle"),
    another shape named, a knowledge prompt whose fact names the plan's shape (a right plan),
    and one whose fact names another shape (a wrong plan). Chance is 0.25."""
    import random

    import torch
    from transformers import JanusForConditionalGeneration

    from milr.shapes import knowledge, world
    from milr.shapes.model import model_path
    from milr.shapes.recipe import make_tokenizer
    from milr.shapes.train_lm import Sequences, _lm_batch_image, image_logits
    from milr.shapes.train_vq import encode_images

    torch.set_num_threads(1)
    path = model_dir or str(model_path())
    model = JanusForConditionalGeneration.from_pretrained(path).eval()
    seqs = Sequences(make_tokenizer())
    rng = random.Random(seed)
    objs = [
        world.Obj(
            rng.choice(world.SHAPES), rng.choice(list(world.COLORS)), *divmod(rng.randrange(16), 4)
        )
        for _ in range(n)
    ]
    tokens = encode_images(model, [world.render_array([o]) for o in objs])
    singles = [world.Obj(s, c, 0, 0) for s in world.SHAPES for c in world.COLORS]
    code_shape = dict(
        zip(encode_images(model, [world.render_array([o]) for o in singles])[:, 0].tolist(),
            (o.shape for o in singles), strict=True)
    )  # fmt: skip

    def other(shape: str) -> str:
        return rng.choice([s for s in world.SHAPES if s != shape])

    def fact_prompt(shape: str) -> str:
        fact = rng.choice([f for f in knowledge.FACTS if f.shape == shape])
        return knowledge.fact_prompt(fact, rng.choice(knowledge.TEMPLATES))

    kinds = {
        "prompt names the plan's shape": lambda o: f"a photo of a {o.shape}",
        "prompt names another shape": lambda o: f"a photo of a {other(o.shape)}",
        "knowledge prompt, right plan": lambda o: fact_prompt(o.shape),
        "knowledge prompt, wrong plan": lambda o: fact_prompt(other(o.shape)),
    }
    print(f"{path}: P(the plan's shape at the plan's cell), {n} plans, CFG 5")
    for kind, prompt_of in kinds.items():
        items = [
            {"prompt": prompt_of(o), "plan": world.plan_text([o]), "tokens": t}
            for o, t in zip(objs, tokens, strict=True)
        ]
        text, img, is_img, y = _lm_batch_image(seqs, items, rng, 0.0, 0.0)
        blank = torch.where(
            (text == seqs.bos) | (text == seqs.boi), text, torch.full_like(text, seqs.pad)
        )
        with torch.no_grad():
            lm = model.model.language_model
            c, u = (image_logits(model, lm, t, img, is_img, y) for t in (text, blank))
            probs = (u + (c - u) * 5.0).softmax(-1).view(n, -1, c.shape[-1])
        mass = [
            sum(float(probs[i, o.row * world.GRID + o.col, k]) for k, s in code_shape.items()
                if s == o.shape)
            for i, o in enumerate(objs)
        ]  # fmt: skip
        print(f"  {kind:32s} {sum(mass) / n:.3f}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--model", default="shapes")
    p.add_argument("--arms", nargs="*", default=DEFAULT_ARMS, choices=list(ARMS))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--suite-seed", type=int, default=0)
    p.add_argument("--batch-prompts", type=int, default=16)
    p.add_argument("--table", action="store_true", help="only print the table of finished runs")
    p.add_argument("--probe", metavar="ID", help="print margins per step for one prompt id")
    p.add_argument("--text-k", type=float, default=0.1, help="text_k of the --probe run")
    p.add_argument(
        "--plan-reading",
        type=int,
        metavar="N",
        help="print how far the image model draws the plan's shape (N random plans) and exit",
    )
    p.add_argument("--model-dir", help="checkpoint directory for --plan-reading (default: shipped)")
    args = p.parse_args(argv)
    if args.plan_reading:
        plan_reading(args.model_dir, args.plan_reading, args.seed)
        return
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
