"""The rubric layer shared by the judges: templates and parsers, value by value."""

from __future__ import annotations

import math

import pytest

from milr import MilrUserError
from milr.critics.rubrics import (
    RUBRICS,
    RubricReplyError,
    get_rubric,
    load_template,
    normalize_token,
    parse_wise,
    wiscore,
    yes_no_from_logprobs,
)


@pytest.mark.parametrize(
    "token",
    [
        "no",
        "No",
        "NO",
        " no",
        "\u0120No",
        "\u2581no",
        "\u010ano",
        "no.",
        "No,",
        "no</w>",
        "\u00a0No",
    ],
)
def test_every_tokenizer_spelling_of_no_is_no(token):
    assert normalize_token(token) == "no"


def test_space_marker_tokens_count_toward_their_word():
    # issue #11 case 1: lmdeploy spells " No" as "ĠNo"; the right score is 0.55 / 0.95
    top = [("Yes", math.log(0.55)), ("\u0120No", math.log(0.40))]
    p_yes, p_no = yes_no_from_logprobs(top)
    assert p_yes / (p_yes + p_no) == pytest.approx(0.55 / 0.95)
    assert round(p_yes / (p_yes + p_no), 3) == 0.579
    spm = [("\u2581Yes", math.log(0.2)), ("\u2581no", math.log(0.6)), ("No", math.log(0.1))]
    p_yes, p_no = yes_no_from_logprobs(spm)
    assert (p_yes, p_no) == pytest.approx((0.2, 0.7))
    assert yes_no_from_logprobs([("Maybe", -0.1), ("Not", -2.0)]) is None


def test_wise_reads_json_and_plain_lines():
    # issue #11 case 2: WISE's official prompt asks for three plain lines, maybe in bold
    plain = "Consistency: 2\nRealism: 1\nAesthetic Quality: 0"
    bold = "**Consistency:** 2\n**Realism**: 1\n- **Aesthetic Quality:** 0\n"
    as_json = '```json\n{"consistency": 2, "realism": 1, "aesthetic_quality": 0}\n```'
    for text in (plain, bold, as_json, "Here you go.\n" + plain + "\nThanks."):
        grades = parse_wise(text)
        assert grades == {"consistency": 2.0, "realism": 1.0, "aesthetic_quality": 0.0}, text
        assert wiscore(grades) == pytest.approx(0.8)
    reply = RUBRICS["wise"].parse(bold)
    assert reply.score == pytest.approx(0.8) and reply.passed is None


def test_wise_restated_scale_then_grades_takes_the_grades():
    text = (
        "Scale: Consistency: 0 means absent.\nRealism: 0 means fake.\n"
        "Aesthetic Quality: 0 means ugly.\n\nConsistency: 2\nRealism: 2\nAesthetic Quality: 1"
    )
    assert wiscore(parse_wise(text)) == pytest.approx((7 * 2 + 2 * 2 + 1) / 20)


@pytest.mark.parametrize(
    "text, match",
    [
        ("I like it.", "no grades"),
        ("Consistency: 2\nRealism: 1", "aesthetic_quality"),
        ("Consistency: 3\nRealism: 1\nAesthetic Quality: 0", "outside 0-2"),
        ('{"consistency": 5, "realism": 1, "aesthetic_quality": 1}', "outside 0-2"),
        ('{"consistency": 1, "realism": 1}', "lacks"),
    ],
)
def test_wise_unreadable_replies_say_what_is_missing(text, match):
    with pytest.raises(RubricReplyError, match=match):
        parse_wise(text)


@pytest.mark.parametrize(
    "text, score",
    [
        ("The cat is there.\nFinal Score: 5", 1.0),
        ("**Final Score:** 4", 0.75),
        ("final score: 3/5", 0.5),
        ("Final Score: 1", 0.0),
        ("Final Score: 2 ... on reflection, Final Score: 4.5", 0.875),
    ],
)
def test_likert5_maps_final_score_to_unit_range(text, score):
    reply = RUBRICS["likert5"].parse(text)
    assert reply.score == pytest.approx(score) and reply.passed is None


@pytest.mark.parametrize("text", ["Looks fine.", "Final Score: 7", "Final Score: 0"])
def test_likert5_unreadable(text):
    with pytest.raises(RubricReplyError):
        RUBRICS["likert5"].parse(text)


@pytest.mark.parametrize(
    "text, score, passed, unparsable",
    [
        ('1. red apple: present\n{"Score": 0}', 1.0, True, False),
        ('- two dogs: only one\n```json\n{"Score": -1}\n```', 0.0, False, False),
        ('{"checklist": ["apple: yes"], "score": "0"}', 1.0, True, False),
        ('{"Score": -1, // one dog missing\n}', 0.0, False, False),
        ("I cannot tell.", 0.0, False, True),
        ('{"Score": 1}', 0.0, False, True),
    ],
)
def test_checklist_score_plus_one_and_unparsable_fails(text, score, passed, unparsable):
    reply = RUBRICS["checklist"].parse(text)
    assert (reply.score, reply.passed) == (score, passed)
    assert reply.details.get("unparsable", False) is unparsable


def test_yesno_text_answers():
    assert RUBRICS["yesno"].parse("Yes.").score == 1.0
    assert RUBRICS["yesno"].parse("\u2581No, it is blue").score == 0.0
    with pytest.raises(RubricReplyError, match="neither yes nor no"):
        RUBRICS["yesno"].parse("Perhaps")


def test_render_replaces_literally_and_adds_explanation_line():
    wise = RUBRICS["wise"]
    text = wise.render(wise.default_template, "a {odd} prompt", {"Explanation": "NOTE-1"})
    assert "Prompt: a {odd} prompt" in text and "NOTE-1" in text
    assert '{"consistency": 0' in text  # the JSON example survives
    plain = wise.render(wise.default_template, "p", {})
    assert "{explanation}" not in plain and "explanation)" not in plain


def test_template_from_file_and_errors(tmp_path):
    wise = get_rubric("wise", "api-judge")
    f = tmp_path / "wise.txt"
    f.write_text("Grade {prompt}.\nConsistency: ?\n", encoding="utf-8")
    assert load_template(wise, None, str(f), "judge") == f.read_text()
    assert load_template(wise, None, None, "judge") == wise.default_template
    with pytest.raises(MilrUserError, match="not both"):
        load_template(wise, "x {prompt}", str(f), "judge")
    with pytest.raises(MilrUserError, match=r"template_file=.*cannot be read"):
        load_template(wise, None, str(tmp_path / "missing.txt"), "judge")
    with pytest.raises(MilrUserError, match=r"must contain \{prompt\}"):
        load_template(wise, "Grade the image.", None, "judge")
    with pytest.raises(
        MilrUserError, match="rubric='stars'.*yesno, wise, wise-verified, likert5, checklist"
    ):
        get_rubric("stars", "judge")
