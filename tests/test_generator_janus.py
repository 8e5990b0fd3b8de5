"""The Janus adapter on a tiny random Janus: latents, KV-cached loops, prompts, loading errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import milr  # noqa: E402
from milr.errors import MilrUserError  # noqa: E402

PROMPT = "a red square left of a blue circle"


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    torch.set_num_threads(1)
    from milr.testing import save_tiny_janus

    return save_tiny_janus(tmp_path_factory.mktemp("tiny_janus_gen") / "model", seed=0)


@pytest.fixture(scope="session")
def gen(tiny_dir):
    return milr.load_generator(tiny_dir, device="cpu")


def test_loads_through_registry_with_public_handles(gen, tiny_dir):
    from transformers import JanusForConditionalGeneration, JanusProcessor

    from milr.models.janus import JanusGenerator

    assert milr.get_registry().generators["janus"].cls is JanusGenerator
    assert isinstance(gen, JanusGenerator)
    assert isinstance(gen.model, JanusForConditionalGeneration)
    assert isinstance(gen.processor, JanusProcessor)
    assert str(gen.device) == "cpu" and gen.dtype == torch.float32
    assert gen.image_token_count == 16
    assert gen.max_reasoning_tokens == 24  # from the tiny model's milr.json
    assert not any(p.requires_grad for p in gen.model.parameters())


def test_reasoning_latents_are_post_norm_hidden_states(gen):
    r = gen.write_reasoning(PROMPT)
    assert 0 < len(r.tokens) <= 24
    assert r.latents.shape == (len(r.tokens), 64)
    # Greedy: the text head on each latent picks the token that was written.
    assert gen.text_head(r.latents).argmax(-1).tolist() == r.tokens
    # Latents equal an uncached full forward pass (last layer, after the final norm).
    ids = gen._encode(gen.reasoning_prompt(PROMPT)) + r.tokens
    with torch.no_grad():
        full = gen.model.model(input_ids=torch.tensor([ids])).last_hidden_state[0]
    p = len(ids) - len(r.tokens)
    torch.testing.assert_close(r.latents, full[p - 1 : len(ids) - 1], atol=1e-4, rtol=1e-4)
    assert isinstance(r.text, str)


def test_continue_reasoning_from_own_prefix_reproduces_rollout(gen):
    gen.clear_cache()
    r = gen.write_reasoning(PROMPT)
    gen.memoize_reasoning = False
    try:
        again = gen.continue_reasoning(PROMPT, r.tokens[:3])  # regenerated with the KV cache
    finally:
        gen.memoize_reasoning = True
    assert again is not r and again.tokens == r.tokens
    torch.testing.assert_close(again.latents, r.latents, atol=1e-5, rtol=1e-5)
    # memo: a prefix of a greedy rollout continues into that same rollout, so it is reused
    assert gen.continue_reasoning(PROMPT, r.tokens[:3]) is r
    blue = gen.tokenizer.convert_tokens_to_ids("blue")
    other = gen.continue_reasoning(PROMPT, [blue, blue])
    assert other is not r and other.tokens[:2] == [blue, blue]
    assert gen.continue_reasoning(PROMPT, other.tokens[:4]) is other


def test_image_latent_shapes_prefix_and_cfg_head(gen):
    text = gen.image_text(PROMPT, "two shapes")
    assert text == f"{PROMPT}. two shapes"
    out = gen.sample_image_tokens(text, batch=2, generator=gen.rng(0), capture=3)
    assert out.tokens.shape == (2, 16) and out.tokens.dtype == torch.long
    assert out.latents.shape == (2, 3, 2, 64)
    # cond and uncond rows differ (the uncond row is padded) and the fused head is u + s(c - u)
    assert not torch.allclose(out.latents[:, :, 0], out.latents[:, :, 1])
    raw = gen.model.model.generation_head(out.latents)
    expect = raw[..., 1, :] + 5.0 * (raw[..., 0, :] - raw[..., 1, :])
    torch.testing.assert_close(gen.image_head(out.latents, 5.0), expect)
    forced = torch.tensor([[7, 8, 9]])
    pre = gen.sample_image_tokens(text, prefix_tokens=forced, generator=gen.rng(1))
    assert pre.tokens[0, :3].tolist() == [7, 8, 9]


def test_uncond_row_keeps_only_bos_and_boi(gen):
    cond, uncond = gen.image_prompt_ids(gen.image_text("a cat", None))
    ids = gen._ids
    assert cond[0] == ids["bos"] and cond[-1] == ids["boi"] and len(cond) == len(uncond)
    assert uncond == [ids["bos"]] + [ids["pad"]] * (len(cond) - 2) + [ids["boi"]]


class InverseCdfPicker:
    """A transformers logits processor that picks each image token by the documented scheme.

    Written independently of milr's loop: the whole image's uniforms come from the seeded
    generator up front (``torch.rand(B, n, float64)``); at position i each row takes the first
    token whose cumulative CFG probability exceeds ``u[row, i] · total``. It sees the raw
    ``[cond; uncond]`` scores (transformers applies its own CFG processor after user
    processors), so it returns scores on which any guidance gives that token probability 1.
    """

    def __init__(self, u, cfg):
        self.u, self.cfg, self.i = u, cfg, 0

    def __call__(self, input_ids, scores):
        b = self.u.shape[0]
        c, un = scores[:b].double(), scores[b:].double()
        probs = torch.softmax(un + self.cfg * (c - un), dim=-1)
        cdf = torch.cumsum(probs, -1)
        pick = [int((cdf[r] <= self.u[r, self.i] * cdf[r, -1]).sum()) for r in range(b)]
        self.i += 1
        out = torch.full_like(scores, -1e4)
        for r, t in enumerate(pick):
            out[r, t] = out[b + r, t] = 0.0
        return out


@pytest.mark.parametrize("seed,batch", [(3, 1), (11, 2), (5, 3)])
def test_tokens_equal_transformers_image_generate(gen, seed, batch):
    """milr's loop draws what transformers' own image loop draws under the same sampler."""
    from transformers import LogitsProcessorList

    from milr.models.janus_loops import SAMPLING_SCHEME

    assert SAMPLING_SCHEME == "inverse-cdf/2"
    text = gen.image_text(PROMPT, "a plan")
    cond, _ = gen.image_prompt_ids(text)
    ids = torch.tensor([cond])
    n = gen.image_token_count
    u = torch.rand(batch, n, generator=gen.rng(seed), dtype=torch.float64)
    ref = gen.model.generate(
        ids,
        attention_mask=torch.ones_like(ids),
        generation_mode="image",
        do_sample=True,  # over one token of probability 1 (exp(-1e4) is 0)
        top_k=0,
        guidance_scale=5.0,
        num_return_sequences=batch,
        logits_processor=LogitsProcessorList([InverseCdfPicker(u, 5.0)]),
    )
    gen.clear_cache()
    mine = gen.sample_image_tokens(text, batch=batch, cfg_scale=5.0, generator=gen.rng(seed))
    assert torch.equal(mine.tokens, ref)


def test_seeded_sampling_is_reproducible_and_prompt_kv_reuse_is_exact(gen):
    text = gen.image_text("a green star", None)
    gen.clear_cache()
    a = gen.sample_image_tokens(text, generator=gen.rng(5), capture=2)
    b = gen.sample_image_tokens(text, generator=gen.rng(5), capture=2)  # reuses prompt KV
    c = gen.sample_image_tokens(text, generator=gen.rng(6))
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.latents, b.latents)
    assert not torch.equal(a.tokens, c.tokens)


def test_decode_gives_rgb_images(gen):
    out = gen.sample_image_tokens("a cat", batch=2, generator=gen.rng(0))
    images = gen.decode(out.tokens)
    assert len(images) == 2
    assert images[0].mode == "RGB" and images[0].size == (64, 64)


def test_prompt_errors(gen):
    with pytest.raises(MilrUserError, match="empty prompt"):
        gen.check_prompt("   ")
    with pytest.raises(MilrUserError, match=r"context is 1024 tokens"):
        gen.check_prompt("red " * 1100)


def test_milr_json_overrides_templates(tiny_dir, tmp_path):
    d = tmp_path / "custom"
    shutil.copytree(tiny_dir, d)
    (d / "milr.json").write_text(
        json.dumps({"image_template": "{text} .", "max_reasoning_tokens": 5, "comment": "x"})
    )
    g = milr.load_generator(d)
    cond, _ = g.image_prompt_ids("red square")
    vocab = g.tokenizer.get_vocab()
    assert cond == [
        vocab["<bos>"],
        vocab["red"],
        vocab["square"],
        vocab["."],
        vocab["<begin_of_image>"],
    ]
    assert len(g.write_reasoning("a cat").tokens) <= 5
    (d / "milr.json").write_text(json.dumps({"image_tempalte": "x"}))
    with pytest.raises(MilrUserError, match="image_tempalte"):
        milr.load_generator(d)


def test_model_resolution_errors(tmp_path, monkeypatch):
    not_janus = tmp_path / "llama"
    not_janus.mkdir()
    (not_janus / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(MilrUserError, match="model_type='llama'"):
        milr.load_generator(not_janus)
    with pytest.raises(MilrUserError, match="does not exist"):
        milr.load_generator(tmp_path / "missing")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MilrUserError, match="HF_HUB_OFFLINE"):
        milr.load_generator("nobody-here/no-such-model")
    with pytest.raises(MilrUserError, match="dtype"):
        from milr.models.janus import JanusGenerator

        JanusGenerator.from_pretrained(not_janus, dtype="int3")


def test_shapes_name_resolves_or_says_not_installed():
    from milr.generator import NamedCheckpoint
    from milr.models.janus import JanusGenerator

    entry = milr.get_registry().generators["shapes"]
    assert issubclass(entry.cls, NamedCheckpoint) and entry.cls.adapter is JanusGenerator
    assert entry.plugin == "milr.shapes.model"  # registered by the shapes package, not the core
    try:
        g = milr.load_generator("shapes")
    except MilrUserError as exc:
        assert "shapes model" in str(exc)
    else:
        assert g.name == "janus" and isinstance(g, JanusGenerator)


def test_named_checkpoint_of_an_adapter_loads_by_name(tiny_dir, monkeypatch):
    from milr.generator import named_checkpoint
    from milr.models.janus import JanusGenerator
    from milr.registry import Entry

    calls: list[int] = []

    def locate():
        calls.append(1)
        return tiny_dir

    cls = named_checkpoint("tiny-test", JanusGenerator, locate, "the tiny test model")
    assert calls == []  # nothing resolved at registration time
    assert not cls.can_load(tiny_dir)  # never picked for an arbitrary directory
    reg = milr.get_registry()
    monkeypatch.setitem(reg.generators, "tiny-test", Entry("tiny-test", cls, "t", "t", "0", False))
    g = milr.load_generator("tiny-test", device="cpu")
    assert isinstance(g, JanusGenerator) and g.image_token_count == 16 and calls == [1]
    assert type(milr.load_generator(tiny_dir)) is JanusGenerator  # directories pick the adapter


def test_understanding_is_a_declared_protocol_method(gen):
    from PIL import Image

    from milr.errors import UnsupportedOperation
    from milr.generator import Generator

    assert gen.supports_understanding and not Generator.supports_understanding
    with pytest.raises(UnsupportedOperation, match="no image-understanding mode"):
        Generator.understand(gen, [], [])  # the protocol's default: a clear error
    img = Image.new("RGB", (40, 30), (200, 20, 20))
    inputs = gen.understanding_inputs([img, img], ["is it red ?", "a much longer question here"])
    bos = gen.tokenizer.bos_token_id
    ids = inputs["input_ids"]
    assert (ids[:, 0] == bos).all() and ((ids == bos).sum(1) == 1).all()  # BOS first, once
    logp = gen.understand([img, img], ["is it red ?", "a much longer question here"])
    assert logp.shape == (2, 512) and logp.dtype == torch.float32
    assert torch.allclose(logp.exp().sum(-1), torch.ones(2), atol=1e-5)
    one = gen.understand([img], ["a much longer question here"])  # padding never leaks in
    assert torch.allclose(one[0], logp[1], atol=1e-5)


def test_understanding_methods_refuse_unpaired_images_and_questions(gen):
    from PIL import Image

    img = Image.new("RGB", (40, 30), (200, 20, 20))
    with pytest.raises(MilrUserError, match=r"^understand: 2 images but 1 questions; pass one"):
        gen.understand([img, img], ["is it red ?"])
    with pytest.raises(MilrUserError, match=r"^answer: 1 images but 0 questions; pass one each"):
        gen.answer([img], [])
    assert gen.answer([], []) == [] and gen.understand([], []).shape == (0, 512)


def test_module_import_is_cheap():
    code = (
        "import sys, milr.models.janus, milr.generator, milr.optimizer, milr.results; "
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=os.environ
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_checkpoint_cfg_scale_is_the_run_default(gen, tiny_dir, tmp_path):
    from milr.optimizer import MILR, MILRConfig

    critic = milr.build_critic("color:target=red")
    assert gen.default_cfg_scale == 5.0  # the paper's value when milr.json says nothing
    assert MILR(gen, critic).config.cfg_scale == 5.0
    d = tmp_path / "guided"
    shutil.copytree(tiny_dir, d)
    settings = json.loads((d / "milr.json").read_text())
    (d / "milr.json").write_text(json.dumps({**settings, "cfg_scale": 2.5}))
    g = milr.load_generator(d)
    assert g.default_cfg_scale == 2.5
    assert MILR(g, critic).config.cfg_scale == 2.5
    assert MILR(g, critic, MILRConfig(cfg_scale=7.0)).config.cfg_scale == 7.0  # explicit wins
    (d / "milr.json").write_text(json.dumps({**settings, "cfg_scale": -1}))
    with pytest.raises(MilrUserError, match="cfg_scale=-1"):
        milr.load_generator(d)
