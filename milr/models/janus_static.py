"""Static-KV-cache generation loops of the Janus adapter, optionally compiled.

With ``kv_cache = "static"`` (set by `JanusStaticLoops.set_loop_options`) every loop runs on a
transformers `StaticCache` preallocated for the prompt plus every token the loop may write,
one slot per row: each row's prompt KV is copied in left-padded, and each step writes one
position in place — no growing tensors, fixed shapes. The attention mask is built on the device
from the row's padding and the cache's own write index, so a step reads nothing back to the
host. Rows keep their slot for the whole loop (a reasoning row that stopped keeps stepping
until every row stopped or its sync point says so; its extra tokens are dropped).

With ``compile_steps`` the per-token step (one transformer position for every row, plus the
image head and the inverse-CDF draw for image tokens) is compiled with `torch.compile`
(``fullgraph=True``; ``mode="reduce-overhead"`` — CUDA graphs — on CUDA) once per shape; the
seconds of each first call per shape are added to `JanusStaticLoops.compile_s`.

Results are those of the dynamic-cache loops (tested equal in float64).
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from milr.errors import MilrUserError
from milr.models.janus_loops import JanusState, cfg_sample, greedy_rows

if TYPE_CHECKING:
    import torch

#: Cache widths are rounded up to this many positions, so prompts of similar length share a
#: compiled step (one graph per shape).
WIDTH_QUANTUM = 64

#: Static caches kept for reuse (their fixed addresses are what CUDA graphs replay on).
_CACHES_KEPT = 4

KV_CACHES = ("dynamic", "static")


def lm_step(
    lm: Any, cache_kw: str, cache: Any, embeds: torch.Tensor, pad: torch.Tensor, start: torch.Tensor
) -> torch.Tensor:
    """One position for every row over a `StaticCache`: post-norm hidden states ``[R, d]``.

    ``pad`` ``[R, W]`` (bool) marks each row's left padding, ``start`` ``[R]`` is each row's
    position id minus the cache index. The cache's write index (a device tensor) places the
    token; nothing is read back to the host.
    """
    import torch

    pos = cache.layers[0].cumulative_length
    cols = torch.arange(pad.shape[1], device=pad.device)
    hide = pad | (cols > pos)[None, :]
    zero = torch.zeros((), dtype=embeds.dtype, device=embeds.device)
    mask = torch.where(hide, torch.finfo(embeds.dtype).min, zero)[:, None, None, :]
    positions = (start + pos)[:, None]
    out = lm(
        inputs_embeds=embeds,
        use_cache=True,
        attention_mask=mask,
        position_ids=positions,
        **{cache_kw: cache},
    )
    return out.last_hidden_state[:, -1]


def text_step(
    lm: Any,
    embed: Any,
    cache_kw: str,
    cache: Any,
    nxt: torch.Tensor,
    pad: torch.Tensor,
    start: torch.Tensor,
) -> torch.Tensor:
    """The reasoning loop's per-token step: embed `nxt` ``[R]``, one position; ``[R, d]``."""
    return lm_step(lm, cache_kw, cache, embed(nxt[:, None]), pad, start)


