"""The example plugin runs milr's contract suite and checks its own behaviour."""

from __future__ import annotations

import pytest
from PIL import Image

import milr
from milr.testing import CriticContract
from milr_plugin_example.brightness import BrightnessCritic


class TestBrightnessContract(CriticContract):
    def make_critic(self):
        return BrightnessCritic(target=0.5)


def test_brighter_image_scores_higher_for_bright_target():
    critic = BrightnessCritic(target=1.0, tolerance=0.05)
    white = critic.score(Image.new("RGB", (8, 8), (255, 255, 255)), "white")
    grey = critic.score(Image.new("RGB", (8, 8), (128, 128, 128)), "white")
    assert white.score > grey.score
    assert white.passed is True and grey.passed is False


def test_parameters_are_validated_with_one_line_errors():
    with pytest.raises(milr.MilrUserError) as info:
        BrightnessCritic(target=1.5)
    assert str(info.value) == "critic 'brightness': parameter 'target'=1.5 must be <= 1"
    with pytest.raises(milr.MilrUserError, match=r"did you mean 'tolerance'\?"):
        BrightnessCritic(tolerence=0.2)
    assert BrightnessCritic(target=0.8).config() == {"target": 0.8, "tolerance": 0.1}
