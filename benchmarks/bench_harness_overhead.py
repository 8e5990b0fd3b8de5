"""Harness overhead and throughput of `milr bench` on ShapesEval (prints figures).

Usage::

    python benchmarks/bench_harness_overhead.py [--per-tag 2] [--steps 5] [--ranks 2]
        [--model shapes] [--critic shapes] [--device cpu]

1. In process: runs the suite once and splits the wall time into model/critic loading, the
   per-prompt optimizer time (the sum over records), the evaluation-critic time, and the rest:
   the harness (suite loading, seeds, PNG encoding, hashing, fsynced appends, score cache,
   merge, summary, report). Target: harness < 5% of optimizer + evaluation time.
2. Throughput: the same suite as ``python -m milr bench`` (1 process) and under
   ``torchrun --nproc-per-node RANKS`` (gloo), wall clock from launch to summary, in prompts
   per minute. Each rank runs with OMP_NUM_THREADS=1.

Uses the shipped ``shapes`` model and critic when present; otherwise a tiny random Janus with
the weight-free ``color`` critic (and says so).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _shapes_available() -> bool:
    try:
        from milr.generator import _shapes_path
        from milr.registry import get_registry

        return _shapes_path().is_dir() and "shapes" in get_registry().critics
    except Exception:
        return False


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-tag", type=int, default=2, help="ShapesEval prompts per tag (6 tags)")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--model", default=None)
    ap.add_argument("--critic", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--skip-throughput", action="store_true")
    args = ap.parse_args()
    # one thread per process everywhere, so in-process, 1-process and per-rank figures compare
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    from milr.bench import runner
    from milr.bench.records import load_all_records
    from milr.shapes.evalset import write_shapeseval

    tmp = Path(tempfile.mkdtemp(prefix="milr-bench-overhead-"))
    if args.model is None:
        if _shapes_available():
            args.model, args.critic = "shapes", args.critic or "shapes"
        else:
            from milr.testing import save_tiny_janus

            args.model = str(save_tiny_janus(tmp / "tiny-janus"))
            args.critic = args.critic or "color:target=red,min_fraction=0.3"
            print(
                f"NOTE: shapes model not available; using a tiny random Janus + critic {args.critic}"
            )
    args.critic = args.critic or "shapes"
    suite = write_shapeseval(tmp / "shapeseval.jsonl", per_tag=args.per_tag, seed=0)
    n = args.per_tag * 6
    print(
        f"suite: {n} ShapesEval prompts, model {args.model}, critic {args.critic}, steps {args.steps}"
    )

    # -- 1. in-process overhead --------------------------------------------------------------
    load_s = 0.0

    def timed_factory(opts, device):
        nonlocal load_s
        t = time.perf_counter()
        solver = runner.MILRSolver(opts, device)
        load_s += time.perf_counter() - t
        return solver

    opts = runner.BenchOptions(
        suite=str(suite),
        model=args.model,
        critic=[args.critic],
        steps=args.steps,
        out=str(tmp / "inproc"),
        progress=False,
        device=args.device,
        report=False,
    )
    t0 = time.perf_counter()
    runner.run_bench(opts, solver_factory=timed_factory)
    wall = time.perf_counter() - t0
    t1 = time.perf_counter()
    runner.finalize(tmp / "inproc", report=True)
    report_s = time.perf_counter() - t1
    recs = load_all_records(tmp / "inproc")
    opt = sum(r["timings"]["optimizer_s"] for r in recs)
    ev = sum(r["timings"]["eval_s"] for r in recs)
    in_loop = sum(r["timings"]["harness_s"] for r in recs)
    harness = wall - load_s - opt - ev
    print("\n== harness overhead (single process, in-process timing) ==")
    print(
        f"wall {wall:.2f} s = load {load_s:.2f} s + optimizer {opt:.2f} s + eval critic {ev:.2f} s "
        f"+ harness {harness:.3f} s"
    )
    print(
        f"harness / (optimizer + eval) = {100 * harness / (opt + ev):.2f}%  "
        f"(per-record in-loop part: {100 * in_loop / (opt + ev):.2f}%)"
    )
    print(
        f"report (contact sheets + plots, once per run): {report_s:.2f} s = "
        f"{100 * report_s / (opt + ev):.2f}% of optimizer + eval at this size"
    )
    summary = json.loads((tmp / "inproc" / "summary.json").read_text())
    o = summary["overall"]
    print(
        f"ShapesEval overall accuracy: base {o['base']:.3f}, MILR {o['milr']:.3f}, delta {o['delta']:+.3f}"
    )
    for tag, e in summary["groups"].items():
        print(f"  {tag:14s} base {e['base']['accuracy']:.3f}  MILR {e['milr']['accuracy']:.3f}")

    if args.skip_throughput:
        return
    # -- 2. throughput: 1 process vs torchrun ranks ------------------------------------------
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    common = [
        "-m",
        "milr",
        "bench",
        str(suite),
        "--model",
        args.model,
        "--critic",
        args.critic,
        "--steps",
        str(args.steps),
        "--no-progress",
        "--no-report",
        "--device",
        args.device,
    ]
    print(
        "\n== throughput (wall clock from launch to summary, incl. process start and model load) =="
    )
    for label, pre in (
        ("1 process", [sys.executable]),
        (
            f"{args.ranks} ranks (torchrun, gloo)",
            [
                sys.executable,
                "-m",
                "torch.distributed.run",
                "--standalone",
                "--nproc-per-node",
                str(args.ranks),
            ],
        ),
    ):
        out = tmp / label.split()[0]
        t = time.perf_counter()
        proc = subprocess.run(
            [*pre, *common, "--out", str(out)], env=env, capture_output=True, text=True
        )
        w = time.perf_counter() - t
        if proc.returncode != 0:
            print(f"{label}: failed\n{proc.stderr[-2000:]}")
            continue
        recs = load_all_records(out)
        busy = {}
        for r in recs:
            busy[r["rank"]] = busy.get(r["rank"], 0.0) + r["timings"]["total_s"]
        print(
            f"{label:28s} {n / w * 60:7.1f} prompts/min  (wall {w:.1f} s; per-rank busy "
            f"{', '.join(f'{v:.1f}s' for _, v in sorted(busy.items()))})"
        )
    print(
        f"\nCPU cores visible: {os.cpu_count()} (shared machines make multi-rank CPU figures noisy)"
    )


if __name__ == "__main__":
    main()
