"""Run the real `milr` console script in a subprocess."""

from __future__ import annotations

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
    full_env.update(env or {})
    return subprocess.run(
        [milr_executable(), *args],
        capture_output=True,
        text=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )
