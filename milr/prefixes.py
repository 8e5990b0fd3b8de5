"""The next prefixes from the latents: a head read (pooled over prompts) and per-prompt draws.

After its update a prompt needs the output heads' distributions over its latents: the text
head on ``Z_t`` and the CFG-fused image head on ``Z_v`` (and the same over its unoptimised
latents, for attribution). `read_heads` computes them for one prompt; `read_heads_pooled`
for many, with one text-head forward over every prompt's text latents and one image-head
forward per guidance setting (at Janus-Pro width each text-head call reads a 102 400-word
matrix: one read per round instead of two per prompt). `draw_prefixes` then draws each
prompt's prefixes from its own distributions with its own generator, so a prompt's draws never
depend on which prompts shared the read. `propose_prefixes` is the two in a row.

A prompt's `milr.optimizer.MILR.steps` yields a `PrefixRequest` for the reads and draws
itself; `milr.phases.serve` answers one with `read_heads`, `milr.engine` all of a round's
with `read_heads_pooled` (equal per prompt: tested in float64).
"""

from __future__ import annotations

from collections.abc import Generator as _PyGenerator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from milr.generator import Generator

#: Most latent rows per pooled head forward (bounds the ``[rows, V]`` logits: 1024 rows of a
#: 102 400-word text head are 0.4 GB in float32); a read is never split across forwards.
POOL_ROWS = 1024


@dataclass
class Dists:
    """What the heads say about one set of latents, as `draw_prefixes` needs it.

    ``text``: the text head's argmax tokens ``[M]`` (long) when one candidate is drawn
    (``k == 1``), else its probabilities ``[M, V_text]`` (float32); None without text latents.
    ``image``: the CFG-fused image head's probabilities ``[N, V_image]`` (float32, divided by
    the temperature before the softmax); None without image latents. On the generator's device.
    """

    text: Any = None
    image: Any = None


@dataclass
class PrefixRequest:
    """What one prompt's optimizer asks of the output heads at a step: one `Dists` per read.

    ``reads`` are ``(Z_t [M, d] or None, Z_v [N, 2, d] or None)`` pairs (the optimised latents,
    and the unoptimised ones for attribution). `milr.phases.serve` answers with `read_heads`
    per read, a driver of many prompts with `read_heads_pooled`; either adds its seconds to
    ``timer`` (a `milr.phases.Timer`) under ``update``.
    """

    reads: list[tuple[Any, Any]]
    k: int
    cfg_scale: float
    temperature: float
    timer: Any = None


class HeadReader:
    """One prompt's head reads, step after step: its latents' and, with `reference`, its
    unoptimised latents' (`initial`: ``{"text": Z_t or None, "image": Z_v or None}``, for
    attribution). Those do not change, so their image probabilities and (``k == 1``) text
    argmax are read once per run and kept."""

    def __init__(
        self, initial: dict[str, Any], k: int, cfg_scale: float, temperature: float, reference: bool
    ) -> None:
        self.initial, self.k, self.reference = initial, k, reference
        self.cfg_scale, self.temperature = cfg_scale, temperature
        self.kept = Dists()

    def read(
        self, z_t: Any, z_v: Any, ref_image: bool, timer: Any
    ) -> _PyGenerator[PrefixRequest, Any, tuple[Dists, Dists]]:
        """Yield one `PrefixRequest` (none when nothing is to be read) and return ``(dists of
        (z_t, z_v), reference dists)``; the reference has image probabilities only with
        `ref_image` (a step that samples its image prefix)."""
        kept, z0 = self.kept, self.initial
        t0 = z0["text"] if self.reference and (kept.text is None or self.k > 1) else None
        v0 = z0["image"] if self.reference and ref_image and kept.image is None else None
        reads = [(z_t, z_v), (t0, v0)]
        got = [Dists(), Dists()]
        if any(z is not None for read in reads for z in read):
            got = yield PrefixRequest(reads, self.k, self.cfg_scale, self.temperature, timer)
        dists, ref = got
        if ref.text is not None and self.k == 1:
            kept.text = ref.text
        if ref.image is not None:
            kept.image = ref.image
        text = ref.text if ref.text is not None else kept.text
        return dists, Dists(text, kept.image if ref_image else None)


def read_heads(
    gen: Generator,
    z_t: torch.Tensor | None,
    z_v: torch.Tensor | None,
    k: int,
    *,
    cfg_scale: float,
    temperature: float,
) -> Dists:
    """The heads' `Dists` over ``Z_t`` ``[M, d]`` and ``Z_v`` ``[N, 2, d]`` (no gradient)."""
    import torch

    with torch.no_grad():
        text = None if z_t is None else _text_dist(gen.text_head(z_t), k)
        image = None if z_v is None else _image_dist(gen.image_head(z_v, cfg_scale), temperature)
    return Dists(text, image)


