"""Run the real `milr` console script in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def milr_executable() -> str:
    beside = Path(sys.executable).parent / "milr"
    if beside.exists():
        return str(beside)
    found = shutil.which("milr")
    assert found, "the milr console script is not installed (pip install -e .)"
    return found


def run_milr(
    *args: str, env: dict[str, str] | None = None, timeout: float = 600, cwd: str | None = None
) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    # a shell that exports COLUMNS would make tables and --help wrap differently per machine
    full_env.pop("COLUMNS", None)
    full_env.update(env or {})
    return subprocess.run(
        [milr_executable(), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )


def run_still_bench(
    suite: Path, spec: str, out: Path, env: dict[str, str], timeout: float
) -> tuple[subprocess.CompletedProcess, list[dict]]:
    """`milr bench` one MILR step with the test's `still_solver` (on PYTHONPATH in `env`),
    rewarded by `spec`; returns the process and every record written under `out`."""
    proc = run_milr(
        "bench", str(suite), "--solver", "still_solver:make_solver", "--critic", spec,
        "--steps", "1", "--no-progress", "--out", str(out), env=env, timeout=timeout,
    )  # fmt: skip
    records = [
        json.loads(line)
        for f in sorted((out / "records").glob("*.jsonl"))
        for line in f.read_text().splitlines()
    ]
    return proc, records