def image_step(
    model: Any,
    cache_kw: str,
    cache: Any,
    h: torch.Tensor,
    u: torch.Tensor,
    forced: torch.Tensor,
    prefix: torch.Tensor,
    pad: torch.Tensor,
    start: torch.Tensor,
    cfg_scale: float,
    temperature: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The image loop's per-token step for ``R`` CFG pairs (``h`` ``[2R, d]``).

    Draws every row's token (`cfg_sample` with uniforms ``u`` ``[R]``; rows with ``forced``
    take ``prefix``), then runs one position: returns the tokens ``[R]`` and the next hidden
    states ``[2R, d]``.
    """
    import torch

    drawn = cfg_sample(model.model.generation_head(h), u, cfg_scale, temperature)
    tok = torch.where(forced, prefix, drawn)
    emb = model.prepare_embeddings_for_image_generation(torch.cat([tok, tok])[:, None])
    return tok, lm_step(model.model.language_model, cache_kw, cache, emb, pad, start)


class JanusStaticLoops(JanusState):
    """The static-cache (and compiled) loops (mixin of `milr.models.janus.JanusGenerator`)."""

    #: ``"dynamic"`` (transformers' `DynamicCache`, the default) or ``"static"``.
    kv_cache: str = "dynamic"
    #: Compile the per-token steps (implies the static cache).
    compile_steps: bool = False
    #: Seconds spent in first calls of compiled steps (compilation), per generator.
    compile_s: float = 0.0
    #: `torch.compile` backend (None: inductor). Inductor may reorder floating-point sums, so
    #: compiled latents can differ from eager ones in the last bits; ``"aot_eager"`` traces
    #: the same graph but runs eager kernels (bitwise eager results; used by the tests).
    compile_backend: str | None = None

    def set_loop_options(
        self, *, kv_cache: str | None = None, compile: bool = False, backend: str | None = None
    ) -> None:
        """Choose the KV cache (``"dynamic"`` or ``"static"``) and whether to compile the
        per-token steps (``compile=True`` implies ``kv_cache="static"``; `backend` is the
        `torch.compile` backend, None for inductor).

        Raises `MilrUserError` for another cache name, before any work.
        """
        cache = kv_cache or ("static" if compile else "dynamic")
        if cache not in KV_CACHES:
            raise MilrUserError(
                f"kv_cache={cache!r} is not a KV cache; pass one of: {', '.join(KV_CACHES)}"
            )
        if compile and cache != "static":
            raise MilrUserError("compile=True needs kv_cache='static'; drop kv_cache or pass it")
        if (bool(compile), backend) != (self.compile_steps, self.compile_backend):
            self.__dict__.pop("_compiled_steps", None)
            self.__dict__.pop("_compiled_shapes", None)
        self.kv_cache, self.compile_steps, self.compile_backend = cache, bool(compile), backend

    # -- the cache ---------------------------------------------------------------------------
    def _static_cache(
        self, parts: list[list[tuple[Any, Any]]], extra: int
    ) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """A `StaticCache` holding each row's prompt KV (left-padded) and room for `extra`
        positions; with the rows' padding ``[R, W]`` and ``start`` ``[R]`` (see `lm_step`)."""
        import torch
        from transformers import StaticCache

        lengths = [int(p[0][0].shape[2]) for p in parts]
        width, rows = max(lengths), len(parts)
        total = -(-(width + extra) // WIDTH_QUANTUM) * WIDTH_QUANTUM
        store: OrderedDict[Any, Any] = self.__dict__.setdefault("_static_caches", OrderedDict())
        key = (rows, total)
        cache = store.pop(key, None)
        if cache is None:
            cache = StaticCache(config=self.model.config.text_config, max_cache_len=total)
            for layer, (k, v) in zip(cache.layers, parts[0]):
                shape = (rows, *k.shape[1:2], total, k.shape[3])
                layer.lazy_initialization(k.new_zeros(shape), v.new_zeros(shape))  # type: ignore[union-attr]
        store[key] = cache
        while len(store) > _CACHES_KEPT:
            store.popitem(last=False)
        for li, layer in enumerate(cache.layers):
            layer.keys.zero_()
            layer.values.zero_()
            for r, p in enumerate(parts):
                layer.keys[r, :, width - lengths[r] : width] = p[li][0][0]
                layer.values[r, :, width - lengths[r] : width] = p[li][1][0]
            layer.cumulative_length.fill_(width)
        cols = torch.arange(total, device=self.device)
        lens = torch.tensor(lengths, device=self.device)
        pad = cols[None, :] < (width - lens)[:, None]
        return cache, pad, lens - width

    def _compiled(self, name: str, fn: Any) -> Any:
        """`fn`, or its compiled form with ``compile_steps`` (made once per generator)."""
        if not self.compile_steps:
            return fn
        made: dict[str, Any] = self.__dict__.setdefault("_compiled_steps", {})
        if name not in made:
            import torch

            cuda = str(self.device).startswith("cuda")
            if self.compile_backend is not None:
                made[name] = torch.compile(fn, fullgraph=True, backend=self.compile_backend)
            else:
                mode = "reduce-overhead" if cuda else None
                made[name] = torch.compile(fn, fullgraph=True, mode=mode)
        return made[name]

    def _timed_first(self, name: str, shape: tuple[Any, ...], fn: Any, *args: Any) -> Any:
        """``fn(*args)``; the first call per (step, shape) with compiling counts as compile time."""
        seen: set[Any] = self.__dict__.setdefault("_compiled_shapes", set())
        key = (name, shape)
        if not self.compile_steps or key in seen:
            return fn(*args)
        t = time.perf_counter()
        out = fn(*args)
        if str(self.device).startswith("cuda"):
            import torch

            torch.cuda.synchronize()
        self.compile_s += time.perf_counter() - t
        seen.add(key)
        return out

    # -- loops -------------------------------------------------------------------------------
    def _static_greedy(
        self, parts: list[list[tuple[Any, Any]]], h: torch.Tensor, remaining: list[int]
    ) -> list[tuple[list[int], torch.Tensor, torch.Tensor | None]]:
        """`milr.models.janus_loops.greedy_rows` over a static cache (rows keep their slot)."""
        cache, pad, start = self._static_cache(parts, max(remaining))
        step_fn = self._compiled("text", text_step)
        shape = (h.shape[0], pad.shape[1])

        def step(nxt: torch.Tensor, keep: list[int] | None) -> torch.Tensor:
            return self._timed_first(  # type: ignore[no-any-return]
                "text", shape, step_fn, self.lm, self.embed, self._cache_kw, cache, nxt, pad, start
            )

        eos = self._ids["eos"]
        return greedy_rows(self.model.lm_head, h, remaining, eos, step, self.sync_every, False)

    def _static_image(
        self,
        parts: list[list[tuple[Any, Any]]],
        h: torch.Tensor,
        u: torch.Tensor,
        forced: torch.Tensor,
        prefix: torch.Tensor,
        capture: int,
        cfg_scale: float,
        temperature: float,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Image tokens ``[R, n]`` and captured latents ``[R, capture, 2, d]`` over a static
        cache. ``parts``/``h``: the ``2R`` CFG rows (conditional first); ``u`` ``[R, n]``
        uniforms; ``forced`` ``[R, n]`` (bool) where ``prefix`` ``[R, n]`` is kept."""
        import torch

        rows, n = u.shape
        out = torch.zeros(rows, n, dtype=torch.long, device=self.device)
        lat = torch.zeros(rows, capture, 2, self.hidden_size, dtype=self.dtype, device=self.device)
        cache, pad, start = self._static_cache(parts, n)
        step_fn = self._compiled("image", image_step)
        shape = (rows, pad.shape[1], float(cfg_scale), float(temperature))
        for i in range(n):
            if i < capture:
                lat[:, i, 0] = h[:rows]
                lat[:, i, 1] = h[rows:]
            if i == n - 1:
                drawn = cfg_sample(
                    self.model.model.generation_head(h), u[:, i], cfg_scale, temperature
                )
                out[:, i] = torch.where(forced[:, i], prefix[:, i], drawn)
                break
            tok, h = self._timed_first(
                "image", shape, step_fn, self.model, self._cache_kw, cache, h, u[:, i],
                forced[:, i], prefix[:, i], pad, start, cfg_scale, temperature,
            )  # fmt: skip
            out[:, i] = tok
        return out, lat
