"""The batched MILR engine (issue #15): per-prompt trajectories equal the one-prompt optimizer.

The tiny random Janus is made "lively" (random language-model weights at a useful scale and an
EOS row that wins on some prompts), so reasoning lengths differ, some rows stop at EOS and
others at the budget, prompts have different lengths (left padding), and the colour critic's
threshold stops prompts at different steps (continuous batching).
"""

from __future__ import annotations

import numpy as np
import pytest

from milr.engine import BatchedMILR, Job, MemoryLimit, run_batched
from milr.engine.memory import auto_batch, phase_bytes
from milr.errors import MilrUserError
from milr.optimizer import MILR, MILRConfig

PROMPTS = [
    "a red cat",
    "two blue squares on the left of a tree",
    "a dog",
    "three green circles and a big yellow star above a house",
    "a photo of a car",
    "four pink stars",
    "a small black bird next to a large white clock",
    "an apple",
]
CRITIC = ["color:target=red,min_fraction=0.16"]


def lively(gen, seed: int = 3):
    """Random LM weights at a scale where tokens vary, and an EOS that some prompts emit."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in gen.model.model.language_model.parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 2 / p.shape[1] ** 0.5)
        w = gen.model.lm_head.weight
        w.copy_(torch.randn(w.shape, generator=g, dtype=w.dtype))
        w[gen._ids["eos"]] *= 1.5
    gen.clear_cache()
    return gen


@pytest.fixture(scope="module")
def tiny_path(tmp_path_factory):
    from milr.testing import save_tiny_janus

    return save_tiny_janus(tmp_path_factory.mktemp("engine") / "model", seed=0)


@pytest.fixture(scope="module")
def gen64(tiny_path):
    from milr.generator import load_generator

    return lively(load_generator(str(tiny_path), device="cpu", dtype="float64"))


@pytest.fixture(scope="module")
def gen32(tiny_path):
    from milr.generator import load_generator

    return lively(load_generator(str(tiny_path), device="cpu", dtype="float32"))


@pytest.fixture(scope="module")
def critic():
    from milr.specs import build_critic

    return build_critic(CRITIC)


def trajectory(result):
    """Everything a prompt's run decides: tokens, rewards, verdicts, stop step and reason."""
    return (
        [(s.score, s.reward, s.passed) for s in result.steps],
        [s.text_prefix for s in result.steps],
        [s.image_prefix for s in result.steps],
        [s.reasoning for s in result.steps],
        result.stop_reason,
        len(result.steps),
        np.asarray(result.image).tobytes(),
    )


def configs(mode: str, **extra):
    return [
        MILRConfig(mode=mode, max_steps=4, seed=100 + i, threshold=-0.01, **extra)
        for i in range(len(PROMPTS))
    ]


def reference(gen, critic, cfgs, prompts=PROMPTS):
    getattr(gen, "clear_cache", getattr(getattr(gen, "inner", None), "clear_cache", None))()
    return [MILR(gen, critic, c).run(p) for p, c in zip(prompts, cfgs)]


def test_the_mixed_suite_is_mixed(gen64, critic):
    """The fixture exercises what the engine must get right (else the equality tests are weak)."""
    runs = reference(gen64, critic, configs("both"))
    lengths = {len(r.steps[0].text_prefix) for r in runs}
    stops = {(r.stop_reason, len(r.steps)) for r in runs}
    assert len({len(gen64.tokenize(p)) for p in PROMPTS}) > 3  # prompts of different lengths
    reasoning = [gen64.write_reasoning(p) for p in PROMPTS]
    cap = gen64.max_reasoning_tokens
    assert any(len(r.tokens) < cap for r in reasoning) and any(
        len(r.tokens) == cap for r in reasoning
    )
    assert len(stops) >= 3 and any(s[0] == "threshold" for s in stops), stops
    assert any(s[0] == "max_steps" for s in stops) and lengths


SLOW = pytest.mark.slow


