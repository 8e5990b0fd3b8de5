"""Every setup fault before the first image; --dry-run; `milr download`; failed records exit 1.

The critics are the real built-ins (shapes, api-judge); solvers are small stand-ins so the
tests stay fast, and one test drives the `milr` console script as a new user would.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

import pytest
from cli_helpers import run_milr

from milr import Critic, Member, MilrUserError, Route
from milr.bench.options import BenchOptions
from milr.bench.records import shard_files
from milr.bench.runner import run_bench
from milr.bench.solvers import Outcome

GENEVAL_LINES = 3


@pytest.fixture
def geneval_suite(shared_data, tmp_path):
    """The first lines of GenEval's own metadata file (COCO classes)."""
    src = shared_data / "geneval" / "evaluation_metadata.jsonl"
    lines = src.read_text(encoding="utf-8").splitlines()[:GENEVAL_LINES]
    path = tmp_path / "evaluation_metadata.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def shapes_suite(tmp_path):
    """A GenEval-format file whose classes the shapes critic knows."""
    rows = [
        {"tag": "single_object", "include": [{"class": "circle", "count": 1}],
         "prompt": "a photo of a circle"},
        {"tag": "counting", "include": [{"class": "square", "count": 2}],
         "prompt": "a photo of two squares"},
    ]  # fmt: skip
    path = tmp_path / "shapes.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _opts(suite: Path, out: Path, **kw) -> BenchOptions:
    base = dict(suite=str(suite), model="shapes", critic=["shapes"], steps=1, out=str(out),
                progress=False, report=False, device="cpu")  # fmt: skip
    base.update(kw)
    return BenchOptions(**base)


class _Recorder:
    """A solver factory that counts its calls and whose solver draws a blank image."""

    def __init__(self, fail: BaseException | None = None) -> None:
        self.built = 0
        self.solved = 0
        self.fail = fail

    def __call__(self, opts, device):
        self.built += 1
        return self

    def solve(self, prompt, seed):
        from PIL import Image

        self.solved += 1
        if self.fail is not None:
            raise self.fail
        im = Image.new("RGB", (64, 64), "white")
        return Outcome(im, im, {"steps": 0, "scores": [0.0]})


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for f in shard_files(out) for line in f.read_text().splitlines()]


def test_suite_the_critic_cannot_judge_stops_before_the_solver(geneval_suite, tmp_path):
    solver = _Recorder()
    out = tmp_path / "run"
    with pytest.raises(MilrUserError) as exc:
        run_bench(_opts(geneval_suite, out), solver_factory=solver)
    text = str(exc.value)
    assert "\n" not in text
    assert text.startswith(f"reward critic cannot judge {GENEVAL_LINES} of {GENEVAL_LINES} prompts")
    assert "'bench' is not a known class" in text and "--critic geneval" in text
    assert solver.built == 0 and solver.solved == 0  # the generator never loaded
    assert _records(out) == [] and not (out / "results.jsonl").exists()


def test_evaluation_critic_without_its_api_key_stops_before_the_solver(
    shapes_suite, tmp_path, monkeypatch
):
    monkeypatch.delenv("MILR_TEST_ABSENT_KEY", raising=False)
    judge = "api-judge:base_url=http://127.0.0.1:9/v1,model=m,api_key_env=MILR_TEST_ABSENT_KEY"
    solver = _Recorder()
    with pytest.raises(MilrUserError, match=r"^evaluation critic: api-judge critic: environment "
                       "variable MILR_TEST_ABSENT_KEY is not set"):  # fmt: skip
        run_bench(_opts(shapes_suite, tmp_path / "run", eval_critic=[judge]), solver_factory=solver)
    assert solver.built == 0


def test_user_error_while_solving_stops_the_run_and_records_nothing(shapes_suite, tmp_path):
    solver = _Recorder(fail=MilrUserError("the judge needs a key"))
    out = tmp_path / "run"
    with pytest.raises(MilrUserError, match="the judge needs a key"):
        run_bench(_opts(shapes_suite, out), solver_factory=solver)
    assert solver.solved == 1 and _records(out) == []


