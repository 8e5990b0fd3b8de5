"""`judge` critic on a tiny random LLaVA built from a config, saved to disk and loaded by path."""

from __future__ import annotations

import functools
import tempfile
from pathlib import Path

import pytest
from PIL import Image

from milr import ExternalServiceError, MilrUserError, evaluate, get_registry
from milr.critics.judge import DEFAULT_QUESTION, JudgeCritic
from milr.critics.rubrics import JudgeReplyError
from milr.testing import CriticContract

WORDS = [
    "<unk>",
    "<pad>",
    "<s>",
    "</s>",
    "<image>",
    "yes",
    "no",
    "does",
    "this",
    "image",
    "show",
    "a",
    "photo",
    "of",
    "red",
    "blue",
    "green",
    "apple",
    "square",
    "circle",
    "answer",
    "or",
    "?",
    '"',
    ".",
    ":",
    "user",
    "assistant",
    "final",
    "score",
    "4",
]
CHAT_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}{% endif %}{% endfor %}\n"
    "{% endfor %}{% if add_generation_prompt %}assistant:{% endif %}"
)


@functools.cache
def tiny_llava_dir(chat_template: bool = True) -> Path:
    """Write a tiny random LLaVA (CLIP vision 32 px, Llama 1 layer, word-level vocab) once."""
    import torch
    from tokenizers import AddedToken, Tokenizer, models, normalizers, pre_tokenizers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    vocab = {w: i for i, w in enumerate(WORDS)}
    while len(vocab) < 96:
        vocab[f"w{len(vocab)}"] = len(vocab)
    tk = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tk.add_special_tokens(
        [
            AddedToken(t, special=True, normalized=False)
            for t in ("<unk>", "<pad>", "<s>", "</s>", "<image>")
        ]
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        extra_special_tokens={"image_token": "<image>"},
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            projection_dim=32,
        ),
        text_config=LlamaConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            pad_token_id=vocab["<pad>"],
        ),
        image_token_id=vocab["<image>"],
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = LlavaForConditionalGeneration(config).eval()
        with torch.no_grad():  # make yes/no logits depend visibly on the input
            model.lm_head.weight.mul_(30.0)
    out = Path(tempfile.mkdtemp(prefix="milr-tiny-llava-"))
    model.save_pretrained(out)
    LlavaProcessor(
        image_processor=CLIPImageProcessor(
            size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
        ),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE if chat_template else None,
    ).save_pretrained(out)
    return out


def images() -> list[Image.Image]:
    return [
        Image.new("RGB", (48, 40), (220, 30, 30)),
        Image.new("RGB", (32, 32), (30, 70, 220)),
        Image.linear_gradient("L").resize((64, 64)).convert("RGB"),
    ]


PROMPTS = ["a red apple", "a photo of a blue square or a green circle", "circle"]