@pytest.mark.parametrize(
    ("mode", "extra"),
    [
        ("both", {}),
        pytest.param("text", {}, marks=SLOW),
        pytest.param("image", {}, marks=SLOW),
        ("text_image", {}),
        pytest.param("image_text", {"text_steps": 1, "image_steps": 2}, marks=SLOW),
        ("interleaved", {}),
        pytest.param(
            "both", {"latent_dtype": "float32", "text_prefix": "at_least_one"}, marks=SLOW
        ),
        ("both", {"samples_per_step": 2, "select": "best"}),
        pytest.param("text", {"samples_per_step": 3}, marks=SLOW),
        ("image", {"samples_per_step": 2, "stop_on_pass": True}),
    ],
)
def test_float64_batched_equals_unbatched_for_every_batch_size(gen64, critic, mode, extra):
    cfgs = configs(mode, **extra)
    ref = [trajectory(r) for r in reference(gen64, critic, cfgs)]
    for b in (1, 3, 8):
        gen64.clear_cache()
        jobs = [Job(p, {}, c, key=i) for i, (p, c) in enumerate(zip(PROMPTS, cfgs))]
        done = run_batched(gen64, critic, jobs, batch_prompts=b)
        assert [d.job.key for d in done] == list(range(len(PROMPTS)))
        assert all(d.error is None for d in done), [d.error for d in done]
        got = [trajectory(d.result) for d in done]
        for i, (a, g) in enumerate(zip(ref, got)):
            assert a == g, f"B={b}: prompt {i} ({PROMPTS[i]!r}) differs from the unbatched run"


def test_batch_of_one_is_bitwise_the_unbatched_path_in_float32(gen32, critic):
    cfgs = configs("both")
    ref = reference(gen32, critic, cfgs)
    gen32.clear_cache()
    done = run_batched(gen32, critic, [Job(p, {}, c) for p, c in zip(PROMPTS, cfgs)], 1)
    for a, d in zip(ref, done):
        assert trajectory(a) == trajectory(d.result)
        assert [s.loss for s in a.steps] == [s.loss for s in d.result.steps]


def test_float32_batched_trajectories_stay_close(gen32, critic):
    """In float32 batched products round differently: tokens, rewards and stops are still the
    same on this suite; decoded pixels may differ by one level (batched VQ convolutions)."""
    cfgs = configs("both")
    ref = reference(gen32, critic, cfgs)
    gen32.clear_cache()
    done = run_batched(gen32, critic, [Job(p, {}, c) for p, c in zip(PROMPTS, cfgs)], 8)
    same = sum(trajectory(a)[:-1] == trajectory(d.result)[:-1] for a, d in zip(ref, done))
    assert same >= len(PROMPTS) - 1, f"only {same}/{len(PROMPTS)} float32 trajectories identical"
    for a, d in zip(ref, done):
        if trajectory(a)[:-1] != trajectory(d.result)[:-1]:
            continue
        diff = np.abs(np.asarray(a.image, dtype=int) - np.asarray(d.result.image, dtype=int))
        assert diff.max() <= 1


def test_continuous_batching_keeps_the_batch_full(gen64, critic):
    """Finished prompts leave and the next join: while jobs remain, every round has B prompts."""
    cfgs = configs("both")
    cfgs[0] = MILRConfig(mode="both", max_steps=4, seed=100, threshold=0.0)  # runs every step
    pulled = [0]

    def jobs():
        for i, (p, c) in enumerate(zip(PROMPTS, cfgs)):
            pulled[0] += 1
            yield Job(p, {}, c, key=i)

    rounds: list[tuple[int, int]] = []
    engine = BatchedMILR(gen64, critic, 3, on_active=lambda n: rounds.append((n, pulled[0])))
    order = [d.job.key for d in engine.run(jobs())]
    assert sorted(order) == list(range(len(PROMPTS)))
    assert order != sorted(order)  # records come as prompts finish, not in suite order
    assert all(n == 3 for n, taken in rounds if taken < len(PROMPTS)), rounds
    assert sum(taken < len(PROMPTS) for _, taken in rounds) >= 3  # joins happened mid-run
    assert engine.stats["image_tokens"] > 0 and engine.stats["rounds"] == len(rounds)


