"""One conversion from whatever PIL opened to the 8-bit RGB every critic reads.

`to_rgb` handles each mode a PNG, TIFF, JPEG, WebP or GIF can carry, in one place:

=============================  ===================================================================
mode                           result
=============================  ===================================================================
``RGB``                        unchanged
``1``, ``L``, ``P``, ``CMYK``, Pillow's own conversion (``1``: 0/255; ``P``: palette colours;
``YCbCr``, ``RGBX``            ``CMYK``: ``R = 255 - min(255, C + K)``-style naive inversion)
``LA``, ``La``, ``PA``,        alpha composited over white (a transparent pixel is white); ``P``
``RGBA``, ``RGBa``, ``P`` with  with a ``transparency`` entry likewise
transparency
``I;16``, ``I;16B``,           16-bit grey: ``round(v / 257)`` (65535 -> 255, 32768 -> 128),
``I;16L``, ``I;16N``           not clipped at 255 as Pillow's ``convert`` does
``I``                          32-bit integer grey, read as 16-bit data (how 16-bit PNG/TIFF
                               decode): values in [0, 65535] scale as above; others are refused
``F``                          float grey in [0, 1]: ``round(255 v)``; other ranges are refused
=============================  ===================================================================

Before converting, an EXIF ``Orientation`` tag is applied (a phone JPEG shot in portrait comes
out upright) and an animated image is read at its first frame. Anything else (``LAB``, ``HSV``,
NaN in a float image, a mode Pillow cannot convert) raises a one-line `MilrUserError` naming the
file and the mode. Images larger than `MAX_PIXELS` are refused rather than exhausting memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from milr.errors import MilrUserError

if TYPE_CHECKING:
    from PIL.Image import Image

#: Larger images are refused with a clear error instead of exhausting memory inside a library.
MAX_PIXELS = 64_000_000

_ALPHA_MODES = ("LA", "La", "PA", "RGBA", "RGBa")
_SIXTEEN_BIT = ("I;16", "I;16B", "I;16L", "I;16N")
_PILLOW_CONVERTS = ("1", "L", "P", "CMYK", "YCbCr", "RGBX")


def image_name(image: Any, fallback: str = "image") -> str:
    """The file an image came from (``filename`` set by PIL or by milr's loaders), else `fallback`."""
    name = getattr(image, "filename", None)
    return str(name) if name else fallback


def to_rgb(image: Image, critic: str = "milr", *, name: str | None = None) -> Image:
    """The image as 8-bit RGB (see the module table); `MilrUserError` when it cannot be.

    Args:
        image: any `PIL.Image.Image`.
        critic: who asks, for error messages (a critic name or a command).
        name: the image's file name for error messages (default: ``image.filename``).

    Returns:
        An RGB image of the same size (rotated when an EXIF orientation says so; then width and
        height may swap). The input's pixels are never modified; an animated input is rewound
        to its first frame.
    """
    from PIL import Image as PILImage
    from PIL import ImageOps

    if not isinstance(image, PILImage.Image):
        raise MilrUserError(
            f"critic {critic!r} expected a PIL.Image.Image, got {type(image).__name__}"
        )
    label = name or image_name(image)
    w, h = image.size
    if w < 1 or h < 1:
        raise MilrUserError(f"{label}: critic {critic!r} got an empty image of size {w}x{h}")
    if w * h > MAX_PIXELS:
        raise MilrUserError(
            f"{label}: critic {critic!r} got a {w}x{h} image ({w * h} pixels > {MAX_PIXELS}); "
            "downscale it first"
        )
    if getattr(image, "is_animated", False) and image.tell() != 0:
        image.seek(0)  # the first frame, as a viewer shows it first
    orientation = image.getexif().get(0x0112, 1) if hasattr(image, "getexif") else 1
    if orientation not in (None, 1):
        image = ImageOps.exif_transpose(image)
    mode = image.mode
    if mode == "RGB":
        return image
    if mode in _ALPHA_MODES or (mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = PILImage.new("RGBA", rgba.size, (255, 255, 255, 255))
        return PILImage.alpha_composite(background, rgba).convert("RGB")
    if mode in _SIXTEEN_BIT or mode == "I":
        return _grey_to_rgb(image, 65535.0, label, critic)
    if mode == "F":
        return _grey_to_rgb(image, 1.0, label, critic)
    if mode in _PILLOW_CONVERTS:
        return image.convert("RGB")
    raise MilrUserError(
        f"{label}: critic {critic!r} cannot read PIL mode {mode!r} as RGB; save the image as "
        "8-bit RGB, RGBA or greyscale (PNG or JPEG)"
    )


def open_rgb(path: str | Path, who: str = "milr") -> Image:
    """Read an image file as 8-bit RGB through `to_rgb`: the one reader of image files.

    Args:
        path: the file (PNG, JPEG, TIFF, WebP, GIF... anything Pillow opens).
        who: who reads it, for error messages (a command or a critic name).

    Returns:
        An RGB image detached from the file (the file is closed).

    Raises:
        MilrUserError: one line naming the file when it is missing, is not an image Pillow can
            read, or carries a mode `to_rgb` refuses.
    """
    from PIL import Image as PILImage
    from PIL import UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise MilrUserError(f"image {str(path)!r} does not exist or is not a file")
    try:
        with PILImage.open(path) as im:
            im.load()
            rgb = to_rgb(im, who, name=str(path))
            return rgb.copy() if rgb is im else rgb
    except MilrUserError:
        raise
    except (UnidentifiedImageError, OSError) as exc:
        raise MilrUserError(f"cannot read {str(path)!r} as an image: {exc}") from None
    except Exception as exc:  # e.g. ultralytics patches PIL's open and may raise ImportError
        reason = f"{type(exc).__name__}: {exc}"
        raise MilrUserError(f"cannot read {str(path)!r} as an image: {reason}") from None


def _grey_to_rgb(image: Image, full_scale: float, label: str, critic: str) -> Image:
    """Scale a 16-bit, 32-bit integer or float grey image so `full_scale` becomes 255."""
    import numpy as np
    from PIL import Image as PILImage

    values = np.asarray(image).astype(np.float64)
    lo, hi = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > full_scale:
        expected = "[0, 65535]" if full_scale > 1 else "[0, 1]"
        raise MilrUserError(
            f"{label}: critic {critic!r} got a PIL mode {image.mode!r} image with values in "
            f"[{lo:g}, {hi:g}], outside the {expected} milr reads for that mode; save it as "
            "8-bit or 16-bit greyscale PNG"
        )
    grey = np.rint(values * (255.0 / full_scale)).astype(np.uint8)
    return PILImage.fromarray(grey).convert("RGB")
