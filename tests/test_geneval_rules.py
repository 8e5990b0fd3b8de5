"""The GenEval rules engine: hand-built detections for every clause kind, relation and margin."""

from __future__ import annotations

import json

import pytest

from milr import MilrUserError
from milr.geneval_rules import (
    GENEVAL_CLASSES,
    Detection,
    PromptParseError,
    RuleConfig,
    clauses_from_prompt,
    detections_needing_color,
    evaluate_rules,
    relative_position,
    validate_metadata,
)


def det(cls, box, conf=0.95, color=None):
    return Detection(cls, tuple(box), conf, color)


def box_at(cx, cy, w=10.0, h=10.0):
    return (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)


# ----------------------------------------------------------------- relations and margins

# A is a 10x10 box, B a 10x10 box; the per-axis shrink is 0.1 * 20 = 2 px. A relation needs
# (|off| - 2) / |off| > 0.5 on an axis-aligned offset, i.e. |off| > 4.
RELATION_CASES = [
    # (centre of A, centre of B, expected relations of A to B)
    ((0, 0), (20, 0), {"left of"}),
    ((20, 0), (0, 0), {"right of"}),
    ((0, 0), (0, 20), {"above"}),  # y grows downward
    ((0, 20), (0, 0), {"below"}),
    ((0, 0), (20, 20), {"left of", "above"}),  # diagonal: both components 18/28.3 = 0.64
    ((20, 20), (0, 0), {"right of", "below"}),
    ((0, 0), (20, 5), {"left of"}),  # dy = 3/20.6 = 0.15, too small
    ((0, 0), (1.5, 0), set()),  # offset 1.5 < shrink 2: nothing left
    ((0, 0), (0, 0), set()),  # same place
    ((0, 0), (3.9, 0), set()),  # (3.9 - 2)/3.9 = 0.487 <= 0.5: just inside the margin
    ((0, 0), (4.1, 0), {"left of"}),  # (4.1 - 2)/4.1 = 0.512 > 0.5: just outside
    ((0, 3.9), (0, 0), set()),
    ((0, 4.1), (0, 0), {"below"}),
]


@pytest.mark.parametrize(("a", "b", "expected"), RELATION_CASES)
def test_relative_position_table(a, b, expected):
    assert relative_position(box_at(*a), box_at(*b)) == expected


def test_margin_grows_with_box_size():
    # 40-px-wide boxes shrink x by 0.1 * 80 = 8 px: a 15 px offset is (15-8)/15 = 0.47 -> none.
    assert relative_position(box_at(0, 0, w=40), box_at(15, 0, w=40)) == set()
    assert relative_position(box_at(0, 0, w=10), box_at(15, 0, w=10)) == {"left of"}


def test_margin_and_cutoff_configurable():
    assert relative_position(box_at(0, 0), box_at(3.9, 0), margin=0.0) == {"left of"}
    assert relative_position(box_at(0, 0), box_at(20, 5), margin=0.0, cutoff=0.2) == {
        "left of",
        "above",
    }


# ----------------------------------------------------------------- clause table

POSITION_META = {
    "tag": "position",
    "include": [
        {"class": "teddy bear", "count": 1},
        {"class": "dog", "count": 1, "position": ["right of", 0]},
    ],
    "prompt": "a photo of a dog right of a teddy bear",
}
COUNTING_META = {
    "tag": "counting",
    "include": [{"class": "clock", "count": 2}],
    "exclude": [{"class": "clock", "count": 3}],
}
COLOR_META = {"tag": "colors", "include": [{"class": "car", "count": 1, "color": "pink"}]}
COLOR_ATTR_META = {
    "tag": "color_attr",
    "include": [
        {"class": "bus", "count": 1, "color": "green"},
        {"class": "microwave", "count": 1, "color": "purple"},
    ],
}
TWO_META = {
    "tag": "two_object",
    "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}],
}
SINGLE_META = {"tag": "single_object", "include": [{"class": "bench", "count": 1}]}

