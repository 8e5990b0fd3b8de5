"""Errors a newcomer met in their first hour, each now saying what happened and what to do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from cli_helpers import run_milr
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def test_python_m_milr_from_the_folder_above_a_checkout_says_what_happened(tmp_path):
    """Started next to a folder named `milr` (a checkout's root), Python imports that folder as
    an empty namespace package; `python -m milr` then failed in confusing ways (every plugin
    "cannot import name 'Critic' from 'milr' (unknown location)"). It now says what happened."""
    (tmp_path / "milr" / "milr").mkdir(parents=True)  # a checkout: no __init__.py at its root
    probe = subprocess.run(
        [sys.executable, "-c", "import milr; print(milr.__file__)"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    if probe.stdout.strip() != "None":
        pytest.skip("milr is installed as a regular package here, which a folder cannot shadow")
    proc = subprocess.run(
        [sys.executable, "-m", "milr", "critics"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"error: 'milr' was imported from {tmp_path / 'milr'}, a folder")
    assert f"Python was started in {tmp_path}" in line and "run from another folder" in line
    # inside the checkout (or anywhere else) the package is found as usual
    ok = subprocess.run(
        [sys.executable, "-m", "milr", "--version"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert ok.returncode == 0 and "error" not in ok.stderr


def test_clip_without_weights_names_the_parameter_and_an_example(tmp_path):
    img = tmp_path / "img.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(img)
    out = run_milr("score", str(img), "-p", "a cat", "--critic", "clip")
    assert out.returncode == 2
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: critic 'clip': parameter 'weights' is required: pass a")
    assert line.endswith("e.g. --critic clip:weights=/models/ViT-L-14.pt")
    assert "got None" not in line
    empty = run_milr("score", str(img), "-p", "a cat", "--critic", "clip:weights=")
    assert empty.returncode == 2
    assert "set weights= to a checkpoint file" in empty.stderr
    assert "e.g. --critic clip:weights=/models/ViT-L-14.pt; got ''" in empty.stderr


def test_a_comma_separated_critic_list_says_to_repeat_critic(tmp_path):
    img = tmp_path / "img.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(img)
    out = run_milr("score", str(img), "-p", "a cat", "--critic", "shapes,colorfulness")
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line == (
        "error: critic spec 'shapes,colorfulness' names 2 critics; give each its own --critic "
        "(repeat the option): --critic shapes --critic colorfulness"
    )


def test_a_misspelt_preset_gets_a_did_you_mean(tmp_path):
    img = tmp_path / "img.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(img)
    out = run_milr("score", str(img), "-p", "a cat", "--critic", "preset:genevl")
    assert out.returncode == 2, out.stderr
    (line,) = out.stderr.strip().splitlines()
    assert line.startswith("error: unknown preset 'genevl'; did you mean 'geneval'? known presets:")
