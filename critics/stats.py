"""`colorfulness` and `sharpness`: weight-free image-statistics critics."""

from __future__ import annotations

from typing import ClassVar

from milr import Critic, CriticResult, MilrUserError, hookimpl
from milr.critics._images import to_rgb


class ColorfulnessCritic(Critic):
    """Hasler & Süsstrunk (2003) colourfulness M, mapped to [0, 1] as ``min(1, M / scale)``.

    M ≈ 0 for grey images, ≈ 33 "moderately", ≈ 59 "quite", ≥ 109 "extremely" colourful;
    the default ``scale=100`` puts "extremely colourful" at ~1.
    """

    name: ClassVar[str] = "colorfulness"
    description: ClassVar[str] = "Hasler-Suesstrunk colourfulness of the image (weight-free)"
    inputs: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(self, scale: float = 100.0) -> None:
        if not isinstance(scale, (int, float)) or scale <= 0:
            raise MilrUserError(f"colorfulness critic: scale={scale!r} must be a positive number")
        self.scale = float(scale)
        self._config = {"scale": self.scale}

    def score_batch(self, images, prompts, metadata):
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
            out.append(CriticResult(min(1.0, m / self.scale), None, {"colorfulness": m}))
        return out


class SharpnessCritic(Critic):
    """Variance of the Laplacian of the grey image, mapped to [0, 1] as ``v / (v + scale)``."""

    name: ClassVar[str] = "sharpness"
    description: ClassVar[str] = "Variance of the Laplacian: focus/detail (weight-free)"
    inputs: ClassVar[tuple[str, ...]] = ("image",)

    def __init__(self, scale: float = 100.0) -> None:
        if not isinstance(scale, (int, float)) or scale <= 0:
            raise MilrUserError(f"sharpness critic: scale={scale!r} must be a positive number")
        self.scale = float(scale)
        self._config = {"scale": self.scale}

    def score_batch(self, images, prompts, metadata):
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
            out.append(CriticResult(v / (v + self.scale), None, {"laplacian_variance": v}))
        return out


@hookimpl
def register_critics(register):
    register(ColorfulnessCritic)
    register(SharpnessCritic)
