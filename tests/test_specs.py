"""Critic spec strings and TOML spec files."""

from __future__ import annotations

import json

import pytest

import milr
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
        ("colorfulness,weight=0.5", "after ':', e.g. colorfulness:weight=0.5$"),
        ("color,red", r"must be lowercase \[a-z0-9_-\]\+$"),
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


@pytest.mark.parametrize(
    ("text", "flags"),
    [
        ("shapes,colorfulness", "--critic shapes --critic colorfulness"),
        ("shapes, colorfulness", "--critic shapes --critic colorfulness"),
        ("shapes colorfulness", "--critic shapes --critic colorfulness"),
        ("shapes;color:target=red", "--critic shapes --critic color:target=red"),
        ("color:target=red,colorfulness", "--critic color:target=red --critic colorfulness"),
        (
            "color:target=red,colorfulness:weight=0.5",
            "--critic color:target=red --critic colorfulness:weight=0.5",
        ),
    ],
)
def test_several_critics_in_one_spec_say_to_repeat_the_option(text, flags):
    """Every way of listing critics in one --critic says to repeat it (main said "must be
    lowercase" or accepted 'colorfulness:weight' as a parameter of color)."""
    with pytest.raises(SpecError) as info:
        parse_spec(text)
    message = str(info.value)
    assert message.endswith(f"give each its own --critic (repeat the option): {flags}")
    assert "\n" not in message and "lowercase" not in message


def test_several_critics_in_one_spec_file_name_say_one_table_each(tmp_path):
    path = tmp_path / "two.toml"
    path.write_text('[[critic]]\nname = "shapes,colorfulness"\n')
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    assert str(info.value) == (
        f"{str(path)!r} [[critic]] 1 ('shapes,colorfulness'): name = 'shapes,colorfulness' "
        "names 2 critics; give each its own [[critic]] table"
    )


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


# -- weights_by_tag, labels, sources ------------------------------------------------------------


def _write(tmp_path, text, name="reward.toml"):
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


MIXED = """
[[critic]]
name = "color"
label = "red"
target = "red"
weight = 0.75
weights_by_tag = { colors = 0.5, color_attr = 0.5 }

[[critic]]
name = "colorfulness"
weight = 0.25
weights_by_tag = { colors = 0.5, color_attr = 0.5 }
"""


def test_toml_weights_by_tag_and_label(tmp_path):
    path = _write(tmp_path, MIXED)
    specs, _ = load_spec_file(path)
    assert specs[0].weights_by_tag == {"colors": 0.5, "color_attr": 0.5}
    assert specs[0].label == "red" and specs[0].params == {"target": "red"}
    assert specs[1].source == f"{str(path)!r} [[critic]] 2 ('colorfulness')"
    ens = build_critic(str(path))
    assert ens.labels == ["red", "colorfulness"]
    from PIL import Image

    red = Image.new("RGB", (8, 8), (220, 30, 30))
    res = ens.score(red, "a red thing", {"tag": "colors"})
    assert res.details["critics"]["red"]["weight"] == 0.5
    res = ens.score(red, "a red thing", {"tag": "counting"})
    assert res.details["critics"]["red"]["weight"] == 0.75


@pytest.mark.parametrize(
    ("table", "fragment"),
    [
        ("weights_by_tag = { colors = -0.5 }", "[[critic]] 1 ('color') weights_by_tag.colors"),
        ("weights_by_tag = { colors = 'heavy' }", "weights_by_tag.colors"),
        ("weights_by_tag = 0.5", "weights_by_tag must be a non-empty table"),
        ("weights_by_tag = {}", "weights_by_tag must be a non-empty table"),
        ("label = ''", "[[critic]] 1 ('color'): label must be a non-empty string"),
        ("weight = true", "[[critic]] 1 ('color')"),
    ],
)
def test_bad_conditional_tables_name_file_table_and_key(tmp_path, table, fragment):
    path = _write(tmp_path, f'[[critic]]\nname = "color"\n{table}\n')
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    message = str(info.value)
    assert str(path) in message and fragment in message and "\n" not in message


def test_build_errors_name_the_spec_file_and_table(tmp_path):
    path = _write(
        tmp_path,
        '[[critic]]\nname = "sharpness"\n[[critic]]\nname = "color"\ntarget = 3\ntolerance = -1\n',
    )
    with pytest.raises(milr.MilrUserError) as info:
        build_critic(str(path))
    message = str(info.value)
    assert message.startswith(f"{str(path)!r} [[critic]] 2 ('color'): critic 'color'")
    assert "'tolerance'" in message and "\n" not in message


def test_route_table_in_a_spec_file(tmp_path):
    path = _write(
        tmp_path,
        """
[[critic]]
name = "route"
field = "category"

  [[critic.member]]
  name = "color"
  target = "red"
  when = ["color"]

  [[critic.member]]
  name = "sharpness"
  when = ["texture"]
""",
    )
    ens = build_critic(str(path))
    from PIL import Image

    red = Image.new("RGB", (8, 8), (220, 30, 30))
    res = ens.score(red, "p", {"category": "color"})
    route = res.details["critics"]["route"]
    assert route["details"]["route"]["critics"] == ["color"] and res.score == 1.0


