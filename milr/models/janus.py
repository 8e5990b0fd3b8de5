"""Janus / Janus-Pro adapter over `transformers.JanusForConditionalGeneration`.

Owns its generation loops (with a KV cache) because transformers' image-mode ``generate``
runs under no-grad and keeps only the last step's states; MILR needs the latent of every
optimised position (DESIGN §2, §6).

Prompt formats (defaults are Janus-Pro's DeepSeek SFT format; a checkpoint may override any
key with an optional ``milr.json`` in its directory):

- ``reasoning_template`` (default ``"<|User|>: {instruction}\\n\\n<|Assistant|>:"``) and
  ``reasoning_instruction`` (default `REASONING_INSTRUCTION`, with ``{prompt}``): the text the
  reasoning is written after. Token ids are ``[BOS] + tokenize(text)`` (no other specials).
- ``image_template`` (default ``"<|User|>: {text}\\n\\n<|Assistant|>:"``) and
  ``image_text_template`` (default ``"{prompt}. {reasoning}"``; without reasoning the text is
  the prompt): the conditional image row is ``[BOS] + tokenize(image_template) + [BOI]``.
- ``uncond``: ``"pad"`` (the only value in this version; as Janus and the paper: the
  conditional row with every token except BOS and BOI replaced by PAD).
- ``max_reasoning_tokens`` (default 512), ``image_token_count`` (default
  ``config.vision_config.num_image_tokens``), ``add_bos`` (default true), and token-id
  overrides ``bos_token_id``, ``eos_token_id``, ``pad_token_id``, ``boi_token_id`` (defaults:
  the generation config, then the tokenizer). ``strip_prompt_period`` (default false) drops a
  trailing period of the prompt before ``image_text_template`` is applied.
- ``cfg_scale`` (default 5.0, the paper's value for Janus-Pro): the classifier-free guidance
  scale this checkpoint is meant to sample with; used when a run leaves ``cfg_scale`` unset.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from milr.errors import MilrUserError
from milr.generator import Generator, ImageTokens, Reasoning
from milr.hookspecs import hookimpl
from milr.quiet import library_progress_bars_off

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

REASONING_INSTRUCTION = (
    'You are asked to draw an image for the prompt "{prompt}". Write a brief, precise '
    "visualization of everything in it: include every object the prompt mentions; give visual "
    "attributes (colour, number, shape, texture) only where the prompt specifies them; state "
    "the relations between objects (e.g. spatial) that the prompt specifies; use 50 words or "
    "fewer; add nothing beyond what the prompt states. Output only the visualization."
)
SFT_TEMPLATE = "<|User|>: {content}\n\n<|Assistant|>:"
SETTINGS_FILE = "milr.json"


@dataclass
class JanusSettings:
    """Prompt formats and token ids; defaults are Janus-Pro's, overridable by ``milr.json``."""

    reasoning_template: str = SFT_TEMPLATE.replace("{content}", "{instruction}")
    reasoning_instruction: str = REASONING_INSTRUCTION
    image_template: str = SFT_TEMPLATE.replace("{content}", "{text}")
    image_text_template: str = "{prompt}. {reasoning}"
    uncond: str = "pad"
    max_reasoning_tokens: int = 512
    image_token_count: int | None = None
    add_bos: bool = True
    strip_prompt_period: bool = False
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    boi_token_id: int | None = None
    cfg_scale: float | None = None

    @classmethod
    def load(cls, directory: Path | None) -> JanusSettings:
        """Defaults, overridden by ``directory/milr.json`` when present (unknown keys: error)."""
        if directory is None:
            return cls()
        path = Path(directory) / SETTINGS_FILE
        if not path.is_file():
            return cls()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise MilrUserError(f"cannot read {path}: {exc}") from None
        if not isinstance(data, dict):
            raise MilrUserError(f"{path} must hold a JSON object of settings")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known - {"comment", "_comment"})
        if unknown:
            raise MilrUserError(
                f"unknown keys {unknown} in {path}; allowed: {', '.join(sorted(known))}"
            )
        settings = cls(**{k: v for k, v in data.items() if k in known})
        cfg = settings.cfg_scale
        if cfg is not None and (
            isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not cfg > 0
        ):
            raise MilrUserError(f"cfg_scale={cfg!r} in {path} must be a positive number")
        if settings.uncond != "pad":
            raise MilrUserError(f"uncond={settings.uncond!r} in {path}; only 'pad' is supported")
        return settings


def _resolve_dtype(dtype: Any, device: str) -> torch.dtype:
    import torch

    if dtype is None:
        return torch.bfloat16 if device.startswith("cuda") else torch.float32
    if isinstance(dtype, torch.dtype):
        return dtype
    names = {
        "bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
        "float16": torch.float16, "half": torch.float16, "fp32": torch.float32,
        "float32": torch.float32, "float": torch.float32,
    }  # fmt: skip
    try:
        return names[str(dtype).lower().replace("torch.", "")]
    except KeyError:
        raise MilrUserError(
            f"dtype {dtype!r} is not supported; use one of bf16, fp16, fp32"
        ) from None


