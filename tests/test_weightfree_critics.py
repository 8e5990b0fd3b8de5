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


# -- one named-colour table --------------------------------------------------------------------

#: The shapes world's fill colours: the shipped shapes model was trained on exactly these pixels.
SHAPES_PALETTE = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (235, 215, 25),
    "green": (30, 160, 60),
    "blue": (30, 70, 220),
    "purple": (140, 50, 190),
}


def test_shapes_palette_is_pinned():
    from milr.shapes import world

    assert world.COLORS == SHAPES_PALETTE


def test_every_colour_table_agrees_on_every_shared_name():
    from milr.colors import NAMED_COLORS
    from milr.critics.color import COLORS
    from milr.critics.geneval import COLOR_PROTOTYPES
    from milr.geneval_rules import GENEVAL_COLORS
    from milr.shapes import world

    assert set(GENEVAL_COLORS) <= set(NAMED_COLORS)
    for table in (COLORS, COLOR_PROTOTYPES, world.COLORS):
        for name, rgb in table.items():
            assert NAMED_COLORS[name] == rgb, (name, rgb, NAMED_COLORS[name])


@pytest.mark.parametrize("name", sorted(SHAPES_PALETTE))
def test_color_critic_matches_shapes_world_fills_exactly(name):
    from milr.shapes import world

    scene = world.render([world.Obj("square", name, 1, 1)])
    fill = scene.crop((18, 18, 30, 30))  # inside the 12 px square of cell (1, 1)
    res = ColorCritic(target=name, tolerance=0.5).score(fill, "x")
    assert res.details["fraction"] == 1.0
