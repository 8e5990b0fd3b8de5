"""`grounding` critic on tiny random GroundingDINO and OWLv2 checkpoints saved to disk."""

from __future__ import annotations

import pytest
from PIL import Image

from milr import MilrUserError, evaluate, get_registry
from milr.critics.grounding import (
    GroundingCritic,
    _token_spans,
    mixed_reward_score,
    position_score,
)
from milr.geneval_rules import Detection
from milr.testing import CriticContract, sample_batch
from milr.testing import tiny_vision as tv


@pytest.fixture(scope="session")
def gdino_dir(tmp_path_factory):
    return tv.grounding_dino(tmp_path_factory.mktemp("gdino"))


@pytest.fixture(scope="session")
def owl_dir(tmp_path_factory):
    return tv.owlv2(tmp_path_factory.mktemp("owlv2"))


@pytest.fixture(scope="session")
def blip_dir(tmp_path_factory):
    return tv.blip_vqa(tmp_path_factory.mktemp("blip"))


def _batch():
    images, _, _ = sample_batch()
    prompts = ["a red car and two dogs", "a photo of a blue circle", "a green thing", "yellow"]
    metadata = [
        {"tag": "color_attr", "include": [{"class": "car", "count": 1, "color": "red"}]},
        {},
        {},
        {"tag": "position", "include": [
            {"class": "dog", "count": 1}, {"class": "cat", "count": 1, "position": ["left of", 0]},
        ]},
    ]  # fmt: skip
    return images, prompts, metadata


class TestGroundingDinoContract(CriticContract):
    @pytest.fixture(autouse=True)
    def _dir(self, gdino_dir):
        self.weights = str(gdino_dir)

    def make_critic(self):
        return GroundingCritic(weights=self.weights)

    def make_batch(self):
        return _batch()


class TestOwlv2Contract(CriticContract):
    @pytest.fixture(autouse=True)
    def _dir(self, owl_dir):
        self.weights = str(owl_dir)

    def make_critic(self):
        return GroundingCritic(weights=self.weights, score="mixed")

    def make_batch(self):
        return _batch()


def test_registered_with_parameters():
    from milr import critic_parameters

    assert get_registry().critic_entry("grounding").cls is GroundingCritic
    names = {p["name"] for p in critic_parameters(GroundingCritic)}
    assert {"weights", "box_threshold", "text_threshold", "score", "nms_iou"} <= names


# -- MixedReward rules (values from the original reward_gdino.py semantics) -----------------


def _det(cls, box, conf=0.9):
    return Detection(cls, box, conf)


SIZE = (100, 100)
POSITION = {
    "tag": "position",
    "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1, "position": ["left of", 0]}],
}  # fmt: skip


def test_spatial_full_marks_are_point_nine():
    dets = [_det("cat", (0, 40, 20, 60)), _det("dog", (70, 40, 90, 60))]
    assert mixed_reward_score(POSITION, dets, SIZE) == (pytest.approx(0.9), "spatial")


def test_spatial_wrong_side_keeps_presence_only():
    dets = [_det("cat", (70, 40, 90, 60)), _det("dog", (0, 40, 20, 60))]
    assert mixed_reward_score(POSITION, dets, SIZE)[0] == pytest.approx(0.4)
    assert mixed_reward_score(POSITION, [_det("cat", (0, 0, 9, 9))], SIZE)[0] == pytest.approx(0.2)
    assert mixed_reward_score(POSITION, [], SIZE)[0] == 0.0


def test_spatial_uses_most_confident_box():
    dets = [
        _det("cat", (70, 40, 90, 60), 0.4),  # wrong side, less confident
        _det("cat", (0, 40, 20, 60), 0.8),
        _det("dog", (70, 40, 90, 60), 0.9),
    ]
    assert mixed_reward_score(POSITION, dets, SIZE)[0] == pytest.approx(0.9)


def test_position_score_overlap_and_axes():
    # IoU 1/3 with the subject left of the target along x: 0.1 / IoU
    a, b = (0, 0, 60, 20), (30, 0, 90, 20)
    iou = (30 * 20) / (60 * 20 + 60 * 20 - 30 * 20)
    assert position_score("left of", a, b, SIZE) == pytest.approx(0.1 / iou)
    # vertical offset dominates: not "left of", but "above"
    a, b = (0, 0, 10, 10), (5, 60, 15, 70)
    assert position_score("left of", a, b, SIZE) == 0.0
    assert position_score("above", a, b, SIZE) == 1.0
    assert position_score("below", b, a, SIZE) == 1.0
    assert position_score("right of", (80, 0, 90, 10), (0, 0, 10, 10), SIZE) == 1.0


