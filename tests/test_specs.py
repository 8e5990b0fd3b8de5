"""Critic spec strings and TOML spec files."""

from __future__ import annotations

import pytest

from milr.errors import SpecError
from milr.specs import build_critic, load_spec_file, parse_spec, resolve_specs


@pytest.mark.parametrize(
    ("text", "name", "params", "weight"),
    [
        ("color", "color", {}, 1.0),
        ("color:target=red", "color", {"target": "red"}, 1.0),
        (
            "color:target=blue,tolerance=40,weight=2.5",
            "color",
            {"target": "blue", "tolerance": 40},
            2.5,
        ),
        ('x:a=true,b=null,c="3",d=0.5', "x", {"a": True, "b": None, "c": "3", "d": 0.5}, 1.0),
        ("x:a=[1,2", "x", {"a": "[1"}, 1.0),
        ("judge-2:q=is it ok?", "judge-2", {"q": "is it ok?"}, 1.0),
        ("x:weight=0", "x", {}, 0.0),
        # Values may contain key names, '=' and ':' (only ',' separates items).
        (
            "judge:question=is it the right weight?,weight=2",
            "judge",
            {"question": "is it the right weight?"},
            2.0,
        ),
        ("judge:weight=2,question=weight=heavy?", "judge", {"question": "weight=heavy?"}, 2.0),
        ("judge:q=ratio 16:9 a=b,a=weight", "judge", {"q": "ratio 16:9 a=b", "a": "weight"}, 1.0),
        ("x:weightless=1,weight=3", "x", {"weightless": 1}, 3.0),
        ("x:q=question=1,question=2", "x", {"q": "question=1", "question": 2}, 1.0),
    ],
)
def test_parse_spec(text, name, params, weight):
    if text == "x:a=[1,2":
        with pytest.raises(SpecError, match="'2' is not key=value"):
            parse_spec(text)
        return
    spec = parse_spec(text)
    assert (spec.name, spec.params, spec.weight) == (name, params, weight)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty critic spec"),
        ("Color", "must be lowercase"),
        ("color:", "nothing after ':'"),
        ("color:target", "'target' is not key=value"),
        ("color:weight=-1", "must be a finite number >= 0"),
        ("color:weight=heavy", "is not a number"),
        ("color:target=red,target=blue", "given twice"),
        ("color:weight=1,weight=2", "key 'weight' given twice"),
        ("color: target =red,target=blue", "key 'target' given twice"),
        ("judge:q=red, or blue", "'or blue' is not key=value.*TOML spec file"),
    ],
)
def test_malformed_specs_name_the_problem(text, fragment):
    with pytest.raises(SpecError, match=fragment):
        parse_spec(text)


def test_toml_spec_file(tmp_path):
    path = tmp_path / "reward.toml"
    path.write_text(
        'on_error = "skip"\n[[critic]]\nname = "color"\ntarget = "red"\nweight = 3\n'
        '[[critic]]\nname = "sharpness"\n',
        encoding="utf-8",
    )
    specs, options = load_spec_file(path)
    assert [(s.name, s.params, s.weight) for s in specs] == [
        ("color", {"target": "red"}, 3.0),
        ("sharpness", {}, 1.0),
    ]
    assert options == {"on_error": "skip"}
    ensemble = build_critic([str(path)])
    assert ensemble.on_error == "skip" and ensemble.labels == ["color", "sharpness"]


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("not toml ===", "not valid TOML"),
        ('on_error = "skip"\n', "no [[critic]] tables"),
        ('[[critic]]\ntarget = "red"\n', "has no name"),
        ('bogus = 1\n[[critic]]\nname = "color"\n', "unknown top-level keys"),
        ('[[critic]]\nname = "color"\nweight = -2\n', ">= 0"),
    ],
)
def test_bad_toml_files(tmp_path, content, fragment):
    path = tmp_path / "bad.toml"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(SpecError, match=fragment.replace("[", r"\[").replace("]", r"\]")):
        load_spec_file(path)


def test_missing_spec_file():
    with pytest.raises(SpecError, match="does not exist"):
        resolve_specs(["/nonexistent/reward.toml"])