def direct_scores(path: Path, critic: JudgeCritic) -> list[float]:
    """The reference: one unpadded forward per image, softmax over the full vocabulary logits."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    vocab = processor.tokenizer.get_vocab()
    out = []
    for im, prompt in zip(images(), PROMPTS, strict=True):
        text, add = critic.build_text(processor, prompt)
        inputs = processor(text=[text], images=[im], return_tensors="pt", add_special_tokens=add)
        with torch.no_grad():
            logits = model(**inputs).logits[0, -1]
        p = torch.softmax(logits.double(), dim=-1)
        p_yes, p_no = p[vocab["yes"]], p[vocab["no"]]
        out.append(float(p_yes / (p_yes + p_no)))
    return out


@pytest.fixture(scope="module")
def llava() -> Path:
    return tiny_llava_dir()


def test_score_equals_softmax_of_model_logits(llava):
    # the tiny random model gives yes + no ~20% of the next token: a tiny share lets it score
    critic = JudgeCritic(
        model=str(llava), device="cpu", batch_size=2, min_yes_no_share=1e-9
    )  # 2 + 1: padding + chunks
    res = evaluate(critic, images(), PROMPTS, None)
    expected = direct_scores(llava, critic)
    assert [r.score for r in res] == pytest.approx(expected, abs=1e-5)
    assert len({round(r.score, 6) for r in res}) > 1, "scores should vary with image and prompt"
    for r in res:
        assert r.passed == (r.score >= 0.5)
        assert r.details["p_yes"] > 0 and r.details["p_no"] > 0
        assert r.details["p_yes"] / (r.details["p_yes"] + r.details["p_no"]) == pytest.approx(
            r.score, abs=1e-6
        )
    assert res[0].details["question"] == DEFAULT_QUESTION.replace("{prompt}", PROMPTS[0])


def test_without_chat_template_uses_image_token_prefix():
    path = tiny_llava_dir(chat_template=False)
    critic = JudgeCritic(model=str(path), device="cpu", min_yes_no_share=1e-9)
    res = evaluate(critic, images(), PROMPTS, None)
    assert [r.score for r in res] == pytest.approx(direct_scores(path, critic), abs=1e-5)


def test_model_loaded_once_per_process(llava):
    a = JudgeCritic(model=str(llava), device="cpu")
    b = get_registry().create_critic("judge", model=str(llava), device="cpu", threshold=0.9)
    assert a.load()[0] is b.load()[0]


def test_threshold_and_custom_template(llava):
    critic = JudgeCritic(
        model=str(llava),
        device="cpu",
        threshold=None,
        template="Is {prompt} here?",
        min_yes_no_share=1e-9,
    )
    res = critic.score(images()[0], "a red apple")
    assert res.passed is None and res.details["question"] == "Is a red apple here?"
    with pytest.warns(DeprecationWarning, match="question= is deprecated"):
        old = JudgeCritic(model=str(llava), device="cpu", question="Is {prompt} here?")
    assert old.template == "Is {prompt} here?"


def test_user_errors(llava, tmp_path):
    with pytest.raises(
        MilrUserError, match="'model' is required: a Hub id or checkpoint directory"
    ):
        JudgeCritic()
    with pytest.raises(MilrUserError, match=r"must contain \{prompt\}"):
        JudgeCritic(model=str(llava), template="Is it good?")
    with pytest.raises(MilrUserError, match="'dtype'='int8' must be one of"):
        JudgeCritic(model=str(llava), dtype="int8")
    with pytest.raises(MilrUserError, match="'rubric'='stars'"):
        JudgeCritic(model=str(llava), rubric="stars")
    missing = tmp_path / "no-such-model"
    with pytest.raises(MilrUserError, match="no-such-model"):
        JudgeCritic(model=str(missing), device="cpu").score(images()[0], "x")
    critic = JudgeCritic(model=str(llava), device="cpu", yes_words="oui|Oui")
    assert critic.params.yes_words == ("oui", "Oui")
    with pytest.raises(MilrUserError, match="yes_words"):
        critic.score(images()[0], "x")


def greedy_first_answers(path: Path, critic: JudgeCritic) -> list[str]:
    """The reference: each image's unpadded greedy one-token answer, decoded."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    model = AutoModelForImageTextToText.from_pretrained(path).eval()
    processor = AutoProcessor.from_pretrained(path)
    out = []
    for im, prompt in zip(images(), PROMPTS, strict=True):
        text, add = critic.build_text(processor, prompt)
        inputs = processor(text=[text], images=[im], return_tensors="pt", add_special_tokens=add)
        with torch.no_grad():
            ids = model.generate(**inputs, do_sample=False, max_new_tokens=1)
        new = ids[0, inputs["input_ids"].shape[1] :]
        out.append(processor.tokenizer.decode(new, skip_special_tokens=True).strip())
    return out


