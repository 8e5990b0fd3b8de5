"""Janus / Janus-Pro adapter over `transformers.JanusForConditionalGeneration`.

The adapter loads a checkpoint (local directory or hub id), builds the reasoning and image
prompts from `JanusSettings` (``milr.json``, see `milr.models.janus_settings`), applies the text
head and the CFG-fused image head to latents, decodes image tokens, and judges images in
understanding mode (for ``self-judge``). The KV-cached generation loops are in
`milr.models.janus_loops`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from milr.devices import resolve_device, resolve_dtype
from milr.errors import MilrUserError
from milr.generator import SAMPLING_SCHEME, Generator, Reasoning
from milr.hookspecs import hookimpl
from milr.models.janus_batched import JanusBatchedLoops
from milr.models.janus_loops import JanusLoops
from milr.models.janus_prompts import (
    PromptStyle,
    load_prompt_file,
    resolve_style,
    special_token_ids,
)
from milr.models.janus_settings import (  # noqa: F401 - re-exported names
    REASONING_INSTRUCTION,
    SETTINGS_FILE,
    SFT_TEMPLATE,
    JanusSettings,
)
from milr.models.janus_static import JanusStaticLoops

if TYPE_CHECKING:
    from collections.abc import Sequence

    import torch
    from PIL.Image import Image


class JanusGenerator(JanusStaticLoops, JanusBatchedLoops, JanusLoops, Generator):
    """MILR's view of a transformers Janus checkpoint (Janus-1.3B, Janus-Pro-1B/7B, tiny ones)."""

    name: ClassVar[str] = "janus"
    default_checkpoint: ClassVar[str | None] = "deepseek-community/Janus-Pro-1B"
    sampling_scheme: ClassVar[str | None] = SAMPLING_SCHEME

    def __init__(
        self,
        model: Any,
        processor: Any,
        settings: JanusSettings | None = None,
        checkpoint: str | None = None,
        style: PromptStyle | None = None,
    ) -> None:
        self.model = model.eval()
        self.model.requires_grad_(False)
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.settings = settings or JanusSettings()
        self.checkpoint = checkpoint
        #: Where a Hub checkpoint came from: ``{"revision", "commit"}`` (empty for a directory).
        self.origin: dict[str, Any] = {}
        #: How the reasoning and image prompts are built (`milr.models.janus_prompts`).
        self.style = style or resolve_style(
            self.settings, None, None, bool(getattr(processor, "chat_template", None))
        )
        param = next(model.model.language_model.parameters())  # the VQ may run in fp32
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
        cls,
        path: str | Path,
        device: str | None = None,
        dtype: Any = None,
        allow_missing: bool = False,
        prompt_style: str | None = None,
        prompt_file: str | Path | None = None,
        revision: str | None = None,
    ) -> JanusGenerator:
        """Load a Janus checkpoint (local directory or Hub id) on `device` in `dtype`.

        A Hub id is downloaded into the Hugging Face cache on first use (`milr.hub.resolve`:
        cache-only under ``HF_HUB_OFFLINE``; ``revision`` pins a branch, tag or commit; every
        download failure is one line). Every load-time failure is one `MilrUserError` line,
        cheapest checks first (device and dtype, the download, ``milr.json``, processor and
        tokenizer, whole weight files, then the weights): see `milr.models.janus_loading`.
        ``allow_missing`` loads a checkpoint with missing or unexpected tensors anyway (with a
        warning). ``prompt_style`` (``paper``, ``hf``, ``checkpoint``) or ``prompt_file`` choose
        the prompt layout (`milr.models.janus_prompts`; default: the checkpoint's ``milr.json``
        formats if it has any, else ``paper``).
        """
        import torch  # noqa: F401  (fail early with torch's own error)

        from milr.hub import resolve
        from milr.models import janus_loading

        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        local = Path(str(path)).expanduser()
        origin: dict[str, Any] = {}
        if local.is_dir() and revision is not None:
            raise MilrUserError(
                f"revision {revision!r} applies to Hub ids; {str(path)!r} is a local directory: "
                "drop --revision (or pass the Hub id)"
            )
        if not local.is_dir():
            resolved = resolve(str(path), who="model", revision=revision)
            origin = {"revision": resolved.revision, "commit": resolved.commit}
            local = resolved.path
        if not cls.can_load(local):
            from milr.generator import _describe_dir

            raise MilrUserError(
                f"{str(path)!r} is not a Janus checkpoint (found: {_describe_dir(local)}); "
                "expected a transformers-format Janus directory with model_type='janus'"
            )
        source: str = str(local)
        settings_dir: Path | None = local
        settings = JanusSettings.load(settings_dir)
        if prompt_file is not None:  # a bad prompt file fails before anything loads
            load_prompt_file(prompt_file)
        processor = janus_loading.load_processor(source)
        janus_loading.check_round_trip(processor.tokenizer, source)
        style = resolve_style(
            settings, prompt_style, prompt_file, bool(getattr(processor, "chat_template", None))
        )
        model = janus_loading.load_model(source, dev, dt, allow_missing)
        gen = cls(
            model, processor, settings, checkpoint=str(path) if origin else source, style=style
        )
        gen.origin = origin
        return gen

    # -- token ids and prompts ---------------------------------------------------------------
    def _token_ids(self) -> dict[str, int | None]:
        return special_token_ids(self.model, self.tokenizer, self.settings, self.checkpoint)

    def _encode(self, text: str) -> list[int]:
        ids = list(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        bos = self._ids["bos"]
        return ([int(bos)] if self.settings.add_bos and bos is not None else []) + ids

    def _chat(self, content: str) -> str:
        """The checkpoint's chat template around one user turn (``hf`` style)."""
        messages = [{"role": "user", "content": [{"type": "text", "text": content}]}]
        return str(
            self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        )

    def _processor_ids(self, text: str, mode: str) -> list[int]:
        out = self.processor(text=[text], generation_mode=mode, return_tensors="pt")
        return [int(t) for t in out["input_ids"][0]]

    def reasoning_prompt(self, prompt: str) -> str:
        """The text the reasoning is written after (before the processor's additions)."""
        if self.style.processor:
            return self._chat(self.style.instruction.replace("{prompt}", prompt).strip())
        return self.style.reasoning_text(prompt)

    def reasoning_prompt_ids(self, prompt: str) -> list[int]:
        """Token ids of the reasoning prompt (BOS and, for ``hf``, the processor's additions)."""
        if self.style.processor:
            return self._processor_ids(self.reasoning_prompt(prompt), "text")
        return self._encode(self.reasoning_prompt(prompt))

    def image_text(self, prompt: str, reasoning: str | None) -> str:
        if self.settings.strip_prompt_period:
            prompt = prompt.rstrip().removesuffix(".")
        return self.style.image_text(prompt, reasoning)

    def image_prompt_ids(self, prompt_text: str) -> tuple[list[int], list[int]]:
        """Token ids of the conditional and unconditional CFG rows (equal length).

        Conditional: ``[BOS] + tokenize(image prompt) + [BOI]`` (``hf``: what
        ``processor(generation_mode="image")`` gives for the chat template). Unconditional: every
        token except BOS and BOI replaced by PAD, as ``JanusForConditionalGeneration.generate``.
        """
        boi = self._ids["boi"]
        if self.style.processor:
            cond = self._processor_ids(self._chat(prompt_text.strip()), "image")
        else:
            cond = self._encode(self.style.image_prompt_text(prompt_text)) + [boi]  # type: ignore[list-item]
        keep = {self._ids["bos"], boi}
        uncond = [t if t in keep else self._ids["pad"] for t in cond]
        return cond, uncond  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        """Provenance for trajectories, with the prompt style."""
        origin = {k: v for k, v in getattr(self, "origin", {}).items() if v is not None}
        return {**super().describe(), **origin, "prompt_style": self.style.name}

    def describe_prompts(self, prompt: str, reasoning: str | None) -> dict[str, Any]:
        """Decoded reasoning and image prompts (special tokens shown), for trajectories."""
        decode = self.tokenizer.decode
        cond, _ = self.image_prompt_ids(self.image_text(prompt, reasoning))
        return {
            "style": self.style.name,
            "reasoning": decode(self.reasoning_prompt_ids(prompt), skip_special_tokens=False),
            "image": decode(cond, skip_special_tokens=False),
        }

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

    @property
    def default_text_prefix(self) -> str:
        return self.settings.text_prefix or "paper"

    def check_prompt(self, prompt: str) -> None:
        super().check_prompt(prompt)
        cond, _ = self.image_prompt_ids(self.image_text(prompt, None))
        reason = self.reasoning_prompt_ids(prompt)
        limit = self.context - self.image_token_count
        if len(cond) > limit or len(reason) >= self.context:
            raise MilrUserError(
                f"prompt too long: the image prompt is {len(cond)} tokens and the reasoning "
                f"prompt {len(reason)}, but the model's context is {self.context} tokens, "
                f"{self.image_token_count} of which the image needs (at most {limit} for the "
                "prompt); shorten the prompt"
            )

    # -- heads -------------------------------------------------------------------------------
    def text_head(self, latents: torch.Tensor) -> torch.Tensor:
        return self.model.lm_head(latents.to(self.dtype)).float()

    def image_head(self, latents: torch.Tensor, cfg_scale: float) -> torch.Tensor:
        scores = self.model.model.generation_head(latents.to(self.dtype)).float()
        c, u = scores[..., 0, :], scores[..., 1, :]
        return u + (c - u) * cfg_scale

    # -- understanding (self-judge) ----------------------------------------------------------
    supports_understanding: ClassVar[bool] = True

    def tokenize(self, text: str) -> list[int]:
        return [int(t) for t in self.tokenizer(text, add_special_tokens=False)["input_ids"]]

    @property
    def unk_token_id(self) -> int | None:
        unk = getattr(self.tokenizer, "unk_token_id", None)
        return None if unk is None else int(unk)

    def understanding_inputs(
        self, images: Sequence[Image], questions: Sequence[str], template: str | None = None
    ) -> dict[str, Any]:
        """Processor inputs (``input_ids``, ``attention_mask`` right-padded, ``pixel_values``).

        The processor adds its own specials and, where the checkpoint asks for it, its default
        system prompt; BOS is then put at position 0 if the tokenizer did not add it and
        ``add_bos`` is set — never mid-sequence.
        """
        import torch

        layout = template or self.settings.understand_template
        image_token = getattr(self.processor, "image_token", None) or "<image_placeholder>"
        texts = [layout.replace("{question}", q).replace("{image}", image_token) for q in questions]
        inputs = self.processor(
            text=texts,
            images=list(images),
            return_tensors="pt",
            padding=True,
            padding_side="right",
            add_special_tokens=True,
        )
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        bos = self._ids["bos"]
        if self.settings.add_bos and bos is not None and bool((ids[:, 0] != bos).any()):
            ids = torch.cat([torch.full_like(ids[:, :1], bos), ids], dim=1)
            mask = torch.cat([torch.ones_like(mask[:, :1]), mask], dim=1)
        return {"input_ids": ids, "attention_mask": mask, "pixel_values": inputs["pixel_values"]}

    def _understanding_batches(
        self,
        method: str,
        images: Sequence[Image],
        questions: Sequence[str],
        template: str | None,
        batch_size: int,
    ) -> Iterator[dict[str, Any]]:
        """`understanding_inputs` of each run of `batch_size` (image, question) rows.

        Raises `MilrUserError` naming `method` when the two sequences differ in length.
        """
        if len(images) != len(questions):
            raise MilrUserError(
                f"{method}: {len(images)} images but {len(questions)} questions; pass one each"
            )
        step = max(1, int(batch_size))
        for start in range(0, len(questions), step):
            yield self.understanding_inputs(
                images[start : start + step], questions[start : start + step], template
            )

    def answer(
        self,
        images: Sequence[Image],
        questions: Sequence[str],
        *,
        template: str | None = None,
        max_new_tokens: int = 256,
        batch_size: int = 8,
    ) -> list[str]:
        """Greedy answers (at most `max_new_tokens` each), inputs as `understanding_inputs`."""
        import torch

        pad = self._ids["pad"]
        answers: list[str] = []
        batches = self._understanding_batches("answer", images, questions, template, batch_size)
        for inputs in batches:
            ids, mask = inputs["input_ids"], inputs["attention_mask"]
            # right-padded rows -> left-padded (generation continues every row at its end)
            for row in range(ids.shape[0]):
                shift = int((mask[row] == 0).sum())
                ids[row] = torch.roll(ids[row], shift)
                mask[row] = torch.roll(mask[row], shift)
            with torch.no_grad():
                out = self.model.generate(
                    input_ids=ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    pixel_values=inputs["pixel_values"].to(device=self.device, dtype=self.dtype),
                    do_sample=False,
                    num_beams=1,
                    max_new_tokens=int(max_new_tokens),
                    pad_token_id=pad,
                )
            new = out[:, ids.shape[1] :]
            answers.extend(
                t.strip() for t in self.tokenizer.batch_decode(new, skip_special_tokens=True)
            )
        return answers

    def understand(
        self,
        images: Sequence[Image],
        questions: Sequence[str],
        *,
        template: str | None = None,
        batch_size: int = 8,
    ) -> torch.Tensor:
        """Next-token log-probs ``[B, V]`` (float32, CPU) of the model shown image i, asked i.

        The text is `template` (default ``settings.understand_template``) with ``{image}``
        replaced by the processor's image placeholder (expanded to the image's tokens) and
        ``{question}`` by the question; tokens as `understanding_inputs`. Rows are read at
        their last real token; only those positions go through the output head.
        """
        import torch

        out: list[torch.Tensor] = []
        batches = self._understanding_batches("understand", images, questions, template, batch_size)
        for inputs in batches:
            ids, mask = (
                inputs["input_ids"].to(self.device),
                inputs["attention_mask"].to(self.device),
            )
            pixels = inputs["pixel_values"].to(device=self.device, dtype=self.dtype)
            last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(dim=1)
            with torch.no_grad():
                hidden = self.model.model(
                    input_ids=ids, attention_mask=mask, pixel_values=pixels
                ).last_hidden_state
                picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
                logits = self.model.lm_head(picked).float()
            out.append(torch.log_softmax(logits, dim=-1).cpu())
        if not out:
            return torch.zeros(0, int(self.model.config.text_config.vocab_size))
        return torch.cat(out)

    # -- pixels ------------------------------------------------------------------------------
    def decode(self, tokens: torch.Tensor) -> list[Image]:
        """RGB images of ``[N, n]`` image tokens; rows decoded before come from the adapter's
        `milr.models.janus_decode.DecodeCache` (``decode_cache``; ``max_bytes = 0``: off)."""
        cache = self.__dict__.get("decode_cache")
        if cache is None:
            from milr.models.janus_decode import DecodeCache

            cache = self.__dict__.setdefault("decode_cache", DecodeCache())
        return cache.decode(tokens, self._decode_fresh)  # type: ignore[no-any-return]

    def _decode_fresh(self, tokens: torch.Tensor) -> list[Image]:
        import numpy as np
        import torch
        from PIL import Image as PILImage

        with torch.no_grad():
            px = self.model.decode_image_tokens(tokens.to(self.device).long())
        arr = ((px.float() + 1) / 2 * 255).clamp(0, 255).cpu().numpy().astype(np.uint8)
        return [PILImage.fromarray(a) for a in arr]


@hookimpl
def register_generators(register: Callable[[type[Any]], None]) -> None:
    register(JanusGenerator)
