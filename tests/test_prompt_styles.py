"""Prompt styles and prompt files (issue #12.1), without a model."""

from __future__ import annotations

import json

import pytest

from milr.errors import MilrUserError
from milr.models.janus_prompts import PAPER, load_prompt_file, resolve_style
from milr.models.janus_settings import JanusSettings


def test_paper_layout_is_deepseek_sft_with_literal_roles():
    text = PAPER.reasoning_text("a red cube")
    system, rest = text.split("\n\nUser: ", 1)
    assert system == PAPER.system and rest.endswith("\n\nAssistant:")
    assert '"a red cube"' in rest and "\n6. " in rest and "50 words" in rest
    assert PAPER.image_prompt_text(PAPER.image_text("a red cube", "A cube.")) == (
        "User: a red cube. A cube.\n\nAssistant:"
    )
    assert PAPER.image_text("a red cube", None) == "a red cube"


def test_default_style_is_the_checkpoints_own_formats_when_it_has_any(tmp_path):
    assert resolve_style(JanusSettings(), None, None, True).name == "paper"
    (tmp_path / "milr.json").write_text(json.dumps({"reasoning_instruction": "plan {prompt}"}))
    settings = JanusSettings.load(tmp_path)
    style = resolve_style(settings, None, None, False)
    assert (
        style.name == "checkpoint"
        and style.reasoning_text("x") == "<|User|>: plan x\n\n<|Assistant|>:"
    )
    (tmp_path / "milr.json").write_text(json.dumps({"max_reasoning_tokens": 5}))
    assert resolve_style(JanusSettings.load(tmp_path), None, None, False).name == "paper"
    with pytest.raises(MilrUserError, match="chat template"):
        resolve_style(JanusSettings(), "hf", None, False)
    with pytest.raises(MilrUserError, match="prompt style 'fancy' is unknown"):
        resolve_style(JanusSettings(), "fancy", None, True)


def test_prompt_files_json_and_toml(tmp_path):
    j = tmp_path / "p.json"
    j.write_text(json.dumps({"system": "S.", "instruction": "Draw {prompt}."}))
    style = load_prompt_file(j)
    assert style.reasoning_text("a cat") == "S.\n\nUser: Draw a cat.\n\nAssistant:"
    t = tmp_path / "p.toml"
    t.write_text('image_template = "<|User|>: {text}\\n\\n<|Assistant|>:"\n')
    assert load_prompt_file(t).image_prompt_text("x") == "<|User|>: x\n\n<|Assistant|>:"
    for content, needle in (
        ('instruktion = "x"\n', "unknown keys"),
        ('instruction = "no placeholder"\n', "must contain {prompt}"),
        ("instruction = \n", "not valid TOML"),
        ("instruction = 3\n", "must be strings"),
    ):
        t.write_text(content)
        with pytest.raises(MilrUserError, match=needle) as exc:
            load_prompt_file(t)
        assert "\n" not in str(exc.value)
