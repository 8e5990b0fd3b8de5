"""Prompts per hour of the batched MILR engine: B = 16 (and 32) against B = 1.

Run (idle machine; the full run takes tens of minutes on 2 CPU cores):

    OMP_NUM_THREADS=2 python benchmarks/bench_batched.py            # 1B width, B = 1, 16, 32
    OMP_NUM_THREADS=1 python benchmarks/bench_batched.py --quick    # tiny model, seconds
    OMP_NUM_THREADS=2 python benchmarks/bench_batched.py --shapes   # ShapesEval, B = 16 vs 1

Default model: a random Janus at Janus-Pro-1B width built from the real 1B config (shared
data ``janus-pro/1b``: hidden 2048, text vocabulary 102400, the real generation head and VQ
decoder) with 2 text layers and 144 image tokens (a 12×12 grid, 192 px); reasoning capped at
``--reasoning-tokens`` (random weights never write EOS). Critic: ``color`` (weight-free).
Suite: the first 32 GenEval prompts, ``--steps`` 5 with a threshold no step reaches, so every
prompt runs every step. Each B runs the same jobs; the table gives wall time, prompts/hour,
speed-up over B = 1, seconds per phase (summed over the run; ``update`` is the latent updates
-- the loss through the output heads, its backward and the Adam steps, pooled over the prompts
of a round; ``adam`` the Adam steps alone; ``prefixes`` the head reads for the next prefixes,
pooled likewise; ``prompt_side`` the prompts' own work: their draws and bookkeeping), the
bookkeeping share (padding and compaction of rows, ``prompt_side``, the Adam steps, and
scheduling) and the update's share of the wall time. ``--baseline-prompts N`` runs
B = 1 on the first N prompts only, to save time. The last lines
compare every prompt's trajectory with B = 1 (float32: batched products may round
differently) and the pass rate of the final images.

``--shapes`` runs the full ShapesEval file (shapes model and critic, mode both, 30 steps)
through ``milr bench`` with ``--batch-prompts 16`` and 1 in this process (after an untimed
2-prompt warm-up run) and prints wall time and overall accuracy of each, and how many
trajectories and final images are identical.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

SHARED = Path(
    os.environ.get("MILR_SHARED_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data"
)


def build_generator(args: argparse.Namespace):
    """The benchmark's generator: tiny (--quick) or random at Janus-Pro-1B width."""
    import torch

    from milr.generator import load_generator
    from milr.testing import save_tiny_janus

    if args.quick:
        path = save_tiny_janus(Path(tempfile.mkdtemp(prefix="milr-bb-")) / "tiny", seed=0)
        return load_generator(str(path), device=args.device, dtype=args.dtype)
    from transformers import JanusConfig, JanusForConditionalGeneration, JanusProcessor

    from milr.models.janus import JanusGenerator, JanusSettings

    source = Path(args.config)
    config = JanusConfig.from_pretrained(source)
    config.text_config.num_hidden_layers = args.layers
    grid = int(round(args.image_tokens**0.5))
    patch = int(config.vision_config.patch_size)
    config.vision_config.image_size = grid * patch
    config.vision_config.num_image_tokens = grid * grid
    config.vq_config.num_patches = grid  # the VQ decoder's token grid
    torch.manual_seed(0)
    dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float64": torch.float64}[
        args.dtype or "float32"
    ]
    with torch.device(args.device or "cpu"):
        model = JanusForConditionalGeneration(config).to(dtype)
    processor = JanusProcessor.from_pretrained(source)
    settings = JanusSettings(max_reasoning_tokens=args.reasoning_tokens)
    return JanusGenerator(model, processor, settings, checkpoint=f"random:{source.name}")


def prompts(n: int) -> list[str]:
    path = SHARED / "geneval" / "evaluation_metadata.jsonl"
    if path.is_file():
        import json

        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line)["prompt"] for line in lines[:n]]
    return [
        f"a photo of {i % 4 + 1} red {['cats', 'dogs', 'cups', 'cars'][i % 4]}" for i in range(n)
    ]


