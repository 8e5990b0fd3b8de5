"""The MILR optimizer on a tiny random Janus with weight-free critics (CPU, seconds)."""

from __future__ import annotations

import json
import math
from typing import ClassVar

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import milr  # noqa: E402
from milr import Critic, CriticResult, MilrUserError  # noqa: E402
from milr.errors import ContractViolation  # noqa: E402
from milr.optimizer import MILR, MILRConfig, run_milr  # noqa: E402

PROMPT = "a red square"
FAST = {"max_reasoning_tokens": 10, "image_k": 0.25, "text_k": 0.3}


@pytest.fixture(scope="session")
def gen(tmp_path_factory):
    torch.set_num_threads(1)
    from milr.testing import save_tiny_janus

    path = save_tiny_janus(tmp_path_factory.mktemp("tiny_janus_opt") / "model", seed=0)
    return milr.load_generator(path, device="cpu")


@pytest.fixture(scope="session")
def red():
    return milr.build_critic(["color:target=red,min_fraction=0.3"])


def _params_snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_one_update_lowers_logprob_of_previous_argmax_and_never_touches_the_model(gen, red):
    before = _params_snapshot(gen.model)
    opt = MILR(gen, red, MILRConfig(mode="both", max_steps=1, threshold=0.0, **FAST))
    res = opt.run(PROMPT)
    assert res.n_steps == 1 and res.steps[0].reward < 0
    assert res.steps[1].updated == ["text", "image"]
    z_t0, z_t1 = opt.initial_latents["text"], opt.latents["text"].detach()
    z_v0, z_v1 = opt.initial_latents["image"], opt.latents["image"].detach()
    assert z_t0.shape == (res.text_prefix_len, 64) and res.text_prefix_len >= 1
    assert z_v0.shape == (4, 2, 64) and res.image_prefix_len == 4
    with torch.no_grad():
        lp_t0 = torch.log_softmax(gen.text_head(z_t0), -1)
        a_t = lp_t0.argmax(-1, keepdim=True)
        lp_t1 = torch.log_softmax(gen.text_head(z_t1), -1)
        assert (lp_t1.gather(-1, a_t) < lp_t0.gather(-1, a_t)).all()
        lp_v0 = torch.log_softmax(gen.image_head(z_v0, 5.0), -1)
        a_v = lp_v0.argmax(-1, keepdim=True)
        lp_v1 = torch.log_softmax(gen.image_head(z_v1, 5.0), -1)
        assert (lp_v1.gather(-1, a_v) < lp_v0.gather(-1, a_v)).all()
    after = _params_snapshot(gen.model)
    assert all(torch.equal(before[k], after[k]) for k in before)  # bitwise unchanged
    assert all(p.grad is None for p in gen.model.parameters())
    assert opt.latents["text"].grad is not None and opt.latents["image"].grad is not None


def test_initial_latents_match_the_initial_rollout(gen, red):
    opt = MILR(gen, red, MILRConfig(mode="both", max_steps=1, threshold=0.0, **FAST))
    res = opt.run(PROMPT)
    z_t0 = opt.initial_latents["text"]
    # the text prefix recorded at step 0 is the argmax of the head on Z_t (greedy reasoning)
    assert gen.text_head(z_t0).argmax(-1).tolist() == res.steps[0].text_prefix


@pytest.mark.parametrize(
    "mode,changes",
    [("both", {"text", "image"}), ("text", {"text"}), ("image", {"image"})],
)
def test_modes_change_their_latents(gen, red, mode, changes):
    opt = MILR(gen, red, MILRConfig(mode=mode, max_steps=2, threshold=0.0, **FAST))
    res = opt.run(PROMPT)
    changed = {
        k
        for k, v in opt.latents.items()
        if v is not None and not torch.equal(v.detach(), opt.initial_latents[k])
    }
    assert changed == changes
    assert (res.steps[0].reasoning is None) == (mode == "image")


