"""`milr bench --control`: a resample / best-of-N control beside MILR in the same run.

On the tiny random Janus in float64 (a batched prompt's result equals the unbatched one
exactly): records carry a ``control`` side sharing the base image, the batched engine, resume
after SIGKILL and two gloo ranks give the same records, and the summary has the intervals.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from milr.bench.records import load_all_records, shard_files
from milr.bench.runner import BenchOptions, run_bench

N_PROMPTS = 6
CRITIC = "color:target=red,min_fraction=0.2"
COMMON = [
    "--critic", CRITIC, "--steps", "3", "--device", "cpu", "--dtype", "float64",
    "--no-progress", "--no-report", "--control", "resample",
]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_janus(tmp_path_factory):
    from milr.testing import save_tiny_janus

    return save_tiny_janus(tmp_path_factory.mktemp("tiny-janus") / "model", seed=0)


@pytest.fixture(scope="module")
def suite(shared_data, tmp_path_factory):
    lines = (shared_data / "geneval" / "evaluation_metadata.jsonl").read_text().splitlines()
    path = tmp_path_factory.mktemp("suite") / "geneval6.jsonl"
    path.write_text("\n".join(lines[i * 90] for i in range(N_PROMPTS)) + "\n")
    return path


def _opts(suite, model, out, batch=1, **kw):
    return BenchOptions(
        suite=str(suite), model=str(model), critic=[CRITIC], steps=3, out=str(out),
        progress=False, report=False, device="cpu", dtype="float64", batch_prompts=batch, **kw,
    )  # fmt: skip


def _results(out: Path):
    rows = {}
    for r in load_all_records(out):
        sides = tuple(
            (r[s]["image_sha256"], r[s]["score"], r[s]["passed"]) if r.get(s) else None
            for s in ("base", "milr", "control")
        )
        rows[r["prompt_id"], r["seed_index"]] = (
            sides,
            (r.get("trajectory") or {}).get("scores"),
            (r.get("control_trajectory") or {}).get("scores"),
        )
    return rows


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def controlled(tiny_janus, suite, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ctl"
    summary = run_bench(_opts(suite, tiny_janus, out, control="resample"))
    return out, summary


def test_control_records_share_the_base_and_leave_milr_alone(
    tiny_janus, suite, controlled, tmp_path
):
    out, summary = controlled
    plain = tmp_path / "plain"
    run_bench(_opts(suite, tiny_janus, plain))
    recs, alone = load_all_records(out), load_all_records(plain)
    assert len(recs) == N_PROMPTS
    for rec, ref in zip(recs, alone):
        # MILR's side is the run without a control, bit for bit
        assert rec["milr"]["image_sha256"] == ref["milr"]["image_sha256"]
        assert rec["trajectory"]["scores"] == ref["trajectory"]["scores"]
        ctl = rec["control_trajectory"]
        assert ctl["scores"][0] == rec["trajectory"]["scores"][0]  # the shared base image
        assert rec["control"]["image"].endswith("-control.png")
        assert (out / rec["control"]["image"]).is_file()
        full = json.loads((out / rec["control_trajectory_file"]).read_text())
        assert full["config"]["control"] == "resample"
        assert all(st["updated"] == [] for st in full["steps"])
        if ctl["steps"] == 0:  # stopped at once: its image is the base image
            assert rec["control"]["image_sha256"] == rec["base"]["image_sha256"]
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["control"] == "resample"
    assert "control" not in json.loads((plain / "run.json").read_text())["settings"]
    stats = summary["statistics"]
    assert stats["oracle"] is True and stats["control"] == "resample"
    assert set(stats["sides"]) == {"base", "milr", "control"}
    mc = stats["paired"]["milr-control"]
    assert mc["images"] == N_PROMPTS and mc["ci95"][0] <= mc["difference"] <= mc["ci95"][1]
    md = (out / "summary.md").read_text()
    assert "Oracle run" in md and "control (resample)" in md and "McNemar" in md


def test_batched_control_run_equals_the_unbatched_one(tiny_janus, suite, controlled, tmp_path):
    out = tmp_path / "b4"
    run_bench(_opts(suite, tiny_janus, out, 4, control="resample"))
    assert _results(out) == _results(controlled[0])


def test_control_run_resumes_after_sigkill(tiny_janus, suite, controlled, tmp_path):
    out = tmp_path / "killed"
    cmd = [sys.executable, "-m", "milr", "bench", str(suite), "--model", str(tiny_janus)]
    cmd += [*COMMON, "--batch-prompts", "2", "--out", str(out)]
    proc = subprocess.Popen(cmd, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            files = shard_files(out) if (out / "records").exists() else []
            if files and len(files[0].read_bytes().splitlines()) >= 1:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    partial = load_all_records(out)
    assert 1 <= len(partial) < N_PROMPTS, "the kill should land mid-run"
    assert all(r.get("control") for r in partial)
    resumed = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert _results(out) == _results(controlled[0])
    # a run directory with a control refuses to continue without it (the settings differ)
    bare = [c for c in cmd if c not in ("--control", "resample")]
    proc = subprocess.run(bare, env=_env(), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "control" in proc.stderr


def test_best_of_n_control_draws_steps_plus_one(tiny_janus, suite, tmp_path):
    out = tmp_path / "bon"
    summary = run_bench(_opts(suite, tiny_janus, out, 3, control="best-of-n"))
    for rec in load_all_records(out):
        ctl = rec["control_trajectory"]
        assert ctl["critic_calls"] == 4 and ctl["steps"] == 3  # N = steps + 1, no early stop
        assert ctl["selected"] == "best"
        assert rec["control"]["score"] == pytest.approx(max(ctl["scores"]))
    assert summary["statistics"]["control"] == "best-of-n"


@pytest.mark.slow
def test_two_gloo_ranks_with_a_control(tiny_janus, suite, controlled, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "milr", "bench", str(suite), "--model", str(tiny_janus), *COMMON]
    cmd += ["--batch-prompts", "2", "--out", str(out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(shard_files(out)) == 2
    assert _results(out) == _results(controlled[0])


def test_bad_control_is_a_one_line_user_error(tiny_janus, suite, tmp_path):
    cmd = [sys.executable, "-m", "milr", "bench", str(suite), "--model", str(tiny_janus)]
    cmd += ["--control", "sampling", "--out", str(tmp_path / "x"), "--no-progress"]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "'sampling'" in proc.stderr and "Traceback" not in proc.stderr