def test_below_min_yes_no_share_the_answer_decides_or_the_image_fails_quoting_it(llava):
    """yes + no hold ~20-26% of the tiny model's next token: under the default 0.5 no score
    comes from those probabilities. The greedy answer "yes" (image 0) scores 1.0 from the word;
    any other answer fails its image with the answer and the share quoted."""
    shares = [
        r.details["yes_no_share"]
        for r in evaluate(
            JudgeCritic(model=str(llava), device="cpu", min_yes_no_share=1e-9),
            images(),
            PROMPTS,
            None,
        )
    ]
    assert all(0 < s < 0.5 for s in shares)
    critic = JudgeCritic(model=str(llava), device="cpu", batch_size=2)
    answers = greedy_first_answers(llava, critic)
    assert answers[0] == "yes" and answers[1] not in ("yes", "no")  # the cases below exist
    with pytest.raises(JudgeReplyError) as info:
        critic.score_batch(images(), PROMPTS, [{}, {}, {}])
    exc = info.value
    failed = {i for i, _ in exc.failures}
    assert failed == {i for i, a in enumerate(answers) if a.lower() not in ("yes", "no")}
    for i, reason in exc.failures:
        assert reason == (
            f"the answer cannot be read as rubric 'yesno': the answer {answers[i]!r} starts "
            "with none of yes_words=['yes', 'Yes'] or no_words=['no', 'No']; yes and no hold "
            f"{shares[i]:.1%} of the next token's probability (below min_yes_no_share=0.5)"
        )
        assert exc.results[i] is None
    kept = exc.results[0]
    assert (kept.score, kept.passed) == (1.0, True)
    assert kept.details["method"] == "answer" and kept.details["answer"] == "yes"
    assert kept.details["yes_no_share"] == pytest.approx(shares[0])
    assert f"image {min(failed)}: the answer cannot be read" in str(exc)


def test_at_or_above_min_yes_no_share_the_probabilities_score(llava):
    probe = JudgeCritic(model=str(llava), device="cpu", min_yes_no_share=1e-9)
    shares = [r.details["yes_no_share"] for r in evaluate(probe, images(), PROMPTS, None)]
    between = (sorted(shares)[0] + sorted(shares)[1]) / 2  # one image above, two below
    critic = JudgeCritic(model=str(llava), device="cpu", min_yes_no_share=min(shares))
    res = evaluate(critic, images(), PROMPTS, None)
    assert [r.details["method"] for r in res] == ["probabilities"] * 3
    assert [r.score for r in res] == pytest.approx(direct_scores(llava, critic), abs=1e-5)
    assert [r.details["yes_no_share"] for r in res] == pytest.approx(shares)
    split = JudgeCritic(model=str(llava), device="cpu", min_yes_no_share=between)
    with pytest.raises(JudgeReplyError) as info:
        split.score_batch(images(), PROMPTS, [{}, {}, {}])
    scored = [i for i, r in enumerate(info.value.results) if r is not None]
    by_probability = [i for i in scored if info.value.results[i].details["method"] != "answer"]
    assert by_probability == [i for i, s in enumerate(shares) if s >= between]


def test_min_yes_no_share_is_declared_and_validated(llava):
    assert JudgeCritic.Params.model_fields["min_yes_no_share"].default == 0.5
    for bad in (0, -0.1, 1.5, "half"):
        with pytest.raises(MilrUserError, match="min_yes_no_share") as info:
            JudgeCritic(model=str(llava), min_yes_no_share=bad)
        assert "\n" not in str(info.value)
    assert JudgeCritic(model=str(llava), min_yes_no_share=1).params.min_yes_no_share == 1.0


def test_milr_score_names_each_image_below_the_share_and_scores_the_rest(llava, tmp_path):
    from cli_helpers import run_milr

    paths = [tmp_path / f"{i}.png" for i in range(3)]
    for path, im in zip(paths, images(), strict=True):
        im.save(path)
    critic = JudgeCritic(model=str(llava), device="cpu")
    with pytest.raises(JudgeReplyError) as info:
        critic.score_batch(images(), ["a red apple"] * 3, [{}, {}, {}])
    expected = [f"error: {paths[i]}: judge ({llava}): {why}" for i, why in info.value.failures]
    spec = f"judge:model={llava},device=cpu"
    args = ["score", *map(str, paths), "--prompt", "a red apple"]
    proc = run_milr(*args, "--critic", spec)
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.splitlines() == expected and expected
    proc = run_milr(*args, "--critic", spec + ",min_yes_no_share=1e-9")
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert proc.stdout.count("verdict") == 3
    proc = run_milr(*args, "--critic", spec + ",min_yes_no_share=2")
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
    assert "min_yes_no_share" in proc.stderr and "Traceback" not in proc.stderr


# -- rubrics that need a written answer -----------------------------------------------------------


