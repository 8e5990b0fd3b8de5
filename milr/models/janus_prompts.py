"""Prompt styles of the Janus adapter: how the reasoning prompt and the image prompt are built.

- ``paper`` (the default for checkpoints without their own formats): the MILR authors' layout
  — a one-sentence system prompt, literal ``User``/``Assistant`` roles in the DeepSeek SFT
  layout (``{system}\\n\\nUser: {instruction}\\n\\nAssistant:``, content stripped) and a numbered
  instruction with six requirements; the image prompt is ``User: {prompt}. {reasoning}\\n\\n
  Assistant:`` followed by begin-of-image, without a system prompt. (The authors' text-mode
  regenerations use ``<|User|>``/``<|Assistant|>`` for the image prompt instead; milr keeps one
  layout. A prompt file can express either.)
- ``hf``: the checkpoint's own chat template and processor: ``processor(generation_mode="text")``
  for the reasoning (with its default system prompt when ``use_default_system_prompt`` is set)
  and ``generation_mode="image"`` for the image prompt, exactly as transformers builds them.
- ``checkpoint``: the formats in the checkpoint's ``milr.json`` (the default when that file sets
  any prompt key, e.g. the ``shapes`` model, which was trained on its own format).
- a prompt file (TOML or JSON; keys below), so a user can paste the authors' exact strings.

Template placeholders: ``{system}`` (the system prompt followed by a blank line, or nothing),
``{instruction}`` (the instruction with ``{prompt}`` filled in, stripped), ``{prompt}``,
``{text}`` (the image text: ``image_text_template`` with ``{prompt}`` and ``{reasoning}``).
Template styles tokenise ``[BOS] + tokenize(text)`` (plus begin-of-image for the image rows);
the ``hf`` style lets the processor add its own specials.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from milr.checkpoints import first_line
from milr.errors import MilrUserError

#: The system prompt of the ``paper`` style (our wording of the authors' one-sentence role).
PAPER_SYSTEM = (
    "You are an assistant that receives a prompt for an image and writes a visualization: a "
    "short description of exactly what the image should show."
)
#: The ``paper`` style's numbered instruction (our wording of the authors' six requirements).
PAPER_INSTRUCTION = (
    'Image prompt: "{prompt}"\n'
    "Write the visualization of this image prompt, following these rules:\n"
    "1. Include every object the prompt mentions.\n"
    "2. Give attributes of an object (such as colour, number, shape or texture) only where the "
    "prompt gives them.\n"
    "3. Give spatial relations between objects only where the prompt gives them.\n"
    "4. Use at most 50 words.\n"
    "5. Add nothing beyond what the prompt says.\n"
    "6. Answer with the visualization directly, with no other text."
)
STYLE_NAMES = ("paper", "hf", "checkpoint")
#: Keys a prompt file may set.
FILE_KEYS = ("system", "instruction", "reasoning_template", "image_template", "image_text_template")


@dataclass(frozen=True)
class PromptStyle:
    """How the reasoning and image prompts are laid out (see the module docstring)."""

    name: str
    system: str = PAPER_SYSTEM
    instruction: str = PAPER_INSTRUCTION
    reasoning_template: str = "{system}User: {instruction}\n\nAssistant:"
    image_template: str = "User: {text}\n\nAssistant:"
    image_text_template: str = "{prompt}. {reasoning}"
    #: ``hf``: build both prompts with the checkpoint's chat template and processor.
    processor: bool = False

    def reasoning_text(self, prompt: str) -> str:
        """The text the reasoning is written after (template styles)."""
        instruction = self.instruction.replace("{prompt}", prompt).strip()
        system = f"{self.system.strip()}\n\n" if self.system.strip() else ""
        return (
            self.reasoning_template.replace("{system}", system)
            .replace("{instruction}", instruction)
            .replace("{prompt}", prompt)
        )

    def image_text(self, prompt: str, reasoning: str | None) -> str:
        """``{text}``: the prompt with the reasoning (``image_text_template``), or the prompt."""
        if not reasoning:
            return prompt
        return self.image_text_template.replace("{prompt}", prompt).replace(
            "{reasoning}", reasoning
        )

    def image_prompt_text(self, text: str) -> str:
        """The image prompt before begin-of-image (template styles)."""
        return self.image_template.replace("{text}", text.strip())

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


PAPER = PromptStyle("paper")
HF = PromptStyle("hf", system="", instruction=PAPER_INSTRUCTION, processor=True)


def checkpoint_style(settings: Any) -> PromptStyle:
    """The style of a checkpoint's ``milr.json`` (`JanusSettings`): no system prompt."""
    return PromptStyle(
        "checkpoint",
        system="",
        instruction=settings.reasoning_instruction,
        reasoning_template=settings.reasoning_template,
        image_template=settings.image_template,
        image_text_template=settings.image_text_template,
    )