def _text_dist(logits: Any, k: int) -> Any:
    import torch

    return logits.argmax(-1) if k == 1 else torch.softmax(logits, -1)


def _image_dist(fused: Any, temperature: float) -> Any:
    import torch

    if temperature != 1.0:
        fused = fused / temperature
    return torch.softmax(fused, dim=-1)


def read_heads_pooled(gen: Generator, requests: list[PrefixRequest]) -> list[list[Dists]]:
    """`read_heads` for every read of every request, one head forward per modality (and per
    latent dtype/device, and image guidance scale), at most `POOL_ROWS` rows each.

    Each read's argmax / temperature / softmax runs on its own rows of the pooled logits, as
    `read_heads` does; returns each request's `Dists` in read order. Equal to `read_heads`
    per read up to the rounding of the head's matrix product over more rows (none seen in
    float64).
    """
    import torch

    out = [[Dists() for _ in r.reads] for r in requests]
    groups: dict[tuple[Any, ...], list[tuple[int, int]]] = {}
    for i, r in enumerate(requests):
        for j, (z_t, z_v) in enumerate(r.reads):
            if z_t is not None:
                groups.setdefault(("text", z_t.dtype, z_t.device), []).append((i, j))
            if z_v is not None:
                key = ("image", z_v.dtype, z_v.device, r.cfg_scale)
                groups.setdefault(key, []).append((i, j))
    with torch.no_grad():
        for key, members in groups.items():
            mod = key[0]
            for chunk in _chunks(members, requests, mod):
                zs = [requests[i].reads[j][0 if mod == "text" else 1] for i, j in chunk]
                z = torch.cat(zs)
                if mod == "text":
                    logits = gen.text_head(z)
                else:
                    logits = gen.image_head(z, key[3])
                parts = torch.split(logits, [int(x.shape[0]) for x in zs])
                for (i, j), part in zip(chunk, parts):
                    r = requests[i]
                    if mod == "text":
                        out[i][j].text = _text_dist(part, r.k)
                    else:
                        out[i][j].image = _image_dist(part, r.temperature)
    return out


def _chunks(
    members: list[tuple[int, int]], requests: list[PrefixRequest], mod: str
) -> list[list[tuple[int, int]]]:
    """`members` in runs of at most `POOL_ROWS` latent rows (a larger read alone)."""
    chunks: list[list[tuple[int, int]]] = []
    rows = 0
    for i, j in members:
        n = int(requests[i].reads[j][0 if mod == "text" else 1].shape[0])
        if not chunks or rows + n > POOL_ROWS:
            chunks.append([])
            rows = 0
        chunks[-1].append((i, j))
        rows += n
    return chunks


def draw_prefixes(
    gen: Generator, dists: Dists, k: int, rng: torch.Generator, *, uses_text: bool
) -> tuple[list[list[int]] | None, torch.Tensor | None]:
    """Text prefixes (the argmax for ``k == 1``, else ``k`` samples) and image prefixes
    (``[k, N]`` long on the generator's device, ``k`` samples) from `dists`, drawing from
    `rng` only (text first, then image, one ``multinomial`` per candidate)."""
    import torch

    text_prefixes = None
    image_prefixes = None
    with torch.no_grad():
        if dists.text is not None:
            if k == 1:
                text_prefixes = [[int(t) for t in dists.text]]
            else:
                probs = dists.text.to(_rng_device(rng))
                text_prefixes = [
                    [int(t) for t in torch.multinomial(probs, 1, generator=rng).squeeze(-1)]
                    for _ in range(k)
                ]
        elif uses_text:
            text_prefixes = [[]] * k  # reasoning is kept greedy without a text prefix
        if dists.image is not None:
            probs = dists.image.to(_rng_device(rng))  # [N, V]
            draws = [torch.multinomial(probs, 1, generator=rng).squeeze(-1) for _ in range(k)]
            image_prefixes = torch.stack(draws).to(gen.device)
    return text_prefixes, image_prefixes


def propose_prefixes(
    gen: Generator,
    z_t: torch.Tensor | None,
    z_v: torch.Tensor | None,
    k: int,
    rng: torch.Generator,
    *,
    uses_text: bool,
    cfg_scale: float,
    temperature: float,
) -> tuple[list[list[int]] | None, torch.Tensor | None]:
    """Text prefixes (argmax of the head on ``Z_t``; sampled for K > 1) and image prefixes
    (``[K, N]``, sampled from the CFG-fused head on ``Z_v``) for the next candidates."""
    dists = read_heads(gen, z_t, z_v, k, cfg_scale=cfg_scale, temperature=temperature)
    return draw_prefixes(gen, dists, k, rng, uses_text=uses_text)


def _rng_device(rng: Any) -> Any:
    return getattr(rng, "device", "cpu")