@functools.cache
def scripted_llava_dir() -> Path:
    """The tiny LLaVA rewired so its greedy answer to anything is "final score 4".

    Attention and MLP outputs are zeroed, so each position's hidden state is its own token's
    embedding; the chain ":" -> "final" -> "score" -> "4" -> "</s>" is written into orthogonal
    embeddings and the output head. Real architecture, real generate(); only the weights are set.
    """
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from milr.testing.tiny_qwen_vl import script_greedy_chain

    src = tiny_llava_dir()
    model = LlavaForConditionalGeneration.from_pretrained(src).eval()
    processor = AutoProcessor.from_pretrained(src)
    vocab = processor.tokenizer.get_vocab()
    script_greedy_chain(model, vocab, [":", "final", "score", "4", "</s>"])
    model.generation_config.eos_token_id = vocab["</s>"]
    out = Path(tempfile.mkdtemp(prefix="milr-scripted-llava-"))
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def test_likert5_reads_the_generated_final_score():
    critic = JudgeCritic(model=str(scripted_llava_dir()), device="cpu", rubric="likert5")
    res = evaluate(critic, images(), PROMPTS, None)
    assert [r.details["answer"] for r in res] == ["final score 4"] * 3
    assert [r.score for r in res] == [0.75] * 3 and res[0].details["final_score"] == 4.0
    assert all(r.passed is None for r in res)
    strict = JudgeCritic(
        model=str(scripted_llava_dir()), device="cpu", rubric="likert5", threshold=0.8
    )
    assert strict.score(images()[0], "x").passed is False


def test_checklist_unreadable_answer_is_a_fail_and_wise_an_error_naming_the_image():
    path = str(scripted_llava_dir())
    res = JudgeCritic(model=path, device="cpu", rubric="checklist").score(images()[0], "x")
    assert (res.score, res.passed, res.details["unparsable"]) == (0.0, False, True)
    with pytest.raises(
        JudgeReplyError, match=r"image 1: the answer cannot be read as rubric 'wise'"
    ):
        JudgeCritic(model=path, device="cpu", rubric="wise").score_batch(
            images()[:2], PROMPTS[:2], [{}, {}]
        )
    try:
        JudgeCritic(model=path, device="cpu", rubric="wise").score(images()[0], "x")
    except ExternalServiceError as exc:
        assert exc.service == f"judge ({path})" and exc.failures[0][0] == 0
    else:
        raise AssertionError("an unreadable wise answer must raise")


def test_an_unreadable_answer_keeps_the_other_answers_results():
    """The judge's written answers for the rest of the batch are not thrown away."""
    from milr.critics._judge_models import rubric_results
    from milr.critics.rubrics import get_rubric

    answers = ["Final Score: 4", "I cannot tell.", "Final Score: 2"]
    with pytest.raises(JudgeReplyError) as info:
        rubric_results(get_rubric("likert5", "judge"), answers, ["q"] * 3, None, "m", "judge", "h")
    exc = info.value
    assert [i for i, _ in exc.failures] == [1] and exc.results is not None
    assert exc.results[1] is None
    assert [exc.results[0].score, exc.results[2].score] == [0.75, 0.25]


def test_below_the_share_any_spelling_of_the_word_decides_and_no_answer_fails():
    """The rule on fixed rows: probabilities at the share; below it "Yes." and "no," decide;
    another answer, or a judge that cannot write one, fails its image."""
    from milr.critics._judge_models import yes_no_results

    rows = [
        {"score": 0.9, "p_yes": 0.45, "p_no": 0.05},  # share 0.5: probabilities
        {"score": 0.9, "p_yes": 0.09, "p_no": 0.01},
        {"score": 0.2, "p_yes": 0.02, "p_no": 0.08},
        {"score": 0.5, "p_yes": 0.01, "p_no": 0.01},
    ]
    written = {1: "Yes.", 2: "no, it is blue", 3: "maybe"}
    asked: list[list[int]] = []

    def answer(wanted: list[int]) -> list[str | None]:
        asked.append(wanted)
        return [written[i] for i in wanted]

    with pytest.raises(JudgeReplyError) as info:
        yes_no_results(rows, ["q"] * 4, 0.5, "m", min_share=0.5, answer=answer)
    assert asked == [[1, 2, 3]]
    assert [i for i, _ in info.value.failures] == [3]
    assert "the answer 'maybe' starts with none of" in info.value.failures[0][1]
    assert "yes and no hold 2.0% of the next token's probability" in info.value.failures[0][1]
    got = info.value.results
    assert [(r.score, r.passed, r.details["method"]) for r in got[:3]] == [
        (0.9, True, "probabilities"),
        (1.0, True, "answer"),
        (0.0, False, "answer"),
    ]
    with pytest.raises(JudgeReplyError, match="the judge cannot write an answer to read"):
        yes_no_results(rows[1:2], ["q"], 0.5, "m", min_share=0.5, answer=lambda r: [None])