def test_interleaved_alternates_text_first(gen, red):
    cfg = MILRConfig(mode="interleaved", max_steps=3, threshold=0.0, **FAST)
    res = MILR(gen, red, cfg).run(PROMPT)
    assert [s.updated for s in res.steps[1:]] == [["text"], ["image"], ["text"]]


@pytest.mark.parametrize("mode", ["text_image", "image_text"])
def test_sequential_modes_run_one_phase_then_the_other(gen, red, mode):
    """The authors' sequential modes: text steps hold the image prefix; budgets per phase."""
    cfg = MILRConfig(mode=mode, text_steps=2, image_steps=3, threshold=0.0, **FAST)
    res = MILR(gen, red, cfg).run(PROMPT)
    first, second = mode.split("_")
    n_first, n_second = (2, 3) if first == "text" else (3, 2)
    assert [s.updated for s in res.steps[1:]] == [[first]] * n_first + [[second]] * n_second
    assert res.n_steps == 5 and res.stop_reason == "max_steps"
    text_steps = [s for s in res.steps[1:] if s.updated == ["text"]]
    held = res.steps[0].image_prefix if first == "text" else res.steps[n_first].image_prefix
    assert all(s.image_prefix == held for s in text_steps)  # the image prefix is held
    if first == "text":  # the image phase reasons under the final text-phase prefix
        assert all(s.text_prefix == text_steps[-1].text_prefix for s in res.steps[n_first + 1 :])


def test_early_stop_when_first_image_passes(gen):
    easy = milr.build_critic(["color:target=red,tolerance=1000"])  # every pixel counts
    res = MILR(gen, easy, MILRConfig(max_steps=5, **FAST)).run(PROMPT)
    assert res.stop_reason == "threshold" and res.n_steps == 0 and res.critic_calls == 1
    assert res.final_image is res.initial_image
    verdict = milr.build_critic(["color:target=red,min_fraction=0.01"])
    res = MILR(gen, verdict, MILRConfig(max_steps=5, threshold=-1.0, stop_on_pass=True, **FAST))
    res = res.run(PROMPT)
    assert res.stop_reason == "passed" and res.n_steps == 0


def _strip_timings(d):
    d = json.loads(json.dumps(d))
    d.pop("wall_seconds")
    d.pop("timings")
    for s in d["steps"]:
        s.pop("timings")
    return d


def test_fixed_seed_gives_identical_trajectory(gen, red):
    cfg = MILRConfig(mode="both", max_steps=3, threshold=0.0, seed=7, **FAST)
    a = MILR(gen, red, cfg).run(PROMPT)
    b = MILR(gen, red, cfg).run(PROMPT)
    assert _strip_timings(a.to_dict()) == _strip_timings(b.to_dict())
    assert a.final_image.tobytes() == b.final_image.tobytes()
    c = MILR(gen, red, MILRConfig(mode="both", max_steps=3, threshold=0.0, seed=8, **FAST)).run(
        PROMPT
    )
    assert [s.score for s in c.steps] != [s.score for s in a.steps]


def test_reward_rises_on_average_across_seeds(gen, red):
    """Faithful loop with its stopping rule, and the K-sample option: mean improvement > 0."""
    gains, gains_k = [], []
    for seed in range(12):
        cfg = dict(mode="image", max_steps=12, threshold=-0.47, seed=seed, lr=0.03, image_k=0.5)
        res = MILR(gen, red, MILRConfig(**cfg)).run(PROMPT)
        gains.append(res.final_score - res.initial_score)
        if seed < 6:
            cfg.update(max_steps=8, threshold=-0.45, samples_per_step=4)
            res_k = MILR(gen, red, MILRConfig(**cfg)).run(PROMPT)
            gains_k.append(res_k.final_score - res_k.initial_score)
            assert all(len(s.candidate_scores) == 4 for s in res_k.steps[1:])
    # measured: mean +0.044 (faithful, 12 seeds), +0.058 (K=4, 6 seeds); score range ~0.4-0.6
    assert sum(gains) / len(gains) > 0.01, gains
    assert sum(gains_k) / len(gains_k) > 0.01, gains_k


