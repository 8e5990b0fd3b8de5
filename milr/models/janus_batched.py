"""Batched generation loops of the Janus adapter: many rows, each with its own prompt and stream.

Used by the batched MILR engine (`milr.engine`). Each row's prompt KV is computed alone and
cached exactly as the one-prompt loops do (`JanusLoops._prefill`), then the rows' caches are
left-padded with zeros to a common length; the padded positions are masked out, and each row
gets its own position ids (its prompt length plus the step), so a row sees exactly the
sequence it would see alone. Per step the transformer runs once for all rows. Each row's
image draws come from its own `torch.Generator`: the uniforms of the whole image are drawn up
front (rows sharing one generator in row order, as the ``batch`` rows of `sample_image_tokens`
draw them), and every position samples all rows in one inverse-CDF step on the device
(`milr.models.janus_loops.SAMPLING_SCHEME`). Neither loop reads the device per token: greedy
reasoning tracks EOS and budgets on the device and drops the rows that stopped at its sync
points (every `milr.models.janus_loops.SYNC_EVERY` tokens on an accelerator; every token on
a CPU, where a host read costs nothing and stepping stopped rows does).

With one row (or one group of rows sharing prompt, prefix length and generator) the calls go
to the one-prompt loops, so a batch of one is bitwise identical to the unbatched path.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from milr.generator import ImageTokens, Reasoning
from milr.models.janus_loops import JanusState, cfg_sample, draw_uniforms, greedy_rows

if TYPE_CHECKING:
    import torch

#: Rollouts remembered per reasoning prompt (as `JanusLoops` keeps 4 for the current prompt).
_MEMO_PER_PROMPT = 4


class JanusBatchedLoops(JanusState):
    """Batched reasoning and image sampling over a transformers Janus model (mixin)."""

    #: Seconds spent padding, compacting and splitting rows (read by benchmarks).
    batch_bookkeeping_s: float = 0.0

    # -- shared pieces -----------------------------------------------------------------------
    def _row_kv(self, rows: list[list[int]]) -> tuple[list[tuple[Any, Any]], Any]:
        """Prompt KV of `rows` computed as `JanusLoops._prefill` does, cached per prompt."""
        store: OrderedDict[Any, Any] = self.__dict__.setdefault("_kv_rows", OrderedDict())
        key = tuple(tuple(r) for r in rows)
        hit = store.get(key)
        if hit is not None:
            store.move_to_end(key)
            return hit
        kv, h = self._prefill(rows)  # type: ignore[attr-defined]
        store[key] = (kv, h)
        limit = int(self.__dict__.get("_kv_rows_limit", 8))
        while len(store) > limit:
            store.popitem(last=False)
        return kv, h

    def _padded_cache(self, parts: list[list[tuple[Any, Any]]]) -> tuple[Any, Any, Any]:
        """One cache from per-row KV lists (each layer ``[1, H, L_i, hd]``), left-padded.

        Returns the cache, the additive attention mask ``[R, 1, 1, L]`` (0 where a row attends,
        the dtype's minimum on its padding; None when no row is padded) and the row lengths
        ``[R]``. A 4D mask is used by transformers as given: its own mask building would read
        the padding back to the host at every step.
        """
        import torch
        from transformers import DynamicCache

        t = time.perf_counter()
        lengths = [int(p[0][0].shape[2]) for p in parts]
        width = max(lengths)
        layers = []
        for li in range(len(parts[0])):
            k0 = parts[0][li][0]
            keys = k0.new_zeros((len(parts), k0.shape[1], width, k0.shape[3]))
            values = torch.zeros_like(keys)
            for r, p in enumerate(parts):
                keys[r, :, width - lengths[r] :] = p[li][0][0]
                values[r, :, width - lengths[r] :] = p[li][1][0]
            layers.append((keys, values))
        mask = None
        if min(lengths) != width:  # additive, 4D: transformers uses it as is (no host read)
            mask = torch.zeros(len(parts), 1, 1, width, dtype=self.dtype, device=self.device)
            for r, n in enumerate(lengths):
                mask[r, ..., : width - n] = torch.finfo(self.dtype).min
        lens = torch.tensor(lengths, dtype=torch.long, device=self.device)
        self.batch_bookkeeping_s += time.perf_counter() - t
        return DynamicCache(ddp_cache_data=layers), mask, lens

    def _step(self, embeds: Any, cache: Any, mask: Any, positions: Any) -> Any:
        """One position for every row: post-norm hidden states ``[R, d]``."""
        import torch

        kwargs: dict[str, Any] = {self._cache_kw: cache, "position_ids": positions[:, None]}
        if mask is not None:
            visible = mask.new_zeros(mask.shape[0], 1, 1, 1)
            mask = torch.cat([mask, visible], dim=-1)
            kwargs["attention_mask"] = mask
        out = self.lm(inputs_embeds=embeds, use_cache=True, **kwargs)
        return out.last_hidden_state[:, -1], mask

    # -- reasoning ---------------------------------------------------------------------------
    def continue_reasoning_batch(
        self,
        prompts: Sequence[str],
        prefixes: Sequence[list[int] | None],
        max_tokens: Sequence[int | None],
    ) -> list[Reasoning]:
        """Greedy reasoning for every row in one loop (see the module docstring)."""
        import torch

        if len(prompts) == 1:
            pre = prefixes[0]
            return [self.continue_reasoning(prompts[0], list(pre or []), max_tokens[0])]  # type: ignore[attr-defined]
        eos = self._ids["eos"]
        self.__dict__["_kv_rows_limit"] = max(8, 2 * len(prompts) + 4)
        rows: list[dict[str, Any]] = []
        results: list[Reasoning | None] = [None] * len(prompts)
        for i, (prompt, pre, cap) in enumerate(zip(prompts, prefixes, max_tokens, strict=True)):
            prompt_ids = self.reasoning_prompt_ids(prompt)  # type: ignore[attr-defined]
            limit = self.max_reasoning_tokens if cap is None else int(cap)  # type: ignore[attr-defined]
            budget = min(limit, self.context - len(prompt_ids))
            prefix = [int(t) for t in (pre or [])][:budget]
            if eos in prefix:
                prefix = prefix[: prefix.index(eos)]
            key = (tuple(prompt_ids), tuple(prefix), budget)
            hit = self._batch_memo_lookup(key) if self.memoize_reasoning else None
            if hit is not None:
                results[i] = hit
                continue
            rows.append({"i": i, "ids": prompt_ids, "prefix": prefix, "budget": budget, "key": key})
        with torch.no_grad():
            parts, hs = [], []
            for row in rows:  # per-row prompt KV and forced prefix, as the one-prompt loop
                kv, h = self._row_kv([row["ids"]])
                row["tokens"], row["latents"], row["eos_latent"] = [], [], None
                if row["prefix"]:
                    cache = self._cache_from(kv)  # type: ignore[attr-defined]
                    ids = torch.tensor([row["prefix"]], dtype=torch.long, device=self.device)
                    out = self._forward(self.embed(ids), cache)[0]  # type: ignore[attr-defined]
                    row["latents"].append(h[0])
                    row["latents"].extend(out[:-1])
                    row["tokens"].extend(row["prefix"])
                    h = out[-1:]
                    kv = [(layer.keys, layer.values) for layer in cache.layers]
                parts.append(kv)
                hs.append(h)
            live = [r for r, row in enumerate(rows) if len(row["tokens"]) < row["budget"]]
            if live and self.kv_cache == "static":
                outs = self._static_greedy(  # type: ignore[attr-defined]
                    [parts[r] for r in live],
                    torch.cat([hs[r] for r in live]),
                    [rows[r]["budget"] - len(rows[r]["tokens"]) for r in live],
                )
                for r, (more, lat_more, eos_latent) in zip(live, outs):
                    rows[r]["tokens"].extend(more)
                    rows[r]["latents"].extend(lat_more)
                    rows[r]["eos_latent"] = eos_latent
            elif live:
                state: dict[str, Any] = {}
                state["cache"], state["mask"], state["lens"] = self._padded_cache(
                    [parts[r] for r in live]
                )
                state["step"] = 0

                def step(nxt: torch.Tensor, keep: list[int] | None) -> torch.Tensor:
                    if keep is not None:  # rows that stopped leave (at a sync point only)
                        state["cache"], state["mask"], state["lens"] = self._select_rows(
                            state["cache"], state["mask"], state["lens"], keep
                        )
                    h, state["mask"] = self._step(
                        self.embed(nxt[:, None]), state["cache"], state["mask"],
                        state["lens"] + state["step"],
                    )  # fmt: skip
                    state["step"] += 1
                    return h

                outs = greedy_rows(
                    self.model.lm_head,
                    torch.cat([hs[r] for r in live]),
                    [rows[r]["budget"] - len(rows[r]["tokens"]) for r in live],
                    eos,
                    step,
                    self.sync_every,
                )
                for r, (more, lat_more, eos_latent) in zip(live, outs):
                    rows[r]["tokens"].extend(more)
                    rows[r]["latents"].extend(lat_more)
                    rows[r]["eos_latent"] = eos_latent
        for row in rows:
            lat = (
                torch.stack(row["latents"])
                if row["latents"]
                else torch.zeros(0, self.hidden_size, device=self.device, dtype=self.dtype)
            )
            text = self.tokenizer.decode(row["tokens"], skip_special_tokens=True).strip()
            out_r = Reasoning(
                tokens=row["tokens"], latents=lat.detach(), text=text, eos_latent=row["eos_latent"]
            )
            if self.memoize_reasoning:
                self._batch_memo_store(row["key"], out_r)
            results[row["i"]] = out_r
        return results  # type: ignore[return-value]

    def _select_rows(self, cache: Any, mask: Any, lens: Any, keep: list[int]) -> tuple[Any, ...]:
        """The cache, mask and lengths of the rows `keep` only (finished rows leave)."""
        import torch
        from transformers import DynamicCache

        t = time.perf_counter()
        idx = torch.tensor(keep, dtype=torch.long, device=self.device)
        layers = [
            (lay.keys.index_select(0, idx), lay.values.index_select(0, idx)) for lay in cache.layers
        ]
        out = (
            DynamicCache(ddp_cache_data=layers),
            None if mask is None else mask.index_select(0, idx),
            lens.index_select(0, idx),
        )
        self.batch_bookkeeping_s += time.perf_counter() - t
        return out

    def _batch_memo_lookup(self, key: tuple[Any, ...]) -> Reasoning | None:
        memo: dict[Any, OrderedDict[Any, Reasoning]] = self.__dict__.setdefault("_memo_rows", {})
        prompt_ids, prefix, budget = key
        for (p0, b), out in memo.get(prompt_ids, {}).items():
            if (
                b == budget
                and len(p0) <= len(prefix) <= len(out.tokens)
                and tuple(out.tokens[: len(prefix)]) == prefix
            ):
                return out
        return None

    def _batch_memo_store(self, key: tuple[Any, ...], out: Reasoning) -> None:
        memo: dict[Any, OrderedDict[Any, Reasoning]] = self.__dict__.setdefault("_memo_rows", {})
        prompt_ids, prefix, budget = key
        entries = memo.pop(prompt_ids, OrderedDict())
        entries[(prefix, budget)] = out
        while len(entries) > _MEMO_PER_PROMPT:
            entries.popitem(last=False)
        memo[prompt_ids] = entries  # most recent prompt last
        while len(memo) > max(8, int(self.__dict__.get("_kv_rows_limit", 8))):
            memo.pop(next(iter(memo)))

    # -- image tokens ------------------------------------------------------------------------
    def sample_image_tokens_batch(
        self,
        prompt_texts: Sequence[str],
        prefix_tokens: Sequence[torch.Tensor | None],
        generators: Sequence[torch.Generator | None],
        *,
        cfg_scale: float = 5.0,
        temperature: float = 1.0,
        capture: int = 0,
    ) -> ImageTokens:
        """Image tokens for every row in one CFG loop of ``2·R`` rows (see the module docstring)."""
        import torch

        rows = len(prompt_texts)
        if not (rows == len(prefix_tokens) == len(generators)):
            raise ValueError(
                f"sample_image_tokens_batch: {rows} texts, {len(prefix_tokens)} prefixes, "
                f"{len(generators)} generators; pass one of each per row"
            )
        forced = [0 if p is None else int(len(p)) for p in prefix_tokens]
        self.__dict__["_kv_rows_limit"] = max(8, 2 * rows + 4)
        if (
            len({*prompt_texts}) == 1
            and len({id(g) for g in generators}) == 1
            and len(set(forced)) == 1
        ):
            pre = (
                None
                if prefix_tokens[0] is None
                else torch.stack([torch.as_tensor(p) for p in prefix_tokens])
            )  # type: ignore[misc]
            return self.sample_image_tokens(  # type: ignore[attr-defined]
                prompt_texts[0], pre, batch=rows, cfg_scale=cfg_scale,
                temperature=temperature, generator=generators[0], capture=capture,
            )  # fmt: skip
        n = self.image_token_count  # type: ignore[attr-defined]
        gen_head = self.model.model.generation_head
        groups: dict[int, list[int]] = {}
        for r, g in enumerate(generators):
            groups.setdefault(id(g), []).append(r)
        u = torch.zeros(rows, n, dtype=torch.float64, device=self.device)
        for idx in groups.values():  # each row's draws from its own stream, whole image
            u[idx] = draw_uniforms(generators[idx[0]], len(idx), n, self.device)
        forced_t = torch.tensor(forced, device=self.device)
        prefix_mat = torch.zeros(rows, n, dtype=torch.long, device=self.device)
        for r, p in enumerate(prefix_tokens):
            if p is not None and len(p):
                prefix_mat[r, : len(p)] = torch.as_tensor(p, device=self.device).long()[:n]
        out = torch.zeros(rows, n, dtype=torch.long, device=self.device)
        lat = torch.zeros(rows, capture, 2, self.hidden_size, dtype=self.dtype, device=self.device)
        with torch.no_grad():
            cond_parts, uncond_parts, hc, hu = [], [], [], []
            for text in prompt_texts:
                cond, uncond = self.image_prompt_ids(text)  # type: ignore[attr-defined]
                kv, h = self._row_kv([cond, uncond])
                cond_parts.append([(k[0:1], v[0:1]) for k, v in kv])
                uncond_parts.append([(k[1:2], v[1:2]) for k, v in kv])
                hc.append(h[0:1])
                hu.append(h[1:2])
            h = torch.cat(hc + hu)  # rows: [cond] * R + [uncond] * R
            if self.kv_cache == "static":
                cols = torch.arange(n, device=self.device)
                out, lat = self._static_image(  # type: ignore[attr-defined]
                    cond_parts + uncond_parts, h, u, cols[None, :] < forced_t[:, None],
                    prefix_mat, capture, cfg_scale, temperature,
                )  # fmt: skip
                return ImageTokens(tokens=out, latents=lat)
            cache, mask, lens = self._padded_cache(cond_parts + uncond_parts)
            for i in range(n):
                if i < capture:
                    lat[:, i, 0] = h[:rows]
                    lat[:, i, 1] = h[rows:]
                if i < max(forced):  # a forced row keeps its prefix token (on the device)
                    drawn = cfg_sample(gen_head(h), u[:, i], cfg_scale, temperature)
                    tok = torch.where(forced_t > i, prefix_mat[:, i], drawn)
                else:
                    tok = cfg_sample(gen_head(h), u[:, i], cfg_scale, temperature)
                out[:, i] = tok
                if i == n - 1:
                    break
                emb = self.model.prepare_embeddings_for_image_generation(
                    torch.cat([tok, tok]).unsqueeze(-1)
                )
                h, mask = self._step(emb, cache, mask, lens + i)
        return ImageTokens(tokens=out, latents=lat)

    def kv_bytes_per_token(self) -> int | None:
        """``2 · layers · kv_heads · head_dim · element size`` of the language model."""
        cfg = self.model.config.text_config
        heads = int(cfg.num_attention_heads)
        kv_heads = int(getattr(cfg, "num_key_value_heads", None) or heads)
        head_dim = int(getattr(cfg, "head_dim", None) or int(cfg.hidden_size) // heads)
        import torch

        size = torch.empty((), dtype=self.dtype).element_size()
        return 2 * int(cfg.num_hidden_layers) * kv_heads * head_dim * size
