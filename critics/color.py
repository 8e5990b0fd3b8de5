"""`color`: fraction of pixels near a named colour. Weight-free; useful for tests and demos."""

from __future__ import annotations

from typing import Any, ClassVar

from milr import Critic, CriticResult, MilrUserError, hookimpl
from milr.critics._images import to_rgb

#: Named colours (RGB). GenEval's ten colours plus a few extras.
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (40, 170, 60),
    "blue": (30, 70, 220),
    "purple": (130, 50, 180),
    "pink": (245, 130, 190),
    "brown": (130, 80, 40),
    "black": (10, 10, 10),
    "white": (245, 245, 245),
    "gray": (128, 128, 128),
    "cyan": (30, 200, 220),
}


class ColorCritic(Critic):
    """Score = fraction of pixels whose RGB distance to `target` is below `tolerance`.

    With ``min_fraction`` set, the score is ``min(1, fraction / min_fraction)`` and the verdict
    passes when the fraction reaches ``min_fraction``; otherwise no verdict is given.
    """

    name: ClassVar[str] = "color"
    description: ClassVar[str] = "Fraction of pixels near a named or RGB colour (weight-free)"
    inputs: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(
        self, target: str = "red", tolerance: float = 100.0, min_fraction: float | None = None
    ) -> None:
        self.rgb = self._parse_target(target)
        if not isinstance(tolerance, (int, float)) or tolerance <= 0:
            raise MilrUserError(f"color critic: tolerance={tolerance!r} must be a positive number")
        if min_fraction is not None and not (0 < float(min_fraction) <= 1):
            raise MilrUserError(f"color critic: min_fraction={min_fraction!r} must lie in (0, 1]")
        self.target = target
        self.tolerance = float(tolerance)
        self.min_fraction = None if min_fraction is None else float(min_fraction)
        self._config = {
            "target": target,
            "tolerance": self.tolerance,
            "min_fraction": self.min_fraction,
        }

    @staticmethod
    def _parse_target(target: Any) -> tuple[int, int, int]:
        if isinstance(target, str) and target.lower() in COLORS:
            return COLORS[target.lower()]
        if isinstance(target, str) and target.startswith("#") and len(target) == 7:
            try:
                return tuple(int(target[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]
            except ValueError:
                pass
        raise MilrUserError(
            f"color critic: unknown target {target!r}; use one of {', '.join(COLORS)} or '#rrggbb'"
        )

    def score_batch(self, images, prompts, metadata):
        import numpy as np

        out = []
        for image in images:
            arr = np.asarray(to_rgb(image, self.name), dtype=np.float32)
            dist = np.linalg.norm(arr - np.asarray(self.rgb, dtype=np.float32), axis=-1)
            fraction = float((dist < self.tolerance).mean())
            if self.min_fraction is None:
                score, passed = fraction, None
            else:
                score = min(1.0, fraction / self.min_fraction)
                passed = fraction >= self.min_fraction
            out.append(
                CriticResult(score, passed, {"fraction": fraction, "target_rgb": list(self.rgb)})
            )
        return out


@hookimpl
def register_critics(register):
    register(ColorCritic)
