"""ShapesEval with the batched engine: this checkout's loops (default, static, compiled) against an older milr.

    python benchmarks/bench_loops_vs_main.py                  # full ShapesEval, both, 30 steps, B = 16
    python benchmarks/bench_loops_vs_main.py --limit 96       # the first 96 prompts

The older milr (``--ref``, default 750c75a, the commit before the GPU-ready loops) is checked
out with ``git worktree add`` into ``--ref-dir`` and run from there (its package first on
``PYTHONPATH``), in the same script, on the same machine, one run after the other. Each variant
first runs an untimed 2-prompt warm-up (first-use costs), then the timed run: ``milr bench
SUITE --model shapes --critic shapes --mode both --steps 30 --batch-prompts 16``. Prints wall
seconds, the speed-up over the reference, the MILR accuracy and the per-phase seconds from
each run's summary. Run it under the shared CPU lock on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Seconds of compiling per run directory (``milr bench`` prints them with ``--compile``).
COMPILE_S: dict[str, float] = {}

VARIANTS = {
    "default": [],
    "static": ["--kv-cache", "static"],
    "compiled": ["--compile"],
}


def bench(pythonpath: str | None, suite: Path, out: Path, extra: list[str], args) -> float:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")])
    cmd = [sys.executable, "-m", "milr", "bench", str(suite), "--model", "shapes"]
    cmd += ["--critic", "shapes", "--mode", "both", "--steps", str(args.steps)]
    cmd += ["--batch-prompts", str(args.batch), "--no-progress", "--out", str(out), *extra]
    t = time.perf_counter()  # cwd: not a checkout (``-m milr`` looks in the cwd first)
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=out.parent)
    wall = time.perf_counter() - t
    if proc.returncode != 0:
        raise SystemExit(f"{cmd} failed:\n{proc.stderr[-3000:]}")
    found = re.findall(r"compiling the per-token steps took ([0-9.]+) s", proc.stderr)
    COMPILE_S[str(out)] = sum(float(x) for x in found)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref", default="750c75a")
    parser.add_argument("--ref-dir", default="/tmp/main750")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    args = parser.parse_args()
    from milr.shapes.evalset import write_shapeseval

    ref_dir = Path(args.ref_dir)
    if not ref_dir.exists():
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(ref_dir), args.ref],
            check=True,
        )
    work = Path(tempfile.mkdtemp(prefix="milr-lvm-"))
    full = write_shapeseval(work / "shapeseval.jsonl")
    lines = full.read_text().splitlines()
    suite = work / "suite.jsonl"
    suite.write_text("\n".join(lines[: args.limit] if args.limit else lines) + "\n")
    warm = work / "warm.jsonl"
    warm.write_text("\n".join(lines[:2]) + "\n")
    runs = [("ref " + args.ref, str(ref_dir), [])]  # each run's milr first on PYTHONPATH
    runs += [(name, str(ROOT), VARIANTS[name]) for name in args.variants]
    n = len(suite.read_text().splitlines())
    print(f"ShapesEval, {n} prompts, mode both, {args.steps} steps, --batch-prompts {args.batch}")
    print("| milr | wall s | speed-up | accuracy (MILR) | per phase (s, summed over prompts) |")
    print("|---|---|---|---|---|")
    base = None
    for i, (name, path, extra) in enumerate(runs):
        bench(path, warm, work / f"warm{i}", extra, args)
        out = work / f"run{i}"
        wall = bench(path, suite, out, extra, args)
        version = subprocess.run(
            [sys.executable, "-c", "import milr; print(milr.__file__)"],
            env={**os.environ, "PYTHONPATH": path},
            cwd=work,
            capture_output=True,
            text=True,
        ).stdout.strip()
        assert version.startswith(path), (name, version)  # the run used that checkout
        summary = json.loads((out / "summary.json").read_text())
        base = wall if base is None else base
        acc = summary.get("overall", {}).get("milr")
        timing: dict[str, float] = {}
        for line in (out / "results.jsonl").read_text().splitlines():
            for k, v in (json.loads(line)["trajectory"].get("timings") or {}).items():
                timing[k] = timing.get(k, 0.0) + float(v)
        phases = ", ".join(f"{k} {v:.1f}" for k, v in sorted(timing.items()))
        if COMPILE_S.get(str(out)) or COMPILE_S.get(str(work / f"warm{i}")):
            done = COMPILE_S.get(str(work / f"warm{i}"), 0.0) + COMPILE_S.get(str(out), 0.0)
            phases += f"; compiling {done:.1f} s (warm-up run and timed run)"
        print(f"| {name} | {wall:.1f} | {base / wall:.2f}x | {acc} | {phases} |")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
