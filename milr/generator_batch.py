"""The generator protocol's batched methods, with defaults that loop over rows.

`milr.generator.Generator` inherits `BatchedDefaults`, so every adapter works with the batched
engine (`milr.engine`); an adapter that can run many rows in one loop overrides these (the
Janus adapter does, in `milr.models.janus_batched`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from milr.generated import _cap_kwargs

if TYPE_CHECKING:
    import torch

    from milr.generated import ImageTokens, Reasoning


class BatchedDefaults:
    """Batched protocol methods over the one-prompt ones (mixin of `Generator`)."""

    def write_reasoning(
        self, prompt: str, max_tokens: int | None = None
    ) -> Reasoning:  # pragma: no cover
        raise NotImplementedError

    def continue_reasoning(
        self, prompt: str, prefix_tokens: list[int], max_tokens: int | None = None
    ) -> Reasoning:  # pragma: no cover
        raise NotImplementedError

    def sample_image_tokens(self, *args: Any, **kwargs: Any) -> ImageTokens:  # pragma: no cover
        raise NotImplementedError

    # -- batched (optional; the defaults loop, so every adapter works with the batched engine) --
    def continue_reasoning_batch(
        self,
        prompts: Sequence[str],
        prefixes: Sequence[list[int] | None],
        max_tokens: Sequence[int | None],
    ) -> list[Reasoning]:
        """Reasoning for several rows at once: row i is `write_reasoning` (prefix None) or
        `continue_reasoning` of ``prompts[i]`` with ``prefixes[i]``, capped by ``max_tokens[i]``.

        The default calls those methods row by row; an adapter may batch the rows (left padding,
        per-row EOS) as long as each row's result is what its own call would return.
        """
        out = []
        for prompt, prefix, cap in zip(prompts, prefixes, max_tokens, strict=True):
            kw = _cap_kwargs(self, cap)  # type: ignore[arg-type]
            if prefix is None:
                out.append(self.write_reasoning(prompt, **kw))
            else:
                out.append(self.continue_reasoning(prompt, list(prefix), **kw))
        return out

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
        """Image tokens for several rows at once, each with its own text, prefix and generator.

        Row i conditions on ``prompt_texts[i]``, forces ``prefix_tokens[i]`` (``[N_i]`` or None)
        and draws from ``generators[i]``. Rows passing the *same* generator object share its
        stream as the ``batch`` rows of one `sample_image_tokens` call do. Returns tokens
        ``[R, n]`` and latents ``[R, capture, 2, d]``.

        The default groups consecutive rows with the same text, generator and prefix length
        into one `sample_image_tokens` call (so a prompt's K candidates draw exactly as one
        call with ``batch=K``) and concatenates; an adapter may run all rows in one loop.
        """
        import torch

        rows = len(prompt_texts)
        if not (rows == len(prefix_tokens) == len(generators)):
            raise ValueError(
                f"sample_image_tokens_batch: {rows} texts, {len(prefix_tokens)} prefixes, "
                f"{len(generators)} generators; pass one of each per row"
            )
        tokens, latents = [], []
        start = 0
        while start < rows:
            end = start + 1
            key = _row_key(prompt_texts[start], prefix_tokens[start], generators[start])
            while (
                end < rows
                and _row_key(prompt_texts[end], prefix_tokens[end], generators[end]) == key
            ):
                end += 1
            pre = prefix_tokens[start]
            stacked = (
                None
                if pre is None
                else torch.stack(
                    [torch.as_tensor(p) for p in prefix_tokens[start:end]]  # type: ignore[misc]
                )
            )
            out = self.sample_image_tokens(
                prompt_texts[start], stacked, batch=end - start, cfg_scale=cfg_scale,
                temperature=temperature, generator=generators[start], capture=capture,
            )  # fmt: skip
            tokens.append(out.tokens)
            latents.append(out.latents)
            start = end
        return type(out)(tokens=torch.cat(tokens), latents=torch.cat(latents))  # ImageTokens

    def kv_bytes_per_token(self) -> int | None:
        """Bytes of KV cache one sequence row holds per position (None: unknown).

        Used by ``--batch-prompts auto`` to size the batch; adapters over a transformer return
        ``2 · layers · kv_heads · head_dim · dtype bytes``.
        """
        return None


def _row_key(text: str, prefix: Any, generator: Any) -> tuple[Any, ...]:
    return (text, id(generator), None if prefix is None else int(len(prefix)))
