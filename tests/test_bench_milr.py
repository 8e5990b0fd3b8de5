"""`milr bench` driving the real MILR optimizer: tiny random Janus, and the shapes model when shipped."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from milr.bench.cache import image_sha256
from milr.bench.records import load_all_records, shard_files
from milr.bench.runner import BenchOptions, run_bench


@pytest.fixture(scope="module")
def tiny_janus(tmp_path_factory):
    from milr.testing import save_tiny_janus

    return save_tiny_janus(tmp_path_factory.mktemp("tiny-janus") / "model", seed=0)


@pytest.fixture(scope="module")
def geneval3(shared_data, tmp_path_factory):
    lines = (shared_data / "geneval" / "evaluation_metadata.jsonl").read_text().splitlines()
    path = tmp_path_factory.mktemp("suite") / "geneval3.jsonl"
    path.write_text("\n".join([lines[0], lines[100], lines[300]]) + "\n")  # three different tags
    return path


def test_milr_records_match_the_optimizer_trajectory(tiny_janus, geneval3, tmp_path):
    out = tmp_path / "run"
    opts = BenchOptions(
        suite=str(geneval3),
        model=str(tiny_janus),
        critic=["color:target=red,min_fraction=0.3"],
        steps=2,
        out=str(out),
        progress=False,
        device="cpu",
        optimizer={"threshold": 0.0},  # r = score - 1 > 0 never holds: all steps run
    )
    summary = run_bench(opts)
    recs = load_all_records(out)
    assert [r["group"] for r in recs] == ["single_object", "two_object", "colors"]
    assert summary["records"] == 3 and set(summary["groups"]) == {
        "single_object",
        "two_object",
        "colors",
    }
    for rec in recs:
        traj = rec["trajectory"]
        assert traj["steps"] == 2 and traj["stop_reason"] == "max_steps"
        assert len(traj["scores"]) == 3 and traj["critic_calls"] == 3
        prompts = traj["prompts"]  # the exact prompts of the returned image (issue #12.1)
        assert prompts["style"] == "paper" and prompts["image"].endswith("<begin_of_image>")
        assert prompts["image"].startswith("<bos>") and prompts["reasoning"].startswith("<bos>")
        # evaluation critic == reward critic: the harness's scores of the saved images are the
        # optimizer's own step-0 and last-step scores, so the right images were saved
        assert rec["base"]["score"] == pytest.approx(traj["scores"][0])
        assert rec["milr"]["score"] == pytest.approx(traj["scores"][-1])
        for side in ("base", "milr"):
            with Image.open(out / rec[side]["image"]) as im:
                assert image_sha256(im.convert("RGB")) == rec[side]["image_sha256"]
        full = json.loads((out / rec["trajectory_file"]).read_text())
        assert full["config"]["seed"] == rec["seed"] and full["config"]["max_steps"] == 2
        assert rec["timings"]["optimizer_s"] > 0
    # resuming a finished run does no work and gives the same summary
    again = run_bench(opts)
    assert again["overall"] == summary["overall"]
    assert sum(len(f.read_text().splitlines()) for f in shard_files(out)) == 3


def test_bad_optimizer_option_fails_before_any_work(tiny_janus, geneval3, tmp_path):
    from milr.errors import MilrUserError

    opts = BenchOptions(
        suite=str(geneval3),
        model=str(tiny_janus),
        critic=["color"],
        steps=1,
        out=str(tmp_path / "bad"),
        progress=False,
        optimizer={"lr": -1},
    )
    with pytest.raises(MilrUserError, match="lr"):
        run_bench(opts)
    assert not list((tmp_path / "bad").glob("records/*.jsonl")) or all(
        not f.read_text() for f in (tmp_path / "bad").glob("records/*.jsonl")
    )


def _shapes_available() -> bool:
    try:
        from milr.registry import get_registry
        from milr.shapes.model import model_path

        registry = get_registry()
        return (
            model_path().is_dir()
            and "shapes" in registry.critics
            and "shapes" in registry.generators
        )
    except Exception:
        return False


@pytest.mark.slow
@pytest.mark.skipif(not _shapes_available(), reason="shapes model/critic not shipped in this build")
def test_shapeseval_end_to_end_with_crash_resume_and_two_ranks(tmp_path):
    """ShapesEval with the shapes model and critic: a crash mid-run resumed, and 2 gloo ranks."""
    from milr.shapes.evalset import write_shapeseval

    suite = write_shapeseval(tmp_path / "shapeseval.jsonl", per_tag=1, seed=0)
    # 4 prompts (single_object, two_object, counting, colors), 2 steps: a few seconds per run
    common = [
        str(suite),
        "--model",
        "shapes",
        "--critic",
        "shapes",
        "--steps",
        "2",
        "--limit",
        "4",
        "--no-progress",
        "--device",
        "cpu",
        "--no-report",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def bench(*args, torchrun=False):
        pre = (
            [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
            if torchrun
            else [sys.executable]
        )
        cmd = [*pre, "-m", "milr", "bench", *common, *map(str, args)]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        return proc

    def results(out: Path):
        s = json.loads((out / "summary.json").read_text())
        return (
            s["groups"],
            s["overall"],
            [
                (r["prompt_id"], r["base"]["image_sha256"], r["milr"]["image_sha256"])
                for r in load_all_records(out)
            ],
        )

    # single process in-process; the resumed run reuses the loaded model (one load for both)
    from milr.bench.runner import MILRSolver

    loaded: dict[str, MILRSolver] = {}

    def solver(opts, device):
        return loaded.setdefault("s", MILRSolver(opts, device))

    def run_in_process(out: Path):
        opts = BenchOptions(
            suite=str(suite),
            model="shapes",
            critic=["shapes"],
            steps=2,
            limit=4,
            out=str(out),
            progress=False,
            report=False,
            device="cpu",
        )
        return run_bench(opts, solver_factory=solver)

    single = tmp_path / "single"
    run_in_process(single)
    # the same run crashed while writing its 3rd record: 2 whole records and half of the 3rd
    crashed = tmp_path / "crashed"
    shutil.copytree(single / "records", crashed / "records")
    shutil.copy(single / "run.json", crashed / "run.json")
    shard = shard_files(crashed)[0]
    lines = shard.read_bytes().splitlines(keepends=True)
    assert len(lines) == 4
    shard.write_bytes(b"".join(lines[:2]) + lines[2][: len(lines[2]) // 2])
    run_in_process(crashed)
    assert len(load_all_records(crashed)) == 4
    ddp = tmp_path / "ddp"
    bench("--out", ddp, torchrun=True)
    assert len(shard_files(ddp)) == 2
    groups, overall, recs = results(single)
    assert len(recs) == 4 and set(groups) == {"single_object", "two_object", "counting", "colors"}
    assert results(crashed) == results(single)
    assert results(ddp) == results(single)