def test_generated_answers_equal_unbatched_greedy_generate(llava):
    """Left-padded batches give each image the answer an unpadded generate() gives it."""
    import torch
    from transformers import AutoModelForImageTextToText, AutoProcessor

    critic = JudgeCritic(
        model=str(llava), device="cpu", rubric="checklist", batch_size=2, max_new_tokens=6
    )
    res = evaluate(critic, images(), PROMPTS, None)
    model = AutoModelForImageTextToText.from_pretrained(llava).eval()
    processor = AutoProcessor.from_pretrained(llava)
    for r, im, prompt in zip(res, images(), PROMPTS, strict=True):
        text, add = critic.build_text(processor, prompt)
        inputs = processor(text=[text], images=[im], return_tensors="pt", add_special_tokens=add)
        with torch.no_grad():
            out = model.generate(**inputs, do_sample=False, max_new_tokens=6)
        expected = processor.tokenizer.decode(
            out[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True
        ).strip()
        assert r.details["answer"] == expected
        assert len(r.details["answer"].split()) <= 6
    assert len({r.details["answer"] for r in res}) > 1, "answers should depend on the input"


class TestJudgeContract(CriticContract):
    def make_critic(self):
        return JudgeCritic(
            model=str(tiny_llava_dir()), device="cpu", batch_size=3, min_yes_no_share=1e-9
        )


def test_checkpoint_missing_tensors_is_refused_in_one_line(llava, tmp_path):
    """Issue #11 D: a judge checkpoint with missing/unexpected tensors does not load at random."""
    import shutil

    from safetensors.torch import load_file, save_file

    from milr.errors import CheckpointError

    d = tmp_path / "partial"
    shutil.copytree(llava, d)
    weights = next(d.glob("*.safetensors"))
    state = load_file(str(weights))
    dropped = sorted(state)[-1]
    del state[dropped]
    save_file(state, str(weights), metadata={"format": "pt"})
    with pytest.raises(CheckpointError) as exc:
        JudgeCritic(model=str(d), device="cpu").score(images()[0], PROMPTS[0])
    assert (
        "\n" not in str(exc.value) and dropped in str(exc.value) and weights.name in str(exc.value)
    )


# -- Hub ids: downloaded on first use, cache-only offline -------------------------------------------


def test_a_hub_id_downloads_on_first_use_then_loads_offline(llava, milr_hub, monkeypatch):
    """The judge fetches a Hub id from the (loopback) Hub with huggingface_hub, then loads the
    cached copy offline with the server gone; an unknown id is one line naming it."""
    from huggingface_hub import constants

    from milr.critics import judge as judge_module

    commit = milr_hub.add_folder("llava-hf/tiny-judge", llava)
    model, _ = JudgeCritic(model="llava-hf/tiny-judge", device="cpu").load()
    assert type(model).__name__ == "LlavaForConditionalGeneration"
    assert any(p.startswith("/lfs/llava-hf/tiny-judge/") for _, p in milr_hub.requests)
    with pytest.raises(MilrUserError) as exc:
        JudgeCritic(model="someone/no-such-judge", device="cpu").load()
    assert "\n" not in str(exc.value) and "'someone/no-such-judge'" in str(exc.value)
    assert "no such repo" in str(exc.value)
    milr_hub.stop()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(judge_module, "_MODELS", {})
    again, _ = JudgeCritic(model="llava-hf/tiny-judge", device="cpu").load()
    assert type(again).__name__ == "LlavaForConditionalGeneration"
    from milr.hub import cache_dir

    snapshots = cache_dir() / "models--llava-hf--tiny-judge" / "snapshots"
    assert [p.name for p in snapshots.iterdir()] == [commit]