def test_select_best_and_result_fields(gen, red, tmp_path):
    seen = []
    res = run_milr(
        gen, red, PROMPT, metadata={"tag": "colors"}, callback=lambda r, _: seen.append(r.step),
        mode="both", max_steps=3, threshold=0.0, select="best", **FAST,
    )  # fmt: skip
    assert seen == [0, 1, 2, 3] and res.stop_reason == "max_steps"
    scores = [s.score for s in res.steps]
    assert res.best_score == max(scores) and res.image is res.best_image
    assert res.critic_calls == 4 and res.images_scored == 4 and res.tokens_generated > 0
    assert set(res.steps[1].timings) == {"reasoning", "image_tokens", "decode", "critic", "update"}
    assert res.steps[1].critics["color"]["score"] == pytest.approx(res.steps[1].score)
    out = res.save(tmp_path / "run")
    for name in ("initial.png", "final.png", "best.png", "trajectory.json", "reward.png"):
        assert (out / name).is_file(), name
    data = json.loads((out / "trajectory.json").read_text())
    assert data["schema_version"] == 2 and data["n_steps"] == 3 and len(data["steps"]) == 4
    assert "num_steps" not in data and "generated_tokens" not in data  # v1 duplicates gone
    assert data["metadata"] == {"tag": "colors"} and data["selected"] == "best"
    assert data["steps"][1]["image_prefix"] and data["initial_score"] == scores[0]


def test_callback_false_stops(gen, red):
    res = MILR(gen, red, MILRConfig(max_steps=5, threshold=0.0, **FAST)).run(
        PROMPT, callback=lambda r, _: r.step < 1 or False
    )
    assert res.stop_reason == "callback" and res.n_steps == 1


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"text_k": 0}, "text_k"),
        ({"text_k": 1.5}, "text_k"),
        ({"image_k": -0.1}, "image_k"),
        ({"max_steps": 0}, "max_steps"),
        ({"lr": 0}, "lr"),
        ({"lr": -0.01}, "lr"),
        ({"mode": "joint"}, "mode"),
        ({"select": "first"}, "select"),
        ({"samples_per_step": 0}, "samples_per_step"),
        ({"threshold": 0.5}, "threshold"),
    ],
)
def test_bad_config(kwargs, match):
    with pytest.raises(MilrUserError, match=match):
        MILRConfig(**kwargs)


def test_bad_prompts(gen, red):
    with pytest.raises(MilrUserError, match="empty prompt"):
        MILR(gen, red, MILRConfig(**FAST)).run("")
    with pytest.raises(MilrUserError, match="context"):
        MILR(gen, red, MILRConfig(**FAST)).run("square " * 1100)


class FlakyCritic(Critic):
    """Returns a real colour score, then NaN (or Ctrl-C) from call number `fail_at` on."""

    name: ClassVar[str] = "flaky"
    description: ClassVar[str] = "test critic"

    def __init__(self, fail_at: int, how: str = "nan") -> None:
        self.calls, self.fail_at, self.how = 0, fail_at, how

    def score_batch(self, images, prompts, metadata):
        self.calls += 1
        if self.calls >= self.fail_at:
            if self.how == "interrupt":
                raise KeyboardInterrupt
            return [CriticResult(math.nan) for _ in images]
        return [CriticResult(0.2) for _ in images]


def test_nan_critic_step_not_applied_and_named(gen):
    opt = MILR(gen, FlakyCritic(fail_at=3), MILRConfig(max_steps=5, threshold=0.0, **FAST))
    with pytest.raises(ContractViolation, match=r"'flaky'.*not applied") as info:
        opt.run(PROMPT)
    partial = info.value.milr_result
    assert partial.stop_reason == "error" and partial.n_steps == 1
    # latents are those after step 1's update, i.e. step 2's update was rolled back
    ref = MILR(gen, FlakyCritic(fail_at=99), MILRConfig(max_steps=1, threshold=0.0, **FAST))
    ref.run(PROMPT)
    for k in ("text", "image"):
        assert torch.equal(opt.latents[k].detach(), ref.latents[k].detach())


