"""`milr bench --batch-prompts`: the batched engine behind the harness (issue #15 part 3).

Records, resume after SIGKILL, two gloo ranks and a failing critic, on the tiny random Janus
in float64, where a batched prompt's result equals the unbatched one exactly.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from milr.bench.records import load_all_records, shard_files
from milr.bench.runner import BenchOptions, MILRSolver, run_bench

N_PROMPTS = 8


@pytest.fixture(scope="module")
def tiny_janus(tmp_path_factory):
    from milr.testing import save_tiny_janus

    return save_tiny_janus(tmp_path_factory.mktemp("tiny-janus") / "model", seed=0)


@pytest.fixture(scope="module")
def suite(shared_data, tmp_path_factory):
    lines = (shared_data / "geneval" / "evaluation_metadata.jsonl").read_text().splitlines()
    path = tmp_path_factory.mktemp("suite") / "geneval8.jsonl"
    path.write_text("\n".join(lines[i * 70] for i in range(N_PROMPTS)) + "\n")
    return path


COMMON = [
    "--critic",
    "color:target=red,min_fraction=0.2",
    "--steps",
    "3",
    "--device",
    "cpu",
    "--dtype",
    "float64",
    "--no-progress",
    "--no-report",
]


def _opts(suite, model, out, batch, **kw):
    return BenchOptions(
        suite=str(suite),
        model=str(model),
        critic=["color:target=red,min_fraction=0.2"],
        steps=3,
        out=str(out),
        progress=False,
        report=False,
        device="cpu",
        dtype="float64",
        batch_prompts=batch,
        **kw,
    )


def _results(out: Path):
    """What a run decided, per prompt: images, scores, verdicts, trajectory, error."""
    rows = {}
    for r in load_all_records(out):
        sides = tuple(
            (r[s]["image_sha256"], r[s]["score"], r[s]["passed"]) if r.get(s) else None
            for s in ("base", "milr")
        )
        traj = r.get("trajectory") or {}
        rows[r["prompt_id"], r["seed_index"]] = (
            sides,
            traj.get("scores"),
            traj.get("stop_reason"),
            (r.get("error") or "").split(":")[0],
        )
    return rows


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def unbatched(tiny_janus, suite, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "b1"
    run_bench(_opts(suite, tiny_janus, out, 1))
    return out


def test_batched_bench_records_equal_the_unbatched_run(tiny_janus, suite, unbatched, tmp_path):
    out = tmp_path / "b3"
    summary = run_bench(_opts(suite, tiny_janus, out, 3))
    assert summary["records"] == N_PROMPTS
    assert _results(out) == _results(unbatched)
    recs = load_all_records(out)
    assert all(r["timings"]["optimizer_s"] > 0 for r in recs)
    # the batch size is not a result setting: a run started with B=3 continues with B=1
    again = run_bench(_opts(suite, tiny_janus, out, 1))
    assert again["overall"] == summary["overall"]


def test_a_critic_failing_on_one_prompt_fails_only_its_record(
    tiny_janus, suite, unbatched, tmp_path
):
    from milr.critic import Critic

    class FailsOnPrompt(Critic):
        """The run's reward critic, except that it raises for one prompt of the suite."""

        name = "fails-on-prompt"

        def __init__(self, inner, bad: str) -> None:
            self.inner, self.bad = inner, bad

        def score_batch(self, images, prompts, metadata):
            if self.bad in prompts:
                raise RuntimeError(f"cannot score {self.bad!r}")
            return self.inner.score_batch(images, prompts, metadata)

    bad = load_all_records(unbatched)[2]["prompt"]

    def factory(opts, device):
        solver = MILRSolver(opts, device)
        solver.critic = FailsOnPrompt(solver.critic, bad)
        return solver

    out = tmp_path / "fails"
    opts = _opts(suite, tiny_janus, out, 4, eval_critic=["color:target=red,min_fraction=0.2"])
    run_bench(opts, solver_factory=factory)
    got, ref = _results(out), _results(unbatched)
    failed = [k for k, v in got.items() if v[3]]
    assert len(failed) == 1 and got[failed[0]][3] == "RuntimeError"
    assert {k: v for k, v in got.items() if k not in failed} == {
        k: v for k, v in ref.items() if k not in failed
    }


def test_out_of_memory_in_the_bench_halves_and_finishes(tiny_janus, suite, unbatched, tmp_path):
    from milr.engine.memory import phase_bytes
    from milr.generator import load_generator

    gen = load_generator(str(tiny_janus), device="cpu", dtype="float64")
    out = tmp_path / "oom"
    run_bench(_opts(suite, tiny_janus, out, 8, batch_memory=phase_bytes(gen, 2)))
    assert _results(out) == _results(unbatched)


def test_sigkill_mid_batched_run_then_resume(tiny_janus, suite, unbatched, tmp_path):
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
    resumed = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr
    assert _results(out) == _results(unbatched)


@pytest.mark.slow
def test_two_gloo_ranks_each_batch_what_they_claim(tiny_janus, suite, unbatched, tmp_path):
    out = tmp_path / "ddp"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += ["-m", "milr", "bench", str(suite), "--model", str(tiny_janus), *COMMON]
    cmd += ["--batch-prompts", "3", "--out", str(out)]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shards = shard_files(out)
    assert [p.name for p in shards] == ["rank-00000.jsonl", "rank-00001.jsonl"]
    counts = [len(p.read_text().splitlines()) for p in shards]
    assert sum(counts) == N_PROMPTS and min(counts) > 0  # claimed as slots free, not dealt
    assert _results(out) == _results(unbatched)


def test_bad_batch_prompts_is_a_one_line_user_error(tiny_janus, suite, tmp_path):
    cmd = [sys.executable, "-m", "milr", "bench", str(suite), "--model", str(tiny_janus)]
    cmd += [*COMMON, "--batch-prompts", "lots", "--out", str(tmp_path / "x")]
    proc = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert "--batch-prompts 'lots'" in proc.stderr and "Traceback" not in proc.stderr


def test_progress_bar_shows_prompts_in_flight(tiny_janus, suite, tmp_path, capsys):
    opts = _opts(suite, tiny_janus, tmp_path / "bar", 3, limit=4)
    opts.progress = True
    run_bench(opts)
    err = capsys.readouterr().err
    assert "active=3" in err and "4/4" in err
