"""`self-judge` critic: the tiny random Janus judges with the very model object that generates."""

from __future__ import annotations

import gc

import pytest
from PIL import Image

from milr import MilrUserError, build_critic, evaluate
from milr.critics.rubrics import JudgeReplyError
from milr.critics.self_judge import SelfJudgeCritic
from milr.testing import CriticContract

# The tiny Janus vocabulary has "no" but no "yes"; "one" stands in for it (any single token works).
# The random model gives them ~0.5% of the next token, so tests that need a score pass a tiny
# min_yes_no_share (the default 0.5 fails such images: test_below_min_yes_no_share...).
WORDS = {"yes_words": "one", "no_words": "no", "min_yes_no_share": 1e-9}
BARE_WORDS = {"yes_words": "one", "no_words": "no"}
PROMPTS = ["a red square", "two blue circles on the left of a green tree", "a cat"]


@pytest.fixture(scope="module")
def janus(tmp_path_factory):
    from milr.models.janus import JanusGenerator
    from milr.testing import save_tiny_janus

    path = save_tiny_janus(tmp_path_factory.mktemp("tiny-janus"), seed=0)
    return JanusGenerator.from_pretrained(path, device="cpu", dtype="float32")


def images() -> list[Image.Image]:
    return [
        Image.new("RGB", (64, 64), (220, 30, 30)),
        Image.new("RGB", (100, 80), (30, 70, 220)),
        Image.linear_gradient("L").resize((64, 64)).convert("RGB"),
    ]


def reference_text(gen, critic: SelfJudgeCritic, prompt: str) -> str:
    """The judge input written out by hand: BOS first, the chat format, the image placeholder."""
    return "<bos>" + critic.params.chat_format.replace(
        "{question}", critic.judge_text(prompt)
    ).replace("{image}", gen.processor.image_token)


def direct_scores(gen, critic: SelfJudgeCritic) -> list[float]:
    """Reference: one unpadded full forward of the generator's model per image; softmax of logits."""
    import torch

    vocab = gen.processor.tokenizer.get_vocab()
    out = []
    for im, prompt in zip(images(), PROMPTS, strict=True):
        inputs = gen.processor(
            text=[reference_text(gen, critic, prompt)],
            images=[im],
            return_tensors="pt",
            add_special_tokens=False,
        )
        with torch.no_grad():
            logits = gen.model(**inputs).logits[0, -1]
        p = torch.softmax(logits.double(), dim=-1)
        out.append(float(p[vocab["one"]] / (p[vocab["one"]] + p[vocab["no"]])))
    return out


def test_unbound_use_says_how_to_bind():
    critic = SelfJudgeCritic(**WORDS)
    with pytest.raises(MilrUserError, match=r"milr generate.*bind\(generator="):
        critic.score(images()[0], "a red square")


def test_bind_rejects_generator_without_understanding_mode():
    from milr.errors import UnsupportedOperation

    class TextOnly:  # has a model and a processor, but no declared understanding mode
        model = object()
        processor = object()

    with pytest.raises(UnsupportedOperation, match="image-understanding mode"):
        SelfJudgeCritic().bind(generator=TextOnly())


def test_scores_with_the_generators_own_model(janus):
    from transformers import JanusForConditionalGeneration

    def live_models() -> int:
        gc.collect()
        return sum(type(o) is JanusForConditionalGeneration for o in gc.get_objects())

    before = live_models()
    param_ptrs = {p.data_ptr() for p in janus.model.parameters()}
    critic = SelfJudgeCritic(batch_size=2, **WORDS)
    critic.bind(generator=janus)
    res = evaluate(critic, images(), PROMPTS, None)
    assert critic.generator is janus
    assert live_models() == before, "self-judge must not load a second model"
    assert {p.data_ptr() for p in janus.model.parameters()} == param_ptrs
    assert not any(p.requires_grad for p in janus.model.parameters())
    assert [r.score for r in res] == pytest.approx(direct_scores(janus, critic), abs=1e-5)
    assert len({round(r.score, 6) for r in res}) > 1
    for r in res:
        assert r.passed == (r.score >= 0.5)
        assert r.details["question"].startswith("Does this image show")
    critic.bind(generator=None)
    with pytest.raises(MilrUserError, match="not bound"):
        critic.score(images()[0], "x")


def test_ensemble_forwards_bind(janus):
    ens = build_critic(
        [
            "self-judge:yes_words=one,no_words=no,min_yes_no_share=1e-9,weight=2",
            "color:target=red",
        ]
    )
    ens.bind(generator=janus)
    member = ens.members[0][1]
    assert isinstance(member, SelfJudgeCritic) and member.generator is janus
    res = ens.score(images()[0], "a red square")
    assert set(res.details["critics"]) == {"self-judge", "color"}
    assert 0.0 <= res.score <= 1.0


def test_default_words_missing_from_vocabulary_is_clear(janus):
    critic = SelfJudgeCritic()
    critic.bind(generator=janus)
    with pytest.raises(MilrUserError, match="yes_words"):
        critic.score(images()[0], "x")


