"""`vqa` critic on tiny random BLIP-VQA and GIT checkpoints saved to disk."""

from __future__ import annotations

import math

import pytest

from milr import MilrUserError, evaluate, get_registry
from milr.critics.vqa import VQACritic, color_questions
from milr.testing import CriticContract, sample_batch
from milr.testing import tiny_vision as tv


@pytest.fixture(scope="session")
def blip_dir(tmp_path_factory):
    return tv.blip_vqa(tmp_path_factory.mktemp("blip"))


@pytest.fixture(scope="session")
def git_dir(tmp_path_factory):
    return tv.git_vqa(tmp_path_factory.mktemp("git"))


def _batch():
    images, _, _ = sample_batch()
    prompts = ["a red car and two dogs", "a photo of a blue circle and a red square", "x", "a dog"]
    metadata = [
        {"tag": "color_attr", "include": [
            {"class": "car", "count": 1, "color": "red"}, {"class": "dog", "count": 2},
        ]},
        {},
        {"phrases": ["a green thing", "a blue square"]},
        {},
    ]  # fmt: skip
    return images, prompts, metadata


class TestBlipContract(CriticContract):
    @pytest.fixture(autouse=True)
    def _dir(self, blip_dir):
        self.weights = str(blip_dir)

    def make_critic(self):
        return VQACritic(weights=self.weights)

    def make_batch(self):
        return _batch()


class TestGitContract(CriticContract):
    @pytest.fixture(autouse=True)
    def _dir(self, git_dir):
        self.weights = str(git_dir)

    def make_critic(self):
        return VQACritic(weights=self.weights)

    def make_batch(self):
        return _batch()


def test_registered():
    assert get_registry().critic_entry("vqa").cls is VQACritic


def test_mixedreward_color_questions():
    meta = {"include": [
        {"class": "oven", "count": 1, "color": "pink"}, {"class": "dog", "count": 3},
        {"class": "cup", "count": 2, "color": "blue"},
    ]}  # fmt: skip
    assert color_questions(meta) == [
        "Is this a pink oven?",
        "Are there 3 dogs?",
        "Are there 2 blue cups?",
    ]


def test_modes_and_aggregates(blip_dir):
    images, prompts, metadata = _batch()
    res = evaluate(VQACritic(weights=str(blip_dir)), images, prompts, metadata)
    assert [r.details["mode"] for r in res] == ["colors", "phrases", "phrases", "phrases"]
    assert [q["question"] for q in res[1].details["questions"]] == [
        "a blue circle?",
        "a red square?",
    ]
    assert [q["question"] for q in res[2].details["questions"]] == [
        "a green thing?",
        "a blue square?",
    ]
    colors = res[0].details["questions"]
    assert res[0].score == pytest.approx(sum(q["score"] for q in colors) / 2, abs=1e-7)
    for r in res[1:]:
        assert r.score == pytest.approx(
            math.prod(q["score"] for q in r.details["questions"]), abs=1e-7
        )
    forced = evaluate(
        VQACritic(weights=str(blip_dir), aggregate="mean"), images[1:2], prompts[1:2], [{}]
    )[0]
    assert forced.score == pytest.approx(
        sum(q["score"] for q in res[1].details["questions"]) / 2, abs=1e-6
    )
    assert all(q["score"] == pytest.approx(q["p_yes"] / (q["p_yes"] + q["p_no"])) for q in colors)


def test_max_phrases(blip_dir):
    res = VQACritic(weights=str(blip_dir), max_phrases=1).score(
        sample_batch()[0][0], "a red car and a blue dog"
    )
    assert [q["question"] for q in res.details["questions"]] == ["a red car?"]


