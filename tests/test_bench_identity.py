"""Bench run identity: a resumed run never silently mixes rules (run.json holds resolved values).

In-process and weight-free: `result_settings`/`make_run` build the critics (no weights load) and
`check_or_write_run` is the check `milr bench` makes before any model loads.
"""

from __future__ import annotations

import json

import pytest

from milr.bench.options import (
    IDENTITY_VERSION,
    MODE_SEMANTICS,
    BenchOptions,
    make_run,
    result_settings,
)
from milr.bench.records import (
    RUN_FILE,
    check_or_write_run,
    fingerprint,
    load_all_records,
    shard_path,
)
from milr.bench.suites import load_suite
from milr.errors import MilrUserError


@pytest.fixture(scope="module")
def suite(tmp_path_factory):
    from milr.shapes.evalset import write_shapeseval

    path = write_shapeseval(tmp_path_factory.mktemp("suite") / "s.jsonl", per_tag=1, seed=3)
    return load_suite(path)


def settings(suite, **kw):
    kw.setdefault("critic", ["color:target=red"])
    return result_settings(BenchOptions(suite=str(suite.source), **kw), suite)


def fp(suite, **kw) -> str:
    return make_run(BenchOptions(suite=str(suite.source), **kw), suite)["fingerprint"]


def with_a_record(out, run):
    """A run directory as a first attempt left it: run.json and one record."""
    check_or_write_run(out, run, force=False)
    shard_path(out, 0).parent.mkdir(exist_ok=True)
    shard_path(out, 0).write_text(json.dumps({"prompt_id": "p", "seed_index": 0}) + "\n")
    assert load_all_records(out)


def test_a_spec_file_or_preset_whose_content_changed_is_a_different_run(suite, tmp_path):
    """The same `--critic` text, new rules behind it: the resolved critic config differs."""
    spec = tmp_path / "reward.toml"
    spec.write_text('[[critic]]\nname = "color"\ntarget = "red"\n')
    for critic in ([str(spec)], [f"preset:{spec}"]):
        before = fp(suite, critic=critic)
        spec.write_text('[[critic]]\nname = "color"\ntarget = "blue"\n')
        after = fp(suite, critic=critic)
        spec.write_text('[[critic]]\nname = "color"\ntarget = "red"\n')
        assert before != after and fp(suite, critic=critic) == before
    config = settings(suite, critic=[str(spec)])["critic_config"]
    assert config["members"][0]["config"]["target"] == "red"


def test_declared_critic_defaults_are_in_the_identity(suite):
    """Every declared parameter is recorded, set or not, so a changed default is seen."""
    cfg = settings(suite, critic=["color"])["critic_config"]["members"][0]["config"]
    assert cfg["target"] == "red" and cfg["tolerance"] == 100.0
    assert settings(suite, critic=["color"])["critic_config"]["on_error"] == "raise"


def test_prompt_file_content_not_path(suite, tmp_path):
    a, b = tmp_path / "a.toml", tmp_path / "b.toml"
    a.write_text('name = "mine"\n')
    b.write_text('name = "mine"\n')
    assert fp(suite, prompt_file=str(a)) == fp(suite, prompt_file=str(b))
    b.write_text('name = "changed"\n')
    assert fp(suite, prompt_file=str(a)) != fp(suite, prompt_file=str(b))
    s = settings(suite, prompt_style="hf")
    assert s["prompt_style"] == "hf" and settings(suite)["prompt_style"] == "default"
    with pytest.raises(MilrUserError, match="--prompt-file .*cannot be read"):
        settings(suite, prompt_file=str(tmp_path / "missing.toml"))


def test_optimizer_defaults_and_mode_semantics_are_recorded(suite):
    s = settings(suite)
    assert s["identity"] == IDENTITY_VERSION and s["mode_semantics"] == MODE_SEMANTICS
    assert s["optimizer"]["text_prefix"] == "checkpoint"
    assert s["optimizer"]["latent_dtype"] == "model" and s["optimizer"]["lr"] == 0.01
    # an explicit default is the default; another value is another run
    assert fp(suite, optimizer={"latent_dtype": "model"}) == fp(suite)
    assert fp(suite, optimizer={"latent_dtype": "float32"}) != fp(suite)
    assert fp(suite, optimizer={"text_prefix": "paper"}) != fp(suite)


def test_batch_prompts_stays_outside_the_identity(suite):
    assert (
        fp(suite, batch_prompts=1) == fp(suite, batch_prompts=8) == fp(suite, batch_prompts="auto")
    )


