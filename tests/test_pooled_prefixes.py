"""Pooled prefix reads (issue #21): one head forward per round for every prompt's next prefixes.

After its update a prompt reads the text head over ``Z_t`` and the CFG-fused image head over
``Z_v`` (and over its unoptimised latents, for attribution) to draw its next prefixes. The
batched engine answers all prompts' reads of a round with one forward per head; the draws stay
each prompt's own. Equal per prompt in float64; the unoptimised latents are read once per run.
"""

from __future__ import annotations

import pytest
from test_engine import CRITIC, PROMPTS, lively, trajectory

from milr.engine import Job, run_batched
from milr.optimizer import MILR, MILRConfig


@pytest.fixture(scope="module")
def gen64(tmp_path_factory):
    from milr.generator import load_generator
    from milr.testing import save_tiny_janus

    path = save_tiny_janus(tmp_path_factory.mktemp("prefixes") / "model", seed=0)
    return lively(load_generator(str(path), device="cpu", dtype="float64"))


@pytest.fixture(scope="module")
def critic():
    from milr.specs import build_critic

    return build_critic(CRITIC)


def _requests(gen, seed: int = 0):
    """Reads of mixed shapes, K, guidance, temperature and latent dtype (float32 and 64)."""
    import torch

    from milr.prefixes import PrefixRequest

    g = torch.Generator().manual_seed(seed)
    d = gen.hidden_size

    def z(*shape, dtype=torch.float64):
        return torch.randn(*shape, d, generator=g, dtype=torch.float64).to(dtype)

    return [
        PrefixRequest([(z(3), z(4, 2)), (z(3), None)], 1, 5.0, 1.0),
        PrefixRequest([(z(5), z(2, 2)), (z(5), z(2, 2))], 2, 5.0, 0.7),
        PrefixRequest([(None, z(6, 2)), (None, None)], 1, 3.0, 1.0),
        PrefixRequest([(z(2, dtype=torch.float32), z(3, 2, dtype=torch.float32))], 1, 5.0, 1.0),
        PrefixRequest([(z(1), None)], 3, 5.0, 1.0),
    ]


@pytest.mark.parametrize("pool_rows", [1024, 4])
def test_pooled_reads_equal_each_prompts_own_reads(gen64, monkeypatch, pool_rows):
    """Bitwise in float64, whatever the rows per forward (4: reads split over forwards)."""
    import torch

    from milr import prefixes
    from milr.prefixes import read_heads, read_heads_pooled

    monkeypatch.setattr(prefixes, "POOL_ROWS", pool_rows)
    requests = _requests(gen64)
    alone = [
        [
            read_heads(gen64, z_t, z_v, r.k, cfg_scale=r.cfg_scale, temperature=r.temperature)
            for z_t, z_v in r.reads
        ]
        for r in requests
    ]
    calls = {"text": 0, "image": 0}
    text_head, image_head = gen64.text_head, gen64.image_head

    def count(name, head):
        def counted(*args, **kwargs):
            calls[name] += 1
            return head(*args, **kwargs)

        return counted

    monkeypatch.setattr(gen64, "text_head", count("text", text_head))
    monkeypatch.setattr(gen64, "image_head", count("image", image_head))
    pooled = read_heads_pooled(gen64, requests)
    for i, (a_reads, b_reads) in enumerate(zip(alone, pooled)):
        assert len(a_reads) == len(b_reads)
        for a, b in zip(a_reads, b_reads):
            for mod in ("text", "image"):
                x, y = getattr(a, mod), getattr(b, mod)
                assert (x is None) == (y is None), (i, mod)
                if x is not None:
                    assert x.dtype == y.dtype and torch.equal(x, y), (i, mod)
    if pool_rows == 1024:
        # text: one forward per latent dtype; image: one per (dtype, guidance scale)
        assert calls == {"text": 2, "image": 3}
    else:
        assert calls["text"] > 2 and calls["image"] > 3


def test_prefix_draws_are_each_prompts_own(gen64):
    """`propose_prefixes` = the reads then the draws, from the prompt's generator only."""
    import torch

    from milr.prefixes import draw_prefixes, propose_prefixes, read_heads

    r = _requests(gen64)[1]  # K = 2: text and image sampled
    z_t, z_v = r.reads[0]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    text, image = propose_prefixes(
        gen64, z_t, z_v, 2, g1, uses_text=True, cfg_scale=5.0, temperature=0.7
    )
    dists = read_heads(gen64, z_t, z_v, 2, cfg_scale=5.0, temperature=0.7)
    torch.randn(3, generator=torch.Generator().manual_seed(9))  # another stream: no effect
    text2, image2 = draw_prefixes(gen64, dists, 2, g2, uses_text=True)
    assert text == text2 and torch.equal(image, image2)
    assert len(text) == 2 and image.shape == (2, z_v.shape[0])
    assert torch.equal(g1.get_state(), g2.get_state())


def _flags(result):
    return [(s.text_prefix_optimised, s.image_prefix_optimised) for s in result.steps]


def test_a_round_reads_each_head_once_for_all_prompts(gen64, critic, monkeypatch):
    """B = 8 in lockstep: per step one text-head and one image-head forward for the updates
    and one each for the next prefixes of all 8 prompts (their unoptimised latents' reads
    included); one prompt alone reads its unoptimised latents once per run. Trajectories and
    attribution flags equal the one-prompt runs."""
    cfgs = [
        MILRConfig(mode="both", max_steps=2, seed=300 + i, threshold=0.0)  # no step stops
        for i in range(len(PROMPTS))
    ]
    gen64.clear_cache()
    ref = [MILR(gen64, critic, c).run(p) for p, c in zip(PROMPTS, cfgs)]
    optimised = [r for r in ref if r.text_prefix_len > 0]
    assert len(optimised) >= 2 and all(len(r.steps) == 3 for r in optimised)

    rows: dict[str, list[int]] = {"text": [], "image": []}
    text_head, image_head = gen64.text_head, gen64.image_head

    def text(z):
        rows["text"].append(int(z.shape[0]))
        return text_head(z)

    def image(z, cfg_scale):
        rows["image"].append(int(z.shape[0]))
        return image_head(z, cfg_scale)

    monkeypatch.setattr(gen64, "text_head", text)
    monkeypatch.setattr(gen64, "image_head", image)
    one = optimised[0]
    i = next(j for j, r in enumerate(ref) if r is one)
    gen64.clear_cache()
    again = MILR(gen64, critic, cfgs[i]).run(PROMPTS[i])
    m, n = one.text_prefix_len, one.image_prefix_len
    # step 1: update, then its latents and the unoptimised ones; step 2: update, its latents
    assert rows == {"text": [m, m, m, m, m], "image": [n, n, n, n, n]}
    assert trajectory(again) == trajectory(one) and _flags(again) == _flags(one)

    rows["text"].clear()
    rows["image"].clear()
    gen64.clear_cache()
    jobs = [Job(p, {}, c, key=j) for j, (p, c) in enumerate(zip(PROMPTS, cfgs))]
    done = run_batched(gen64, critic, jobs, batch_prompts=8)
    assert all(d.error is None for d in done), [d.error for d in done]
    ms = sum(r.text_prefix_len for r in optimised)
    ns = sum(r.image_prefix_len for r in optimised)
    # per step: the pooled update, then the pooled reads (step 1: the unoptimised latents too)
    assert rows == {"text": [ms, 2 * ms, ms, ms], "image": [ns, 2 * ns, ns, ns]}
    for r, d in zip(ref, done):
        assert trajectory(d.result) == trajectory(r) and _flags(d.result) == _flags(r)