def test_a_critic_failing_on_one_prompt_fails_only_that_prompt(gen64):
    """A real critic that raises for one prompt: that job carries the error, the rest equal."""
    from milr.critic import Critic, CriticResult

    class Picky(Critic):
        name = "picky"

        def score_batch(self, images, prompts, metadata):
            if any("dog" in p for p in prompts):
                raise RuntimeError("picky: cannot judge dogs")
            return [CriticResult(score=float(np.asarray(im).mean()) / 255) for im in images]

    critic = Picky()
    cfgs = configs("both")
    done = run_batched(gen64, critic, [Job(p, {}, c) for p, c in zip(PROMPTS, cfgs)], 4)
    failed = [d for d in done if d.error is not None]
    assert [d.job.prompt for d in failed] == ["a dog"]
    assert "cannot judge dogs" in str(failed[0].error) and failed[0].result is not None
    ok = [d for d in done if d.error is None]
    kept = [(p, c) for p, c in zip(PROMPTS, cfgs) if p != "a dog"]
    ref = reference(gen64, critic, [c for _, c in kept], [p for p, _ in kept])
    assert [trajectory(d.result) for d in ok] == [trajectory(r) for r in ref]


def test_out_of_memory_halves_the_batch_and_keeps_results(gen64, critic, capsys):
    cfgs = configs("image")
    ref = [trajectory(r) for r in reference(gen64, critic, cfgs)]
    limit = phase_bytes(gen64, 2)  # room for two prompts' image rows
    engine = BatchedMILR(gen64, critic, 8, memory_limit=limit)
    done = sorted(
        engine.run(Job(p, {}, c, key=i) for i, (p, c) in enumerate(zip(PROMPTS, cfgs))),
        key=lambda d: d.job.key,
    )
    assert all(d.error is None for d in done)
    assert [trajectory(d.result) for d in done] == ref
    assert engine.limit == 2 and engine.stats["ooms"] >= 2
    assert "out of memory with 8 prompts" in capsys.readouterr().err


def test_auto_picks_the_batch_from_memory(gen64):
    per_prompt = phase_bytes(gen64, 1)
    assert gen64.kv_bytes_per_token() == 2 * 2 * 4 * 16 * 8  # layers, kv heads, head dim, f64
    assert auto_batch(gen64, 1, MemoryLimit(5 * per_prompt + 1)) == 5
    assert auto_batch(gen64, 2, MemoryLimit(5 * per_prompt + 1)) == 2
    assert auto_batch(gen64, 1, MemoryLimit(1)) == 1


@pytest.mark.parametrize("bad", [0, -2, "many", 1.5, True])
def test_bad_batch_sizes_are_refused(gen64, critic, bad):
    with pytest.raises(MilrUserError, match="--batch-prompts"):
        BatchedMILR(gen64, critic, bad)


