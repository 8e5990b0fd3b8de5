"""Image normalisation for first-party critics: re-exports the one `milr.images.to_rgb`."""

from __future__ import annotations

from milr.images import MAX_PIXELS, image_name, to_rgb

__all__ = ["MAX_PIXELS", "image_name", "to_rgb"]
