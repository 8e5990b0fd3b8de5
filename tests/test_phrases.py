"""Noun phrases (rule) and open-vocabulary GenEval clauses from prompts (critics/_phrases.py)."""

from __future__ import annotations

import pytest

from milr.critics._phrases import open_clauses, rule_noun_phrases, singular
from milr.geneval_rules import PromptParseError


@pytest.mark.parametrize(
    ("text", "phrases"),
    [
        ("a red backpack and a blue train", ["a red backpack", "a blue train"]),
        ("a red apple and yellow bananas", ["a red apple", "yellow bananas"]),
        ("fluffy clouds and a glass table", ["fluffy clouds", "a glass table"]),
        ("a round pizza and a rectangular piece of lasagna", ["a round pizza", "a rectangular piece", "lasagna"]),
        ("A green bathroom with a mirror and a pink sink.", ["A green bathroom", "a mirror", "a pink sink"]),
        ("The striped black and white cat lay next to the grey blanket.", ["The striped black and white cat lay", "the grey blanket"]),
        ("four tents, two boats and one pig", ["four tents", "two boats", "one pig"]),
        ("a photo of two red cars", ["two red cars"]),
        ("is on the", []),
        ("", []),
    ],
)  # fmt: skip
def test_rule_noun_phrases(text, phrases):
    assert rule_noun_phrases(text) == phrases


def test_templated_compbench_prompts_split_in_two(shared_data):
    """Colour/shape/texture prompts of the form '<det> <attr> <noun> and <det> <attr> <noun>'."""
    import re

    pattern = re.compile(r"^(a|an) (\w+) (\w+) and (a|an) (\w+) (\w+)$")
    checked = 0
    for cat in ("color", "shape", "texture"):
        for line in (shared_data / "t2i-compbench" / f"{cat}_val.txt").read_text().splitlines():
            m = pattern.match(line.strip())
            if m:
                assert rule_noun_phrases(line) == [
                    " ".join(m.group(1, 2, 3)),
                    " ".join(m.group(4, 5, 6)),
                ]
                checked += 1
    assert checked > 300


def test_singular():
    assert [singular(w) for w in ("cars", "boxes", "berries", "people", "glass", "teddy bears")] == [
        "car", "box", "berry", "person", "glass", "teddy bear",
    ]  # fmt: skip


def test_open_clauses_geneval_forms():
    assert open_clauses("a photo of two red cars") == {
        "tag": "counting",
        "include": [{"class": "car", "count": 2, "color": "red"}],
        "exclude": [{"class": "car", "count": 3}],
        "prompt": "a photo of two red cars",
    }
    pos = open_clauses("a microwave on the right of a pig")
    assert pos["tag"] == "position"
    assert pos["include"] == [
        {"class": "pig", "count": 1},
        {"class": "microwave", "count": 1, "position": ["right of", 0]},
    ]
    assert open_clauses("a pink oven and a green motorcycle")["tag"] == "color_attr"
    assert open_clauses("a toaster")["tag"] == "single_object"


def test_open_clauses_no_phrase():
    with pytest.raises(PromptParseError, match="no noun phrase"):
        open_clauses("is on the", critic="grounding")
