"""`brightness`: rewards images whose mean luminance is close to a target."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

import milr

if TYPE_CHECKING:
    from PIL.Image import Image


class BrightnessCritic(milr.Critic):
    """Score = 1 - |mean luminance - target| (luminance in [0, 1]); passes within `tolerance`."""

    name: ClassVar[str] = "brightness"
    description: ClassVar[str] = "Closeness of mean luminance to a target (example plugin)"
    inputs: ClassVar[tuple[str, ...]] = ("image",)

    class Params(milr.CriticParams):
        target: float = Field(
            0.5, ge=0, le=1, description="mean luminance wanted, 0 black - 1 white"
        )
        tolerance: float = Field(0.1, ge=0, le=1, description="largest gap that still passes")

    params: Params

    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[milr.CriticResult]:
        import numpy as np  # cheap, but imported at use time like any heavier dependency would be

        results = []
        for image in images:
            luminance = float(np.asarray(image.convert("L"), dtype=np.float32).mean() / 255.0)
            gap = abs(luminance - self.params.target)
            results.append(
                milr.CriticResult(
                    score=1.0 - gap,
                    passed=gap <= self.params.tolerance,
                    details={"luminance": luminance},
                )
            )
        return results


@milr.hookimpl
def register_critics(register: Callable[[type[milr.Critic]], None]) -> None:
    register(BrightnessCritic)
