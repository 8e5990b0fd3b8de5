"""`milr --help`, `milr critics`, `milr plugins`, `milr score` through the real console script."""

from __future__ import annotations

import json

import pytest
from cli_helpers import run_milr
from PIL import Image
from plugin_fixtures import (
    BAD_SCORE_PLUGIN,
    BROKEN_IMPORT_PLUGIN,
    GOOD_PLUGIN,
    load_env,
    make_distribution,
)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    d = tmp_path_factory.mktemp("imgs")
    red = d / "red.png"
    Image.new("RGB", (32, 32), (220, 30, 30)).save(red)
    blue = d / "blue.png"
    Image.new("RGB", (32, 32), (30, 70, 220)).save(blue)
    text = d / "notes.png"
    text.write_text("not an image")
    return {"red": str(red), "blue": str(blue), "bad": str(text), "dir": d}


def test_help_lists_commands_and_does_not_import_torch():
    out = run_milr("--help", env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert out.returncode == 0
    assert "critics" in out.stdout and "score" in out.stdout
    imported = {line.split("|")[-1].strip() for line in out.stderr.splitlines() if "|" in line}
    assert not {"torch", "transformers", "open_clip", "ultralytics", "easyocr"} & imported


def test_python_dash_m_works():
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "milr", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and "milr" in out.stdout


def test_critics_json_has_provenance_and_availability():
    out = run_milr("critics", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)["critics"]}
    assert rows["color"]["plugin"] == "milr.critics.color"
    assert rows["color"]["distribution"] == "milr"
    assert rows["color"]["available"] is True and rows["color"]["install_hint"] is None
    params = {p["name"]: p for p in rows["color"]["parameters"]}
    assert params["tolerance"]["type"] == "float" and params["tolerance"]["default"] == 100.0
    assert params["tolerance"]["constraints"] == {"gt": 0}
    assert params["tolerance"]["description"]
    assert rows["color"]["declared"] is True
    # every first-party critic declares its parameters, each with a description
    # (judge, self-judge and api-judge are being rewritten on the declared base)
    for name, row in rows.items():
        if row["builtin"] and name not in {"judge", "self-judge", "api-judge"}:
            assert row["declared"], name
            assert all(p["description"] for p in row["parameters"]), name


def test_critics_name_lists_parameters():
    out = run_milr("critics", "geneval")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("geneval: GenEval rules")
    header = next(i for i, line in enumerate(lines) if line.startswith("PARAMETER"))
    assert lines[header + 2].split()[:3] == ["weights", "str", "(required)"]
    iou = next(line for line in lines if line.startswith("iou "))
    assert iou.split()[:4] == ["iou", "float", "0.7", ">"] and "<= 1" in iou
    as_json = json.loads(run_milr("critics", "color", "--json").stdout)
    assert [p["name"] for p in as_json["parameters"]] == ["target", "tolerance", "min_fraction"]
    missing = run_milr("critics", "nosuch")
    assert missing.returncode == 2 and "unknown critic 'nosuch'" in missing.stderr


def test_critics_and_plugins_report_a_broken_plugin_but_keep_working(tmp_path):
    make_distribution(
        tmp_path,
        "milr-broken",
        "0.0.1",
        {"broken_plugin": BROKEN_IMPORT_PLUGIN},
        {"broken": "broken_plugin"},
    )
    make_distribution(
        tmp_path, "milr-good", "1.0", {"good_plugin": GOOD_PLUGIN}, {"good": "good_plugin"}
    )
    env = {"PYTHONPATH": str(tmp_path), **load_env("milr-broken", "milr-good")}
    out = run_milr("critics", env=env)
    assert out.returncode == 0
    assert "squareness" in out.stdout and "color" in out.stdout
    assert "broken" in out.stderr and "broken on purpose" in out.stderr
    plugins = run_milr("plugins", "--json", env=env)
    rows = {p["name"]: p for p in json.loads(plugins.stdout)["plugins"]}
    assert rows["broken"]["error"] and rows["broken"]["distribution"] == "milr-broken"
    assert rows["good"]["critics"] == ["squareness"] and rows["good"]["version"] == "1.0"
    strict = run_milr("critics", env={**env, "MILR_STRICT_PLUGINS": "1"})
    assert strict.returncode == 1 and "milr-broken" in strict.stderr
    blocked = run_milr("plugins", "--json", env={**env, "MILR_DISABLE_PLUGINS": "broken"})
    assert json.loads(blocked.stdout)["plugins"] and "FAILED" not in blocked.stdout
    assert {p["name"]: p for p in json.loads(blocked.stdout)["plugins"]}["broken"][
        "blocked"
    ] is True


