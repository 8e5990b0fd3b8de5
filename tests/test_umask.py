"""Every file milr writes follows the umask, atomic writes included.

Colleagues on shared storage read a run through group/other permissions; a file created
through `tempfile.mkstemp` is 0600 whatever the umask, and renaming it keeps that.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import pytest
from test_critic_api_judge import SOLVER  # the flat-image toy solver

from milr.bench.cache import ScoreCache
from milr.bench.records import RecordShard, atomic_write_text, write_files_durably

UMASKS = (0o022, 0o002, 0o077)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask():
    """Set the process umask for one test, restored afterwards."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize("mask", UMASKS)
def test_atomic_writes_shards_and_the_cache_follow_the_umask(tmp_path, umask, mask):
    umask(mask)
    atomic_write_text(tmp_path / "run.json", "{}\n")
    write_files_durably([(tmp_path / "images" / "a.png", b"png"), (tmp_path / "b.json", b"{}")])
    RecordShard(tmp_path / "records" / "rank0.jsonl").close()
    cache = ScoreCache(tmp_path / "cache.sqlite")
    files = sorted(p for p in tmp_path.rglob("*") if p.is_file())
    names = {p.name for p in files}
    assert names >= {"run.json", "a.png", "b.json", "rank0.jsonl", "cache.sqlite"}, names
    assert "cache.sqlite-wal" in names  # SQLite's own files are checked too
    modes = {p.name: oct(_mode(p)) for p in files}
    cache.close()
    assert modes == {p.name: oct(0o666 & ~mask) for p in files}


@pytest.mark.parametrize("mask", (0o002, 0o027))
def test_a_bench_run_is_readable_as_the_umask_says(tmp_path, mask):
    """Every file of a real `milr bench` run (results, run.json, summary, images, contact
    sheets, record shards, the score cache) has mode 0o666 & ~umask."""
    from cli_helpers import milr_executable

    site = tmp_path / "site"
    site.mkdir()
    (site / "still_solver.py").write_text(SOLVER)
    suite = tmp_path / "suite.json"
    items = [
        {"prompt_id": i, "Prompt": f"a red lantern {i}", "Explanation": "x",
         "Category": "Cultural knowledge", "Subcategory": "Festival"}
        for i in (1, 2)
    ]  # fmt: skip
    suite.write_text(json.dumps(items))
    out = tmp_path / "run"
    args = [
        milr_executable(), "bench", str(suite), "--solver", "still_solver:make_solver",
        "--critic", "color:target=red", "--steps", "1", "--no-progress", "--out", str(out),
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(site)}
    proc = subprocess.run(
        ["sh", "-c", f'umask {mask:03o} && exec "$@"', "sh", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    files = sorted(p for p in out.rglob("*") if p.is_file())
    names = {str(p.relative_to(out)) for p in files}
    assert {"results.jsonl", "run.json", "summary.json", "summary.md"} <= names, names
    assert any(n.startswith("images/") for n in names) and any(n.endswith(".sqlite") for n in names)
    wrong = {n: oct(_mode(out / n)) for n in names if _mode(out / n) != 0o666 & ~mask}
    assert not wrong, f"expected {oct(0o666 & ~mask)} for every file; these differ: {wrong}"


def test_generate_output_follows_the_umask(tmp_path):
    """`milr generate` (images, trajectory.json, the reward plot) under a group-only umask."""
    from cli_helpers import milr_executable

    out = tmp_path / "gen"
    args = [
        milr_executable(), "generate", "a photo of a red circle", "--model", "shapes",
        "--critic", "shapes", "--steps", "1", "--device", "cpu", "-q", "--out", str(out),
    ]  # fmt: skip
    proc = subprocess.run(
        ["sh", "-c", 'umask 027 && exec "$@"', "sh", *args],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    modes = {p.name: oct(_mode(p)) for p in out.rglob("*") if p.is_file()}
    assert {"initial.png", "final.png", "trajectory.json", "reward.png"} <= set(modes), modes
    assert set(modes.values()) == {oct(0o640)}, modes