def test_interrupt_keeps_partial_result(gen):
    opt = MILR(gen, FlakyCritic(fail_at=3, how="interrupt"), MILRConfig(max_steps=5, **FAST))
    with pytest.raises(KeyboardInterrupt) as info:
        opt.run(PROMPT)
    partial = info.value.milr_result
    assert partial.stop_reason == "interrupted" and len(partial.steps) == 2
    assert partial.initial_image is not None and partial.final_image is not None


def _live_tensor_bytes() -> int:
    import gc

    gc.collect()
    total = 0
    for obj in gc.get_objects():
        try:
            if torch.is_tensor(obj):
                total += obj.numel() * obj.element_size()
        except Exception:  # objects that refuse introspection
            continue
    return total


def test_memory_does_not_grow_with_steps(gen, red):
    """No retained graphs or growing caches: live tensors after 30 steps ≈ after 3."""
    base = _live_tensor_bytes()
    seen: dict[int, int] = {}

    def cb(rec, _):
        if rec.step in (3, 30):
            seen[rec.step] = _live_tensor_bytes() - base

    cfg = MILRConfig(
        mode="both", max_steps=30, threshold=0.0, max_reasoning_tokens=6, image_k=0.25, text_k=0.5
    )
    MILR(gen, red, cfg).run(PROMPT, callback=cb)
    assert seen[30] <= seen[3] * 1.1 + 4096, seen


def test_reasoning_cap_is_an_argument_and_never_touches_the_adapter(gen, red):
    """The run's cap reaches the generator as `max_tokens`; the adapter settings stay as loaded."""
    settings_before = dict(vars(gen.settings))
    seen: list[int] = []

    def during(record, result):
        seen.append(gen.settings.max_reasoning_tokens)  # what a concurrent user would see

    cfg = MILRConfig(mode="both", max_steps=2, threshold=0.0, max_reasoning_tokens=3, text_k=0.5)
    res = MILR(gen, red, cfg).run(PROMPT, callback=during)
    assert all(len(s.reasoning.split()) <= 3 for s in res.steps)
    assert seen == [24, 24, 24] and vars(gen.settings) == settings_before
    assert len(gen.write_reasoning(PROMPT, max_tokens=2).tokens) == 2
    assert len(gen.write_reasoning(PROMPT).tokens) == 24  # the checkpoint's own cap


def test_trajectory_v1_still_reads(tmp_path):
    from milr.results import SCHEMA_VERSION, read_trajectory

    v1 = {"schema_version": 1, "prompt": "p", "n_steps": 2, "num_steps": 2,
          "tokens_generated": 40, "generated_tokens": 40, "steps": []}  # fmt: skip
    path = tmp_path / "trajectory.json"
    path.write_text(json.dumps(v1))
    data = read_trajectory(path)
    assert data["schema_version"] == SCHEMA_VERSION == 2
    assert data["n_steps"] == 2 and data["tokens_generated"] == 40
    assert "num_steps" not in data and "generated_tokens" not in data
    only_dup = read_trajectory({"schema_version": 1, "num_steps": 5, "generated_tokens": 7})
    assert only_dup["n_steps"] == 5 and only_dup["tokens_generated"] == 7
    with pytest.raises(MilrUserError, match="schema_version=99"):
        read_trajectory({"schema_version": 99})


def test_mode_names_have_one_definition():
    import click

    from milr.cli.bench import run_cmd
    from milr.cli.generate import generate
    from milr.modes import MODES

    assert MILRConfig.__module__ == "milr.optimizer_config"
    for command in (generate, run_cmd):
        opt = next(p for p in command.params if p.name == "mode")
        assert isinstance(opt.type, click.Choice) and tuple(opt.type.choices) == MODES