def _resolve_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    device = str(device)
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise MilrUserError(
            f"device {device!r} requested but CUDA is not available; use --device cpu"
        )
    return device


class JanusGenerator(Generator):
    """MILR's view of a transformers Janus checkpoint (Janus-1.3B, Janus-Pro-1B/7B, tiny ones)."""

    name: ClassVar[str] = "janus"
    default_checkpoint: ClassVar[str | None] = "deepseek-community/Janus-Pro-1B"

    def __init__(
        self,
        model: Any,
        processor: Any,
        settings: JanusSettings | None = None,
        checkpoint: str | None = None,
    ) -> None:
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.settings = settings or JanusSettings()
        self.checkpoint = checkpoint
        param = next(model.parameters())
        self.device = param.device
        self.dtype = param.dtype
        self.lm = model.model.language_model
        self.embed = model.get_input_embeddings()
        self.hidden_size = int(model.config.text_config.hidden_size)
        self.context = int(getattr(model.config.text_config, "max_position_embeddings", 4096))
        self._ids = self._token_ids()
        self._kv: dict[tuple[Any, ...], tuple[list[tuple[Any, Any]], torch.Tensor]] = {}
        self._rollouts: dict[tuple[Any, ...], Reasoning] = {}
        import inspect

        # transformers 5.x names the KV cache argument `cache`; 4.5x `past_key_values`.
        params = inspect.signature(self.lm.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        #: Reuse a reasoning rollout when the same prefix is asked for again. Greedy decoding
        #: is deterministic, so this returns exactly what regenerating would (tested).
        self.memoize_reasoning = True

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def can_load(cls, path: str | Path) -> bool:
        cfg = Path(path) / "config.json"
        if not cfg.is_file():
            return False
        try:
            return json.loads(cfg.read_text(encoding="utf-8")).get("model_type") == "janus"
        except (OSError, ValueError):
            return False

    @classmethod
    def from_pretrained(
        cls, path: str | Path, device: str | None = None, dtype: Any = None
    ) -> JanusGenerator:
        import torch  # noqa: F401  (fail early with torch's own error)
        from transformers import JanusForConditionalGeneration, JanusProcessor

        dev = _resolve_device(device)
        dt = _resolve_dtype(dtype, dev)
        local = Path(str(path)).expanduser()
        if local.is_dir():
            if not cls.can_load(local):
                from milr.generator import _describe_dir

                raise MilrUserError(
                    f"{str(local)!r} is not a Janus checkpoint (found: {_describe_dir(local)}); "
                    "expected a transformers-format Janus directory with model_type='janus'"
                )
            source: str = str(local)
            settings_dir: Path | None = local
        else:
            source = str(path)
            settings_dir = None
        try:
            with library_progress_bars_off():
                model = JanusForConditionalGeneration.from_pretrained(source, dtype=dt)
                processor = JanusProcessor.from_pretrained(source)
        except OSError as exc:
            raise MilrUserError(
                f"cannot load Janus checkpoint {source!r}: {str(exc).splitlines()[0]}"
            ) from None
        if settings_dir is None:
            settings_dir = _snapshot_dir(source)
        model.to(dev)  # type: ignore[arg-type]
        return cls(model, processor, JanusSettings.load(settings_dir), checkpoint=source)

    # -- token ids and prompts ---------------------------------------------------------------
    def _token_ids(self) -> dict[str, int | None]:
        s, tok = self.settings, self.tokenizer
        gen = getattr(self.model, "generation_config", None)
        gkw = (getattr(gen, "generation_kwargs", None) or {}) if gen is not None else {}

        def pick(override: int | None, *candidates: Any) -> int | None:
            if override is not None:
                return int(override)
            for c in candidates:
                if isinstance(c, (list, tuple)):
                    c = c[0] if c else None
                if c is not None:
                    return int(c)
            return None

        boi_tok = getattr(tok, "boi_token", None)
        boi_from_tok = tok.convert_tokens_to_ids(boi_tok) if boi_tok else None
        ids = {
            "bos": pick(s.bos_token_id, getattr(gen, "bos_token_id", None), tok.bos_token_id),
            "eos": pick(s.eos_token_id, getattr(gen, "eos_token_id", None), tok.eos_token_id),
            "pad": pick(s.pad_token_id, getattr(gen, "pad_token_id", None), tok.pad_token_id),
            "boi": pick(s.boi_token_id, gkw.get("boi_token_id"), boi_from_tok),
        }
        missing = [k for k in ("pad", "boi") if ids[k] is None]
        if s.add_bos and ids["bos"] is None:
            missing.append("bos")
        if missing:
            raise MilrUserError(
                f"checkpoint {self.checkpoint!r} lacks token ids for {missing}; set them in "
                f"{SETTINGS_FILE} (keys {', '.join(m + '_token_id' for m in missing)})"
            )
        return ids

    def _encode(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        bos = self._ids["bos"]
        return ([int(bos)] if self.settings.add_bos and bos is not None else []) + ids

    def reasoning_prompt(self, prompt: str) -> str:
        """The full text the reasoning is written after."""
        instruction = self.settings.reasoning_instruction.format(prompt=prompt)
        return self.settings.reasoning_template.format(instruction=instruction, prompt=prompt)

    def image_text(self, prompt: str, reasoning: str | None) -> str:
        if self.settings.strip_prompt_period:
            prompt = prompt.rstrip().removesuffix(".")
        if not reasoning:
            return prompt
        return self.settings.image_text_template.format(prompt=prompt, reasoning=reasoning)

    def image_prompt_ids(self, prompt_text: str) -> tuple[list[int], list[int]]:
        """Token ids of the conditional and unconditional CFG rows (equal length)."""
        cond = self._encode(self.settings.image_template.format(text=prompt_text)) + [
            self._ids["boi"]  # type: ignore[list-item]
        ]
        keep = {self._ids["bos"], self._ids["boi"]}
        uncond = [t if t in keep else self._ids["pad"] for t in cond]
        return cond, uncond  # type: ignore[return-value]

    @property
    def image_token_count(self) -> int:
        n = self.settings.image_token_count
        return int(n) if n else int(self.model.config.vision_config.num_image_tokens)

    @property
    def max_reasoning_tokens(self) -> int:
        return int(self.settings.max_reasoning_tokens)

    @property
    def default_cfg_scale(self) -> float:
        cfg = self.settings.cfg_scale
        return 5.0 if cfg is None else float(cfg)

    def check_prompt(self, prompt: str) -> None:
        super().check_prompt(prompt)
        cond, _ = self.image_prompt_ids(self.image_text(prompt, None))
        reason = self._encode(self.reasoning_prompt(prompt))
        limit = self.context - self.image_token_count
        if len(cond) > limit or len(reason) >= self.context:
            raise MilrUserError(
                f"prompt too long: the image prompt is {len(cond)} tokens and the reasoning "
                f"prompt {len(reason)}, but the model's context is {self.context} tokens, "
                f"{self.image_token_count} of which the image needs (at most {limit} for the "
                "prompt); shorten the prompt"
            )

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
    def write_reasoning(self, prompt: str) -> Reasoning:
        return self.continue_reasoning(prompt, [])

    def continue_reasoning(self, prompt: str, prefix_tokens: list[int]) -> Reasoning:
        import torch

        prompt_ids = self._encode(self.reasoning_prompt(prompt))
        budget = min(self.max_reasoning_tokens, self.context - len(prompt_ids))
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
            while len(tokens) < budget:
                nxt = int(self.model.lm_head(h).argmax(-1)[0])
                if nxt == eos:
                    break
                latents.append(h[0])
                tokens.append(nxt)
                if len(tokens) >= budget:
                    break
                ids = torch.tensor([[nxt]], dtype=torch.long, device=self.device)
                h = self._forward(self.embed(ids), cache)[:, -1]
        lat = (
            torch.stack(latents)
            if latents
            else torch.zeros(0, self.hidden_size, device=self.device, dtype=self.dtype)
        )
        text = self.tokenizer.decode(tokens, skip_special_tokens=True).strip()
        out = Reasoning(tokens=tokens, latents=lat.detach(), text=text)
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
                    scores = gen_head(h)
                    c, u = scores[:batch], scores[batch:]
                    fused = u + (c - u) * cfg_scale
                    if temperature != 1.0:
                        fused = fused / temperature
                    probs = torch.softmax(fused, dim=-1)
                    tok = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
                out[:, i] = tok
                if i == n - 1:
                    break
                emb = self.model.prepare_embeddings_for_image_generation(
                    torch.cat([tok, tok]).unsqueeze(-1)
                )
                h = self._forward(emb, cache)[:, -1]
        return ImageTokens(tokens=out, latents=lat)

    # -- heads -------------------------------------------------------------------------------
    def text_head(self, latents: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(latents.to(self.dtype)).float()

    def image_head(self, latents: torch.Tensor, cfg_scale: float) -> torch.Tensor:
        scores = self.model.model.generation_head(latents.to(self.dtype)).float()
        c, u = scores[..., 0, :], scores[..., 1, :]
        return u + (c - u) * cfg_scale

    # -- pixels ------------------------------------------------------------------------------
    def decode(self, tokens: torch.Tensor) -> list[Image]:
        import numpy as np
        import torch
        from PIL import Image as PILImage

        with torch.no_grad():
            px = self.model.decode_image_tokens(tokens.to(self.device).long())
        arr = ((px.float() + 1) / 2 * 255).clamp(0, 255).cpu().numpy().astype(np.uint8)
        return [PILImage.fromarray(a) for a in arr]


def _snapshot_dir(repo_id: str) -> Path | None:
    """The local snapshot directory of a hub checkpoint (to find its milr.json), if cached."""
    try:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, "config.json")).parent
    except Exception:
        return None


@hookimpl
def register_generators(register: Callable[[type[Any]], None]) -> None:
    register(JanusGenerator)
