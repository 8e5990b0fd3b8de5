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

#: Tensor methods that copy a device value to the host (each one a synchronisation on CUDA).
HOST_READS = ("tolist", "item", "__int__", "__bool__", "__index__", "__float__", "nonzero", "numpy")


@pytest.fixture(scope="module")
def gen(tmp_path_factory):
    import milr
    from milr.testing import save_tiny_janus

    path = save_tiny_janus(tmp_path_factory.mktemp("gpu_loops") / "model", seed=0)
    g = milr.load_generator(str(path), device="cpu", dtype="float64")
    g.memoize_reasoning = False
    return g


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


def test_reasoning_loops_read_back_per_sync_point_not_per_token(gen, host_reads):
    from milr.models.janus_loops import SYNC_EVERY

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