def test_rerun_redoes_setup_faults_an_earlier_milr_recorded(shapes_suite, tmp_path):
    out = tmp_path / "run"
    run_bench(_opts(shapes_suite, out), solver_factory=_Recorder(fail=RuntimeError("boom")))
    assert len(_records(out)) == 2
    # what an earlier milr wrote for a setup fault: one MilrUserError record per prompt
    for f in shard_files(out):
        f.write_text(f.read_text().replace("RuntimeError: boom", "MilrUserError: no key"))
    again = _Recorder()
    run_bench(_opts(shapes_suite, out), solver_factory=again)
    assert again.solved == 2  # not counted as finished
    assert all(not r.get("error") for r in json.loads(
        "[" + ",".join((out / "results.jsonl").read_text().splitlines()) + "]"
    ))  # fmt: skip
    # ordinary per-image failures stay finished (only --retry-errors redoes them)
    run_bench(_opts(shapes_suite, out), solver_factory=_Recorder(fail=RuntimeError("x")))
    third = _Recorder()
    run_bench(_opts(shapes_suite, out), solver_factory=third)
    assert third.solved == 0


def test_check_item_of_routes_and_ensembles():
    from milr.critics.shapes import ShapesCritic

    route = Route([Member(ShapesCritic(), when=("color",))])
    route.check_item("a photo of a red circle", {"category": "color"})
    with pytest.raises(MilrUserError, match="category='spatial' is routed to no critic"):
        route.check_item("a photo of a red circle", {"category": "spatial"})
    with pytest.raises(MilrUserError, match="'bench' is not a known class"):
        route.check_item("x", {"category": "color", "include": [{"class": "bench", "count": 1}]})


class _Loads(Critic):
    name = "loads"

    def prepare(self):
        raise MilrUserError("weights 'x' are not in the cache")

    def score_batch(self, images, prompts, metadata):
        raise AssertionError("never scored")


def test_ensemble_prepare_forwards_to_members():
    from milr import Ensemble
    from milr.critics.shapes import ShapesCritic
    from milr.preflight import prepare

    ens = Ensemble([(ShapesCritic(), 1.0), (_Loads(), 0.0)])
    with pytest.raises(MilrUserError, match=r"^reward critic: weights 'x' are not in the cache$"):
        prepare(ens, "reward")
    assert ens.weights_ids() == []


# ------------------------------------------------------------------------------ the CLI

FAILING_SOLVER = """
from milr.bench.solvers import Outcome

class Failing:
    def __init__(self, opts, device):
        pass

    def solve(self, prompt, seed):
        raise RuntimeError("the GPU fell over on " + prompt.id)

def make(opts, device):
    return Failing(opts, device)
"""


