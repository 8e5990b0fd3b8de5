"""`judge`: a local vision-language model answers "does this image show the prompt?" (VQAScore-style).

Any transformers image-text-to-text checkpoint (``AutoModelForImageTextToText`` +
``AutoProcessor``) that can answer yes/no works: Qwen2.5-VL (UnifiedReward), LLaVA,
PaliGemma, Idefics... The question is built from ``question`` (``{prompt}`` is replaced by the
prompt), wrapped in the processor's chat template when it has one, and the score is read from
the next-token distribution after the assistant turn starts::

    score = P(yes) / (P(yes) + P(no))

where ``P(yes)`` sums the probabilities of the single-token spellings of ``yes_words``
(default ``yes``/``Yes``, each also with a leading space) and ``P(no)`` likewise. The verdict
passes when ``score >= threshold`` (default 0.5: the model would rather say yes).

The helpers here (`yes_no_tokens`, `yes_no_scores`) are shared with ``self-judge``.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from milr import Critic, CriticResult, MilrUserError, hookimpl
from milr.checkpoints import check_loading_info, quiet_transformers
from milr.critic import require
from milr.critics._images import to_rgb
from milr.devices import dtype_name
from milr.devices import resolve as resolve_devices

if TYPE_CHECKING:
    from PIL.Image import Image

DEFAULT_QUESTION = 'Does this image show "{prompt}"? Answer yes or no.'
DTYPES = ("auto", "float32", "bfloat16", "float16")


def parse_words(value: Any, param: str, critic: str) -> tuple[str, ...]:
    """A list/tuple of words, or a ``|``-separated string (spec strings cannot hold lists)."""
    items = value.split("|") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(w, str) for w in items):
        raise MilrUserError(
            f"{critic} critic: {param}={value!r} must be a list of words or 'word|Word'"
        )
    words = tuple(w.strip() for w in items if w.strip())
    if not words:
        raise MilrUserError(f"{critic} critic: {param}={value!r} holds no word")
    return words


def check_question(question: Any, critic: str) -> str:
    if not isinstance(question, str) or "{prompt}" not in question:
        raise MilrUserError(
            f"{critic} critic: question={question!r} must be a string containing {{prompt}}, "
            f"e.g. {DEFAULT_QUESTION!r}"
        )
    return question


def check_threshold(threshold: Any, critic: str) -> float | None:
    if threshold is None:
        return None
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not 0 <= threshold <= 1
    ):
        raise MilrUserError(
            f"{critic} critic: threshold={threshold!r} must lie in [0, 1] or be null"
        )
    return float(threshold)


def check_batch_size(batch_size: Any, critic: str) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise MilrUserError(
            f"{critic} critic: batch_size={batch_size!r} must be a positive integer"
        )
    return batch_size


def yes_no_tokens(
    tokenizer: Any, yes_words: tuple[str, ...], no_words: tuple[str, ...], critic: str
) -> tuple[list[int], list[int]]:
    """Token ids of the words (and their leading-space forms) that encode to one known token."""
    unk = getattr(tokenizer, "unk_token_id", None)

    def ids(words: tuple[str, ...], param: str) -> list[int]:
        found: list[int] = []
        for word in words:
            for form in (word, " " + word):
                enc = tokenizer.encode(form, add_special_tokens=False)
                if len(enc) == 1 and enc[0] != unk and enc[0] not in found:
                    found.append(int(enc[0]))
        if not found:
            raise MilrUserError(
                f"{critic} critic: none of {param}={list(words)!r} is a single token of this "
                f"model's tokenizer; pass {param} with words the model answers with"
            )
        return found

    yes, no = ids(yes_words, "yes_words"), ids(no_words, "no_words")
    if set(yes) & set(no):
        raise MilrUserError(
            f"{critic} critic: yes_words and no_words share tokens {sorted(set(yes) & set(no))}"
        )
    return yes, no


def yes_no_scores(
    model: Any,
    processor: Any,
    texts: list[str],
    images: list[Image],
    yes_ids: list[int],
    no_ids: list[int],
    *,
    device: Any,
    dtype: Any,
    batch_size: int,
    add_special_tokens: bool,
) -> list[dict[str, float]]:
    """P(yes)/(P(yes)+P(no)) of the next token after each text (with its image), batched.

    Rows are right-padded and read at their own last real token, so padding never changes a
    score. Only the hidden states at those positions go through the output head (full-sequence
    logits of a 150k-vocabulary model would cost gigabytes).
    """
    import torch

    out: list[dict[str, float]] = []
    head = model.get_output_embeddings()
    text_cfg = (
        model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    )
    softcap = getattr(text_cfg, "final_logit_softcapping", None)
    yes_t = torch.tensor(yes_ids)
    no_t = torch.tensor(no_ids)
    for start in range(0, len(texts), batch_size):
        chunk_t = texts[start : start + batch_size]
        chunk_i = images[start : start + batch_size]
        inputs = processor(
            text=chunk_t,
            images=chunk_i,
            return_tensors="pt",
            padding=True,
            padding_side="right",
            add_special_tokens=add_special_tokens,
        )
        inputs = {
            k: (v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device))
            if hasattr(v, "to")
            else v
            for k, v in inputs.items()
        }
        mask = inputs["attention_mask"]
        last = (mask * torch.arange(mask.shape[1], device=mask.device)).argmax(dim=1)
        with torch.no_grad():
            hidden = model.model(**inputs).last_hidden_state
            picked = hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
            logits = head(picked).float()
            if softcap:
                logits = torch.tanh(logits / softcap) * softcap
        logp = torch.log_softmax(logits, dim=-1).cpu()
        lp_yes = torch.logsumexp(logp[:, yes_t], dim=-1)
        lp_no = torch.logsumexp(logp[:, no_t], dim=-1)
        score = torch.sigmoid(lp_yes - lp_no)
        for s, y, n in zip(
            score.tolist(), lp_yes.exp().tolist(), lp_no.exp().tolist(), strict=True
        ):
            out.append({"score": float(s), "p_yes": float(y), "p_no": float(n)})
    return out


def yes_no_results(
    scores: list[dict[str, float]],
    prompts: list[str],
    question: str,
    threshold: float | None,
    model: str,
) -> list[CriticResult]:
    """Critic results from `yes_no_scores` rows: verdict against `threshold`, question shown."""
    return [
        CriticResult(
            s["score"],
            None if threshold is None else s["score"] >= threshold,
            {
                "p_yes": s["p_yes"],
                "p_no": s["p_no"],
                "question": question.replace("{prompt}", p),
                "model": model,
            },
        )
        for s, p in zip(scores, prompts, strict=True)
    ]


def resolve_device_dtype(device: str | None, dtype: str, critic: str) -> tuple[str, Any]:
    """``device=None`` picks CUDA when present; ``dtype="auto"`` is bf16 on CUDA, fp32 on CPU.

    Spellings and errors are `milr.devices`' (the same for every generator and critic).
    """
    return resolve_devices(device, dtype, f"{critic} critic")


# (source, device, dtype) -> (model, processor): loaded once per process.
_MODELS: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_MODELS_LOCK = threading.Lock()


class JudgeCritic(Critic):
    """A local VLM's probability of answering "yes" to a question about the image and prompt.

    Parameters: ``model`` (a local checkpoint directory, or a hub id when online),
    ``question`` (with ``{prompt}``), ``device`` (default: CUDA if available), ``dtype``
    (``auto`` | ``float32`` | ``bfloat16`` | ``float16``), ``batch_size``, ``yes_words`` and
    ``no_words`` (lists or ``a|b`` strings), ``threshold`` (verdict; null for none).
    """

    name: ClassVar[str] = "judge"
    description: ClassVar[str] = "Local VLM judge: P(yes) for 'does this image show the prompt?'"
    requires: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    extra: ClassVar[str | None] = None
    inputs: ClassVar[tuple[str, ...]] = ("image", "prompt")

    def __init__(
        self,
        model: str | None = None,
        question: str = DEFAULT_QUESTION,
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int = 8,
        yes_words: Any = ("yes", "Yes"),
        no_words: Any = ("no", "No"),
        threshold: float | None = 0.5,
    ) -> None:
        if not isinstance(model, str) or not model.strip():
            raise MilrUserError(
                "judge critic needs model=PATH: a local transformers image-text-to-text checkpoint "
                "directory (e.g. Qwen2.5-VL), e.g. --critic judge:model=/models/qwen2.5-vl-7b"
            )
        dtype = dtype_name(dtype, "judge critic")
        self.model_source = model
        self.question = check_question(question, self.name)
        self.device = device
        self.dtype = dtype
        self.batch_size = check_batch_size(batch_size, self.name)
        self.yes_words = parse_words(yes_words, "yes_words", self.name)
        self.no_words = parse_words(no_words, "no_words", self.name)
        self.threshold = check_threshold(threshold, self.name)
        self._config = {
            "model": model,
            "question": self.question,
            "device": device,
            "dtype": dtype,
            "batch_size": self.batch_size,
            "yes_words": list(self.yes_words),
            "no_words": list(self.no_words),
            "threshold": self.threshold,
        }

    def load(self) -> tuple[Any, Any]:
        """The (model, processor) pair for this configuration, loaded once per process."""
        require("torch", self.extra, self.name)
        transformers = require("transformers", self.extra, self.name)
        device, dtype = resolve_device_dtype(self.device, self.dtype, self.name)
        local = Path(self.model_source).expanduser()
        source = str(local.resolve()) if local.is_dir() else self.model_source
        key = (source, device, str(dtype))
        with _MODELS_LOCK:
            if key in _MODELS:
                return _MODELS[key]
            if not local.is_dir():
                offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0") or os.environ.get(
                    "TRANSFORMERS_OFFLINE", ""
                ) not in ("", "0")
                if local.is_absolute() or self.model_source.startswith((".", "~")) or offline:
                    where = (
                        "it is not a directory"
                        if not offline
                        else "offline mode is on and it is not a local directory"
                    )
                    raise MilrUserError(
                        f"judge critic: cannot load model={self.model_source!r}: {where}. Pass the "
                        "path of a checkpoint directory holding config.json, the weights and the "
                        "processor files (milr never downloads in offline mode)"
                    )
            try:
                with quiet_transformers():
                    model, info = transformers.AutoModelForImageTextToText.from_pretrained(
                        source, dtype=dtype, output_loading_info=True
                    )
                    processor = transformers.AutoProcessor.from_pretrained(source)
            except (OSError, ValueError) as exc:
                raise MilrUserError(
                    f"judge critic: cannot load model={self.model_source!r} as an image-text-to-text "
                    f"checkpoint: {str(exc).splitlines()[0] if str(exc) else exc!r}"
                ) from exc
            check_loading_info(info, source, "judge critic")  # missing tensors: one line
            model.to(device).eval().requires_grad_(False)
            _MODELS[key] = (model, processor)
            return model, processor

    def build_text(self, processor: Any, prompt: str) -> tuple[str, bool]:
        """The model input text for one prompt, and whether the tokenizer should add specials."""
        question = self.question.replace("{prompt}", prompt)
        if getattr(processor, "chat_template", None):
            messages = [
                {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": question}]}
            ]
            text = processor.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            return text, False
        image_token = getattr(processor, "image_token", None) or "<image>"
        return f"{image_token}\n{question}", True

    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[CriticResult]:
        rgb = [to_rgb(im, self.name) for im in images]
        model, processor = self.load()
        tokenizer = getattr(processor, "tokenizer", processor)
        yes_ids, no_ids = yes_no_tokens(tokenizer, self.yes_words, self.no_words, self.name)
        built = [self.build_text(processor, p) for p in prompts]
        param = next(model.parameters())
        scores = yes_no_scores(
            model,
            processor,
            [t for t, _ in built],
            rgb,
            yes_ids,
            no_ids,
            device=param.device,
            dtype=param.dtype,
            batch_size=self.batch_size,
            add_special_tokens=built[0][1] if built else False,
        )
        return yes_no_results(scores, prompts, self.question, self.threshold, self.model_source)


@hookimpl
def register_critics(register):
    register(JudgeCritic)