def test_janus_batched_loops_equal_the_one_prompt_loops(gen64):
    """Rows of different prompt lengths, prefixes and budgets; some stop at EOS, some at the cap."""
    import torch

    gen64.memoize_reasoning = False
    try:
        prompts = PROMPTS[:5]
        prefixes = [None, [60, 61], [70], None, [80, 81, 82]]
        caps = [None, 10, None, 24, 3]
        gen64.clear_cache()
        ref = [gen64.continue_reasoning(p, q or [], c) for p, q, c in zip(prompts, prefixes, caps)]
        gen64.clear_cache()
        got = gen64.continue_reasoning_batch(prompts, prefixes, caps)
    finally:
        gen64.memoize_reasoning = True
    cap = gen64.max_reasoning_tokens
    stops = {len(r.tokens) < (c or cap) for r, c in zip(ref, caps)}
    assert stops == {True, False}  # some rows stop at EOS, some at their budget
    for a, b in zip(ref, got):
        assert a.tokens == b.tokens and a.text == b.text
        assert torch.equal(a.latents, b.latents)
        assert (a.eos_latent is None) == (b.eos_latent is None)
        if a.eos_latent is not None:
            assert torch.equal(a.eos_latent, b.eos_latent)
    texts = [gen64.image_text(p, r.text) for p, r in zip(prompts, ref)]
    pre = [None, torch.tensor([3, 4, 5]), None, torch.tensor([7]), None]
    alone = [
        gen64.sample_image_tokens(
            t, None if q is None else q[None], batch=1, generator=gen64.rng(i), capture=2
        )
        for i, (t, q) in enumerate(zip(texts, pre))
    ]
    batch = gen64.sample_image_tokens_batch(
        texts, pre, [gen64.rng(i) for i in range(len(texts))], capture=2
    )
    for i, a in enumerate(alone):
        assert torch.equal(a.tokens[0], batch.tokens[i])
        assert torch.equal(a.latents[0], batch.latents[i])


def test_an_adapter_without_batched_methods_runs_batched_through_the_defaults(gen64, critic):
    from milr.generator import Generator

    class Plain(Generator):
        name = "plain"
        can_load = from_pretrained = None  # type: ignore[assignment]

        def __init__(self, inner):
            self.inner, self.device, self.dtype = inner, inner.device, inner.dtype

        image_token_count = property(lambda self: self.inner.image_token_count)
        max_reasoning_tokens = property(lambda self: self.inner.max_reasoning_tokens)

        def write_reasoning(self, prompt, max_tokens=None):
            return self.inner.write_reasoning(prompt, max_tokens)

        def continue_reasoning(self, prompt, prefix_tokens, max_tokens=None):
            return self.inner.continue_reasoning(prompt, prefix_tokens, max_tokens)

        def image_text(self, prompt, reasoning):
            return self.inner.image_text(prompt, reasoning)

        def sample_image_tokens(self, *args, **kwargs):
            return self.inner.sample_image_tokens(*args, **kwargs)

        def text_head(self, latents):
            return self.inner.text_head(latents)

        def image_head(self, latents, cfg_scale):
            return self.inner.image_head(latents, cfg_scale)

        def decode(self, tokens):
            return self.inner.decode(tokens)

    plain = Plain(gen64)
    assert type(plain).sample_image_tokens_batch is Generator.sample_image_tokens_batch
    cfgs = configs("both", samples_per_step=2)[:4]
    ref = [trajectory(r) for r in reference(plain, critic, cfgs, PROMPTS[:4])]
    gen64.clear_cache()
    done = run_batched(plain, critic, [Job(p, {}, c) for p, c in zip(PROMPTS, cfgs)], 3)
    assert [trajectory(d.result) for d in done] == ref


def test_the_engine_runs_everything_in_the_callers_thread(gen64, critic, monkeypatch):
    """No second thread runs torch: on a CPU a thread that ran a parallel op keeps its own
    OpenMP team, and every later op of the main thread ran 2.7x slower (`shapes` loop)."""
    import threading

    seen: set[int] = set()
    head = gen64.image_head

    def image_head(*args, **kwargs):  # the prompts' own work: their latent updates
        seen.add(threading.get_ident())
        return head(*args, **kwargs)

    monkeypatch.setattr(gen64, "image_head", image_head)
    before = set(threading.enumerate())
    extra: list[set] = []
    engine = BatchedMILR(
        gen64, critic, 3, on_active=lambda n: extra.append(set(threading.enumerate()) - before)
    )
    done = list(engine.run(Job(p, {}, c) for p, c in zip(PROMPTS[:5], configs("both"))))
    assert all(d.error is None for d in done) and len(done) == 5
    assert seen == {threading.get_ident()}
    assert extra and not any(extra), extra