CASES = [
    # id, metadata, detections, passed, score, reason fragment
    ("single-hit", SINGLE_META, [det("bench", box_at(50, 50))], True, 1.0, ""),
    (
        "single-miss",
        SINGLE_META,
        [det("cat", box_at(50, 50))],
        False,
        0.0,
        "expected bench>=1, found 0",
    ),
    (
        "single-below-threshold",
        SINGLE_META,
        [det("bench", box_at(5, 5), conf=0.3)],
        False,
        0.0,
        "found 0",
    ),
    (
        "single-just-above-threshold",
        SINGLE_META,
        [det("bench", box_at(5, 5), conf=0.31)],
        True,
        1.0,
        "",
    ),
    ("two-both", TWO_META, [det("cat", box_at(5, 5)), det("dog", box_at(50, 5))], True, 1.0, ""),
    ("two-one", TWO_META, [det("cat", box_at(5, 5))], False, 0.5, "expected dog>=1"),
    (
        "counting-exact",
        COUNTING_META,
        [det("clock", box_at(5, 5)), det("clock", box_at(50, 5))],
        True,
        1.0,
        "",
    ),
    (
        "counting-too-few-confident",  # 0.9 threshold for counting: the 0.85 one does not count
        COUNTING_META,
        [det("clock", box_at(5, 5)), det("clock", box_at(50, 5), conf=0.85)],
        False,
        0.5,
        "expected clock>=2, found 1",
    ),
    (
        "counting-too-many",
        COUNTING_META,
        [det("clock", box_at(x, 5)) for x in (5, 30, 60)],
        False,
        0.5,
        "expected clock<3, found 3",
    ),
    ("color-match", COLOR_META, [det("car", box_at(5, 5), color="pink")], True, 1.0, ""),
    (
        "color-mismatch",
        COLOR_META,
        [det("car", box_at(5, 5), color="blue")],
        False,
        0.0,
        "expected pink car>=1, found 0 pink",
    ),
    (
        "color-probabilities",
        COLOR_META,
        [det("car", box_at(5, 5), color={"pink": 0.7, "red": 0.3})],
        True,
        1.0,
        "",
    ),
    (
        "color-only-most-confident-used",  # the pink car is the less confident one
        COLOR_META,
        [det("car", box_at(5, 5), 0.99, "red"), det("car", box_at(50, 5), 0.5, "pink")],
        False,
        0.0,
        "found 0 pink",
    ),
    (
        "color-attr-one-wrong",
        COLOR_ATTR_META,
        [det("bus", box_at(5, 5), color="green"), det("microwave", box_at(50, 5), color="white")],
        False,
        0.5,
        "expected purple microwave",
    ),
    (
        "position-right",
        POSITION_META,
        [det("teddy bear", box_at(10, 50)), det("dog", box_at(60, 50))],
        True,
        1.0,
        "",
    ),
    (
        "position-wrong-side",
        POSITION_META,
        [det("teddy bear", box_at(60, 50)), det("dog", box_at(10, 50))],
        False,
        0.5,
        "expected dog right of teddy bear, found dog left of teddy bear",
    ),
    (
        "position-inside-margin",
        POSITION_META,
        [det("teddy bear", box_at(10, 50)), det("dog", box_at(13.9, 50))],
        False,
        0.5,
        "no relation to",
    ),
    (
        "position-no-target",
        POSITION_META,
        [det("dog", box_at(60, 50))],
        False,
        0.0,
        "no target for dog to be right of",
    ),
    (
        "position-every-pair",  # two bears: the dog must be right of both... but only count=1 used
        POSITION_META,
        [
            det("teddy bear", box_at(10, 50), 0.99),
            det("teddy bear", box_at(90, 50), 0.5),
            det("dog", box_at(60, 50)),
        ],
        True,
        1.0,
        "",
    ),
]


@pytest.mark.parametrize(
    ("meta", "dets", "passed", "score", "reason"),
    [c[1:] for c in CASES],
    ids=[c[0] for c in CASES],
)
def test_clause_table(meta, dets, passed, score, reason):
    res = evaluate_rules(meta, dets, classes=GENEVAL_CLASSES)
    assert res.passed is passed
    assert res.score == pytest.approx(score)
    assert reason in res.reason
    if passed:
        assert res.reason == ""
    json.dumps(res.to_dict())