def test_blip_matches_hf_generate_first_step(blip_dir):
    """With [CLS] start (HF's own convention) our P(yes) equals HF generate's first-step scores."""
    import torch
    from transformers import AutoProcessor, BlipForQuestionAnswering

    image = sample_batch()[0][1]
    res = VQACritic(weights=str(blip_dir), enc_token=False).score(
        image, "", {"phrases": ["a blue circle"]}
    )
    assert res.details["question_start"] == "[CLS]"
    proc = AutoProcessor.from_pretrained(blip_dir, local_files_only=True)
    model = BlipForQuestionAnswering.from_pretrained(blip_dir, local_files_only=True).eval()
    inputs = proc(images=image, text="a blue circle?", return_tensors="pt")
    with torch.no_grad():
        gen = model.generate(
            **inputs,
            max_new_tokens=1,
            output_scores=True,
            return_dict_in_generate=True,
            do_sample=False,
        )
    probs = torch.softmax(gen.scores[0][0].float(), -1)
    yes, no = proc.tokenizer.convert_tokens_to_ids(["yes", "no"])
    q = res.details["questions"][0]
    assert q["p_yes"] == pytest.approx(float(probs[yes]), rel=1e-4)
    assert q["p_no"] == pytest.approx(float(probs[no]), rel=1e-4)


def test_blip_enc_token_changes_the_question(blip_dir):
    image = sample_batch()[0][1]
    enc = VQACritic(weights=str(blip_dir)).score(image, "a blue circle")
    cls = VQACritic(weights=str(blip_dir), enc_token=False).score(image, "a blue circle")
    assert enc.details["question_start"] == "[ENC]"
    assert enc.details["questions"][0]["p_yes"] != cls.details["questions"][0]["p_yes"]


def test_blip_padding_does_not_leak(blip_dir):
    """Questions of different lengths in one batch score exactly as alone (cross-attn mask bug)."""
    image = sample_batch()[0][0]
    critic = VQACritic(weights=str(blip_dir))
    long_q = {"phrases": ["a red square", "a very very long blue circle thing"]}
    both = critic.score(image, "", long_q).details["questions"]
    alone = critic.score(image, "", {"phrases": ["a red square"]}).details["questions"][0]
    assert both[0]["p_yes"] == pytest.approx(alone["p_yes"], abs=1e-6)


def test_git_matches_direct_forward(git_dir):
    import torch
    from transformers import AutoProcessor, GitForCausalLM

    image = sample_batch()[0][2]
    res = VQACritic(weights=str(git_dir)).score(
        image, "", {"include": [{"class": "car", "count": 1, "color": "red"}]}
    )
    proc = AutoProcessor.from_pretrained(git_dir, local_files_only=True)
    model = GitForCausalLM.from_pretrained(git_dir, local_files_only=True).eval()
    tok = proc.tokenizer
    ids = torch.tensor(
        [[tok.cls_token_id, *tok("Is this a red car?", add_special_tokens=False)["input_ids"]]]
    )
    pixels = proc(images=image, return_tensors="pt")["pixel_values"]
    with torch.no_grad():
        probs = torch.softmax(model(pixel_values=pixels, input_ids=ids).logits[0, -1], -1)
    yes, no = tok.convert_tokens_to_ids(["yes", "no"])
    q = res.details["questions"][0]
    assert q["question"] == "Is this a red car?"
    assert q["score"] == pytest.approx(float(probs[yes] / (probs[yes] + probs[no])), rel=1e-5)


def test_loaded_once(blip_dir):
    assert (
        VQACritic(weights=str(blip_dir)).load()
        is VQACritic(weights=str(blip_dir), mode="colors").load()
    )


# -- errors ---------------------------------------------------------------------------------


def test_no_phrases_is_one_line_error(blip_dir):
    with pytest.raises(MilrUserError) as err:
        VQACritic(weights=str(blip_dir)).score(sample_batch()[0][0], "is on the")
    msg = str(err.value)
    assert "'vqa'" in msg and "'is on the'" in msg and "phrases" in msg and "\n" not in msg


def test_colors_mode_needs_include(blip_dir):
    with pytest.raises(MilrUserError, match="mode=colors needs GenEval metadata"):
        VQACritic(weights=str(blip_dir), mode="colors").score(sample_batch()[0][0], "a red car")


def test_bad_phrases_metadata(blip_dir):
    with pytest.raises(MilrUserError, match="'phrases' must be a list of strings"):
        VQACritic(weights=str(blip_dir)).score(sample_batch()[0][0], "x", {"phrases": "a car"})