def test_ctrl_c_in_a_prompts_own_work_stops_the_whole_run(gen64, critic, monkeypatch):
    calls = [0]
    head = gen64.image_head

    def image_head(*args, **kwargs):
        calls[0] += 1
        if calls[0] == 4:
            raise KeyboardInterrupt
        return head(*args, **kwargs)

    monkeypatch.setattr(gen64, "image_head", image_head)
    finished = []
    engine = BatchedMILR(gen64, critic, 3)
    with pytest.raises(KeyboardInterrupt):
        for d in engine.run(Job(p, {}, c) for p, c in zip(PROMPTS, configs("image"))):
            finished.append(d)
    assert len(finished) < len(PROMPTS)


def test_one_milr_instance_runs_one_prompt_at_a_time(gen64, critic):
    from milr.optimizer import resume_steps

    milr = MILR(gen64, critic, MILRConfig(mode="image", max_steps=2, seed=1))
    first = milr.steps(PROMPTS[0])
    resume_steps(first)  # suspended at its first request
    with pytest.raises(MilrUserError, match="one MILR per prompt"):
        resume_steps(milr.steps(PROMPTS[1]))
    first.close()  # a driver closing it is not a failure, and frees the instance
    assert milr.run(PROMPTS[1]).stop_reason in {"max_steps", "threshold"}


def test_steps_is_the_run_loop_driven_from_outside(gen64, critic):
    """`MILR.steps` answered with `serve` is `MILR.run`; an error thrown in at a request
    undoes that step and ends the prompt with its partial result attached."""
    from milr.optimizer import resume_steps
    from milr.phases import GenRequest, PrefixRequest, ScoreRequest, UpdateRequest, serve

    cfg = MILRConfig(mode="both", max_steps=3, seed=7, threshold=-0.01)
    ref = MILR(gen64, critic, cfg).run(PROMPTS[1])
    steps = MILR(gen64, critic, cfg).steps(PROMPTS[1])
    kinds, reply = [], None
    while True:
        try:
            request = resume_steps(steps, reply)
        except StopIteration as stop:
            result = stop.value
            break
        kinds.append(type(request))
        reply = serve(gen64, request)
    assert trajectory(result) == trajectory(ref)
    step = [UpdateRequest, PrefixRequest, GenRequest, ScoreRequest]  # its head work too
    assert kinds == [GenRequest, ScoreRequest] + step * (len(ref.steps) - 1)

    milr = MILR(gen64, critic, cfg)
    steps = milr.steps(PROMPTS[1])
    reply, n = None, 0
    with pytest.raises(RuntimeError, match="server down") as info:
        while True:
            request = resume_steps(steps, reply)
            n += 1
            if n == 6:  # step 1's scoring fails (after its update, reads and generation)
                z_before = milr.latents["image"].detach().clone()
                resume_steps(steps, error=RuntimeError("server down"))
            reply = serve(gen64, request)
    partial = info.value.milr_result
    assert partial.stop_reason == "error" and len(partial.steps) == 1
    assert "server down" in partial.error
    import torch

    # step 1's update had moved the latents; the failure undid it
    start = milr.initial_latents["image"]
    assert not torch.equal(z_before, start)
    assert torch.equal(milr.latents["image"].detach(), start)