def test_score_json_schema_and_weights(images):
    out = run_milr(
        "score",
        images["red"],
        images["blue"],
        "--prompt",
        "a red square",
        "--critic",
        "color:target=red,min_fraction=0.5,weight=3",
        "--critic",
        "colorfulness",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    results = json.loads(out.stdout)["results"]
    assert [r["image"] for r in results] == [images["red"], images["blue"]]
    red, blue = results
    assert red["critics"]["color"] == {
        "score": 1.0,
        "weight": 3.0,
        "passed": True,
        "details": red["critics"]["color"]["details"],
    }
    assert red["passed"] is True and blue["passed"] is False
    assert red["score"] > blue["score"]
    cf = red["critics"]["colorfulness"]["score"]
    assert red["score"] == pytest.approx((3 * 1.0 + cf) / 4)


def test_score_with_metadata_file(images, tmp_path):
    meta = tmp_path / "m.json"
    meta.write_text('{"tag": "colors"}')
    out = run_milr("score", images["red"], "-p", "x", "--metadata", str(meta), "-c", "color")
    assert out.returncode == 0 and "score 1.0000" in out.stdout


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--critic", "nosuch"], "unknown critic 'nosuch'; known critics:"),
        (["--critic", "shape"], "unknown critic 'shape'; did you mean 'shapes'? known critics:"),
        (["--critic", "color:target"], "malformed critic spec"),
        (["--critic", "color:weight=-2"], "must be a finite number >= 0"),
        (["--critic", "color:weight=abc"], "is not a number"),
        (["--critic", "color:target=mauve"], "parameter 'target'='mauve' is not a colour"),
        (
            ["--critic", "color:tolerence=3"],
            "critic 'color': unknown parameter 'tolerence'; known: target, tolerance, "
            "min_fraction (did you mean 'tolerance'?)",
        ),
        (["--critic", "color:tolerance=true"], "'tolerance'=True is a boolean, not a number"),
        (["--critic", "color", "--metadata", "{not json"], "not valid JSON"),
        (["--critic", "color", "--metadata", "[1]"], "neither a JSON object nor an existing file"),
    ],
)
def test_user_errors_exit_2_with_one_line(images, args, fragment):
    out = run_milr("score", images["red"], "--prompt", "x", *args)
    assert out.returncode == 2, (out.stdout, out.stderr)
    assert fragment in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("which", ["bad", "missing"])
def test_bad_image_files_are_named(images, which):
    path = images["bad"] if which == "bad" else str(images["dir"] / "nope.png")
    out = run_milr("score", path, "--prompt", "x", "--critic", "color")
    assert out.returncode == 2 and path in out.stderr and "Traceback" not in out.stderr


def test_contract_violation_is_an_internal_failure(images, tmp_path):
    make_distribution(
        tmp_path, "milr-nan", "0.1", {"nan_plugin": BAD_SCORE_PLUGIN}, {"nan": "nan_plugin"}
    )
    out = run_milr(
        "score",
        images["red"],
        "-p",
        "x",
        "-c",
        "nan-critic",
        env={"PYTHONPATH": str(tmp_path), **load_env("milr-nan")},
    )
    assert out.returncode == 1 and "'nan-critic'" in out.stderr and "nan" in out.stderr


def test_missing_required_options_exit_2(images):
    out = run_milr("score", images["red"], "--critic", "color")
    assert out.returncode == 2 and "--prompt" in out.stderr
