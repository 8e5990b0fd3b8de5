"""Named colours: the one RGB table milr uses wherever a colour name becomes pixels.

`NAMED_COLORS` holds GenEval's ten colour names (``milr.geneval_rules.GENEVAL_COLORS``) plus
``gray`` and ``cyan``, as 8-bit sRGB triples. It serves three readers:

- the shapes world paints its six colours with exactly these values (`milr.shapes.world.COLORS`
  is the subset red, orange, yellow, green, blue, purple). The shipped shapes model was
  trained on those pixels and the procedural detector segments by them, so **these six values
  must never change**; a test pins them;
- the ``color`` critic measures the distance of pixels to ``NAMED_COLORS[target]``;
- the ``geneval`` critic's pixel-statistics fallback votes each pixel to its nearest colour.

Before 0.2 the ``color`` critic had its own table whose yellow, green and purple differed from
the shapes world's by 10-15 per channel; it now reads this one.
"""

from __future__ import annotations

from types import MappingProxyType

#: Name -> (r, g, b), 0-255. Read-only.
NAMED_COLORS = MappingProxyType(
    {
        "red": (220, 30, 30),
        "orange": (245, 140, 20),
        "yellow": (235, 215, 25),
        "green": (30, 160, 60),
        "blue": (30, 70, 220),
        "purple": (140, 50, 190),
        "pink": (245, 130, 190),
        "brown": (130, 80, 40),
        "black": (10, 10, 10),
        "white": (245, 245, 245),
        "gray": (128, 128, 128),
        "cyan": (30, 200, 220),
    }
)