def run_once(gen, critic, texts, batch: int, steps: int):
    from milr.engine import BatchedMILR, Job
    from milr.optimizer import MILRConfig

    jobs = [
        Job(p, {}, MILRConfig(mode="both", max_steps=steps, threshold=0.0, seed=1000 + i), key=i)
        for i, p in enumerate(texts)
    ]
    if hasattr(gen, "clear_cache"):
        gen.clear_cache()
    gen.batch_bookkeeping_s = 0.0
    engine = BatchedMILR(gen, critic, batch)
    with _timed_adam() as adam:
        t0 = time.perf_counter()
        done = sorted(engine.run(jobs), key=lambda d: d.job.key)
        wall = time.perf_counter() - t0
    errors = [d.error for d in done if d.error is not None]
    if errors:
        raise SystemExit(f"B={batch}: {len(errors)} prompts failed, first: {errors[0]!r}")
    stats = dict(engine.stats)
    stats["padding"] = float(getattr(gen, "batch_bookkeeping_s", 0.0))
    # the latent updates (loss, backward through the heads, Adam): the engine times them as
    # one pooled phase (a prompt's own timings carry its pool's seconds, so summing those
    # over prompts would count a pool once per member); `prompt_side` is the rest of the
    # prompts' own work (draws, records); `prefixes` the pooled head reads for the next prefixes
    stats.setdefault("update", 0.0)
    stats["adam"] = adam[0]  # the per-prompt Adam steps (inside `update`)
    return wall, stats, [d.result for d in done]


@contextlib.contextmanager
def _timed_adam():
    """Seconds spent in ``torch.optim.Adam.step`` while the block runs (``[seconds]``)."""
    import torch

    spent = [0.0]
    original = torch.optim.Adam.step

    def step(self, *args, **kwargs):
        t = time.perf_counter()
        try:
            return original(self, *args, **kwargs)
        finally:
            spent[0] += time.perf_counter() - t

    torch.optim.Adam.step = step
    try:
        yield spent
    finally:
        torch.optim.Adam.step = original


def trajectory(result):
    return (
        [s.score for s in result.steps],
        [s.text_prefix for s in result.steps],
        [s.image_prefix for s in result.steps],
        result.stop_reason,
    )


def main_engine(args: argparse.Namespace) -> None:
    import torch

    from milr.specs import build_critic

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    gen = build_generator(args)
    critic = build_critic([args.critic])
    texts = prompts(args.prompts)
    d = gen.hidden_size if hasattr(gen, "hidden_size") else "?"
    print(
        f"model: {getattr(gen, 'checkpoint', '?')} hidden {d}, "
        f"{gen.image_token_count} image tokens, dtype {gen.dtype}, threads "
        f"{torch.get_num_threads()}; {len(texts)} prompts x {args.steps} steps; critic {args.critic}"
    )
    phases = [
        "reasoning", "image_tokens", "decode", "critic", "update", "adam", "prefixes",
        "prompt_side", "padding",
    ]  # fmt: skip
    print(
        f"| B | wall s | prompts/h | speed-up | {' | '.join(phases)} | other | bookkeeping | update |"
    )
    print("|" + "---|" * (7 + len(phases)))
    base = None
    results = {}
    rates = {}
    for b in args.batch:
        n = len(texts)
        if b == 1 and args.baseline_prompts:
            n = min(n, args.baseline_prompts)
        wall, st, res = run_once(gen, critic, texts[:n], b, args.steps)
        results[b] = res
        rates[b] = n / wall * 3600
        base = rates[b] if base is None else base
        phase_sum = sum(st.get(k, 0.0) for k in phases if k not in ("padding", "adam"))
        other = max(0.0, wall - phase_sum)
        # padding is inside image_tokens/reasoning; `update` (the loss through the heads, its
        # backward and the Adam steps) is MILR's own work; prompt_side the prompts'
        # bookkeeping. Bookkeeping = padding + prompt_side + the Adam steps + scheduling
        # (`other`).
        keeping = st.get("padding", 0.0) + st.get("prompt_side", 0.0) + st.get("adam", 0.0)
        keeping += other
        cells = " | ".join(f"{st.get(k, 0.0):.1f}" for k in phases)
        print(
            f"| {b} | {wall:.1f} | {rates[b]:.0f} | {rates[b] / base:.2f}x | "
            f"{cells} | {other:.1f} | {100 * keeping / wall:.1f}% | "
            f"{100 * st['update'] / wall:.1f}% |"
            + (f" (B = 1 on the first {n} prompts)" if n < len(texts) else "")
        )
        sys.stdout.flush()
    ref = results[args.batch[0]]
    for b in args.batch[1:]:
        n = min(len(ref), len(results[b]))  # the prompts both ran
        same = sum(trajectory(a) == trajectory(r) for a, r in zip(ref[:n], results[b][:n]))
        acc = [
            sum(bool(x.steps[-1].passed) for x in results[k][:n]) / n for k in (args.batch[0], b)
        ]
        print(
            f"B={b} vs B={args.batch[0]}: {same}/{n} trajectories identical; final pass rate "
            f"{acc[1]:.3f} vs {acc[0]:.3f} (difference {acc[1] - acc[0]:+.3f}) on those {n}"
        )


