"""Prompt formats and token ids of the Janus adapter, overridable by a checkpoint's ``milr.json``.

Defaults are Janus-Pro's DeepSeek SFT format; a checkpoint may override any key with an optional
``milr.json`` in its directory:

- ``reasoning_template`` (default ``"<|User|>: {instruction}\\n\\n<|Assistant|>:"``) and
  ``reasoning_instruction`` (default `REASONING_INSTRUCTION`, with ``{prompt}``): the text the
  reasoning is written after. Token ids are ``[BOS] + tokenize(text)`` (no other specials).
- ``image_template`` (default ``"<|User|>: {text}\\n\\n<|Assistant|>:"``) and
  ``image_text_template`` (default ``"{prompt}. {reasoning}"``; without reasoning the text is
  the prompt): the conditional image row is ``[BOS] + tokenize(image_template) + [BOI]``.
- ``understand_template`` (default ``"<|User|>: {image}\\n{question}\\n\\n<|Assistant|>:"``):
  the understanding-mode layout `JanusGenerator.understand` uses (``self-judge``).
- ``uncond``: ``"pad"`` (the only value in this version; as Janus and the paper: the
  conditional row with every token except BOS and BOI replaced by PAD).
- ``max_reasoning_tokens`` (default 512), ``image_token_count`` (default
  ``config.vision_config.num_image_tokens``), ``add_bos`` (default true), and token-id
  overrides ``bos_token_id``, ``eos_token_id``, ``pad_token_id``, ``boi_token_id`` (defaults:
  the generation config, then the tokenizer). ``strip_prompt_period`` (default false) drops a
  trailing period of the prompt before ``image_text_template`` is applied.
- ``cfg_scale`` (default 5.0, the paper's value for Janus-Pro): the classifier-free guidance
  scale this checkpoint is meant to sample with; used when a run leaves ``cfg_scale`` unset.
- ``text_prefix`` (default ``paper``): the text prefix rule this checkpoint recommends
  (`milr.optimizer_config.MILRConfig`); used when a run leaves ``text_prefix`` unset.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path

from milr.errors import MilrUserError
from milr.optimizer_config import TEXT_PREFIX_RULES

REASONING_INSTRUCTION = (
    'You are asked to draw an image for the prompt "{prompt}". Write a brief, precise '
    "visualization of everything in it: include every object the prompt mentions; give visual "
    "attributes (colour, number, shape, texture) only where the prompt specifies them; state "
    "the relations between objects (e.g. spatial) that the prompt specifies; use 50 words or "
    "fewer; add nothing beyond what the prompt states. Output only the visualization."
)
SFT_TEMPLATE = "<|User|>: {content}\n\n<|Assistant|>:"
#: Understanding mode (self-judge): the image in the user turn, then the question.
UNDERSTAND_TEMPLATE = "<|User|>: {image}\n{question}\n\n<|Assistant|>:"
SETTINGS_FILE = "milr.json"
#: ``milr.json`` keys that define prompt formats (the ``checkpoint`` prompt style).
PROMPT_KEYS = (
    "reasoning_template",
    "reasoning_instruction",
    "image_template",
    "image_text_template",
)


@dataclass
class JanusSettings:
    """Prompt formats and token ids; defaults are Janus-Pro's, overridable by ``milr.json``."""

    reasoning_template: str = SFT_TEMPLATE.replace("{content}", "{instruction}")
    reasoning_instruction: str = REASONING_INSTRUCTION
    image_template: str = SFT_TEMPLATE.replace("{content}", "{text}")
    image_text_template: str = "{prompt}. {reasoning}"
    understand_template: str = UNDERSTAND_TEMPLATE
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
    text_prefix: str | None = None
    #: Set by `load` when ``milr.json`` sets a prompt key (its formats become the default style).
    custom_prompts: bool = False

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
        known = {f.name for f in fields(cls)} - {"custom_prompts"}
        unknown = sorted(set(data) - known - {"comment", "_comment"})
        if unknown:
            raise MilrUserError(
                f"unknown keys {unknown} in {path}; allowed: {', '.join(sorted(known))}"
            )
        settings = cls(**{k: v for k, v in data.items() if k in known})
        settings.custom_prompts = bool(set(data) & set(PROMPT_KEYS))
        cfg = settings.cfg_scale
        if cfg is not None and (
            isinstance(cfg, bool) or not isinstance(cfg, (int, float)) or not cfg > 0
        ):
            raise MilrUserError(f"cfg_scale={cfg!r} in {path} must be a positive number")
        if settings.text_prefix is not None and settings.text_prefix not in TEXT_PREFIX_RULES:
            raise MilrUserError(
                f"text_prefix={settings.text_prefix!r} in {path}; use one of "
                f"{', '.join(TEXT_PREFIX_RULES)}"
            )
        if settings.uncond != "pad":
            raise MilrUserError(f"uncond={settings.uncond!r} in {path}; only 'pad' is supported")
        return settings
