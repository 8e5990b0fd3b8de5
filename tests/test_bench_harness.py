"""`milr bench` end to end with a weight-free solver: resume after crashes, errors, cache, torchrun.

The solver and the failing critic here are a real third-party plugin distribution (entry point
in group ``milr``) on ``PYTHONPATH``, so the CLI, subprocesses and torchrun ranks load them the
way they would load a user's plugin. The real MILR optimizer with the shapes model is exercised
in ``test_bench_milr.py``.
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
from plugin_fixtures import allow, load_list, make_distribution

from milr.bench.records import load_all_records, read_jsonl, shard_files
from milr.bench.summary import summarize

TOY = '''
"""A weight-free stand-in for MILR: a seeded random search over flat colours."""
import random
import time

from PIL import Image

import milr
from milr.bench.runner import Outcome

PALETTE = [(220, 30, 30), (30, 70, 220), (30, 160, 60), (235, 215, 25)]


class Flaky(milr.Critic):
    """Fraction of red pixels; raises for prompts containing `fail_word`."""

    name = "flaky"
    description = "red fraction; fails on purpose for prompts containing fail_word"

    def __init__(self, fail_word=None):
        self.fail_word = fail_word
        self._config = {"fail_word": fail_word}

    def score_batch(self, images, prompts, metadata):
        out = []
        for im, p in zip(images, prompts):
            if self.fail_word and self.fail_word in p:
                raise RuntimeError(f"flaky critic refuses {p!r}")
            rgb = im.convert("RGB")
            px = [rgb.getpixel((x, y)) for y in range(rgb.height) for x in range(rgb.width)]
            red = sum(1 for r, g, b in px if r > 150 and g < 100 and b < 100) / len(px)
            out.append(milr.CriticResult(red, red >= 0.5, {"red": red}))
        return out


@milr.hookimpl
def register_critics(register):
    register(Flaky)


def _image(rng):
    base = rng.choice(PALETTE)
    im = Image.new("RGB", (16, 16), base)
    for _ in range(rng.randrange(0, 200)):
        im.putpixel((rng.randrange(16), rng.randrange(16)), rng.choice(PALETTE))
    return im


class ToySolver:
    def __init__(self, opts, device):
        self.critic = milr.build_critic(list(opts.critic))
        self.steps = opts.steps
        self.sleep = float(opts.optimizer.get("sleep", 0.0))

    def solve(self, prompt, seed):
        rng = random.Random(seed)
        image = base = _image(rng)
        scores, passed = [], []
        for step in range(self.steps + 1):
            if step:
                image = _image(rng)
                time.sleep(self.sleep)
            (res,) = milr.evaluate(self.critic, [image], [prompt.prompt], [prompt.metadata])
            scores.append(res.score)
            passed.append(res.passed)
            if res.passed:
                break
        traj = {"steps": len(scores) - 1, "stop_reason": "passed" if passed[-1] else "max_steps",
                "scores": scores, "rewards": [s - 1 for s in scores], "passed": passed,
                "critic_calls": len(scores)}
        return Outcome(base, image, traj, {"seed": seed, "scores": scores})


def make_solver(opts, device):
    return ToySolver(opts, device)
'''


@pytest.fixture(scope="module")
def toy_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("toy-site")
    make_distribution(site, "milr-bench-toy", "0.1", {"bench_toy": TOY}, {"bench_toy": "bench_toy"})
    return site


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    """A small ShapesEval file: 2 prompts per tag (12)."""
    from milr.shapes.evalset import write_shapeseval

    return write_shapeseval(
        tmp_path_factory.mktemp("suite") / "shapeseval.jsonl", per_tag=2, seed=3
    )


def _env(site: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(site), env.get("PYTHONPATH", "")])
    env["MILR_LOAD_PLUGINS"] = load_list("milr-bench-toy")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _bench(site, *args, check=True, **kw):
    cmd = [sys.executable, "-m", "milr", "bench", *map(str, args)]
    proc = subprocess.run(cmd, env=_env(site), capture_output=True, text=True, timeout=300, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"{cmd} exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


BASE = ["--solver", "bench_toy:make_solver", "--critic", "flaky", "--steps", "4", "--no-progress"]


def _results(out: Path) -> dict:
    """The deterministic part of a run: the summary's results and per-record verdicts."""
    recs = load_all_records(out)
    summary = json.loads((out / "summary.json").read_text())
    summary.pop("timing"), summary.pop("fingerprint", None), summary.pop("settings", None)
    per = [
        (
            r["prompt_id"],
            r["seed_index"],
            r["seed"],
            r["base"]["image_sha256"],
            r["milr"]["image_sha256"],
            r["milr"]["passed"],
            r["trajectory"]["scores"],
        )
        for r in recs
    ]
    return {"summary": summary, "records": per}