def test_a_legacy_run_json_is_refused_in_one_line_unless_forced(suite, tmp_path):
    out = tmp_path / "run"
    new = make_run(BenchOptions(suite=str(suite.source), critic=["color"]), suite)
    legacy = json.loads(json.dumps(new))
    for key in ("identity", "critic_config", "eval_critic_config", "mode_semantics"):
        legacy["settings"].pop(key)
    legacy["fingerprint"] = "legacy"
    with_a_record(out, legacy)
    with pytest.raises(MilrUserError) as info:
        check_or_write_run(out, new, force=False)
    message = str(info.value)
    assert "\n" not in message and "earlier milr" in message
    assert "--force" in message and "--out" in message
    merged = check_or_write_run(out, new, force=True)
    assert merged["fingerprint"] == new["fingerprint"]
    assert merged["history"][-1]["fingerprint"] == "legacy"
    stored = json.loads((out / RUN_FILE).read_text())
    assert stored["settings"]["identity"] == IDENTITY_VERSION
    # a legacy directory without records simply takes the new settings
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / RUN_FILE).write_text(json.dumps(legacy))
    assert check_or_write_run(empty, new, force=False)["fingerprint"] == new["fingerprint"]


def test_a_changed_rule_is_refused_naming_the_setting(suite, tmp_path):
    out = tmp_path / "run"
    with_a_record(out, make_run(BenchOptions(suite=str(suite.source), critic=["color"]), suite))
    other = make_run(
        BenchOptions(
            suite=str(suite.source), critic=["color"], optimizer={"latent_dtype": "float32"}
        ),
        suite,
    )
    with pytest.raises(MilrUserError, match="optimizer: .*latent_dtype"):
        check_or_write_run(out, other, force=False)


# -- what the loaded model resolves (known only after it loads) ------------------------------------


class Toy:
    """A weight-free solver whose checkpoint "recommends" `RECOMMENDED` for text_prefix."""

    RECOMMENDED = "paper"

    def __init__(self, opts, device):
        from milr import build_critic

        self.critic = build_critic(list(opts.critic))

    def resolved_settings(self):
        return {"text_prefix": Toy.RECOMMENDED, "cfg_scale": 5.0, "prompt_style": None}

    def solve(self, prompt, seed):
        from PIL import Image

        from milr.bench.solvers import Outcome

        im = Image.new("RGB", (8, 8), (200, 30, 30))
        traj = {"steps": 0, "stop_reason": "max_steps", "scores": [1.0], "rewards": [0.0],
                "passed": [None], "critic_calls": 1}  # fmt: skip
        return Outcome(im, im, traj, {"seed": seed})


def test_a_checkpoint_recommendation_that_changed_is_refused_on_resume(suite, tmp_path):
    """`text_prefix` unset means the checkpoint's recommendation (its milr.json): when that
    changes between two attempts, the resumed run is refused; --force records the new value."""
    from milr.bench.runner import run_bench

    out = tmp_path / "run"

    def bench(limit, force=False):
        opts = BenchOptions(
            suite=str(suite.source), critic=["color"], steps=0, limit=limit, out=str(out),
            progress=False, report=False, force=force,
        )  # fmt: skip
        return run_bench(opts, Toy)

    Toy.RECOMMENDED = "paper"
    bench(1)
    assert json.loads((out / RUN_FILE).read_text())["resolved"]["text_prefix"] == "paper"
    bench(2)  # same recommendation: resumes
    Toy.RECOMMENDED = "at_least_one"
    with pytest.raises(MilrUserError) as info:
        bench(3)
    message = str(info.value)
    assert "\n" not in message and "text_prefix" in message and "--force" in message
    assert len(load_all_records(out)) == 2
    bench(3, force=True)
    run = json.loads((out / RUN_FILE).read_text())
    assert run["resolved"]["text_prefix"] == "at_least_one"
    assert run["history"][-1]["resolved"]["text_prefix"] == "paper"
    assert len(load_all_records(out)) == 3


def test_milr_solver_reports_the_checkpoints_recommendations(suite):
    from milr.bench.solvers import MILRSolver

    opts = BenchOptions(suite=str(suite.source), model="shapes", critic=["shapes"])
    resolved = MILRSolver(opts, "cpu").resolved_settings()
    assert resolved["text_prefix"] == "at_least_one"  # the shapes checkpoint's milr.json
    opts.optimizer = {"text_prefix": "paper"}
    assert MILRSolver(opts, "cpu").resolved_settings()["text_prefix"] == "paper"


def test_a_run_from_before_the_sampling_scheme_is_not_resumed(suite, tmp_path):
    """Images drawn by another sampling scheme differ: such a directory is refused, one line."""
    from milr.generator import SAMPLING_SCHEME

    out = tmp_path / "run"
    new = make_run(BenchOptions(suite=str(suite.source), critic=["color"]), suite)
    assert new["settings"]["sampling"] == SAMPLING_SCHEME
    old = json.loads(json.dumps(new))
    old["settings"].pop("sampling")
    old["fingerprint"] = fingerprint(old["settings"])
    with_a_record(out, old)
    with pytest.raises(MilrUserError, match="sampling") as info:
        check_or_write_run(out, new, force=False)
    assert "--force" in str(info.value)