def test_cli_new_user_runs_and_failed_records(geneval_suite, shapes_suite, tmp_path):
    # the reproduction: GenEval's file with the default `shapes` critic (exit 0 before)
    out = tmp_path / "ge"
    res = run_milr("bench", str(geneval_suite), "--steps", "1", "--out", str(out), "-q",
                   "--no-report", "--device", "cpu")  # fmt: skip
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: reward critic cannot judge 3 of 3")
    assert _records(out) == []
    # a solver failing every record: exit 1, the count and the first reason of each kind
    (tmp_path / "failing_solver.py").write_text(FAILING_SOLVER)
    env = {"PYTHONPATH": str(tmp_path) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = run_milr("bench", str(shapes_suite), "--steps", "1", "--out", str(tmp_path / "f"),
                   "-q", "--no-report", "--device", "cpu", "--solver", "failing_solver:make",
                   env=env)  # fmt: skip
    assert res.returncode == 1, res.stderr
    assert "error: 2 of 2 records failed; first of each kind:" in res.stderr
    assert "generation: RuntimeError: prompt 00000 seed 0: RuntimeError: the GPU fell over" in (
        res.stderr
    )


# ------------------------------------------------------------------------------ --dry-run


def _fake_hub_cache(hf_home: Path, repo_id: str, folder: Path) -> str:
    """Lay `folder`'s files out as the Hub client caches a download of `repo_id` (main)."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snap = repo / "snapshots" / commit
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        data = f.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        link = snap / f.relative_to(folder)
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(commit)
    return commit


def test_dry_run_plans_without_loading(shapes_suite, tmp_path, monkeypatch):
    from milr.bench.plan import bench_plan
    from milr.preflight import format_plan

    judge = "api-judge:base_url=http://127.0.0.1:9/v1,model=m,api_key_env=MILR_TEST_ABSENT_KEY"
    hf_home = tmp_path / "hf"
    cached = tmp_path / "cached-model"
    cached.mkdir()
    (cached / "config.json").write_text("{}")
    _fake_hub_cache(hf_home, "acme/cached-model", cached)
    monkeypatch.setenv("HF_HOME", str(hf_home))
    monkeypatch.setenv("HF_HUB_CACHE", str(hf_home / "hub"))
    import huggingface_hub.constants as c

    monkeypatch.setattr(c, "HF_HUB_CACHE", str(hf_home / "hub"))
    opts = _opts(shapes_suite, tmp_path / "never", model="acme/absent-model", steps=3, seeds=2,
                 eval_critic=[judge], critic=["shapes", "vqa:weights=acme/cached-model"])  # fmt: skip
    plan, done = bench_plan(opts)
    assert done == 0 and not (tmp_path / "never").exists()
    assert (plan.prompts, plan.seeds, plan.records) == (2, 2, 4)
    assert plan.max_generations == plan.max_reward_calls == 4 * (1 + 3)
    assert plan.eval_calls == 8 and plan.api_calls == {"api-judge": 8}
    assert dict(plan.weights) == {"acme/absent-model": "download",
                                  "acme/cached-model": "cached"}  # fmt: skip
    text = format_plan(plan, "milr bench")
    assert "would download: acme/absent-model" in text
    assert "API calls: at most 8 by critic 'api-judge'" in text


def test_cli_generate_dry_run(tmp_path):
    out = tmp_path / "out"
    res = run_milr("generate", "a photo of a circle", "-M", "acme/absent-model", "-c", "shapes",
                   "--steps", "5", "--samples-per-step", "2", "-o", str(out), "--dry-run",
                   env={"HF_HOME": str(tmp_path / "hf")})  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "at most 11 generations and 11 reward-critic calls" in res.stdout
    assert "would download: acme/absent-model" in res.stdout
    assert not out.exists()


# ------------------------------------------------------------------------------ download


@pytest.mark.slow
def test_cli_download_loads_and_lists_the_cache(tmp_path):
    from milr.testing import save_tiny_janus

    model = save_tiny_janus(tmp_path / "tiny")
    hf_home = tmp_path / "hf"
    commit = _fake_hub_cache(hf_home, "acme/tiny-janus", model)
    env = {"HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    res = run_milr("download", "-M", "acme/tiny-janus", "-c", "shapes", "--dtype", "fp32",
                   "--json", env=env)  # fmt: skip
    assert res.returncode == 0, res.stderr
    rows = [json.loads(line) for line in res.stdout.splitlines()]
    hub = [r for r in rows if r["id"] == "acme/tiny-janus"]
    assert len(hub) == 1 and hub[0]["revision"] == "main" and hub[0]["size"] > 0
    assert hub[0]["path"].endswith(commit)
    # a critic that cannot load is a setup fault here too, before the model loads
    res = run_milr("download", "-M", "acme/tiny-janus", "-c", "api-judge:base_url=http://"
                   "127.0.0.1:9/v1,model=m,api_key_env=MILR_TEST_ABSENT_KEY", env=env)  # fmt: skip
    assert res.returncode == 2 and "MILR_TEST_ABSENT_KEY is not set" in res.stderr


if sys.platform == "win32":  # symlinks in the fake cache
    pytestmark = pytest.mark.skip("symlinks")


def test_cli_generate_checks_the_prompt_before_the_model(tmp_path):
    # the model is neither cached nor reachable: only a check before loading it can answer
    res = run_milr("generate", "a cat on a sofa", "-M", "acme/absent-model", "-c", "shapes",
                   "-o", str(tmp_path / "o"), env={"HF_HOME": str(tmp_path / "hf")})  # fmt: skip
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("error: reward critic cannot judge the prompt 'a cat on a sofa'")
    assert not (tmp_path / "o").exists()


def test_geneval_prepare_and_check_item_use_the_detectors_classes():
    pytest.importorskip("ultralytics")
    from milr.critics.geneval import GenEvalCritic

    critic = GenEvalCritic(weights="yolov8n.yaml", device="cpu")  # random weights, COCO names
    critic.prepare()
    critic.check_item("a photo of a bench", {"include": [{"class": "bench", "count": 1}]})
    critic.check_item("a photo of two red cars", {})  # parsed from the prompt
    with pytest.raises(MilrUserError, match="'unicorn' is not a known class"):
        critic.check_item("x", {"include": [{"class": "unicorn", "count": 1}]})
    with pytest.raises(MilrUserError, match="cannot parse prompt 'a cat on a sofa'"):
        critic.check_item("a cat on a sofa", {})
    GenEvalCritic(weights="yolov8n.yaml", device="cpu", on_unparsed="zero").check_item(
        "a cat on a sofa", {}
    )


def test_the_run_device_holds_while_solving_and_scoring(shapes_suite, tmp_path):
    from milr.devices import current_run_device

    seen = []

    class Watching(_Recorder):
        def solve(self, prompt, seed):
            seen.append(current_run_device())  # what critics' device=auto resolves to
            return super().solve(prompt, seed)

    run_bench(_opts(shapes_suite, tmp_path / "run"), solver_factory=Watching())
    assert seen == ["cpu", "cpu"] and current_run_device() is None