@pytest.fixture(scope="module")
def reference(toy_site, suite, tmp_path_factory):
    """An uninterrupted single-process run with 2 seeds per prompt."""
    out = tmp_path_factory.mktemp("ref") / "run"
    proc = _bench(toy_site, suite, *BASE, "--seeds", "2", "--out", out)
    assert "ShapesEval" in proc.stdout and "overall" in proc.stdout
    return out


def test_run_writes_records_summary_and_report(reference):
    recs = load_all_records(reference)
    assert len(recs) == 24 and {r["seed_index"] for r in recs} == {0, 1}
    assert len(read_jsonl(reference / "results.jsonl")) == 24
    rec = recs[0]
    assert rec["benchmark"] == "shapes" and rec["group"] == "single_object"
    assert (reference / rec["base"]["image"]).is_file() and (
        reference / rec["milr"]["image"]
    ).is_file()
    assert rec["milr"]["passed"] == (rec["milr"]["score"] >= 0.5)
    t = rec["timings"]
    assert t["total_s"] >= t["optimizer_s"] + t["eval_s"]
    summary = json.loads((reference / "summary.json").read_text())
    assert summary["benchmark"] == "shapes" and summary["metric"] == "accuracy"
    tags = summary["groups"]
    assert list(tags) == [
        "single_object",
        "two_object",
        "counting",
        "colors",
        "position",
        "color_attr",
    ]
    for side in ("base", "milr"):
        expect = sum(tags[t][side]["accuracy"] for t in tags) / 6
        assert summary["overall"][side] == pytest.approx(expect)
    # the toy search stops on the first passing image, so MILR never does worse than its start
    assert summary["overall"]["milr"] >= summary["overall"]["base"]
    md = (reference / "summary.md").read_text()
    assert "| **overall** |" in md
    for tag in tags:
        assert (reference / "contact" / f"{tag}.png").is_file()
    assert (reference / "reward_vs_step.png").is_file()
    assert (reference / "accuracy_vs_budget.png").is_file()


def test_seeds_depend_only_on_run_seed_and_prompt(reference, toy_site, suite, tmp_path):
    """A run over a subset (--limit) gets the same seeds and images for the same prompts."""
    out = tmp_path / "subset"
    _bench(toy_site, suite, *BASE, "--seeds", "2", "--limit", "3", "--out", out)
    sub = {(r["prompt_id"], r["seed_index"]): r for r in load_all_records(out)}
    ref = {(r["prompt_id"], r["seed_index"]): r for r in load_all_records(reference)}
    assert len(sub) == 6
    for key, rec in sub.items():
        assert rec["seed"] == ref[key]["seed"]
        assert rec["milr"]["image_sha256"] == ref[key]["milr"]["image_sha256"]


