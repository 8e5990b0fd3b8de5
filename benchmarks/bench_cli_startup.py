"""Import time of milr's CLI and wall time of `milr --help` / `milr critics` / `milr plugins`.

Run: python benchmarks/bench_cli_startup.py [--repeat 5]
Prints the median wall time of each command (subprocess, real console script), the top
self-import-time modules of `import milr.cli.main`, and whether torch got imported.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path


def console_script() -> str:
    beside = Path(sys.executable).parent / "milr"
    return str(beside) if beside.exists() else (shutil.which("milr") or "milr")


def wall(cmd: list[str], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        subprocess.run(cmd, capture_output=True, check=True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def import_profile() -> tuple[float, list[tuple[int, str]], bool]:
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", "import milr.cli.main"],
        capture_output=True,
        text=True,
        check=True,
    )
    rows = []
    total = 0
    for line in out.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        head, cumulative, name = line.split("|", 2)
        self_us = int(head.split(":")[1])
        rows.append((self_us, name.strip()))
        if name.strip() == "milr.cli.main":
            total = int(cumulative)
    heavy = any(name.strip() in {"torch", "transformers"} for _, name in rows)
    rows.sort(reverse=True)
    return total / 1e6, rows[:8], heavy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    exe = console_script()
    env_note = f"python {sys.version.split()[0]}, {os.cpu_count()} cpus"
    total, top, heavy = import_profile()
    print(f"# milr CLI startup ({env_note})")
    print(
        f"import milr.cli.main (cumulative, -X importtime): {total:.3f} s; torch/transformers imported: {heavy}"
    )
    print("top self-time imports:")
    for us, name in top:
        print(f"  {us / 1000:8.1f} ms  {name.strip()}")
    for args_ in (["--help"], ["critics"], ["plugins"]):
        print(
            f"milr {' '.join(args_):10s} median wall over {args.repeat}: {wall([exe, *args_], args.repeat):.3f} s"
        )
    print(
        f"python -c pass             median wall over {args.repeat}: {wall([sys.executable, '-c', 'pass'], args.repeat):.3f} s"
    )


if __name__ == "__main__":
    main()
