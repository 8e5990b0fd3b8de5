"""Object colours for detector critics: GenEval's zero-shot CLIP classifier, or pixel votes.

GenEval (``evaluation/evaluate_images.py``) classifies each object among its ten colours with
open_clip ViT-L-14 over three prompt templates per colour (``a photo of a {c} {cls}``,
``a photo of a {c}-colored {cls}``, ``a photo of a {c} object``; text embeddings averaged per
colour), on the box crop of the image where everything outside the object's mask is replaced by
grey ``#999``. `masked_crop` builds that input; `classify_colors` runs the classifier, or, with
no CLIP weights, a pixel vote over the crop (the object's mask pixels only, when a mask is given).
"""

from __future__ import annotations

import threading
from typing import Any

from milr.geneval_rules import GENEVAL_COLORS

#: GenEval's zero-shot colour prompt templates.
COLOR_TEMPLATES: tuple[str, ...] = (
    "a photo of a {color} {cls}",
    "a photo of a {color}-colored {cls}",
    "a photo of a {color} object",
)
#: GenEval's background for masked crops (``bgcolor`` option, default ``#999``).
MASK_BACKGROUND = "#999"

_TEXT: dict[tuple[str, str], Any] = {}
_TEXT_LOCK = threading.Lock()


def masked_crop(image: Any, box: tuple[float, ...], mask: Any = None) -> tuple[Any, Any]:
    """The object's box crop with everything outside ``mask`` painted ``#999`` (GenEval's input).

    ``box`` is ``(x1, y1, x2, y2)`` in pixels, rounded as PIL rounds crop boxes and clamped to
    the image (at least one pixel); ``mask`` is a boolean ``[H, W]`` array of the full image or
    None (plain crop). Returns the crop and the mask cut to it (None without a mask).
    """
    from PIL import Image

    w, h = image.size
    x1, y1, x2, y2 = (int(round(float(v))) for v in box[:4])
    x1, y1 = min(max(x1, 0), w - 1), min(max(y1, 0), h - 1)
    x2, y2 = max(min(x2, w), x1 + 1), max(min(y2, h), y1 + 1)
    if mask is None:
        return image.crop((x1, y1, x2, y2)), None
    import numpy as np

    mask = np.asarray(mask, dtype=bool)
    m = Image.fromarray(mask.astype(np.uint8) * 255, mode="L")
    blank = Image.new("RGB", image.size, MASK_BACKGROUND)
    return Image.composite(image, blank, m).crop((x1, y1, x2, y2)), mask[y1:y2, x1:x2]


def pixel_votes(crops: list[Any], masks: list[Any] | None = None) -> list[dict[str, float]]:
    """Share of pixels nearest each GenEval colour prototype (`milr.colors.NAMED_COLORS`).

    Without a mask the central half of the crop votes (less background); with a mask (boolean,
    crop-sized) only the object's pixels vote. Images are downsampled to at most 32x32 first.
    """
    import numpy as np
    from PIL import Image

    from milr.colors import NAMED_COLORS

    protos = np.asarray([NAMED_COLORS[c] for c in GENEVAL_COLORS], dtype=np.float32)
    out = []
    for k, crop in enumerate(crops):
        mask = None if masks is None else masks[k]
        w, h = crop.size
        if mask is None:
            crop = crop.crop(
                (w // 4, h // 4, max(w // 4 + 1, 3 * w // 4), max(h // 4 + 1, 3 * h // 4))
            )
        small = crop.copy()
        small.thumbnail((32, 32))
        px = np.asarray(small, dtype=np.float32).reshape(-1, 3)
        if mask is not None:
            m = Image.fromarray(np.asarray(mask, dtype=np.uint8) * 255, mode="L").resize(small.size)
            keep = np.asarray(m).reshape(-1) > 127
            px = px[keep] if keep.any() else px
        nearest = np.argmin(((px[:, None, :] - protos[None]) ** 2).sum(-1), axis=1)
        counts = np.bincount(nearest, minlength=len(GENEVAL_COLORS)) / max(1, len(nearest))
        out.append({c: float(v) for c, v in zip(GENEVAL_COLORS, counts, strict=True)})
    return out


def clip_colors(
    bundle: Any, crops: list[Any], classes: list[str], batch_size: int
) -> list[dict[str, float]]:
    """GenEval's zero-shot colour probabilities (softmax of 100 x cosine) for each crop."""
    import torch

    from milr.critics import _openclip

    if not crops:
        return []
    feats = _openclip.encode_images(bundle, crops, batch_size)
    out = []
    for f, cls in zip(feats, classes, strict=True):
        probs = torch.softmax(100.0 * (_text_classifier(bundle, cls) @ f), dim=-1)
        out.append({c: float(p) for c, p in zip(GENEVAL_COLORS, probs, strict=True)})
    return out


def _text_classifier(bundle: Any, cls: str) -> Any:
    from milr.critics import _openclip

    key = (bundle.source, cls)
    with _TEXT_LOCK:
        if key not in _TEXT:
            texts = [t.format(color=c, cls=cls) for c in GENEVAL_COLORS for t in COLOR_TEMPLATES]
            emb = _openclip.encode_texts(bundle, texts, 64).reshape(
                len(GENEVAL_COLORS), len(COLOR_TEMPLATES), -1
            )
            emb = emb.mean(1)
            _TEXT[key] = emb / emb.norm(dim=-1, keepdim=True)
        return _TEXT[key]


def classify_colors(
    crops: list[Any],
    classes: list[str],
    *,
    clip_weights: str | None,
    clip_arch: str,
    device: str,
    batch_size: int,
    critic: str,
    extra: str | None,
    masks: list[Any] | None = None,
    revision: str | None = None,
) -> tuple[list[dict[str, float]], str]:
    """Colour probabilities per crop and the method used (``clip`` or ``pixels``).

    `revision` pins the Hub revision of ``hf://`` / ``hf-hub:`` `clip_weights`.
    """
    if not crops:
        return [], "clip" if clip_weights else "pixels"
    if clip_weights is None:
        return pixel_votes(crops, masks), "pixels"
    from milr.critics import _openclip

    bundle = _openclip.load_open_clip(
        clip_arch, clip_weights, device=device, dtype="float32", critic=critic, extra=extra,
        revision=revision,
    )  # fmt: skip
    return clip_colors(bundle, crops, classes, batch_size), "clip"
