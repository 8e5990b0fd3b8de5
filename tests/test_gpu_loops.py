"""GPU-ready generation loops (issue #21): no host read per token, versioned sampling scheme.

A read of a device value on the host (``.tolist()``, ``.item()``, ``int(t)``, ``bool(t)``,
``.nonzero()``) stops the CPU from queueing the next token's kernels on a GPU. The loops are
checked on the CPU by counting those reads — transformers' own code included — while they run:
the count must not grow with the number of tokens.
"""

from __future__ import annotations

import collections

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from test_engine import lively  # noqa: E402 - the engine tests' lively tiny weights

#: Tensor methods that copy a device value to the host (each one a synchronisation on CUDA).
HOST_READS = ("tolist", "item", "__int__", "__bool__", "__index__", "__float__", "nonzero", "numpy")


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    import milr
    from milr.testing import save_tiny_janus

    path = save_tiny_janus(tmp_path_factory.mktemp("gpu_loops") / "model", seed=0)
    g = milr.load_generator(str(path), device="cpu", dtype="float64")
    g.memoize_reasoning = False
    return lively(g, seed=3)  # lively weights: tokens vary, some rows emit EOS


@pytest.fixture
def host_reads(monkeypatch):
    """A counter of host reads of tensor values made while the test runs."""
    counts: collections.Counter[str] = collections.Counter()
    for name in HOST_READS:
        real = getattr(torch.Tensor, name)

        def counted(self, *args, _real=real, _name=name, **kwargs):
            counts[_name] += 1
            return _real(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    return counts


def _reads(counts, fn):
    counts.clear()
    fn()
    return sum(counts.values())


def test_image_loops_read_nothing_back_per_token(gen, host_reads, monkeypatch):
    texts = ["a red cat", "two blue squares on the left of a tree", "a dog"]
    pre = [None, torch.tensor([1, 2]), torch.tensor([3])]
    seen = {}
    for n in (8, 16):
        monkeypatch.setattr(gen.settings, "image_token_count", n)
        gen.clear_cache()
        one = _reads(
            host_reads,
            lambda: gen.sample_image_tokens(texts[0], batch=2, generator=gen.rng(0), capture=2),
        )
        gen.clear_cache()
        many = _reads(
            host_reads,
            lambda: gen.sample_image_tokens_batch(
                texts, pre, [gen.rng(i) for i in range(3)], capture=2
            ),
        )
        seen[n] = (one, many)
    assert seen[8] == seen[16] == (0, 0), seen


def test_reasoning_loops_read_back_per_sync_point_not_per_token(gen, host_reads, monkeypatch):
    """As on an accelerator (a CPU reads back every token by default: nothing to queue)."""
    from milr.models.janus_loops import SYNC_EVERY, sync_interval

    assert sync_interval("cpu") == 1 and sync_interval("cuda:0") == SYNC_EVERY
    monkeypatch.setattr(gen, "sync_every", SYNC_EVERY, raising=False)

    prompts = ["a red cat", "two blue squares on the left of a tree", "a dog"]
    one = {
        b: _reads(host_reads, lambda b=b: gen.write_reasoning(prompts[0], max_tokens=b))
        for b in (4, 24)
    }
    many = {
        b: _reads(
            host_reads,
            lambda b=b: gen.continue_reasoning_batch(prompts, [None, [5], None], [b, b, 3]),
        )
        for b in (4, 24)
    }
    assert SYNC_EVERY > 24
    assert one == {4: 1, 24: 1} and many == {4: 1, 24: 1}, (one, many)  # the final read only


def test_trajectories_record_the_sampling_scheme(gen):
    from milr.generator import SAMPLING_SCHEME
    from milr.optimizer import MILR, MILRConfig
    from milr.specs import build_critic

    assert SAMPLING_SCHEME == "inverse-cdf/2"
    res = MILR(gen, build_critic(["color:target=red"]), MILRConfig(max_steps=1)).run("a red cat")
    assert res.to_dict()["generator"]["sampling"] == SAMPLING_SCHEME


def test_each_per_token_step_compiles_as_one_graph(gen):
    """fullgraph=True: a host read or a Python branch on a tensor in a step fails here."""
    from milr.models import janus_static as js

    gen.clear_cache()
    kv, h = gen._prefill([gen.reasoning_prompt_ids("a red cat")])
    cache, pad, start = gen._static_cache([kv, kv], 4)
    h2 = torch.cat([h, h])
    nxt = gen.model.lm_head(h2).argmax(-1)
    text = torch.compile(js.text_step, fullgraph=True, backend="eager")
    out = text(gen.lm, gen.embed, gen._cache_kw, cache, nxt, pad, start)
    assert out.shape == (2, gen.hidden_size)
    cond, uncond = gen.image_prompt_ids(gen.image_text("a red cat", None))
    kv, h = gen._prefill([cond, uncond])
    rows = [[(k[0:1], v[0:1]) for k, v in kv]] * 2 + [[(k[1:2], v[1:2]) for k, v in kv]] * 2
    cache, pad, start = gen._static_cache(rows, 4)
    image = torch.compile(js.image_step, fullgraph=True, backend="eager")
    u = torch.rand(2, dtype=torch.float64)
    forced, prefix = torch.tensor([True, False]), torch.tensor([5, 0])
    tok, h4 = image(
        gen.model,
        gen._cache_kw,
        cache,
        h.repeat_interleave(2, 0),
        u,
        forced,
        prefix,
        pad,
        start,
        5.0,
        1.0,
    )
    assert tok.shape == (2,) and int(tok[0]) == 5 and h4.shape == (4, gen.hidden_size)


def test_static_and_compiled_loops_equal_the_dynamic_ones(gen):
    """Rows of different lengths, prefixes and budgets (some stop at EOS); float64, bitwise."""
    from milr.errors import MilrUserError

    prompts = ["a red cat", "two blue squares on the left of a tree", "a dog", "an apple"]
    prefixes, caps = [None, [60, 61], None, [70]], [None, 10, 5, None]
    pre = [None, torch.tensor([3, 4, 5]), None, torch.tensor([7])]

    def run():
        gen.clear_cache()
        one = [gen.continue_reasoning(p, q or [], c) for p, q, c in zip(prompts, prefixes, caps)]
        many = gen.continue_reasoning_batch(prompts, prefixes, caps)
        texts = [gen.image_text(p, r.text) for p, r in zip(prompts, one)]
        img = [
            gen.sample_image_tokens(texts[0], batch=2, generator=gen.rng(0), capture=2),
            gen.sample_image_tokens(texts[1], torch.tensor([[3, 4]] * 2), generator=gen.rng(1)),
            gen.sample_image_tokens_batch(texts, pre, [gen.rng(i) for i in range(4)], capture=2),
        ]
        return one + many, img

    try:
        ref = run()  # on a CPU: a host read (and compaction) every token
        gen.sync_every = 32  # as on an accelerator: stopped rows step on until a sync point
        lazy = run()
        gen.set_loop_options(kv_cache="static")
        static = run()
        gen.set_loop_options(compile=True, backend="aot_eager")
        compiled = run()
        assert gen.compile_s > 0
        with pytest.raises(MilrUserError, match="kv_cache='paged'.*dynamic, static"):
            gen.set_loop_options(kv_cache="paged")
    finally:
        gen.set_loop_options()
        gen.sync_every = None
    assert any(r.eos_latent is not None for r in ref[0]) and any(
        r.eos_latent is None for r in ref[0]
    )
    for other in (lazy, static, compiled):
        for a, b in zip(ref[0], other[0]):
            assert a.tokens == b.tokens and torch.equal(a.latents, b.latents)
            assert (a.eos_latent is None) == (b.eos_latent is None)
        for a, b in zip(ref[1], other[1]):
            assert torch.equal(a.tokens, b.tokens) and torch.equal(a.latents, b.latents)


@pytest.mark.slow
def test_the_gpu_script_runs_end_to_end_on_the_cpu_with_a_tiny_model():
    """benchmarks/gpu_throughput.py --tiny: so the prepared GPU check cannot rot (eager and
    static here; the compiled loop is covered above and in the engine tests)."""
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_throughput.py"
    proc = subprocess.run(
        [sys.executable, str(script), "--tiny", "--loops", "eager", "static", "--batch", "1", "2",
         "--milr-loop", "static", "--steps", "2"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "weight-read floor" in proc.stdout and "| static | 2 |" in proc.stdout
    assert "prompts/h" in proc.stdout and "| 2 |" in proc.stdout.split("MILR")[1]
