"""The Janus adapter's generation loops: prompt KV reuse, greedy reasoning, CFG image sampling.

milr owns these loops because transformers' image-mode ``generate`` runs under no-grad and keeps
only the last step's states, while MILR needs the latent of every optimised position.
`JanusLoops` is a mixin of `milr.models.janus.JanusGenerator`; it relies on the
attributes that class sets (declared once in `JanusState`: ``model``, ``lm``, ``embed``,
``tokenizer``, ``device``, ``dtype``, ``hidden_size``, ``context``, ``_ids``, ``_cache_kw``,
``_kv``, ``_rollouts``, ``memoize_reasoning``) and on its ``reasoning_prompt_ids``, ``image_prompt_ids``,
``image_token_count`` and ``max_reasoning_tokens``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from milr.generator import SAMPLING_SCHEME, ImageTokens, Reasoning

__all__ = ["SAMPLING_SCHEME", "cfg_sample", "draw_uniforms", "greedy_rows", "inverse_cdf"]

if TYPE_CHECKING:
    from collections.abc import Callable

    import torch


#: Greedy reasoning on an accelerator reads back "has every row stopped?" once per this many
#: tokens (never per token: a host read stops the CPU from queueing the next kernels). Rows
#: that stopped keep stepping until then; their extra tokens are discarded. On a CPU there is no
#: queue to drain, so a read costs nothing while a stopped row's extra steps do: the default
#: there is every token (`sync_interval`).
SYNC_EVERY = 32


def sync_interval(device: Any, override: int | None = None) -> int:
    """Tokens between the reasoning loop's host reads: `override`, else 1 on a CPU and
    `SYNC_EVERY` on an accelerator."""
    if override is not None:
        return max(1, int(override))
    return 1 if str(device).startswith("cpu") else SYNC_EVERY


def draw_uniforms(
    generator: torch.Generator | None, rows: int, n: int, device: Any
) -> torch.Tensor:
    """Uniforms ``[rows, n]`` (float64 in [0, 1), on `device`) from `generator`'s stream.

    Drawn on the generator's own device (the default CPU generator when None), so the values
    depend only on the generator's state, never on the model's dtype or the batch.
    """
    import torch

    where = getattr(generator, "device", None) or torch.device("cpu")
    u = torch.rand(rows, n, generator=generator, dtype=torch.float64, device=where)
    return u.to(device)


def inverse_cdf(logits: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Token ids ``[R]`` drawn from ``softmax(logits)`` (``[R, V]``) with uniforms `u` ``[R]``.

    Picks the first index whose cumulative probability exceeds ``u · total`` (a zero-probability
    token is never picked); float32 arithmetic (float64 for float64 logits). Pure tensor code:
    no host read, compiles without graph breaks.
    """
    import torch

    dt = torch.float64 if logits.dtype == torch.float64 else torch.float32
    cdf = torch.softmax(logits.to(dt), dim=-1).cumsum(-1)
    v = u.to(dt)[:, None] * cdf[:, -1:]
    return (cdf <= v).sum(-1).clamp(max=cdf.shape[-1] - 1)


def cfg_sample(
    scores: torch.Tensor, u: torch.Tensor, cfg_scale: float, temperature: float
) -> torch.Tensor:
    """Image tokens ``[R]`` for CFG rows ``scores`` ``[2R, V]`` (conditional rows first).

    ``u + s·(c − u)``, divided by `temperature` (when not 1), then `inverse_cdf` with `u` ``[R]``.
    """
    rows = u.shape[0]
    c, un = scores[:rows], scores[rows:]
    fused = un + (c - un) * cfg_scale
    if temperature != 1.0:
        fused = fused / temperature
    return inverse_cdf(fused, u)


