"""A procedural object detector for the shapes world: colour segmentation + shape templates.

Every pixel is assigned to the nearest palette colour (or background) when it lies within
`COLOR_TOLERANCE` of it; each connected region of one colour is a candidate object. Its
class is the shape template (circle, square, triangle, diamond, scaled to the region's box)
with the highest IoU against the region's mask, and its confidence grows with that IoU
(`confidence_from_iou`), so a blurred or broken shape is reported with low confidence instead
of being silently counted. Output follows the GenEval detection form used by the rules engine:
``{"class", "box": [x0, y0, x1, y1], "confidence", "color"}``, in 64×64 pixel coordinates.
"""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any

from milr.shapes.world import BACKGROUND, COLORS, IMAGE_SIZE, SHAPE_SIZE, SHAPES, shape_mask

if TYPE_CHECKING:
    import numpy as np
    from PIL.Image import Image

#: A pixel belongs to a palette colour only within this RGB distance of it.
COLOR_TOLERANCE = 100.0
#: Regions smaller than this many pixels are noise (a shape covers 72–144 pixels).
MIN_AREA = 12
#: IoU with the best template at which confidence is 0 and at which it reaches 1.
IOU_ZERO, IOU_ONE = 0.45, 0.80
#: Regions wider or taller than this are merged shapes or smears, not one object.
MAX_EXTENT = int(SHAPE_SIZE * 1.6)
#: A region's confidence scales from 0 at this extent (px) to full at `FULL_EXTENT`: objects
#: are 12 px, so a 4-6 px fragment (one stray image token) is not reported as an object.
MIN_EXTENT, FULL_EXTENT = 5, 9

_NAMES = ("background", *COLORS)
_PALETTE = (BACKGROUND, *COLORS.values())


def confidence_from_iou(iou: float) -> float:
    """Map template IoU to a confidence in [0, 1] (linear between `IOU_ZERO` and `IOU_ONE`)."""
    return float(min(1.0, max(0.0, (iou - IOU_ZERO) / (IOU_ONE - IOU_ZERO))))


def _to_array(image: Image | np.ndarray) -> np.ndarray:
    import numpy as np
    from PIL import Image as PILImage

    if isinstance(image, np.ndarray):
        arr = image
        if arr.shape[:2] != (IMAGE_SIZE, IMAGE_SIZE):
            image = PILImage.fromarray(arr.astype(np.uint8))
        else:
            return arr.astype(np.float32)
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (IMAGE_SIZE, IMAGE_SIZE):
        resample = (
            PILImage.Resampling.NEAREST
            if image.size[0] < IMAGE_SIZE
            else PILImage.Resampling.BILINEAR
        )
        image = image.resize((IMAGE_SIZE, IMAGE_SIZE), resample)
    return np.asarray(image, dtype=np.float32)


def label_colors(arr: np.ndarray) -> np.ndarray:
    """Per-pixel palette index: 0 background, 1.. colours in `COLORS` order, -1 unclear."""
    import numpy as np

    palette = np.asarray(_PALETTE, dtype=np.float32)
    dist = np.linalg.norm(arr[:, :, None, :] - palette[None, None], axis=-1)
    labels = dist.argmin(-1)
    labels[dist.min(-1) > COLOR_TOLERANCE] = -1
    return labels


def components(mask: np.ndarray) -> list[list[tuple[int, int]]]:
    """4-connected components of a boolean mask, as pixel lists (row, col) in reading order.

    Components are ordered by their first pixel in reading order (`scipy.ndimage.label` with
    its default cross-shaped structure, i.e. 4-connectivity).
    """
    import numpy as np

    labels, count = _label(mask)
    out: list[list[tuple[int, int]]] = [[] for _ in range(count)]
    ys, xs = np.nonzero(labels)
    for y, x, k in zip(ys.tolist(), xs.tolist(), labels[ys, xs].tolist(), strict=True):
        out[k - 1].append((y, x))
    return out


def _label(mask: np.ndarray) -> tuple[np.ndarray, int]:
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    return labels, int(count)


def classify_region(region: np.ndarray) -> tuple[str, float, dict[str, float]]:
    """Best shape template for a cropped boolean region mask: (class, IoU, all IoUs)."""
    h, w = region.shape
    ious = {}
    for shape in SHAPES:
        tmpl = _template(shape, w, h)
        inter = (tmpl & region).sum()
        union = (tmpl | region).sum()
        ious[shape] = float(inter / union) if union else 0.0
    best = max(ious, key=ious.__getitem__)
    return best, ious[best], ious


@functools.lru_cache(maxsize=4096)
def _template(shape: str, width: int, height: int) -> np.ndarray:
    """`shape_mask`, made once per box size (read-only)."""
    mask = shape_mask(shape, width, height)
    mask.setflags(write=False)
    return mask


def detect(image: Image | np.ndarray) -> list[dict[str, Any]]:
    """Objects in a shapes-world image, most confident first (GenEval detection dicts)."""
    import numpy as np

    arr = _to_array(image)
    labels = label_colors(arr)
    found: list[dict[str, Any]] = []
    for k in range(1, len(_NAMES)):
        mask = labels == k
        if mask.sum() < MIN_AREA:
            continue
        from scipy import ndimage

        parts, count = _label(mask)
        areas = np.bincount(parts.ravel(), minlength=count + 1)
        boxes = ndimage.find_objects(parts)
        for part in range(1, count + 1):  # in reading order of each part's first pixel
            area = int(areas[part])
            if area < MIN_AREA:
                continue
            rows, cols = boxes[part - 1]
            y0, y1, x0, x1 = rows.start, rows.stop, cols.start, cols.stop
            region = parts[y0:y1, x0:x1] == part
            shape, iou, ious = classify_region(region)
            conf = confidence_from_iou(iou)
            extent = max(y1 - y0, x1 - x0)
            if extent > MAX_EXTENT or min(y1 - y0, x1 - x0) < 4:
                conf *= 0.25
            conf *= min(1.0, max(0.0, (extent - MIN_EXTENT) / (FULL_EXTENT - MIN_EXTENT)))
            found.append(
                {
                    "class": shape,
                    "box": [float(x0), float(y0), float(x1), float(y1)],
                    "confidence": round(float(conf), 4),
                    "color": _NAMES[k],
                    "iou": round(iou, 4),
                    "area": area,
                }
            )
    # ties (clean shapes all have confidence 1) are broken in reading order, like `ground_truth`
    found.sort(key=lambda d: (-d["confidence"], d["box"][1], d["box"][0]))
    return found
