"""`brightness`: rewards images whose mean luminance is close to a target."""

from __future__ import annotations

from typing import ClassVar

import milr


class BrightnessCritic(milr.Critic):
    """Score = 1 - |mean luminance - target| (luminance in [0, 1]); passes within `tolerance`."""

    name: ClassVar[str] = "brightness"
    description: ClassVar[str] = "Closeness of mean luminance to a target (example plugin)"
    inputs: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(self, target: float = 0.5, tolerance: float = 0.1) -> None:
        if not 0.0 <= float(target) <= 1.0:
            raise milr.MilrUserError(f"brightness: target={target!r} must lie in [0, 1]")
        self.target = float(target)
        self.tolerance = float(tolerance)
        self._config = {"target": self.target, "tolerance": self.tolerance}

    def score_batch(self, images, prompts, metadata):
        import numpy as np  # cheap, but imported at use time like any heavier dependency would be

        results = []
        for image in images:
            luminance = float(np.asarray(image.convert("L"), dtype=np.float32).mean() / 255.0)
            gap = abs(luminance - self.target)
            results.append(
                milr.CriticResult(
                    score=1.0 - gap,
                    passed=gap <= self.tolerance,
                    details={"luminance": luminance},
                )
            )
        return results


@milr.hookimpl
def register_critics(register):
    register(BrightnessCritic)