@pytest.mark.parametrize(
    ("member", "fragment"),
    [
        ('name = "color"\nwhen = "color"', "'when'"),
        (
            'name = "color"\nwhen = ["color"]\ntarget = "nocolour"',
            "member 1 ('color'): critic 'color'",
        ),
        ('name = "nope"\nwhen = ["color"]', "member 1 ('nope'): unknown critic 'nope'"),
        ('name = "color"\nwhen = ["color"]\nweight = -1', "'weight'"),
        ('name = "color"', "'color' has no when"),
        ('name = "route"\nwhen = ["x"]', "itself a route"),
    ],
)
def test_bad_route_members_name_file_table_and_member(tmp_path, member, fragment):
    path = _write(
        tmp_path, f'[[critic]]\nname = "route"\nfield = "category"\n[[critic.member]]\n{member}\n'
    )
    with pytest.raises(milr.MilrUserError) as info:
        build_critic(str(path))
    message = str(info.value)
    assert message.startswith(f"{str(path)!r} [[critic]] 1 ('route')"), message
    assert fragment in message and "\n" not in message


WEIGHT_PLACES = {
    "critic": '[[critic]]\nname = "color"\nweight = {w}\n',
    "weights_by_tag": '[[critic]]\nname = "color"\nweights_by_tag = {{ colors = {w} }}\n',
    "route member": (
        '[[critic]]\nname = "route"\nfield = "category"\n'
        '[[critic.member]]\nname = "color"\nwhen = ["color"]\nweight = {w}\n'
    ),
}


@pytest.mark.parametrize("place", sorted(WEIGHT_PLACES))
def test_one_weight_rule_in_every_place(tmp_path, place):
    """A weight is an int or float, finite and >= 0, wherever a spec file gives one: the route
    member's own check used to accept a numeric string and word its refusals differently."""
    bad = {  # TOML value: (how the message shows it, the rule it breaks)
        "true": ("True", "is not a number"),
        '"0.5"': ("'0.5'", "is not a number"),
        "-1": ("-1", "must be a finite number >= 0"),
        "nan": ("nan", "must be a finite number >= 0"),
        "inf": ("inf", "must be a finite number >= 0"),
    }
    for w, (shown, rule) in bad.items():
        path = _write(tmp_path, WEIGHT_PLACES[place].format(w=w))
        with pytest.raises(milr.MilrUserError) as info:
            build_critic(str(path))
        message = str(info.value)
        assert f"= {shown} {rule}" in message and "\n" not in message, (w, message)
    for w in ("1", "2", "0.5"):
        build_critic(str(_write(tmp_path, WEIGHT_PLACES[place].format(w=w))))


def test_placeholders_need_a_declaration(tmp_path):
    path = _write(tmp_path, '[[critic]]\nname = "color"\ntarget = "${colour}"\n')
    with pytest.raises(
        SpecError, match=r"\[\[critic\]\] 1 \('color'\).target: \$\{colour\} is not declared"
    ):
        load_spec_file(path)
    path = _write(
        tmp_path,
        '[preset]\ndescription = "d"\n[preset.params.colour]\ndescription = "c"\ndefault = "red"\n'
        '[[critic]]\nname = "color"\ntarget = "${colour}"\n',
        "declared.toml",
    )
    assert load_spec_file(path)[0][0].params == {"target": "red"}
    assert load_spec_file(path, {"colour": "blue"})[0][0].params == {"target": "blue"}


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("preset:", "expected preset:NAME"),
        ("preset:mixed-reward,weight=2", "a preset has no weight"),
        ("preset:mixed-reward,gdino", "'gdino' is not key=value"),
        ("preset:no-such-preset", "unknown preset 'no-such-preset'; known presets: geneval"),
        ("preset:mixed-reward,gdno=/m", "unknown preset parameter(s) ['gdno']"),
        ("preset:genevl", "unknown preset 'genevl'; did you mean 'geneval'? known presets:"),
        ("preset:mixed-rewards", "did you mean 'mixed-reward'?"),
        ("preset:mixed-reward,gdno=/m", "['gdno']; 'gdno': did you mean 'gdino'? known:"),
        ("preset:xyzzy", "unknown preset 'xyzzy'; known presets: geneval"),
        ("preset:/nonexistent/x.toml", "does not exist"),
    ],
)
def test_preset_spec_errors(text, fragment):
    with pytest.raises(SpecError) as info:
        resolve_specs([text])
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_cli_score_with_a_route_file(tmp_path):
    from cli_helpers import run_milr
    from PIL import Image

    image = tmp_path / "red.png"
    Image.new("RGB", (8, 8), (220, 30, 30)).save(image)
    path = _write(
        tmp_path,
        '[[critic]]\nname = "route"\nfield = "category"\n'
        '[[critic.member]]\nname = "color"\ntarget = "red"\nwhen = ["color"]\n',
    )
    ok = run_milr("score", str(image), "--prompt", "red", "--critic", str(path), "--metadata",
                  '{"category": "color"}', "--json")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["results"][0]["score"] == 1.0
    bad = run_milr("score", str(image), "--prompt", "red", "--critic", str(path), "--metadata",
                   '{"category": "texture"}')  # fmt: skip
    assert bad.returncode == 2 and "category='texture' is routed to no critic" in bad.stderr
    assert "Traceback" not in bad.stderr