def test_position_checks_every_used_pair():
    meta = {
        "include": [
            {"class": "cat", "count": 2},
            {"class": "dog", "count": 1, "position": ["above", 0]},
        ]
    }
    cats = [det("cat", box_at(10, 80)), det("cat", box_at(60, 80))]
    dog_above_both = det("dog", box_at(35, 10))
    assert evaluate_rules(meta, [*cats, dog_above_both]).passed
    dog_above_one = det("dog", box_at(10, 55))
    cats2 = [det("cat", box_at(10, 80)), det("cat", box_at(60, 30))]
    res = evaluate_rules(meta, [*cats2, dog_above_one])
    assert not res.passed and "expected dog above cat" in res.reason


def test_max_objects_per_class_caps_exclude():
    meta = {"include": [{"class": "cup", "count": 1}], "exclude": [{"class": "cup", "count": 4}]}
    dets = [det("cup", box_at(10 * i, 5)) for i in range(6)]
    assert not evaluate_rules(meta, dets).passed
    assert evaluate_rules(meta, dets, config=RuleConfig(max_objects=3)).passed


def test_thresholds_configurable():
    dets = [det("bench", box_at(5, 5), conf=0.5)]
    assert evaluate_rules(SINGLE_META, dets).passed
    assert not evaluate_rules(SINGLE_META, dets, config=RuleConfig(threshold=0.6)).passed
    count_dets = [det("clock", box_at(5, 5), 0.5), det("clock", box_at(50, 5), 0.5)]
    assert not evaluate_rules(COUNTING_META, count_dets).passed
    assert evaluate_rules(
        COUNTING_META, count_dets, config=RuleConfig(counting_threshold=0.4)
    ).passed


def test_detections_by_class_mapping_accepted():
    dets = {"teddy bear": [det("teddy bear", box_at(10, 50))], "dog": [det("dog", box_at(60, 50))]}
    assert evaluate_rules(POSITION_META, dets).passed


def test_color_fn_called_only_for_used_objects():
    calls = []

    def color_fn(found, cls):
        calls.append((cls, len(found)))
        return ["pink"] * len(found)

    dets = [det("car", box_at(5, 5), 0.99), det("car", box_at(50, 5), 0.6)]
    res = evaluate_rules(COLOR_META, dets, color_fn)
    assert res.passed and calls == [("car", 1)]
    assert dets[0].color == "pink" and dets[1].color is None
    need = detections_needing_color(COLOR_META, [det("car", box_at(5, 5))])
    assert len(need) == 1 and need[0].cls == "car"


def test_color_needed_without_color_fn_is_an_error():
    with pytest.raises(ValueError, match="needs object colours"):
        evaluate_rules(COLOR_META, [det("car", box_at(5, 5))])


def test_injectable_vocabulary():
    shapes = ("circle", "square", "triangle")
    meta = clauses_from_prompt("two red circles", classes=shapes)
    assert meta["include"] == [{"class": "circle", "count": 2, "color": "red"}]
    assert meta["exclude"] == [{"class": "circle", "count": 3}]
    dets = [det("circle", box_at(5, 5), color="red"), det("circle", box_at(50, 5), color="red")]
    assert evaluate_rules(meta, dets, classes=shapes).passed
    with pytest.raises(MilrUserError, match=r"include\[0\]\.class='dog'"):
        evaluate_rules(
            SINGLE_META | {"include": [{"class": "dog", "count": 1}]}, [], classes=shapes
        )


# ----------------------------------------------------------------- schema errors