def test_position_score_normalises_by_image_size():
    # 40 px right and 30 px down, in a 400x100 image: x dominates in pixels, y after normalising
    a, b = (0, 0, 10, 10), (40, 30, 50, 40)
    assert position_score("left of", a, b, (400, 100)) == 0.0
    assert position_score("above", a, b, (400, 100)) == 1.0


def test_numeracy_exact_near_and_absent():
    meta = {
        "include": [
            {"class": "dog", "count": 2},
            {"class": "cat", "count": 1},
            {"class": "cup", "count": 1},
        ]
    }
    dets = [
        _det("dog", (0, 0, 10, 10)),
        _det("dog", (50, 50, 60, 60)),
        _det("cat", (0, 0, 5, 5)),
        _det("cat", (20, 20, 30, 30)),
    ]
    score, task = mixed_reward_score(meta, dets, SIZE)
    assert task == "numeracy"
    assert score == pytest.approx((1.0 + 0.2 + 0.0) / 3)


def test_object_presence_without_counts():
    meta = {"include": [{"class": "dog"}, {"class": "cat"}]}
    assert mixed_reward_score(meta, [_det("dog", (0, 0, 5, 5))], SIZE) == (0.5, "object")


# -- detection plumbing ----------------------------------------------------------------------


def test_select_thresholds_and_nms(gdino_dir):
    import torch

    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 5, 5.0]])
    scores = torch.tensor([[0.9, 0.1], [0.8, 0.35], [0.5, 0.2], [0.2, 0.25]])
    critic = GroundingCritic(weights=str(gdino_dir))
    dets = critic._select(boxes, scores, ["dog", "cat"])
    assert [(d.cls, round(d.confidence, 2)) for d in dets] == [
        ("dog", 0.9),
        ("dog", 0.5),
        ("cat", 0.35),
    ]
    no_nms = GroundingCritic(weights=str(gdino_dir), nms_iou=1.0)._select(
        boxes, scores, ["dog", "cat"]
    )
    assert [d.cls for d in no_nms].count("dog") == 3
    # text_threshold: a box above box_threshold for some class also counts for classes above it
    loose = GroundingCritic(weights=str(gdino_dir), text_threshold=0.15)._select(
        boxes, scores, ["dog", "cat"]
    )
    assert sorted(round(d.confidence, 2) for d in loose if d.cls == "cat") == [0.2, 0.35]


def test_token_spans_follow_offsets(gdino_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gdino_dir, local_files_only=True)
    caption = "teddy bear . dog ."
    spans = _token_spans(tok, caption, ["teddy bear", "dog"], 64)
    ids = tok(caption)["input_ids"]
    assert [tok.convert_ids_to_tokens([ids[i] for i in s]) for s in spans] == [
        ["teddy", "bear"],
        ["dog"],
    ]


def test_gdino_phrase_score_is_mean_of_token_probs(gdino_dir):
    import torch
    from transformers import AutoProcessor, GroundingDinoForObjectDetection

    image = sample_batch()[0][0]
    critic = GroundingCritic(weights=str(gdino_dir), box_threshold=0.0, nms_iou=1.0)
    dets = critic.detect([image], [["teddy bear", "dog"]])[0]
    proc = AutoProcessor.from_pretrained(gdino_dir, local_files_only=True)
    model = GroundingDinoForObjectDetection.from_pretrained(gdino_dir, local_files_only=True)
    inputs = proc(images=[image], text=["teddy bear . dog ."], return_tensors="pt")
    with torch.no_grad():
        probs = model(**inputs).logits.sigmoid()[0]
    tokens = proc.tokenizer.convert_ids_to_tokens(inputs["input_ids"][0].tolist())
    teddy = probs[:, [tokens.index("teddy"), tokens.index("bear")]].mean(-1)
    dog = probs[:, tokens.index("dog")]
    got = sorted(d.confidence for d in dets if d.cls == "teddy bear")
    assert got == pytest.approx(sorted(teddy.tolist()), abs=1e-5)
    assert sorted(d.confidence for d in dets if d.cls == "dog") == pytest.approx(
        sorted(dog.tolist()), abs=1e-5
    )


