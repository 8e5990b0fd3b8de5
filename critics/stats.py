"""`colorfulness` and `sharpness`: weight-free image-statistics critics."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from milr import Critic, CriticParams, CriticResult, hookimpl
from milr.critics._images import to_rgb

if TYPE_CHECKING:
    from PIL.Image import Image


class ColorfulnessCritic(Critic):
    """Hasler & Süsstrunk (2003) colourfulness M, mapped to [0, 1] as ``min(1, M / scale)``.

    M ≈ 0 for grey images, ≈ 33 "moderately", ≈ 59 "quite", ≥ 109 "extremely" colourful;
    the default ``scale=100`` puts "extremely colourful" at ~1.
    """

    name: ClassVar[str] = "colorfulness"
    description: ClassVar[str] = "Hasler-Suesstrunk colourfulness of the image (weight-free)"
    inputs: ClassVar[tuple[str, ...]] = ("image",)

    class Params(CriticParams):
        scale: float = Field(100.0, gt=0, description="colourfulness M that maps to score 1")

    params: Params

    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[CriticResult]:
        import numpy as np

        out = []
        for image in images:
            arr = np.asarray(to_rgb(image, self.name), dtype=np.float64)
            r, g, b = arr[..., 0], arr[..., 1], arr[..., 2]
            rg = r - g
            yb = 0.5 * (r + g) - b
            m = float(
                np.sqrt(rg.std() ** 2 + yb.std() ** 2)
                + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2)
            )
            out.append(CriticResult(min(1.0, m / self.params.scale), None, {"colorfulness": m}))
        return out


class SharpnessCritic(Critic):
    """Variance of the Laplacian of the grey image, mapped to [0, 1] as ``v / (v + scale)``."""

    name: ClassVar[str] = "sharpness"
    description: ClassVar[str] = "Variance of the Laplacian: focus/detail (weight-free)"
    inputs: ClassVar[tuple[str, ...]] = ("image",)

    class Params(CriticParams):
        scale: float = Field(
            100.0, gt=0, description="Laplacian variance that maps to score 0.5: v / (v + scale)"
        )

    params: Params

    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[CriticResult]:
        import numpy as np

        out = []
        for image in images:
            grey = np.asarray(to_rgb(image, self.name).convert("L"), dtype=np.float64)
            if grey.shape[0] < 3 or grey.shape[1] < 3:
                v = 0.0
            else:
                lap = (
                    -4 * grey[1:-1, 1:-1]
                    + grey[:-2, 1:-1]
                    + grey[2:, 1:-1]
                    + grey[1:-1, :-2]
                    + grey[1:-1, 2:]
                )
                v = float(lap.var())
            out.append(CriticResult(v / (v + self.params.scale), None, {"laplacian_variance": v}))
        return out


@hookimpl
def register_critics(register: Callable[[type[Critic]], None]) -> None:
    register(ColorfulnessCritic)
    register(SharpnessCritic)
