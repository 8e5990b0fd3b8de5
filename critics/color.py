"""`color`: fraction of pixels near a named colour. Weight-free; useful for tests and demos."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from milr import Critic, CriticParams, CriticResult, hookimpl
from milr.colors import NAMED_COLORS
from milr.critics._images import to_rgb

if TYPE_CHECKING:
    from PIL.Image import Image

#: Named colours (RGB): milr's one table, `milr.colors.NAMED_COLORS` (GenEval's ten + gray, cyan).
COLORS: Mapping[str, tuple[int, int, int]] = NAMED_COLORS


def parse_color(target: str) -> tuple[int, int, int]:
    """A colour name from `COLORS` (case-insensitive) or ``#rrggbb`` -> RGB; ValueError otherwise."""
    if target.lower() in COLORS:
        return COLORS[target.lower()]
    if target.startswith("#") and len(target) == 7:
        try:
            return (int(target[1:3], 16), int(target[3:5], 16), int(target[5:7], 16))
        except ValueError:
            pass
    raise ValueError(f"is not a colour; use one of {', '.join(COLORS)} or '#rrggbb'")


class ColorCritic(Critic):
    """Score = fraction of pixels whose RGB distance to `target` is below `tolerance`.

    With ``min_fraction`` set, the score is ``min(1, fraction / min_fraction)`` and the verdict
    passes when the fraction reaches ``min_fraction``; otherwise no verdict is given.
    Details: ``fraction`` (in [0, 1]) and ``target_rgb`` (``[r, g, b]``, 0-255).
    """

    name: ClassVar[str] = "color"
    description: ClassVar[str] = "Fraction of pixels near a named or RGB colour (weight-free)"
    inputs: ClassVar[tuple[str, ...]] = ("image",)

    class Params(CriticParams):
        target: str = Field("red", description="colour name (see COLORS) or '#rrggbb'")
        tolerance: float = Field(
            100.0, gt=0, description="Euclidean RGB distance (0-255 units) that counts as a match"
        )
        min_fraction: float | None = Field(
            None,
            gt=0,
            le=1,
            description="fraction of matching pixels that passes; None: no verdict",
        )

        @field_validator("target")
        @classmethod
        def _known_colour(cls, value: str) -> str:
            parse_color(value)
            return value

    params: Params

    def setup(self) -> None:
        self.rgb = parse_color(self.params.target)

    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[CriticResult]:
        import numpy as np

        tolerance, min_fraction = self.params.tolerance, self.params.min_fraction

        out = []
        for image in images:
            arr = np.asarray(to_rgb(image, self.name), dtype=np.float32)
            dist = np.linalg.norm(arr - np.asarray(self.rgb, dtype=np.float32), axis=-1)
            fraction = float((dist < tolerance).mean())
            if min_fraction is None:
                score, passed = fraction, None
            else:
                score = min(1.0, fraction / min_fraction)
                passed = fraction >= min_fraction
            out.append(
                CriticResult(score, passed, {"fraction": fraction, "target_rgb": list(self.rgb)})
            )
        return out


@hookimpl
def register_critics(register: Callable[[type[Critic]], None]) -> None:
    register(ColorCritic)