def test_no_bare_runtime_errors_in_milr():
    """Errors milr raises on purpose are in the MilrError family (issue #10.6)."""
    import ast
    from pathlib import Path

    root = Path(milr.__file__).parent
    bare = []
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Raise) and node.exc is not None:
                call = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
                if isinstance(call, ast.Name) and call.id == "RuntimeError":
                    bare.append(f"{path.relative_to(root)}:{node.lineno}")
    assert bare == []


def test_adapter_without_max_tokens_still_runs_with_a_deprecation_warning(gen, red):
    """Adapters written against the old protocol (no `max_tokens`) keep working."""
    from milr.models.janus import JanusGenerator

    class OldAdapter(JanusGenerator):
        def write_reasoning(self, prompt):  # the pre-0.2 signatures
            return super().write_reasoning(prompt)

        def continue_reasoning(self, prompt, prefix_tokens):
            return super().continue_reasoning(prompt, prefix_tokens)

    old = OldAdapter(gen.model, gen.processor, gen.settings, checkpoint="old")
    cfg = MILRConfig(mode="both", max_steps=1, threshold=0.0, **FAST)
    with pytest.warns(DeprecationWarning, match="max_reasoning_tokens=10 is ignored"):
        res = MILR(old, red, cfg).run(PROMPT)
    assert res.n_steps == 1 and len(res.steps[0].reasoning.split()) > 10  # its own cap (24)
    cfg = MILRConfig(mode="both", max_steps=1, threshold=0.0, image_k=0.25, text_k=0.3)
    assert MILR(old, red, cfg).run(PROMPT).n_steps == 1  # no cap asked: no warning needed


@pytest.mark.parametrize(
    "rule,n,eos,text_k,expected",
    [
        ("paper", 9, True, 0.1, 1),  # L = 10 latents (EOS-predicting one included)
        ("paper", 9, False, 0.1, 0),  # L = 9: M = 0, no text optimisation
        ("paper", 19, True, 0.1, 2),
        ("paper", 3, True, 1.0, 4),  # every latent, the EOS-predicting one too
        ("at_least_one", 9, True, 0.1, 1),  # milr 0.1: max(1, int(text_k * n))
        ("at_least_one", 19, True, 0.1, 1),
        ("at_least_one", 0, False, 0.5, 0),
    ],
)
def test_text_prefix_rules(rule, n, eos, text_k, expected):
    cfg = MILRConfig(text_prefix=rule, text_k=text_k)
    assert cfg.text_prefix_length(n, eos) == expected


def test_m_zero_leaves_the_prompt_unoptimised_like_the_authors(gen, red):
    cfg = MILRConfig(mode="both", max_steps=3, threshold=0.0, max_reasoning_tokens=5, text_k=0.1)
    res = MILR(gen, red, cfg).run(PROMPT)
    assert res.stop_reason == "no_text_prefix" and res.n_steps == 0 and res.text_prefix_len == 0
    old = MILR(gen, red, MILRConfig(**{**cfg.to_dict(), "text_prefix": "at_least_one"}))
    res = old.run(PROMPT)
    assert res.text_prefix_len == 1 and res.n_steps == 3


def test_eos_latent_counts_in_the_text_prefix(gen, red):
    """A reasoning that ended with EOS: with text_k = 1 the EOS-predicting latent is optimised."""
    from milr.generator import Reasoning
    from milr.models.janus import JanusGenerator

    class EndsAtThree(JanusGenerator):
        def _rollout(self, prompt, prefix_tokens, max_tokens):
            full = super()._rollout(prompt, prefix_tokens[:3], 4)
            return Reasoning(full.tokens[:3], full.latents[:3], "x", eos_latent=full.latents[3])

    g = EndsAtThree(gen.model, gen.processor, gen.settings, checkpoint="eos", style=gen.style)
    g.memoize_reasoning = False
    opt = MILR(
        g, red, MILRConfig(mode="both", max_steps=1, threshold=0.0, text_k=1.0, image_k=0.25)
    )
    res = opt.run(PROMPT)
    first = g._rollout(PROMPT, [], 4)
    assert len(first.tokens) == 3 and first.eos_latent is not None
    assert res.text_prefix_len == 4
    assert torch.equal(opt.initial_latents["text"][3], first.eos_latent)  # the EOS latent