def greedy_rows(
    lm_head: Callable[[torch.Tensor], torch.Tensor],
    h: torch.Tensor,
    remaining: list[int],
    eos: int | None,
    step: Callable[[torch.Tensor, list[int] | None], torch.Tensor],
    sync_every: int | None = None,
    compact: bool = True,
) -> list[tuple[list[int], torch.Tensor, torch.Tensor | None]]:
    """Greedy decoding of ``R`` rows in lockstep without a host read per token.

    ``h`` ``[R, d]`` are the rows' last hidden states, ``remaining[r]`` (>= 1) how many tokens
    row r may still write. ``step(next_ids [R'], keep)`` runs the transformer one position for
    the rows still in the batch and returns their hidden states ``[R', d]``; ``keep`` (indices
    into the current rows) first drops the rows that stopped (None: keep all). Tokens and
    latents go to device buffers; EOS and budgets are read back every `sync_every` tokens
    (None: `sync_interval` of the rows' device) and at the end. With ``compact=False`` rows that stopped stay in the batch (a static cache
    keeps their slots; ``keep`` is then always None). Returns per row ``(tokens, latents [len(tokens), d], eos_latent)``, EOS
    excluded.
    """
    import torch

    rows, total = h.shape[0], max(remaining)
    sync_every = sync_interval(h.device, sync_every)
    dev = h.device
    toks = torch.zeros(rows, total, dtype=torch.long, device=dev)
    lats = torch.zeros(rows, total, h.shape[1], dtype=h.dtype, device=dev)
    rem = torch.tensor(remaining, device=dev)
    live = list(range(rows))
    idx = torch.arange(rows, device=dev)
    ended = torch.zeros(rows, dtype=torch.bool, device=dev)
    eos_t = torch.tensor(-1 if eos is None else int(eos), device=dev)
    t = 0
    while True:
        nxt = lm_head(h).argmax(-1)
        toks[idx, t] = nxt
        lats[idx, t] = h
        ended[idx] |= nxt == eos_t
        t += 1
        if t >= total:
            break
        keep = None
        if t % sync_every == 0:  # the only host read: which rows are still writing
            alive = (~ended[idx] & (rem[idx] > t)).tolist()
            if not any(alive):
                break
            if compact and not all(alive):
                keep = [j for j, a in enumerate(alive) if a]
                live = [live[j] for j in keep]
                sel = torch.tensor(keep, device=dev)
                idx, nxt = idx.index_select(0, sel), nxt.index_select(0, sel)
        h = step(nxt, keep)
    out = []
    for r, (row_toks, row_lats) in enumerate(zip(toks.tolist(), lats)):
        n = remaining[r]
        stop = row_toks.index(eos) if eos is not None and eos in row_toks[:n] else n
        eos_latent = row_lats[stop].detach() if stop < n else None
        out.append((row_toks[:stop], row_lats[:stop], eos_latent))
    return out


class JanusState:
    """The attributes `JanusGenerator.__init__` sets, declared once for the loop mixins.

    `JanusLoops` and `milr.models.janus_batched.JanusBatchedLoops` both derive from it, so
    type checkers see one declaration of the adapter's state.
    """

    model: Any
    lm: Any
    embed: Any
    tokenizer: Any
    device: Any
    dtype: Any
    hidden_size: int
    context: int
    memoize_reasoning: bool
    #: ``"dynamic"`` or ``"static"`` (`milr.models.janus_static`).
    kv_cache: str = "dynamic"
    #: Tokens between the reasoning loop's host reads (None: `sync_interval`'s default).
    sync_every: int | None = None
    _ids: dict[str, int | None]
    _cache_kw: str
    _kv: dict[tuple[Any, ...], tuple[list[tuple[Any, Any]], Any]]
    _rollouts: dict[tuple[Any, ...], Reasoning]