def test_owl_boxes_match_hf_post_processing(owl_dir):
    import torch
    from transformers import AutoProcessor, Owlv2ForObjectDetection

    image = Image.new("RGB", (80, 48), (200, 40, 40))  # not square: OWLv2 pads to 80x80
    critic = GroundingCritic(
        weights=str(owl_dir), box_threshold=0.0, nms_iou=1.0, query_template="{}"
    )
    dets = critic.detect([image], [["dog", "cat"]])[0]
    proc = AutoProcessor.from_pretrained(owl_dir, local_files_only=True)
    model = Owlv2ForObjectDetection.from_pretrained(owl_dir, local_files_only=True)
    inputs = proc(
        text=[["dog", "cat"]],
        images=[image],
        return_tensors="pt",
        padding="max_length",
        max_length=16,
    )
    with torch.no_grad():
        out = model(**inputs)
    # OWLv2's documented recipe: threshold per (box, query), boxes scaled to the padded square
    logits = out.logits[0].sigmoid()
    ref = []
    for q, name in enumerate(["dog", "cat"]):
        for b in torch.nonzero(logits[:, q] > 0.0).flatten().tolist():
            cx, cy, w, h = out.pred_boxes[0, b].tolist()
            ref.append(
                (
                    name,
                    round(float(logits[b, q]), 5),
                    [round(v * 80, 3) for v in (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)],
                )
            )
    got = [(d.cls, round(d.confidence, 5), [round(v, 3) for v in d.box]) for d in dets]
    assert sorted(got) == sorted(ref) and ref


def test_prompt_without_metadata_gives_open_classes(gdino_dir):
    critic = GroundingCritic(weights=str(gdino_dir))
    res = evaluate(critic, [sample_batch()[0][0]], ["a photo of two red cars and a dog"], [{}])[0]
    assert res.details["metadata_source"] == "prompt"
    assert res.details["classes"] == ["car", "dog"]
    assert res.details["tag"] == "color_attr"


def test_score_switch_reports_both(gdino_dir):
    images, prompts, metadata = _batch()
    rules = evaluate(GroundingCritic(weights=str(gdino_dir)), images, prompts, metadata)
    mixed = evaluate(
        GroundingCritic(weights=str(gdino_dir), score="mixed"), images, prompts, metadata
    )
    for r, m in zip(rules, mixed):
        assert r.score == r.details["geneval_score"] and m.score == m.details["mixed_score"]
        assert r.details["mixed_score"] == m.details["mixed_score"]
        assert r.passed == m.passed


def test_loaded_once_per_process(gdino_dir):
    a = GroundingCritic(weights=str(gdino_dir)).load()
    b = GroundingCritic(weights=str(gdino_dir), box_threshold=0.5).load()
    assert a is b


# -- errors ---------------------------------------------------------------------------------


def test_missing_weights_path(tmp_path):
    critic = GroundingCritic(weights=str(tmp_path / "nope"))
    with pytest.raises(MilrUserError) as err:
        critic.score(sample_batch()[0][0], "a dog")
    msg = str(err.value)
    assert "'grounding'" in msg and "nope" in msg and "\n" not in msg


def test_hub_id_not_in_cache():
    critic = GroundingCritic(weights="IDEA-Research/grounding-dino-tiny-not-cached")
    with pytest.raises(MilrUserError, match="not in the Hugging Face cache.*hf download"):
        critic.score(sample_batch()[0][0], "a dog")


def test_wrong_architecture(blip_dir):
    critic = GroundingCritic(weights=str(blip_dir))
    with pytest.raises(MilrUserError) as err:
        critic.score(sample_batch()[0][0], "a dog")
    assert "'blip' checkpoint" in str(err.value) and "grounding-dino" in str(err.value)


def test_bad_parameters_are_one_line():
    with pytest.raises(MilrUserError, match="box_threshold"):
        GroundingCritic(weights="x", box_threshold=1.5)
    with pytest.raises(MilrUserError, match="query_template"):
        GroundingCritic(weights="x", query_template="no placeholder")
    with pytest.raises(MilrUserError, match="weights"):
        GroundingCritic()