def test_below_min_yes_no_share_fails_the_image_quoting_the_generators_answer(janus):
    critic = SelfJudgeCritic(**BARE_WORDS)
    critic.bind(generator=janus)
    probe = SelfJudgeCritic(**WORDS)
    probe.bind(generator=janus)
    shares = [r.details["yes_no_share"] for r in evaluate(probe, images(), PROMPTS, None)]
    assert all(0 < s < 0.5 for s in shares)
    questions = [critic.judge_text(p) for p in PROMPTS]
    answers = janus.answer(
        images(), questions, max_new_tokens=1, template=critic.params.chat_format
    )
    assert not any(a.split() and a.split()[0] in ("one", "no") for a in answers)
    with pytest.raises(JudgeReplyError) as info:
        critic.score_batch(images(), PROMPTS, [{}, {}, {}])
    assert [i for i, _ in info.value.failures] == [0, 1, 2]
    for (_, reason), answer, share in zip(info.value.failures, answers, shares, strict=True):
        assert reason == (
            f"the answer cannot be read as rubric 'yesno': the answer {answer!r} starts with "
            "none of yes_words=['one'] or no_words=['no']; yes and no hold "
            f"{share:.1%} of the next token's probability (below min_yes_no_share=0.5)"
        )
    above = SelfJudgeCritic(**{**BARE_WORDS, "min_yes_no_share": min(shares)})
    above.bind(generator=janus)
    res = evaluate(above, images(), PROMPTS, None)
    assert [r.score for r in res] == pytest.approx(direct_scores(janus, above), abs=1e-5)
    assert [r.details["method"] for r in res] == ["probabilities"] * 3
    with pytest.raises(MilrUserError, match="min_yes_no_share"):
        SelfJudgeCritic(min_yes_no_share=0)


def test_parameter_errors():
    with pytest.raises(MilrUserError, match="template"):
        SelfJudgeCritic(template="<|User|>: {question}")
    with pytest.raises(MilrUserError, match="threshold"):
        SelfJudgeCritic(threshold=2)


_GEN = {}


class TestSelfJudgeContract(CriticContract):
    def make_critic(self):
        if "gen" not in _GEN:
            import tempfile

            from milr.models.janus import JanusGenerator
            from milr.testing import save_tiny_janus

            path = save_tiny_janus(tempfile.mkdtemp(prefix="milr-tiny-janus-"), seed=1)
            _GEN["gen"] = JanusGenerator.from_pretrained(path, device="cpu", dtype="float32")
        critic = SelfJudgeCritic(**WORDS)
        critic.bind(generator=_GEN["gen"])
        return critic


def test_optimizer_binds_its_generator_and_uses_the_self_reward(janus):
    from milr.optimizer import run_milr

    critic = build_critic(["self-judge:yes_words=one,no_words=no,min_yes_no_share=1e-9"])
    result = run_milr(janus, critic, "a red square", max_steps=2, threshold=0.0, mode="image")
    assert critic.members[0][1].generator is janus
    assert len(result.steps) == 3  # the model's own image + two updates
    for step in result.steps:
        judged = step.critics["self-judge"]
        assert 0.0 <= judged["score"] <= 1.0 and step.reward == pytest.approx(step.score - 1)
        assert judged["score"] == pytest.approx(step.score)
        assert judged["passed"] == (judged["score"] >= 0.5)


def test_checklist_rubric_generates_with_the_generators_model(janus):
    """SelfReward: the generator writes its check; unreadable (random weights) counts as a fail."""
    import torch

    critic = SelfJudgeCritic(rubric="checklist", batch_size=2, max_new_tokens=5)
    critic.bind(generator=janus)
    res = evaluate(critic, images(), PROMPTS, None)
    for r, im, prompt in zip(res, images(), PROMPTS, strict=True):
        assert (r.score, r.passed) == (0.0, False) and r.details["unparsable"] is True
        inputs = janus.processor(
            text=[reference_text(janus, critic, prompt)],
            images=[im],
            return_tensors="pt",
            add_special_tokens=False,
        )
        with torch.no_grad():
            out = janus.model.generate(**inputs, do_sample=False, max_new_tokens=5)
        expected = janus.processor.tokenizer.decode(
            out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        ).strip()
        assert r.details["answer"] == expected
    assert 'Then answer with JSON on the last line: {"Score": 0}' in critic.judge_text("x")


def test_old_template_parameter_is_the_chat_format_with_a_warning():
    fmt = "<|User|>: {image}\n{question}\n<|Assistant|>:"
    with pytest.warns(DeprecationWarning, match="chat_format"):
        critic = SelfJudgeCritic(template=fmt)
    assert critic.params.chat_format == fmt and critic.params.template is None
    with pytest.raises(
        MilrUserError, match=r"'chat_format'=.*must contain \{image\} and \{question\}"
    ):
        SelfJudgeCritic(chat_format="{question} only")
