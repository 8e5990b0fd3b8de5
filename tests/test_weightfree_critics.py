"""The built-in weight-free critics: behaviour plus milr's own contract suite."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw

import milr
from milr.critics.color import ColorCritic
from milr.critics.stats import ColorfulnessCritic, SharpnessCritic
from milr.testing import CriticContract


class TestColorContract(CriticContract):
    def make_critic(self):
        return ColorCritic(target="red", min_fraction=0.2)


class TestColorfulnessContract(CriticContract):
    def make_critic(self):
        return ColorfulnessCritic()


class TestSharpnessContract(CriticContract):
    def make_critic(self):
        return SharpnessCritic()


def half(color):
    im = Image.new("RGB", (10, 10), (255, 255, 255))
    ImageDraw.Draw(im).rectangle([0, 0, 9, 4], fill=color)
    return im


def test_color_fraction_and_verdict():
    c = ColorCritic(target="red", min_fraction=0.4)
    r = c.score(half((220, 30, 30)), "red")
    assert r.details["fraction"] == pytest.approx(0.5)
    assert r.score == 1.0 and r.passed is True
    b = c.score(half((30, 70, 220)), "red")
    assert b.score == 0.0 and b.passed is False


def test_color_hex_target_and_bad_target():
    assert ColorCritic(target="#00ff00").rgb == (0, 255, 0)
    with pytest.raises(
        milr.MilrUserError, match="critic 'color': parameter 'target'='mauve' is not a colour"
    ):
        ColorCritic(target="mauve")


def test_colorfulness_orders_grey_below_vivid():
    c = ColorfulnessCritic()
    grey = c.score(Image.new("RGB", (8, 8), (128, 128, 128)), "x").score
    vivid = c.score(half((255, 0, 0)), "x").score
    assert grey == 0.0 and vivid > 0.5


def test_sharpness_orders_flat_below_edges():
    c = SharpnessCritic()
    flat = c.score(Image.new("RGB", (16, 16), (100, 100, 100)), "x").score
    edges = c.score(half((0, 0, 0)), "x").score
    assert flat == 0.0 and edges > flat
    assert c.score(Image.new("RGB", (1, 1)), "x").score == 0.0  # 1x1 is valid input


def test_huge_image_is_a_clear_error():
    big = Image.new("L", (9000, 8000))
    with pytest.raises(milr.MilrUserError, match="9000x8000"):
        ColorCritic().score(big, "x")