def test_latent_dtype_model_or_float32(gen, red):
    for choice, dtype in (("model", gen.dtype), ("float32", torch.float32)):
        opt = MILR(gen, red, MILRConfig(max_steps=1, threshold=0.0, latent_dtype=choice, **FAST))
        opt.run(PROMPT)
        assert opt.latents["text"].dtype == dtype and opt.latents["image"].dtype == dtype
    with pytest.raises(MilrUserError, match="latent_dtype='bf16'"):
        MILRConfig(latent_dtype="bf16")


def test_default_steps_follow_the_authors_geneval_script():
    assert MILRConfig().max_steps == 30


def test_text_prefix_defaults_to_the_checkpoints_recommendation(tmp_path, red):
    """Unset ``text_prefix`` takes the checkpoint's (milr.json); an explicit one wins."""
    import json
    import shutil

    from milr.testing import save_tiny_janus

    path = save_tiny_janus(tmp_path / "model", seed=0)
    plain = milr.load_generator(path, device="cpu")
    assert plain.default_text_prefix == "paper"  # no recommendation: the authors' rule
    cfg = MILRConfig(mode="both", max_steps=2, threshold=0.0, max_reasoning_tokens=5, text_k=0.1)
    assert cfg.text_prefix is None
    assert MILR(plain, red, cfg).config.text_prefix == "paper"

    other = tmp_path / "recommends"
    shutil.copytree(path, other)
    settings = json.loads((other / "milr.json").read_text())
    (other / "milr.json").write_text(json.dumps({**settings, "text_prefix": "at_least_one"}))
    rec = milr.load_generator(other, device="cpu")
    assert rec.default_text_prefix == "at_least_one"
    run = MILR(rec, red, cfg)
    assert run.config.text_prefix == "at_least_one"
    res = run.run(PROMPT)  # M = 0 under the paper's rule here; at least one token instead
    assert res.text_prefix_len == 1 and res.config["text_prefix"] == "at_least_one"
    explicit = MILR(rec, red, MILRConfig(**{**cfg.to_dict(), "text_prefix": "paper"}))
    assert explicit.config.text_prefix == "paper"

    (other / "milr.json").write_text(json.dumps({**settings, "text_prefix": "one"}))
    with pytest.raises(milr.MilrUserError, match=r"text_prefix='one' in .*milr.json; use one of"):
        milr.load_generator(other, device="cpu")


def test_shapes_checkpoint_recommends_at_least_one():
    shapes = milr.load_generator("shapes", device="cpu")
    assert shapes.default_text_prefix == "at_least_one"


def test_float16_models_keep_float32_latents():
    """latent_dtype='model' follows bf16 (the authors'), but float16 Adam state overflows."""
    from milr.optimizer import latent_dtype

    z = torch.zeros(4, dtype=torch.float16, requires_grad=True)
    opt = torch.optim.Adam([z], lr=0.01)
    (z * 1e-4).sum().backward()
    opt.step()
    assert not torch.isfinite(z).any()  # why: eps and g² underflow in float16
    assert latent_dtype("model", torch.bfloat16) == torch.bfloat16
    assert latent_dtype("model", torch.float32) == torch.float32
    assert latent_dtype("float32", torch.bfloat16) == torch.float32
    with pytest.warns(UserWarning, match="float16 model"):
        assert latent_dtype("model", torch.float16) == torch.float32


# --- controls (common random numbers) and attribution ----------------------------------------


def _run_collect(gen, critic, cfg):
    images = []
    opt = MILR(gen, critic, cfg)
    orig = opt._append

    def keep(result, record, cand, callback):
        images.append(cand.image.tobytes())
        return orig(result, record, cand, callback)

    opt._append = keep  # type: ignore[method-assign]
    return opt.run(PROMPT), images


