"""A setup fault (`MilrUserError`) on one torchrun rank mid-run stops every rank promptly.

Ranks claim (prompt, seed) pairs from a counter in torch.distributed's store; the failing rank
sets an abort key in the same store, which the others read at their next claim and while they
wait at the end, so none of them works on or waits for `--dist-timeout`. Real gloo ranks under
torchrun, a third-party plugin distribution (solver + critic) loaded as a user's would be.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from plugin_fixtures import load_list, make_distribution

TOY = '''
import os
import random
import time

from PIL import Image

import milr
from milr.bench.runner import Outcome


class RankFault(milr.Critic):
    """Red fraction; on rank `rank` (torchrun's RANK) its call number `after` raises a
    MilrUserError, as a critic does when the user must fix something (a revoked API key)."""

    name = "rank-fault"
    description = "fails on purpose on one rank"

    def __init__(self, rank=1, after=2):
        self.rank, self.after, self.calls = int(rank), int(after), 0
        self._config = {"rank": rank, "after": after}

    def score_batch(self, images, prompts, metadata):
        self.calls += 1
        if os.environ.get("RANK") == str(self.rank) and self.calls > self.after:
            raise milr.MilrUserError("rank-fault: the API key was revoked; set a new one")
        out = []
        for im in images:
            r, g, b = im.convert("RGB").getpixel((0, 0))
            out.append(milr.CriticResult(float(r > 150), r > 150, {}))
        return out


@milr.hookimpl
def register_critics(register):
    register(RankFault)


class SlowSolver:
    def __init__(self, opts, device):
        self.critic = milr.build_critic(list(opts.critic))

    def solve(self, prompt, seed):
        rng = random.Random(seed)
        image = Image.new("RGB", (8, 8), (rng.randrange(256), 0, 0))
        time.sleep(1.0)  # work the other rank would go on doing without the abort key
        (res,) = milr.evaluate(self.critic, [image], [prompt.prompt], [prompt.metadata])
        traj = {"steps": 0, "stop_reason": "max_steps", "scores": [res.score],
                "rewards": [res.score - 1], "passed": [res.passed], "critic_calls": 1}
        return Outcome(image, image, traj, {"seed": seed})


def make_solver(opts, device):
    return SlowSolver(opts, device)
'''


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("abort-site")
    make_distribution(root, "milr-abort-toy", "0.1", {"abort_toy": TOY}, {"abort_toy": "abort_toy"})
    return root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.parametrize("failing", [1, 0])
def test_a_setup_fault_on_one_rank_stops_every_rank_promptly(site, tmp_path, failing):
    """Two ranks as two machines' torchrun would start them (RANK, WORLD_SIZE, MASTER_ADDR in
    the environment; no launcher that kills the survivor): rank `failing` hits a MilrUserError
    on its third image; both exit 2, each with one error line naming the fault, the other rank
    after a few records, although it had ~20 s of work left and --dist-timeout is 300 s."""
    from milr.shapes.evalset import write_shapeseval

    suite = write_shapeseval(tmp_path / "s.jsonl", per_tag=4, seed=3)  # 24 prompts, 1 s each
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env["MILR_LOAD_PLUGINS"] = load_list("milr-abort-toy")
    env.update(OMP_NUM_THREADS="1", WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(_free_port()))  # fmt: skip
    cmd = [
        sys.executable, "-m", "milr", "bench", str(suite), "--solver", "abort_toy:make_solver",
        "--critic", f"rank-fault:rank={failing},after=2", "--no-progress",
        "--dist-timeout", "300", "--out", str(tmp_path / "run"),
    ]  # fmt: skip
    t0 = time.monotonic()
    procs = [
        subprocess.Popen(
            cmd,
            env={**env, "RANK": str(r), "LOCAL_RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for r in range(2)
    ]
    outs = [p.communicate(timeout=400) for p in procs]
    took = time.monotonic() - t0
    fault = "rank-fault: the API key was revoked; set a new one"
    for rank, (proc, (_, err)) in enumerate(zip(procs, outs, strict=True)):
        assert proc.returncode == 2, (rank, err)
        lines = [line for line in err.strip().splitlines() if not line.startswith("warning: ")]
        assert len(lines) == 1 and lines[0].startswith("error: "), (rank, err)  # no traceback
        if rank == failing:
            assert lines[0] == f"error: {fault}"
        else:
            assert fault in lines[0] and f"rank {failing}" in lines[0], lines[0]
    # the other rank stopped at its next claim: a few records, not the ~20 left to do (1 s
    # each), and no wait for --dist-timeout (300 s)
    shard = tmp_path / "run" / "records" / f"rank-{1 - failing:05d}.jsonl"
    written = len(shard.read_text().splitlines()) if shard.exists() else 0
    assert written <= 8, f"rank {1 - failing} wrote {written} records after the abort"
    assert took < 120, f"took {took:.0f} s"
