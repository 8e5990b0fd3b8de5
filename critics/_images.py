"""Image normalisation shared by first-party critics: any PIL mode in, RGB out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from milr.errors import MilrUserError

if TYPE_CHECKING:
    from PIL.Image import Image

#: Larger images are refused with a clear error instead of exhausting memory inside a library.
MAX_PIXELS = 64_000_000


def to_rgb(image: Image, critic: str) -> Image:
    """Convert grayscale/RGBA/palette/CMYK to RGB (alpha composited on white)."""
    from PIL import Image as PILImage

    if not isinstance(image, PILImage.Image):
        raise MilrUserError(
            f"critic {critic!r} expected a PIL.Image.Image, got {type(image).__name__}"
        )
    w, h = image.size
    if w < 1 or h < 1:
        raise MilrUserError(f"critic {critic!r} got an empty image of size {w}x{h}")
    if w * h > MAX_PIXELS:
        raise MilrUserError(
            f"critic {critic!r} got a {w}x{h} image ({w * h} pixels > {MAX_PIXELS}); downscale it first"
        )
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PILImage.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")