def main_shapes(args: argparse.Namespace) -> None:
    from milr.bench.runner import BenchOptions, run_bench
    from milr.shapes.evalset import write_shapeseval

    work = Path(tempfile.mkdtemp(prefix="milr-shapes-batched-"))
    suite = write_shapeseval(work / "shapeseval.jsonl")
    # a 2-prompt run first, untimed: imports and first-use costs stay out of either timing
    run_bench(
        BenchOptions(
            suite=str(suite), model="shapes", critic=["shapes"], mode="both", steps=1,
            limit=2, out=str(work / "warmup"), progress=False, report=False, device="cpu",
            batch_prompts=2,
        )
    )  # fmt: skip
    n = len(suite.read_text().splitlines()) if args.limit is None else args.limit
    print(f"suite {suite} ({n} prompts), mode both, {args.shapes_steps} steps")
    print("| --batch-prompts | wall s | overall (MILR) | overall (base) |")
    print("|---|---|---|---|")
    walls, records = {}, {}
    for b in args.batch:
        opts = BenchOptions(
            suite=str(suite), model="shapes", critic=["shapes"], mode="both",
            steps=args.shapes_steps, limit=args.limit, out=str(work / f"b{b}"), progress=False,
            report=False, device="cpu", batch_prompts=b,
        )  # fmt: skip
        t0 = time.perf_counter()
        summary = run_bench(opts)
        wall = time.perf_counter() - t0
        overall = summary["overall"] if summary else {}
        walls[b], records[b] = wall, _records(work / f"b{b}" / "results.jsonl")
        print(f"| {b} | {wall:.1f} | {_acc(overall, 'milr')} | {_acc(overall, 'base')} |")
        sys.stdout.flush()
    first = min(args.batch)  # the reference: the smallest batch
    for b in sorted(args.batch)[1:]:
        ref, got = records[first], records[b]
        same = sum(_shape_trajectory(ref[k]) == _shape_trajectory(got.get(k, {})) for k in ref)
        images = sum(
            ref[k]["milr"]["image_sha256"] == got.get(k, {}).get("milr", {}).get("image_sha256")
            for k in ref
            if ref[k].get("milr")
        )
        print(
            f"B={b} vs B={first}: wall {walls[first] / walls[b]:.2f}x faster; "
            f"{same}/{len(ref)} trajectories identical (steps, scores, verdicts, tokens, "
            f"prompts); {images}/{len(ref)} final images byte-identical"
        )


def _records(path: Path) -> dict:
    import json

    out = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        rec = json.loads(line)
        out[rec["prompt_id"]] = rec
    return out


def _shape_trajectory(rec: dict) -> tuple:
    """What a prompt's run decided, from its bench record (timings left out)."""
    t = rec.get("trajectory") or {}
    keys = ("steps", "stop_reason", "scores", "rewards", "passed", "tokens_generated", "prompts")
    return tuple(repr(t.get(k)) for k in keys)


def _acc(overall, side: str) -> str:
    value = overall.get(side) if isinstance(overall, dict) else None
    if isinstance(value, dict):
        value = value.get("accuracy", value.get("score"))
    return "-" if value is None else f"{float(value):.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny model, 6 prompts, 2 steps")
    parser.add_argument("--shapes", action="store_true", help="ShapesEval via milr bench")
    parser.add_argument("--batch", type=int, nargs="+", default=None)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument(
        "--baseline-prompts",
        type=int,
        default=None,
        help="run B = 1 on the first N prompts only (its prompts/hour does not depend on N: "
        "every prompt runs every step); trajectories are compared on those N",
    )
    parser.add_argument("--shapes-steps", type=int, default=30, help="--shapes: MILR steps")
    parser.add_argument("--limit", type=int, default=None, help="--shapes: first N prompts")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--image-tokens", type=int, default=144)
    parser.add_argument("--reasoning-tokens", type=int, default=32)
    parser.add_argument("--config", default=str(SHARED / "janus-pro" / "1b"))
    parser.add_argument("--critic", default="color:target=red,min_fraction=0.2")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args()
    if args.shapes:
        args.batch = args.batch or [16, 1]
        return main_shapes(args)
    if args.quick:
        args.batch = args.batch or [1, 4, 8]
        args.prompts, args.steps = min(args.prompts, 8), min(args.steps, 2)
    args.batch = args.batch or [1, 16, 32]
    main_engine(args)


if __name__ == "__main__":
    main()
