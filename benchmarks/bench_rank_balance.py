"""Rank balance under torchrun: busy-time spread of 2 gloo ranks, this checkout against an older milr.

    python benchmarks/bench_rank_balance.py                # older milr: 750c75a (round-robin deal)

Runs ``milr bench`` on 2 gloo ranks three times per checkout with the test suite's weight-free
toy solver (a seeded colour search; ``--opt sleep=0.05`` per step, so prompts that pass early
cost less: uneven prompt costs) over a 24-prompt ShapesEval file × 2 seeds, and prints per run
the records each rank wrote and the spread of the ranks' busy seconds (the sum of their
records' ``timings.total_s``; the ranks start together, so this is their finish-time spread
less start-up noise). The older checkout (``--ref``) is added with ``git worktree add``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref", default="750c75a")
    parser.add_argument("--ref-dir", default="/tmp/main750")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    import test_bench_harness as harness
    from plugin_fixtures import load_list, make_distribution

    from milr.shapes.evalset import write_shapeseval

    ref_dir = Path(args.ref_dir)
    if not ref_dir.exists():
        cmd = ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(ref_dir), args.ref]
        subprocess.run(cmd, check=True)
    work = Path(tempfile.mkdtemp(prefix="milr-balance-"))
    toy = {"bench_toy": harness.TOY}
    site = make_distribution(
        work / "site", "milr-bench-toy", "0.1", toy, {"bench_toy": "bench_toy"}
    )
    suite = write_shapeseval(work / "suite.jsonl", per_tag=4, seed=3)
    for name, path in ((f"{args.ref} (round-robin deal)", ref_dir), ("this checkout", ROOT)):
        spreads = []
        for rep in range(args.repeats):
            out = work / f"{len(spreads)}-{path.name}"
            env = dict(os.environ)
            env["PYTHONPATH"] = os.pathsep.join([str(path), str(site), env.get("PYTHONPATH", "")])
            env["MILR_LOAD_PLUGINS"] = load_list("milr-bench-toy")
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
            cmd += ["--nproc-per-node", "2", "-m", "milr", "bench", str(suite)]
            cmd += ["--solver", "bench_toy:make_solver", "--critic", "flaky", "--steps", "6"]
            cmd += ["--seeds", "2", "--no-progress", "--no-report", "--out", str(out)]
            cmd += ["--opt", "sleep=0.05"]
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=work)
            if proc.returncode != 0:
                raise SystemExit(proc.stderr[-3000:])
            busy: dict[int, float] = {}
            count: dict[int, int] = {}
            for f in sorted((out / "records").glob("*.jsonl")):
                for line in f.read_text().splitlines():
                    r = json.loads(line)
                    busy[r["rank"]] = busy.get(r["rank"], 0.0) + float(r["timings"]["total_s"])
                    count[r["rank"]] = count.get(r["rank"], 0) + 1
            spreads.append(abs(busy[0] - busy[1]))
            print(f"{name} run {rep}: records per rank {count}, spread {spreads[-1]:.2f} s")
        print(f"{name}: mean spread {sum(spreads) / len(spreads):.2f} s over {len(spreads)} runs")


if __name__ == "__main__":
    main()