def test_decode_chunks_follow_the_image_size_on_cpu(gen64, monkeypatch):
    """None: the first image alone, then as many per call as fit CPU_DECODE_PIXELS."""
    import torch

    from milr.engine import batch_phases

    calls: list[int] = []
    decode = gen64.decode

    def counting(tokens):
        calls.append(int(tokens.shape[0]))
        return decode(tokens)

    monkeypatch.setattr(gen64, "decode", counting)
    tokens = torch.randint(
        0, 16, (7, gen64.image_token_count), generator=torch.Generator().manual_seed(0)
    )
    alone = [np.asarray(im) for t in tokens for im in decode(t[None])]
    pixels = alone[0].shape[0] * alone[0].shape[1]

    monkeypatch.setattr(batch_phases, "CPU_DECODE_PIXELS", 3 * pixels)
    monkeypatch.setattr(batch_phases, "_IMAGE_PIXELS", batch_phases.weakref.WeakKeyDictionary())
    got = batch_phases.decode_in_chunks(gen64, tokens)
    assert calls == [1, 3, 3]  # the first image alone: its size sets the chunk
    assert all(np.array_equal(np.asarray(a), b) for a, b in zip(got, alone))
    calls.clear()
    batch_phases.decode_in_chunks(gen64, tokens)
    assert calls == [3, 3, 1]  # the size is remembered per generator

    calls.clear()
    monkeypatch.setattr(batch_phases, "CPU_DECODE_PIXELS", pixels // 2)  # large images
    batch_phases.decode_in_chunks(gen64, tokens)
    assert calls == [1] * 7

    calls.clear()
    batch_phases.decode_in_chunks(gen64, tokens, chunk=4)
    assert calls == [4, 3]


@pytest.mark.parametrize(
    "loops",
    [{"kv_cache": "static"}, pytest.param({"compile": True, "backend": "aot_eager"}, marks=SLOW)],
)
def test_static_and_compiled_loops_give_the_eager_trajectories(gen64, critic, loops):
    """Issue #21: eager (dynamic cache) = static cache = compiled step, for B in {1, 3, 8}."""
    cfgs = configs("both")
    ref = [trajectory(r) for r in reference(gen64, critic, cfgs)]
    try:
        gen64.set_loop_options(**loops)
        for b in (1, 3, 8):
            gen64.clear_cache()
            jobs = [Job(p, {}, c, key=i) for i, (p, c) in enumerate(zip(PROMPTS, cfgs))]
            done = run_batched(gen64, critic, jobs, batch_prompts=b)
            assert all(d.error is None for d in done), [d.error for d in done]
            for i, (a, d) in enumerate(zip(ref, done)):
                assert a == trajectory(d.result), f"{loops} B={b}: prompt {i} differs"
    finally:
        gen64.set_loop_options()


def test_pooled_latent_updates_equal_per_prompt_updates(gen64):
    """One head forward/backward for all prompts' latents (issue #21) = each prompt alone:
    the losses exactly; the updated latents to float64 rounding (the head's backward matmul
    over more rows may round its last bit differently: measured 7e-18 here)."""
    import torch

    from milr.phases import Candidate, UpdateRequest, update_latents, update_latents_pooled

    g = torch.Generator().manual_seed(0)
    d = gen64.hidden_size

    def requests():
        out = []
        for i, (m, n) in enumerate([(3, 2), (5, 4), (1, 3)]):
            z_t = (torch.randn(m, d, generator=g, dtype=torch.float64)).requires_grad_(True)
            z_v = (torch.randn(n, 2, d, generator=g, dtype=torch.float64)).requires_grad_(True)
            opts = {
                "text": torch.optim.Adam([z_t], lr=0.01),
                "image": torch.optim.Adam([z_v], lr=0.01),
            }
            pending = None
            if i == 1:  # REINFORCE over two sampled candidates
                pending = [
                    Candidate(None, list(range(m)), list(range(n)), None, score=0.3),
                    Candidate(None, list(range(1, m + 1)), list(range(2, n + 2)), None, score=0.7),
                ]
            mods = ["text", "image"] if i != 2 else ["image"]
            out.append(
                UpdateRequest(
                    mods, {"text": z_t, "image": z_v}, opts, -0.4 - i / 10, 5.0, 1.0, pending
                )
            )
        return out

    state = g.get_state()
    alone = requests()
    ref = [
        update_latents(
            gen64,
            r.mods,
            r.latents,
            r.optimizers,
            r.reward,
            cfg_scale=5.0,
            temperature=1.0,
            pending=r.pending,
        )
        for r in alone
    ]
    g.set_state(state)
    pooled = requests()
    got = update_latents_pooled(gen64, pooled)
    assert got == ref
    for a, b in zip(alone, pooled):
        for mod in ("text", "image"):
            torch.testing.assert_close(a.latents[mod], b.latents[mod], rtol=0, atol=1e-15)
