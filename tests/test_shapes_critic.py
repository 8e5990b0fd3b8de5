"""The `shapes` critic: contract, GenEval verdicts on rendered scenes, agreement with truth."""

from __future__ import annotations

import random

import numpy as np
import pytest

from milr import MilrUserError
from milr.critics.shapes import ShapesCritic
from milr.geneval_rules import GENEVAL_COLORS, Detection, evaluate_rules
from milr.shapes import detect, world
from milr.shapes.evalset import random_metadata
from milr.testing import CriticContract

Ob = world.Obj


class TestShapesContract(CriticContract):
    def make_critic(self):
        return ShapesCritic()

    def make_batch(self):
        scenes = [
            [Ob("circle", "red", 0, 0), Ob("circle", "red", 2, 2)],
            [Ob("square", "blue", 1, 0), Ob("triangle", "yellow", 1, 3)],
            [Ob("diamond", "green", 3, 3)],
            [],
        ]
        prompts = [
            "a photo of two red circles",
            "a photo of a blue square left of a yellow triangle",
            "a photo of a purple diamond",
            "a photo of a circle",
        ]
        return [world.render(s) for s in scenes], prompts, [{} for _ in scenes]


def truth_verdict(meta, objs) -> bool:
    dets = [
        Detection(d["class"], tuple(d["box"]), d["confidence"], d["color"])
        for d in world.ground_truth(objs)
    ]
    return evaluate_rules(meta, dets, classes=world.SHAPES, colors=GENEVAL_COLORS).passed


def test_verdicts_follow_geneval_rules():
    c = ShapesCritic()
    two_red = [Ob("circle", "red", 0, 0), Ob("circle", "red", 3, 1)]
    assert c.score(world.render(two_red), "a photo of two red circles").passed is True
    three = [*two_red, Ob("circle", "blue", 2, 3)]
    res = c.score(world.render(three), "a photo of two red circles")
    assert res.passed is False and "circle<3" in res.details["reason"]  # GenEval's exclude clause
    wrong = [Ob("circle", "red", 0, 0), Ob("circle", "green", 3, 1)]
    res = c.score(world.render(wrong), "a photo of two red circles")
    assert res.passed is False and 0 < res.score < 1
    left = [Ob("square", "blue", 1, 0), Ob("triangle", "yellow", 1, 3)]
    prompt = "a photo of a blue square left of a yellow triangle"
    assert c.score(world.render(left), prompt).passed is True
    swapped = [Ob("square", "blue", 1, 3), Ob("triangle", "yellow", 1, 0)]
    res = c.score(world.render(swapped), prompt)
    assert res.passed is False and "right of" in res.details["reason"]
    # partial credit grows with what is right: nothing < right objects, wrong place < all right
    empty = c.score(world.render([]), prompt).score
    assert empty < res.score < 1.0


def test_detections_are_reported():
    objs = [Ob("triangle", "orange", 2, 1)]
    res = ShapesCritic().score(world.render(objs), "a photo of an orange triangle")
    (det,) = res.details["detections"]
    assert det["class"] == "triangle" and det["color"] == "orange" and det["confidence"] == 1.0
    assert det["box"][0] == objs[0].box[0] and det["box"][2] == objs[0].box[2]


def test_metadata_wins_over_prompt():
    objs = [Ob("circle", "red", 0, 0)]
    meta = {"tag": "colors", "include": [{"class": "circle", "count": 1, "color": "blue"}]}
    res = ShapesCritic().score(world.render(objs), "a photo of a red circle", meta)
    assert res.passed is False


def test_bad_prompt_is_a_user_error():
    with pytest.raises(MilrUserError, match="shapes critic.*two red circles"):
        ShapesCritic().score(world.render([]), "a dog on a skateboard")
    with pytest.raises(
        MilrUserError, match="critic 'shapes': parameter 'threshold'=2.0 must be < 1"
    ):
        ShapesCritic(threshold=2.0)


def test_noise_and_odd_sizes():
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
    dets = detect.detect(noise)
    assert all(d["confidence"] < 0.9 for d in dets)
    from PIL import Image

    big = world.render([Ob("square", "green", 1, 1)]).resize((256, 256), Image.NEAREST)
    (det,) = detect.detect(big)
    assert det["class"] == "square" and det["color"] == "green"


def test_agreement_with_ground_truth():
    """Correct and near-miss scenes: the critic agrees with the scene's truth (100% here)."""
    c = ShapesCritic()
    rng = random.Random(7)
    agree = n_true = 0
    n = 300
    for _ in range(n):
        meta = random_metadata(rng)
        objs = world.scene_for(meta, rng)
        if rng.random() < 0.5:
            objs = world.corrupt(objs, rng)
        truth = truth_verdict(meta, objs)
        n_true += truth
        agree += c.score(world.render(objs), meta["prompt"], meta).passed == truth
    assert 0.3 < n_true / n < 0.9  # both verdicts are exercised
    assert agree / n >= 0.99


def test_agreement_after_the_shipped_vq():
    """The same kind of scenes through the shipped model's VQ encode/decode: >= 95% agreement."""
    pytest.importorskip("torch")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from verify_shapes_critic import agreement, make_cases, vq_round_trip

    from milr.shapes.model import model_path

    cases = make_cases(120, seed=11)
    decoded = vq_round_trip(model_path(), [world.render_array(o) for _m, o, _t in cases])
    rate, misses = agreement(decoded, cases)
    assert rate >= 0.95, misses


def test_components_are_4_connected_in_reading_order():
    """Diagonal neighbours are separate components; order: by each one's first pixel."""
    mask = np.array(
        [
            [0, 1, 1, 0, 0],
            [1, 0, 1, 0, 1],
            [0, 0, 0, 1, 1],
            [1, 1, 0, 0, 0],
        ],
        dtype=bool,
    )
    got = detect.components(mask)
    assert got == [[(0, 1), (0, 2), (1, 2)], [(1, 0)], [(1, 4), (2, 3), (2, 4)], [(3, 0), (3, 1)]]