@pytest.mark.parametrize("mode", ["both", "text", "image", "text_image"])
def test_resample_control_shares_milrs_draws(gen, red, mode):
    """Common random numbers: with an update too small to move a latent (lr 1e-12), MILR's
    images and trajectory equal the control's exactly; with real updates every step whose
    image differs from the control's carries an optimised prefix change, and every step
    without one gives the control's image bit for bit."""
    kw = dict(mode=mode, max_steps=6, threshold=0.0, seed=3, **FAST)
    ctl, ctl_images = _run_collect(gen, red, MILRConfig(control="resample", lr=0.3, **kw))
    assert all(s.updated == [] and s.loss == {} for s in ctl.steps)
    assert not any(s.optimised for s in ctl.steps) and ctl.selected_optimised is False
    frozen, frozen_images = _run_collect(gen, red, MILRConfig(lr=1e-12, **kw))
    assert frozen_images == ctl_images
    assert [s.score for s in frozen.steps] == [s.score for s in ctl.steps]
    assert [s.reasoning for s in frozen.steps] == [s.reasoning for s in ctl.steps]
    assert frozen.steps[1].updated  # MILR did run its update, it just moved nothing
    assert not any(s.optimised for s in frozen.steps)
    milr_, milr_images = _run_collect(gen, red, MILRConfig(lr=0.3, **kw))
    differ = 0
    for step, (a, b) in enumerate(zip(milr_images, ctl_images)):
        rec = milr_.steps[step]
        if a != b:
            differ += 1
            assert rec.optimised, f"step {step} differs from the control without an update change"
        else:
            assert not rec.optimised, f"step {step}: a changed prefix gave the control's image"
    assert differ > 0
    assert milr_.selected_optimised == milr_.steps[milr_.selected_step].optimised


def test_best_of_n_control_draws_every_image_and_returns_the_best(gen):
    """N = max_steps + 1 draws whatever the stop rule says; the reward critic picks."""
    kw = dict(mode="both", max_steps=4, seed=5, **FAST)
    red = milr.build_critic(["color:target=red,min_fraction=0.3"])
    # threshold -1: any score > 0 stops the resample control at its first image
    stopped = MILR(gen, red, MILRConfig(control="resample", threshold=-1.0, **kw)).run(PROMPT)
    assert stopped.n_steps == 0 and stopped.stop_reason == "threshold"
    res = MILR(gen, red, MILRConfig(control="best-of-n", threshold=-1.0, **kw)).run(PROMPT)
    assert res.n_steps == 4 and res.critic_calls == 5 and res.stop_reason == "max_steps"
    scores = [s.score for s in res.steps]
    assert res.selected_step == scores.index(max(scores)) and res.score == max(scores)
    assert res.to_dict()["selected"] == "best" and res.selected_optimised is False
    # its draws are the resample control's: the same images while the latter runs
    ctl = MILR(gen, red, MILRConfig(control="resample", threshold=0.0, **kw)).run(PROMPT)
    assert [s.score for s in ctl.steps] == scores[: len(ctl.steps)]


def test_bad_control():
    with pytest.raises(MilrUserError, match=r"control='bogus'; use one of resample, best-of-n"):
        MILRConfig(control="bogus")


def test_best_of_n_draws_every_image_even_without_a_text_prefix(gen, red):
    """M = 0 leaves MILR (and the resample control) unoptimised after step 0; best-of-N still
    makes its N draws."""
    kw = dict(mode="both", max_steps=3, threshold=0.0, text_prefix="paper", text_k=0.01)
    assert MILR(gen, red, MILRConfig(**kw)).run(PROMPT).stop_reason == "no_text_prefix"
    res = MILR(gen, red, MILRConfig(control="best-of-n", **kw)).run(PROMPT)
    assert res.n_steps == 3 and res.critic_calls == 4