def test_wrong_architecture_and_missing_path(tmp_path, git_dir):
    ok = VQACritic(weights=str(git_dir)).load()
    assert ok.model_type == "git"
    gd = tv.mask2former(tmp_path / "m2f")
    with pytest.raises(
        MilrUserError, match="'mask2former' checkpoint; this critic runs 'blip', 'git'"
    ):
        VQACritic(weights=str(gd)).score(sample_batch()[0][0], "a car")
    with pytest.raises(MilrUserError, match="does not exist"):
        VQACritic(weights=str(tmp_path / "missing")).score(sample_batch()[0][0], "a car")


# -- spaCy noun chunks (T2I-CompBench's extractor) --------------------------------------------


@pytest.fixture(scope="session")
def spacy_pipeline(tmp_path_factory):
    """A spaCy pipeline on disk whose component writes a dependency parse (stands in for en_core_web_sm)."""
    spacy = pytest.importorskip("spacy")
    from spacy.language import Language

    dets = {"a", "an", "the"}
    adjs = {"red", "blue", "green", "round", "wooden"}

    @Language.component("milr_test_parser")
    def parse(doc):
        # "DET ADJ* NOUN" groups, each noun attached to the first noun; everything else CCONJ.
        pos: list[tuple[str, int]] = []
        root = None
        group: list[int] = []
        for tok in doc:
            w = tok.lower_
            group.append(tok.i)
            if w in dets or w in adjs:
                continue
            if w in ("and", "of"):
                pos.append(("CCONJ" if w == "and" else "ADP", tok.i))
                group = []
                continue
            noun = tok.i
            root = noun if root is None else root
            for j in group:
                pos.append(
                    ("NOUN" if j == noun else ("DET" if doc[j].lower_ in dets else "ADJ"), j)
                )
            group = []
        tags = dict((i, p) for p, i in pos)
        for tok in doc:
            p = tags.get(tok.i, "X")
            tok.pos_ = p
            if p == "NOUN":
                tok.head = doc[root]
                tok.dep_ = "ROOT" if tok.i == root else "conj"
            elif p in ("DET", "ADJ"):
                nxt = next(t.i for t in doc[tok.i :] if tags.get(t.i) == "NOUN")
                tok.head = doc[nxt]
                tok.dep_ = "det" if p == "DET" else "amod"
            else:
                tok.head = doc[root]
                tok.dep_ = "cc"
        return doc

    nlp = spacy.blank("en")
    nlp.add_pipe("milr_test_parser")
    path = tmp_path_factory.mktemp("spacy") / "pipeline"
    nlp.to_disk(path)
    return path


def test_spacy_noun_chunks(blip_dir, spacy_pipeline):
    critic = VQACritic(weights=str(blip_dir), phrases="spacy", spacy_model=str(spacy_pipeline))
    res = critic.score(sample_batch()[0][0], "a round pizza and a wooden piece of cake")
    assert [q["question"] for q in res.details["questions"]] == [
        "a round pizza?",
        "a wooden piece?",
        "cake?",
    ]


def test_spacy_missing_pipeline(blip_dir):
    pytest.importorskip("spacy")
    critic = VQACritic(
        weights=str(blip_dir), phrases="spacy", spacy_model="en_core_web_nonexistent"
    )
    with pytest.raises(MilrUserError, match="python -m spacy download en_core_web_nonexistent"):
        critic.score(sample_batch()[0][0], "a red car")


def test_spacy_pipeline_without_parser(blip_dir, tmp_path):
    spacy = pytest.importorskip("spacy")
    path = tmp_path / "blank"
    spacy.blank("en").to_disk(path)
    critic = VQACritic(weights=str(blip_dir), phrases="spacy", spacy_model=str(path))
    with pytest.raises(MilrUserError, match="no dependency parser"):
        critic.score(sample_batch()[0][0], "a red car")


def test_blip_image_size_interpolates_position_embeddings(blip_dir):
    image = sample_batch()[0][0]
    base = VQACritic(weights=str(blip_dir)).score(image, "a red square")
    big = VQACritic(weights=str(blip_dir), image_size=48).score(image, "a red square")
    assert big.details["questions"][0]["p_yes"] != base.details["questions"][0]["p_yes"]
    same = VQACritic(weights=str(blip_dir), image_size=32).score(
        image, "a red square"
    )  # the tiny model's own size
    assert same.details["questions"][0]["p_yes"] == pytest.approx(
        base.details["questions"][0]["p_yes"], abs=1e-6
    )