def load_prompt_file(path: str | Path) -> PromptStyle:
    """A `PromptStyle` from a TOML or JSON file (keys `FILE_KEYS`; unset keys: ``paper``'s)."""
    p = Path(path).expanduser()
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise MilrUserError(f"cannot read prompt file {str(p)!r}: {exc.strerror or exc}") from None
    try:
        if p.suffix.lower() == ".json":
            data = json.loads(raw.decode("utf-8"))
        else:
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib  # type: ignore[no-redef]
            data = tomllib.loads(raw.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        kind = "JSON" if p.suffix.lower() == ".json" else "TOML"
        first = first_line(exc)
        raise MilrUserError(f"prompt file {str(p)!r} is not valid {kind}: {first}") from None
    if not isinstance(data, dict):
        raise MilrUserError(f"prompt file {str(p)!r} must hold a table/object of prompt keys")
    unknown = sorted(set(data) - set(FILE_KEYS))
    if unknown:
        raise MilrUserError(
            f"prompt file {str(p)!r}: unknown keys {unknown}; allowed: {', '.join(FILE_KEYS)}"
        )
    bad = sorted(k for k, v in data.items() if not isinstance(v, str))
    if bad:
        raise MilrUserError(f"prompt file {str(p)!r}: {bad} must be strings")
    style = replace(PAPER, name=f"file:{p.name}", **data)
    for key, needed in (
        ("instruction", "{prompt}"),
        ("reasoning_template", "{instruction}"),
        ("image_template", "{text}"),
        ("image_text_template", "{reasoning}"),
    ):
        if needed not in getattr(style, key):
            raise MilrUserError(
                f"prompt file {str(p)!r}: {key} must contain {needed} (got {getattr(style, key)!r})"
            )
    return style


def resolve_style(
    settings: Any, style: str | None, prompt_file: str | Path | None, has_chat_template: bool
) -> PromptStyle:
    """The prompt style of a run: a prompt file, a named style, or the checkpoint's default.

    Default: ``checkpoint`` when its ``milr.json`` sets a prompt key, else ``paper``.
    """
    if prompt_file is not None:
        if style not in (None, "file"):
            raise MilrUserError(
                f"--prompt-style {style!r} and --prompt-file both given; pass one of them"
            )
        return load_prompt_file(prompt_file)
    if style is None:
        style = "checkpoint" if getattr(settings, "custom_prompts", False) else "paper"
    if style == "paper":
        return PAPER
    if style == "hf":
        if not has_chat_template:
            raise MilrUserError(
                "--prompt-style hf needs the checkpoint's chat template (chat_template.jinja "
                "or the processor config), which this checkpoint lacks; use --prompt-style "
                "paper or --prompt-file"
            )
        return HF
    if style == "checkpoint":
        return checkpoint_style(settings)
    raise MilrUserError(
        f"prompt style {style!r} is unknown; use one of {', '.join(STYLE_NAMES)} "
        "(or --prompt-file PATH)"
    )


def special_token_ids(model: Any, tokenizer: Any, settings: Any, checkpoint: Any) -> dict[str, Any]:
    """BOS, EOS, PAD and begin-of-image ids: ``milr.json`` overrides, else the generation
    config, else the tokenizer (``<｜▁pad▁｜>``/``<begin_of_image>`` on Janus-Pro).

    The 1B and 7B checkpoints use different PAD/BOI ids (100002/100003 vs 100015/100016), so a
    generation config that disagrees with its own tokenizer is reported (`UserWarning`); the
    generation config wins, as in ``JanusForConditionalGeneration.generate``. Raises
    `MilrUserError` when an id the prompts need is found nowhere.
    """
    import warnings

    from milr.models.janus_settings import SETTINGS_FILE

    gen = getattr(model, "generation_config", None)
    gkw = (getattr(gen, "generation_kwargs", None) or {}) if gen is not None else {}

    def first(value: Any) -> int | None:
        if isinstance(value, (list, tuple)):
            value = value[0] if value else None
        return None if value is None else int(value)

    boi_tok = getattr(tokenizer, "boi_token", None)
    from_tokenizer = {
        "bos": first(tokenizer.bos_token_id),
        "eos": first(tokenizer.eos_token_id),
        "pad": first(tokenizer.pad_token_id),
        "boi": first(tokenizer.convert_tokens_to_ids(boi_tok)) if boi_tok else None,
    }
    from_config = {
        "bos": first(getattr(gen, "bos_token_id", None)),
        "eos": first(getattr(gen, "eos_token_id", None)),
        "pad": first(getattr(gen, "pad_token_id", None)),
        "boi": first(gkw.get("boi_token_id")),
    }
    ids: dict[str, Any] = {}
    for key in ("bos", "eos", "pad", "boi"):
        override = getattr(settings, f"{key}_token_id", None)
        cfg, tok = from_config[key], from_tokenizer[key]
        if override is not None:
            ids[key] = int(override)
            continue
        if cfg is not None and tok is not None and cfg != tok:
            warnings.warn(
                f"checkpoint {checkpoint!r}: the generation config says {key.upper()}={cfg} but "
                f"the tokenizer says {tok}; using the generation config's (set "
                f"{key}_token_id in {SETTINGS_FILE} to choose)",
                UserWarning,
                stacklevel=4,
            )
        ids[key] = cfg if cfg is not None else tok
    missing = [k for k in ("pad", "boi") if ids[k] is None]
    if settings.add_bos and ids["bos"] is None:
        missing.append("bos")
    if missing:
        raise MilrUserError(
            f"checkpoint {checkpoint!r} lacks token ids for {missing}; set them in "
            f"{SETTINGS_FILE} (keys {', '.join(m + '_token_id' for m in missing)})"
        )
    return ids