class JanusLoops(JanusState):
    """KV-cached generation loops over a transformers Janus model (mixin)."""

    def reasoning_prompt_ids(self, prompt: str) -> list[int]:  # pragma: no cover - the adapter's
        raise NotImplementedError

    def image_prompt_ids(self, prompt_text: str) -> tuple[list[int], list[int]]:  # pragma: no cover
        raise NotImplementedError

    @property
    def image_token_count(self) -> int:  # pragma: no cover - provided by the adapter
        raise NotImplementedError

    @property
    def max_reasoning_tokens(self) -> int:  # pragma: no cover - provided by the adapter
        raise NotImplementedError

    # -- the transformer ---------------------------------------------------------------------
    def _forward(self, embeds: torch.Tensor, cache: Any) -> torch.Tensor:
        """Run the language model on `embeds` with `cache`; post-norm last hidden states."""
        out = self.lm(inputs_embeds=embeds, use_cache=True, **{self._cache_kw: cache})
        return out.last_hidden_state

    def _prefill(self, rows: list[list[int]]) -> tuple[list[tuple[Any, Any]], torch.Tensor]:
        """Prompt KV (per layer keys/values) and the last position's hidden state, cached."""
        import torch
        from transformers import DynamicCache

        key = tuple(tuple(r) for r in rows)
        hit = self._kv.get(key)
        if hit is not None:
            return hit
        ids = torch.tensor(rows, dtype=torch.long, device=self.device)
        cache = DynamicCache()
        with torch.no_grad():
            h = self._forward(self.embed(ids), cache)[:, -1]
        kv = [(layer.keys, layer.values) for layer in cache.layers]  # type: ignore[union-attr]
        if len(self._kv) >= 4:  # a few prompts: reasoning + image (+ candidates)
            self._kv.pop(next(iter(self._kv)))
        self._kv[key] = (kv, h)
        return kv, h

    @staticmethod
    def _cache_from(kv: list[tuple[Any, Any]], repeat: int = 1) -> Any:
        from transformers import DynamicCache

        if repeat == 1:
            return DynamicCache(ddp_cache_data=kv)
        return DynamicCache(
            ddp_cache_data=[
                (k.repeat_interleave(repeat, 0), v.repeat_interleave(repeat, 0)) for k, v in kv
            ]
        )

    def clear_cache(self) -> None:
        """Forget cached prompt KV (frees memory between prompts)."""
        self._kv.clear()
        self._rollouts.clear()

    # -- reasoning ---------------------------------------------------------------------------
    def write_reasoning(self, prompt: str, max_tokens: int | None = None) -> Reasoning:
        """Greedy reasoning for `prompt` (at most `max_tokens`, default the checkpoint's cap)."""
        return self._rollout(prompt, [], max_tokens)

    def continue_reasoning(
        self, prompt: str, prefix_tokens: list[int], max_tokens: int | None = None
    ) -> Reasoning:
        """Force `prefix_tokens`, then continue greedily with a KV cache (memoised, exact)."""
        return self._rollout(prompt, prefix_tokens, max_tokens)

    def _rollout(self, prompt: str, prefix_tokens: list[int], max_tokens: int | None) -> Reasoning:
        import torch

        prompt_ids = self.reasoning_prompt_ids(prompt)
        cap = self.max_reasoning_tokens if max_tokens is None else int(max_tokens)
        budget = min(cap, self.context - len(prompt_ids))
        eos = self._ids["eos"]
        tokens: list[int] = []
        latents: list[torch.Tensor] = []
        prefix = [int(t) for t in prefix_tokens][:budget]
        if eos in prefix:
            prefix = prefix[: prefix.index(eos)]
        memo_key = (tuple(prompt_ids), tuple(prefix), budget)
        if self.memoize_reasoning:
            hit = self._memo_lookup(memo_key)
            if hit is not None:
                return hit
        with torch.no_grad():
            kv, h = self._prefill([prompt_ids])
            cache = self._cache_from(kv)
            if prefix:
                ids = torch.tensor([prefix], dtype=torch.long, device=self.device)
                hs = self._forward(self.embed(ids), cache)[0]
                latents.append(h[0])
                latents.extend(hs[:-1])
                tokens.extend(prefix)
                h = hs[-1:]
            eos_latent = None
            if len(tokens) < budget and self.kv_cache == "static":
                kv = [(layer.keys, layer.values) for layer in cache.layers]
                ((more, lat_more, eos_latent),) = self._static_greedy(  # type: ignore[attr-defined]
                    [kv], h, [budget - len(tokens)]
                )
                tokens.extend(more)
                latents.extend(lat_more)
            elif len(tokens) < budget:

                def step(nxt: torch.Tensor, keep: list[int] | None) -> torch.Tensor:
                    return self._forward(self.embed(nxt[:, None]), cache)[:, -1]

                ((more, lat_more, eos_latent),) = greedy_rows(
                    self.model.lm_head, h, [budget - len(tokens)], eos, step, self.sync_every
                )
                tokens.extend(more)
                latents.extend(lat_more)
        lat = (
            torch.stack(latents)
            if latents
            else torch.zeros(0, self.hidden_size, device=self.device, dtype=self.dtype)
        )
        text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        out = Reasoning(tokens=tokens, latents=lat.detach(), text=text, eos_latent=eos_latent)
        if self.memoize_reasoning:
            if len(self._rollouts) >= 4:
                self._rollouts.pop(next(iter(self._rollouts)))
            self._rollouts[memo_key] = out
        return out

    def _memo_lookup(self, key: tuple[Any, ...]) -> Reasoning | None:
        """A memoised rollout that greedy decoding from `key`'s prefix would reproduce exactly.

        A rollout forced with prefix ``p0`` and continued greedily also answers any prefix
        ``p`` with ``p0 ⊆ p ⊆ rollout.tokens`` (same prompt and budget): from ``p`` greedy
        decoding retraces the same tokens.
        """
        prompt_ids, prefix, budget = key
        for (p_ids, p0, b), out in self._rollouts.items():
            if (
                p_ids == prompt_ids
                and b == budget
                and len(p0) <= len(prefix) <= len(out.tokens)
                and tuple(out.tokens[: len(prefix)]) == prefix
            ):
                return out
        return None

    # -- image tokens ------------------------------------------------------------------------
    def sample_image_tokens(
        self,
        prompt_text: str,
        prefix_tokens: torch.Tensor | None = None,
        batch: int = 1,
        cfg_scale: float = 5.0,
        temperature: float = 1.0,
        generator: torch.Generator | None = None,
        capture: int = 0,
    ) -> ImageTokens:
        import torch

        n = self.image_token_count
        cond, uncond = self.image_prompt_ids(prompt_text)
        if prefix_tokens is not None:
            prefix_tokens = torch.as_tensor(prefix_tokens, device=self.device).long()
            if prefix_tokens.dim() == 1:
                prefix_tokens = prefix_tokens.unsqueeze(0).expand(batch, -1)
            batch = prefix_tokens.shape[0]
        forced = 0 if prefix_tokens is None else int(prefix_tokens.shape[1])
        gen_head = self.model.model.generation_head
        out = torch.zeros(batch, n, dtype=torch.long, device=self.device)
        lat = torch.zeros(batch, capture, 2, self.hidden_size, dtype=self.dtype, device=self.device)
        u = draw_uniforms(generator, batch, n, self.device)  # the rows' draws, whole image
        if self.kv_cache == "static":
            with torch.no_grad():
                kv, h = self._prefill([cond, uncond])
                rows = [[(k[0:1], v[0:1]) for k, v in kv]] * batch
                rows += [[(k[1:2], v[1:2]) for k, v in kv]] * batch
                forced_mat = torch.zeros(batch, n, dtype=torch.bool, device=self.device)
                prefix_mat = torch.zeros(batch, n, dtype=torch.long, device=self.device)
                if forced:
                    forced_mat[:, :forced] = True
                    prefix_mat[:, :forced] = prefix_tokens[:, :n]  # type: ignore[index]
                out, lat = self._static_image(  # type: ignore[attr-defined]
                    rows, h.repeat_interleave(batch, 0), u, forced_mat, prefix_mat, capture,
                    cfg_scale, temperature,
                )  # fmt: skip
            return ImageTokens(tokens=out, latents=lat)
        with torch.no_grad():
            kv, h = self._prefill([cond, uncond])
            cache = self._cache_from(kv, batch)
            h = h.repeat_interleave(batch, 0)  # rows: [cond] * B + [uncond] * B
            for i in range(n):
                if i < capture:
                    lat[:, i, 0] = h[:batch]
                    lat[:, i, 1] = h[batch:]
                if i < forced:
                    tok = prefix_tokens[:, i]  # type: ignore[index]
                else:
                    tok = cfg_sample(gen_head(h), u[:, i], cfg_scale, temperature)
                out[:, i] = tok
                if i == n - 1:
                    break
                emb = self.model.prepare_embeddings_for_image_generation(
                    torch.cat([tok, tok]).unsqueeze(-1)
                )
                h = self._forward(emb, cache)[:, -1]
        return ImageTokens(tokens=out, latents=lat)
