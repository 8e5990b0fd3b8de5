"""Image tokens to pixels for the Janus adapter, remembering what it has decoded.

Janus's VQ decoder is a deterministic function of the image tokens, and a small model draws
the same tokens again and again: in a full ShapesEval run (`shapes` model, `both`, 30 steps,
``--batch-prompts 16``) 36.5 % of the token rows decoded had been decoded before (546 of 1490
rows on every 4th prompt of the suite). `DecodeCache` keeps the most recently decoded images,
keyed by their token row, up to a byte budget, and decodes only the rows it has not seen (each
distinct row once per call). A real Janus-Pro checkpoint (576 tokens drawn from 16 384 codes)
practically never repeats a row; there the cache only costs hashing each row's bytes.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

#: Pixel bytes (width x height x 3 per image) the cache keeps by default: 64 MiB, i.e. 5 461
#: images of 64x64 px (the `shapes` model) or 151 of 384x384 px (Janus-Pro).
DECODE_CACHE_BYTES = 64 * 2**20


class DecodeCache:
    """Least-recently-used images by token row, at most `max_bytes` of pixels (0: off)."""

    def __init__(self, max_bytes: int = DECODE_CACHE_BYTES) -> None:
        self.max_bytes = int(max_bytes)
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._images: OrderedDict[bytes, Image] = OrderedDict()

    def __len__(self) -> int:
        return len(self._images)

    def decode(self, tokens: torch.Tensor, fresh: Any) -> list[Image]:
        """Images of ``tokens`` (``[N, n]`` integer image tokens, any device), in order.

        ``fresh(rows)`` decodes a ``[M, n]`` tensor (on the tokens' device) to M PIL images;
        it is called at most once, with the distinct rows not in the cache. A cached image is
        returned as a copy, so callers may change what they get.
        """
        import torch

        keys = [row.tobytes() for row in tokens.detach().to("cpu", torch.int64).numpy()]
        first: dict[bytes, int] = {}
        for i, key in enumerate(keys):
            if key not in self._images:
                first.setdefault(key, i)
        made: dict[bytes, Image] = {}
        if first:
            rows = torch.tensor(list(first.values()), device=tokens.device)
            made = dict(zip(first, fresh(tokens.index_select(0, rows)), strict=True))
            for key, image in made.items():
                self._remember(key, image)
        self.misses += len(made)
        out: list[Image] = []
        given: set[bytes] = set()
        for key in keys:
            if key in made:  # decoded in this call: the first use gets it, later ones a copy
                image = made[key] if key not in given else made[key].copy()
                self.hits += key in given
                given.add(key)
            else:
                self.hits += 1
                image = self._images[key].copy()
                self._images.move_to_end(key)
            out.append(image)
        return out

    def _remember(self, key: bytes, image: Image) -> None:
        size = image.width * image.height * 3
        if size > self.max_bytes:
            return
        self._images[key] = image.copy()
        self.bytes += size
        while self.bytes > self.max_bytes:
            _, old = self._images.popitem(last=False)
            self.bytes -= old.width * old.height * 3