def test_sigkill_then_resume_matches_uninterrupted(reference, toy_site, suite, tmp_path):
    out = tmp_path / "killed"
    cmd = [
        sys.executable,
        "-m",
        "milr",
        "bench",
        str(suite),
        *BASE,
        "--seeds",
        "2",
        "--out",
        str(out),
        "--opt",
        "sleep=0.1",
    ]
    proc = subprocess.Popen(
        cmd, env=_env(toy_site), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            files = shard_files(out) if out.exists() else []
            if files and len(files[0].read_bytes().splitlines()) >= 5:
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    partial = load_all_records(out)
    assert 5 <= len(partial) < 24, "the kill should land mid-run"
    assert not (out / "summary.json").exists()
    proc2 = _bench(toy_site, suite, *BASE, "--seeds", "2", "--out", out, "--opt", "sleep=0.1")
    assert "resuming" in proc2.stderr
    assert _results(out) == _results(reference)


def test_torn_last_line_is_cut_and_resumed(reference, toy_site, suite, tmp_path):
    out = tmp_path / "torn"
    _bench(toy_site, suite, *BASE, "--seeds", "2", "--limit", "4", "--out", out)
    shard = shard_files(out)[0]
    data = shard.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    shard.write_bytes(data[: last + 40])  # a crash in the middle of writing the 8th record
    assert len(load_all_records(out)) == 7
    _bench(toy_site, suite, *BASE, "--seeds", "2", "--out", out)
    lines = shard.read_bytes().splitlines()
    assert all(json.loads(line) for line in lines) and len(lines) == 24
    assert _results(out) == _results(reference)


def test_two_rank_torchrun_gloo_equals_single_process(reference, toy_site, suite, tmp_path):
    out = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "milr",
        "bench",
        str(suite),
        *BASE,
        "--seeds",
        "2",
        "--out",
        str(out),
    ]
    proc = subprocess.run(cmd, env=_env(toy_site), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    shards = shard_files(out)
    assert [p.name for p in shards] == ["rank-00000.jsonl", "rank-00001.jsonl"]
    per_rank = [read_jsonl(p) for p in shards]
    assert sum(len(r) for r in per_rank) == 24 and all(per_rank)  # claimed, not dealt
    assert {r["rank"] for r in per_rank[1]} == {1}
    keys = [(r["prompt_id"], r["seed_index"]) for r in per_rank[0] + per_rank[1]]
    assert len(set(keys)) == 24  # each (prompt, seed) claimed by exactly one rank
    once = (out / "summary.md").read_text(encoding="utf-8").count("| **overall** |")
    assert once >= 1 and proc.stdout.count("| **overall** |") == once  # only rank 0 prints it
    assert _results(out) == _results(reference)


def test_two_gloo_ranks_claiming_resume_after_sigkill(reference, toy_site, suite, tmp_path):
    """Issue #21: ranks claim work from the store; killing the whole job mid-run and starting it
    again on 2 ranks finishes exactly the missing pairs, and the results are the reference's."""
    out = tmp_path / "ddp-killed"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
        "-m", "milr", "bench", str(suite), *BASE, "--seeds", "2", "--out", str(out),
        "--opt", "sleep=0.1",
    ]  # fmt: skip
    proc = subprocess.Popen(
        cmd, env=_env(toy_site), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.time() + 180
        while time.time() < deadline:
            if out.exists() and len(load_all_records(out)) >= 6:
                break
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both ranks
    finally:
        proc.wait(timeout=30)
    partial = load_all_records(out)
    assert 6 <= len(partial) < 24, "the kill should land mid-run"
    proc2 = subprocess.run(cmd, env=_env(toy_site), capture_output=True, text=True, timeout=300)
    assert proc2.returncode == 0, proc2.stdout + proc2.stderr
    assert "resuming" in proc2.stderr
    keys = [(r["prompt_id"], r["seed_index"]) for r in load_all_records(out)]
    assert len(keys) == len(set(keys)) == 24
    assert _results(out) == _results(reference)


def test_critic_failure_on_some_prompts_is_recorded_and_counted(toy_site, suite, tmp_path):
    out = tmp_path / "flaky"
    # the reward critic fails on "diamond" prompts (no images), the evaluation critic on "triangle"
    proc = _bench(
        toy_site,
        suite,
        *BASE[:2],
        "--critic",
        "flaky:fail_word=diamond",
        "--steps",
        "2",
        "--eval-critic",
        "flaky:fail_word=triangle",
        "--no-progress",
        "--out",
        out,
        check=False,
    )
    # records failed: exit 1, with the count and the first reason of each kind on stderr
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "records failed; first of each kind:" in proc.stderr
    assert "generation: RuntimeError: prompt" in proc.stderr
    assert "evaluation: RuntimeError: prompt" in proc.stderr
    recs = load_all_records(out)
    failed = [r for r in recs if r["error"]]
    assert failed and all("diamond" in r["prompt"] for r in failed)
    assert all("flaky critic refuses" in r["error"] for r in failed)
    assert all(r["base"] is None for r in failed)
    eval_err = [r for r in recs if not r["error"] and r["milr"]["error"]]
    assert eval_err and all(
        "triangle" in r["prompt"] and "diamond" not in r["prompt"] for r in eval_err
    )
    ok = [r for r in recs if not r["error"] and not r["milr"]["error"]]
    assert ok and all(r["milr"]["passed"] is not None for r in ok)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["failed_records"] == len(failed)
    assert summary["eval_errors"]["milr"] == len(eval_err)  # failed generations apart
    assert summary["all_images"]["milr"]["generation_errors"] == len(failed)
    assert summary["all_images"]["milr"]["scored"] == len(ok)


def test_config_mismatch_refused_then_forced(reference, toy_site, suite, tmp_path):
    out = tmp_path / "mix"
    _bench(toy_site, suite, *BASE, "--limit", "2", "--out", out)
    proc = _bench(
        toy_site,
        suite,
        *BASE[:-3],
        "--steps",
        "6",
        "--seed",
        "7",
        "--no-progress",
        "--limit",
        "2",
        "--out",
        out,
        check=False,
    )
    assert proc.returncode == 2
    assert (
        "steps: 4 -> 6" in proc.stderr
        and "seed: 42 -> 7" in proc.stderr
        and "--force" in proc.stderr
    )
    proc = _bench(
        toy_site,
        suite,
        *BASE[:-3],
        "--steps",
        "6",
        "--no-progress",
        "--limit",
        "3",
        "--out",
        out,
        "--force",
    )
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["steps"] == 6 and run["history"][0]["settings"]["steps"] == 4
    assert len(load_all_records(out)) == 3


def test_rescore_uses_cache_and_no_regeneration(toy_site, suite, tmp_path):
    out = tmp_path / "rescore"
    _bench(toy_site, suite, *BASE, "--limit", "4", "--out", out)
    before = {r["prompt_id"]: r for r in load_all_records(out)}
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")}
    proc = _bench(
        toy_site,
        "rescore",
        out,
        "--eval-critic",
        "color:target=blue,min_fraction=0.5",
        "--no-report",
    )
    assert "base" in proc.stdout
    after = {r["prompt_id"]: r for r in load_all_records(out)}
    assert {p: p.stat().st_mtime_ns for p in (out / "images").rglob("*.png")} == mtimes
    for pid, rec in after.items():
        assert rec["milr"]["image_sha256"] == before[pid]["milr"]["image_sha256"]
        assert (
            "fraction" in rec["milr"]["details"]["critics"]["color"]["details"]
        )  # colour critic now
    run = json.loads((out / "run.json").read_text())
    assert run["settings"]["eval_critic"] == ["color:target=blue,min_fraction=0.5"]
    # scoring the same images with the same critic again is served from the cache
    assert "score cache: 0 hits, 8 misses" in proc.stderr
    proc = _bench(
        toy_site,
        "rescore",
        out,
        "--eval-critic",
        "color:target=blue,min_fraction=0.5",
        "--no-report",
    )
    assert "score cache: 8 hits, 0 misses" in proc.stderr
    assert [r["milr"]["score"] for r in load_all_records(out)] == [
        r["milr"]["score"] for r in after.values()
    ]
    # and `milr bench summary DIR` prints the same table again
    proc = _bench(toy_site, "summary", out, "--no-report")
    assert "| **overall** |" in proc.stdout
    assert summarize(load_all_records(out), "shapes")["records"] == 4


def test_rescore_and_report_read_saved_images_through_the_one_converter(toy_site, suite, tmp_path):
    """Images in a run folder are read by `milr.images.open_rgb`: a 16-bit grey PNG (a user
    re-saved one) is mid-grey, as `milr score` reads it; rescore used to clip it to white."""
    import numpy as np
    from PIL import Image

    out = tmp_path / "grey16"
    _bench(toy_site, suite, *BASE, "--limit", "1", "--out", out)
    (rec,) = load_all_records(out)
    for side in ("base", "milr"):
        grey16 = Image.fromarray(np.full((16, 16), 128 * 257, dtype=np.uint16))
        grey16.save(out / rec[side]["image"])
        assert Image.open(out / rec[side]["image"]).mode == "I;16"
    _bench(toy_site, "rescore", out, "--eval-critic", "color:target=gray")
    (rec,) = load_all_records(out)
    assert rec["base"]["score"] == rec["milr"]["score"] == 1.0


def test_progress_bar_and_resume_flag(toy_site, suite, tmp_path):
    out = tmp_path / "progress"
    proc = _bench(toy_site, suite, *BASE[:-1], "--limit", "3", "--out", out)
    last = proc.stderr.replace("\r", "\n").strip().splitlines()[-1]
    assert "3/3" in last and "base=" in last and "milr=" in last and "err=0" in last
    proc = _bench(toy_site, suite, *BASE, "--resume", "--out", tmp_path / "nothing", check=False)
    assert proc.returncode == 2 and "holds no run to resume" in proc.stderr


def test_wise_and_t2i_suites_run_and_aggregate(toy_site, shared_data, tmp_path, fresh_plugins):
    """In-process runs over a WISE fixture and a T2I-CompBench file, each in its own aggregation."""
    from test_bench_suites import WISE_ITEMS

    from milr.bench.runner import BenchOptions, run_bench
    from milr.bench.suites import WISE_WEIGHTS

    fresh_plugins.syspath_prepend(str(toy_site))
    allow(fresh_plugins, "milr-bench-toy")
    import bench_toy

    wise = tmp_path / "wise.json"
    wise.write_text(json.dumps(WISE_ITEMS))
    opts = BenchOptions(
        suite=str(wise),
        critic=["flaky"],
        steps=2,
        out=str(tmp_path / "w"),
        progress=False,
        report=False,
    )
    s = run_bench(opts, solver_factory=bench_toy.make_solver)
    assert (
        s["benchmark"] == "wise"
        and s["metric"] == "score"
        and list(s["groups"]) == list(WISE_WEIGHTS)
    )
    for side in ("base", "milr"):
        expect = sum(WISE_WEIGHTS[g] * e[side]["score"] for g, e in s["groups"].items())
        assert s["overall"][side] == pytest.approx(expect)
    assert "WISE-weighted" in (tmp_path / "w" / "summary.md").read_text()
    from milr.bench.export import export_run

    assert export_run(tmp_path / "w", tmp_path / "wise-images") == 6
    assert sorted(p.name for p in (tmp_path / "wise-images").iterdir()) == sorted(
        f"{item['prompt_id']}.png" for item in WISE_ITEMS
    )

    color = shared_data / "t2i-compbench" / "color_val.txt"
    opts = BenchOptions(
        suite=str(color),
        critic=["flaky"],
        steps=2,
        limit=3,
        out=str(tmp_path / "t"),
        progress=False,
        report=False,
    )
    s = run_bench(opts, solver_factory=bench_toy.make_solver)
    assert (
        s["benchmark"] == "t2i-compbench" and list(s["groups"]) == ["color"] and s["records"] == 3
    )
    assert s["overall"]["milr"] == pytest.approx(s["groups"]["color"]["milr"]["score"])


def test_unusable_score_cache_warns_and_the_run_goes_on(
    toy_site, suite, tmp_path, fresh_plugins, capsys
):
    from milr.bench.runner import BenchOptions, run_bench

    fresh_plugins.syspath_prepend(str(toy_site))
    allow(fresh_plugins, "milr-bench-toy")
    import bench_toy

    junk = tmp_path / "junk.sqlite"
    junk.write_bytes(b"this is not a database" * 100)
    opts = BenchOptions(
        suite=str(suite),
        critic=["flaky"],
        steps=1,
        limit=2,
        out=str(tmp_path / "c"),
        cache=str(junk),
        progress=False,
        report=False,
    )
    s = run_bench(opts, solver_factory=bench_toy.make_solver)
    assert s["records"] == 2 and s["eval_errors"] == {"base": 0, "milr": 0}
    assert "score cache" in capsys.readouterr().err


def test_export_in_geneval_layout(reference, toy_site, tmp_path):
    dest = tmp_path / "geneval-layout"
    proc = _bench(toy_site, "export", reference, dest)
    assert "exported 24 milr images" in proc.stdout
    recs = {(r["prompt_id"], r["seed_index"]): r for r in load_all_records(reference)}
    for (pid, s), rec in recs.items():
        sample = dest / pid / "samples" / f"{s:04d}.png"
        assert sample.read_bytes() == (reference / rec["milr"]["image"]).read_bytes()
        assert json.loads((dest / pid / "metadata.jsonl").read_text()) == rec["metadata"]


def test_startup_failure_leaves_no_run_to_refuse(toy_site, suite, tmp_path):
    out = tmp_path / "typo"
    proc = _bench(toy_site, suite, *BASE[:2], "--critic", "flakyy", "--out", out, check=False)
    assert proc.returncode == 2 and "unknown critic 'flakyy'" in proc.stderr
    # a bad model path is only found by the solver, after run.json was written ...
    proc = _bench(
        toy_site,
        suite,
        "--critic",
        "color",
        "--model",
        "/nonexistent/model",
        "--out",
        out,
        check=False,
    )
    assert proc.returncode == 2 and "/nonexistent/model" in proc.stderr
    # ... yet the corrected command is not refused: the directory holds no records to mix
    _bench(toy_site, suite, *BASE, "--limit", "1", "--out", out)
    assert len(load_all_records(out)) == 1
