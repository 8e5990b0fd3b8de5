"""The generation and scoring phases of one MILR step, run once for many prompts.

`generate_batch` is `milr.phases.generate_candidates` for several requests (one per prompt):
all reasoning rows go to `Generator.continue_reasoning_batch`, all image rows (K per prompt)
to `Generator.sample_image_tokens_batch`, each row drawing from its prompt's own generator,
and all images to `Generator.decode` in chunks. `score_batch` is
`milr.phases.score_candidates` for several requests: one critic ``score_batch`` over every
candidate image. A request with one prompt goes through the unbatched functions themselves.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from milr.critic import CriticResult, evaluate
from milr.errors import ExternalServiceError
from milr.phases import (  # GenRequest, ScoreRequest: re-exported (defined there)
    Candidate,
    Generated,
    GenRequest,
    ScoreRequest,
    Timer,
    breakdown,
    score_candidates,
    serve,
)

__all__ = [
    "BatchOutput", "GenRequest", "ScoreRequest", "decode_in_chunks", "generate_batch",
    "score_batch",
]  # fmt: skip

if TYPE_CHECKING:
    from milr.generator import Generator


@dataclass
class BatchOutput:
    """`Generated` per request, and the seconds per phase the whole batch took."""

    generated: list[Generated]
    timings: dict[str, float] = field(default_factory=dict)


def generate_batch(
    gen: Generator, requests: list[GenRequest], *, decode_chunk: int | None = None
) -> BatchOutput:
    """Run `generate_candidates` for every request at once (same results per request)."""
    import torch

    timer = Timer(gen.device)
    if len(requests) == 1:
        one = cast(Generated, serve(gen, requests[0], timer))  # the engine adds the seconds
        return BatchOutput([one], timer.t)
    keys = {(r.cfg_scale, r.temperature) for r in requests}
    if len(keys) > 1:  # one image loop per guidance setting
        parts: dict[int, Generated] = {}
        total: dict[str, float] = {}
        for key in keys:
            idx = [i for i, r in enumerate(requests) if (r.cfg_scale, r.temperature) == key]
            sub = generate_batch(gen, [requests[i] for i in idx], decode_chunk=decode_chunk)
            parts.update(zip(idx, sub.generated))
            for name, sec in sub.timings.items():
                total[name] = total.get(name, 0.0) + sec
        return BatchOutput([parts[i] for i in range(len(requests))], total)

    # -- reasoning: one batch of rows over every request that uses text ------------------
    reasonings: list[list[Any]] = [[None] * r.k for r in requests]
    counts = [0] * len(requests)
    rows: list[tuple[int, list[int] | None]] = []
    for i, r in enumerate(requests):
        if not r.uses_text:
            continue
        if r.text_prefixes is None:
            rows.append((i, None))
        else:
            rows.extend((i, list(p)) for p in r.text_prefixes)
    if rows:
        with timer("reasoning"):
            outs = gen.continue_reasoning_batch(
                [requests[i].prompt for i, _ in rows],
                [p for _, p in rows],
                [requests[i].max_reasoning_tokens for i, _ in rows],
            )
        got: dict[int, list[Any]] = {}
        for (i, _), out in zip(rows, outs):
            got.setdefault(i, []).append(out)
        for i, outs_i in got.items():
            r = requests[i]
            if len(outs_i) == 1 and r.k > 1:
                outs_i = outs_i * r.k
            reasonings[i] = outs_i
            forced_text = r.text_prefixes or [[]] * len(outs_i)
            counts[i] += sum(
                len(o.tokens) - (len(p) if r.text_prefixes else 0)
                for o, p in zip(outs_i, forced_text)
            )

    # -- image tokens: K rows per request, each drawing from its request's generator -------
    texts: list[str] = []
    prefixes: list[Any] = []
    streams: list[Any] = []
    owner: list[int] = []
    for i, r in enumerate(requests):
        for c in range(r.k):
            rs = reasonings[i][c]
            texts.append(gen.image_text(r.prompt, rs.text if rs is not None else None))
            prefixes.append(None if r.image_prefixes is None else r.image_prefixes[c])
            streams.append(r.rng)
            owner.append(i)
    capture = max(r.capture for r in requests)
    first = requests[0]
    with timer("image_tokens"):
        sampled = gen.sample_image_tokens_batch(
            texts, prefixes, streams, cfg_scale=first.cfg_scale,
            temperature=first.temperature, capture=capture,
        )  # fmt: skip
    with timer("decode"):
        images = decode_in_chunks(gen, sampled.tokens, decode_chunk)

    # -- per request, what generate_candidates returns -------------------------------------
    generated = []
    n_img = gen.image_token_count
    for i, r in enumerate(requests):
        rows_i = [j for j, o in enumerate(owner) if o == i]
        forced = 0 if r.image_prefixes is None else int(r.image_prefixes.shape[1])
        cands = []
        for c, j in enumerate(rows_i):
            tp = list(r.text_prefixes[c]) if r.text_prefixes else []
            ip = [] if r.image_prefixes is None else [int(t) for t in r.image_prefixes[c]]
            cands.append(Candidate(reasonings[i][c], tp, ip, sampled.tokens[j], images[j]))
        picked = torch.tensor(rows_i, device=sampled.latents.device)
        latents = sampled.latents.index_select(0, picked)[:, : r.capture]
        generated.append(Generated(cands, latents, counts[i] + r.k * (n_img - forced)))
    return BatchOutput(generated, timer.t)


#: Pixels per VQ decode call on a CPU when the chunk is chosen automatically.
CPU_DECODE_PIXELS = 16 * 64 * 64


def decode_in_chunks(gen: Generator, tokens: Any, chunk: int | None = None) -> list[Any]:
    """`Generator.decode` over ``tokens`` (``[R, n]``), at most `chunk` rows per call.

    ``chunk=None`` chooses: 16 on CUDA; on a CPU as many images as fit `CPU_DECODE_PIXELS`
    (the generator's first image is decoded alone to learn its size). Measured on 2 CPU
    cores (fp32): at 192×192 px one image per call took 0.80 s per image and 16 per call
    1.11 s (the convolutions' activations leave the caches); at 64×64 px 16 per call took
    6.6 ms per image and one per call 7.2 ms.
    """
    rows = int(tokens.shape[0])
    images: list[Any] = []
    start = 0
    if chunk is None:
        if str(getattr(gen, "device", "")).startswith("cuda"):
            chunk = 16
        else:
            try:
                pixels = _IMAGE_PIXELS.get(gen)
            except TypeError:  # an unhashable adapter: learn the size every call
                pixels = None
            if pixels is None:
                images.extend(gen.decode(tokens[:1]))
                start = 1
                pixels = _pixels(images[0])
                with contextlib.suppress(TypeError):
                    _IMAGE_PIXELS[gen] = pixels
            chunk = max(1, min(16, CPU_DECODE_PIXELS // max(1, pixels)))
    step = max(1, int(chunk))
    for at in range(start, rows, step):
        images.extend(gen.decode(tokens[at : at + step]))
    return images


#: Pixels of a generator's images, learnt from its first decoded image.
_IMAGE_PIXELS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()


def _pixels(image: Any) -> int:
    size = getattr(image, "size", None)  # PIL: (width, height)
    if isinstance(size, tuple) and len(size) == 2:
        return int(size[0]) * int(size[1])
    import numpy as np

    shape = np.asarray(image).shape
    return int(shape[0]) * int(shape[1]) if len(shape) >= 2 else 1


def score_batch(requests: list[ScoreRequest]) -> list[BaseException | None]:
    """Score every request's candidates; per request None (scored) or the error it raised.

    One critic batch over all candidates of all requests (per critic object). When that batch
    fails, each request is scored alone, so a critic failing on one image fails only the
    prompt that made it. When it fails at an external service (`ExternalServiceError`), the
    candidates it did score keep their results and only the others are scored again: a paid
    judge call is never repeated.
    """
    errors: list[BaseException | None] = [None] * len(requests)
    by_critic: dict[int, list[int]] = {}
    for i, r in enumerate(requests):
        by_critic.setdefault(id(r.critic), []).append(i)
    for idx in by_critic.values():
        if len(idx) > 1:
            critic = requests[idx[0]].critic
            images, prompts, metas, slots = [], [], [], []
            for i in idx:
                for c in requests[i].candidates:
                    images.append(c.image)
                    prompts.append(requests[i].prompt)
                    metas.append(requests[i].metadata)
                    slots.append(c)
            kept: dict[int, CriticResult] = {}
            try:
                results = evaluate(critic, images, prompts, metas)
            except ExternalServiceError as exc:
                kept = exc.kept()  # the rest is scored one request at a time below
            except Exception:
                pass  # scored one request at a time below, to find the one that fails
            else:
                kept = dict(enumerate(results))
            for k, res in kept.items():
                slots[k].score, slots[k].passed = res.score, res.passed
                slots[k].critics = breakdown(critic, res)
            scored = {id(slots[k]) for k in kept}
        else:
            scored = set()
        for i in idx:
            r = requests[i]
            todo = [c for c in r.candidates if id(c) not in scored]
            if not todo:
                continue
            try:
                score_candidates(r.critic, todo, r.prompt, r.metadata)
            except Exception as exc:
                errors[i] = exc
    return errors