BAD_METADATA = [
    ([], "must be a JSON object"),
    ({"include": {"class": "dog"}}, "'include' must be a list"),
    ({"include": []}, "no clauses"),
    ({"include": [{"count": 1}]}, r"include\[0\]\.class is missing"),
    ({"include": [{"class": "dog"}]}, r"include\[0\]\.count is missing"),
    ({"include": [{"class": "dog", "count": 0}]}, r"include\[0\]\.count must be an integer"),
    ({"include": [{"class": "dog", "count": "2"}]}, r"include\[0\]\.count must be an integer"),
    ({"include": [{"class": "dog", "count": True}]}, r"include\[0\]\.count must be an integer"),
    ({"include": [{"class": "unicorn", "count": 1}]}, r"include\[0\]\.class='unicorn'"),
    ({"include": [{"class": "dog", "count": 1, "color": "teal"}]}, r"include\[0\]\.color='teal'"),
    (
        {"include": [{"class": "dog", "count": 1, "colour": "red"}]},
        r"unknown key\(s\) \['colour'\]",
    ),
    (
        {"include": [{"class": "dog", "count": 1, "position": ["left of", 0]}]},
        r"include\[0\]\.position: the first clause",
    ),
    (
        {
            "include": [
                {"class": "cat", "count": 1},
                {"class": "dog", "count": 1, "position": ["near", 0]},
            ]
        },
        r"include\[1\]\.position\[0\]='near'",
    ),
    (
        {
            "include": [
                {"class": "cat", "count": 1},
                {"class": "dog", "count": 1, "position": ["above", 1]},
            ]
        },
        r"include\[1\]\.position\[1\]=1",
    ),
    (
        {
            "include": [
                {"class": "cat", "count": 1},
                {"class": "dog", "count": 1, "position": "above"},
            ]
        },
        r"include\[1\]\.position must be \[relation, clause_index\]",
    ),
    (
        {"include": [{"class": "dog", "count": 1}], "exclude": [{"class": "dog"}]},
        r"exclude\[0\]\.count",
    ),
    ({"tag": 3, "include": [{"class": "dog", "count": 1}]}, "'tag' must be a string"),
]


@pytest.mark.parametrize(("meta", "message"), BAD_METADATA)
def test_bad_metadata_names_the_field(meta, message):
    with pytest.raises(MilrUserError, match=message):
        validate_metadata(meta)


def test_rule_config_validation():
    with pytest.raises(MilrUserError, match="threshold=1.5"):
        RuleConfig(threshold=1.5)
    with pytest.raises(MilrUserError, match="max_objects=0"):
        RuleConfig(max_objects=0)


# ----------------------------------------------------------------- prompts


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        (
            "a photo of a bench",
            {"tag": "single_object", "include": [{"class": "bench", "count": 1}]},
        ),
        (
            "A photo of an orange.",
            {"tag": "single_object", "include": [{"class": "orange", "count": 1}]},
        ),
        (
            "a photo of an orange handbag",
            {"tag": "colors", "include": [{"class": "handbag", "count": 1, "color": "orange"}]},
        ),
        (
            "a photo of four benchs",  # GenEval's naive plural
            {
                "tag": "counting",
                "include": [{"class": "bench", "count": 4}],
                "exclude": [{"class": "bench", "count": 5}],
            },
        ),
        (
            "three knives",
            {
                "tag": "counting",
                "include": [{"class": "knife", "count": 3}],
                "exclude": [{"class": "knife", "count": 4}],
            },
        ),
        (
            "a photo of a tv remote and a cell phone",
            {
                "tag": "two_object",
                "include": [
                    {"class": "tv remote", "count": 1},
                    {"class": "cell phone", "count": 1},
                ],
            },
        ),
        (
            "a photo of a hair drier below an elephant",
            {
                "tag": "position",
                "include": [
                    {"class": "elephant", "count": 1},
                    {"class": "hair drier", "count": 1, "position": ["below", 0]},
                ],
            },
        ),
        (
            "a photo of a red car and a blue bus",
            {
                "tag": "color_attr",
                "include": [
                    {"class": "car", "count": 1, "color": "red"},
                    {"class": "bus", "count": 1, "color": "blue"},
                ],
            },
        ),
    ],
)
def test_clauses_from_prompt(prompt, expected):
    meta = clauses_from_prompt(prompt)
    meta.pop("prompt")
    assert meta == expected


@pytest.mark.parametrize(
    "prompt",
    [
        "",
        "a photo of a unicorn",
        "a cat sitting on a mat",
        "a photo of a cat and a dog and a bird",
        "a photo of many dogs",
    ],
)
def test_unparseable_prompt_raises(prompt):
    with pytest.raises(PromptParseError, match="cannot"):
        clauses_from_prompt(prompt)


def test_clauses_from_prompt_reproduces_geneval_metadata(shared_data):
    """Every GenEval prompt's metadata is recovered from its prompt alone (553/553 here)."""
    lines = (shared_data / "geneval" / "evaluation_metadata.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    same = 0
    for row in rows:
        validate_metadata(row)
        derived = clauses_from_prompt(row["prompt"])
        same += derived == row
    assert len(rows) == 553
    assert same / len(rows) >= 0.95, f"{same}/{len(rows)} reproduced"
