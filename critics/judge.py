"""`judge`: a local vision-language model judges the image against the prompt under a rubric.

Any transformers image-text-to-text checkpoint (``AutoModelForImageTextToText`` +
``AutoProcessor``) works: Qwen2.5-VL (UnifiedReward), LLaVA, PaliGemma, Idefics... The judge
text is the rubric's template (`milr.critics.rubrics`) with the prompt filled in, wrapped in the
processor's chat template when it has one.

- ``rubric="yesno"`` (default, VQAScore): no text is generated; the score is read from the
  next-token distribution after the assistant turn starts::

      score = P(yes) / (P(yes) + P(no))

  where ``P(yes)`` sums the probabilities of the single-token spellings of ``yes_words``
  (default ``yes``/``Yes``, each also with a leading space) and ``P(no)`` likewise. The verdict
  passes when ``score >= threshold`` (default 0.5). The score is read from probabilities only
  when ``P(yes) + P(no)`` (``yes_no_share`` in the details) is at least ``min_yes_no_share``
  (default 0.5) of the next token's probability; below it the model writes its greedy answer
  (at most ``max_new_tokens``, default 1 token) and that answer's first word decides (1.0 for
  a yes word, 0.0 for a no word, ``method: answer``); any other answer raises
  `JudgeReplyError` for that image, quoting the answer and the share. A score is never made
  from tail mass.
- ``rubric="wise" | "likert5" | "checklist"``: the model writes its answer greedily (batched,
  left-padded, at most ``max_new_tokens`` new tokens) and the rubric's parser scores it:
  WiScore, ``(s - 1) / 4`` of a 1-5 "Final Score" (UnifiedReward), or SelfReward's
  ``Score + 1``. ``checklist`` gives its own verdict; ``wise`` and ``likert5`` give one only
  when ``threshold`` is set explicitly. An answer ``wise`` or ``likert5`` cannot read raises
  `JudgeReplyError` naming the image; an unreadable ``checklist`` answer is a fail, as in the
  paper.

The model-side helpers (`yes_no_tokens`, `yes_no_scores`, `generate_answers`, `rubric_results`,
in ``milr.critics._judge_models`` and importable from here) and the parameter base
(`JudgeParams`) are shared with ``self-judge``.
"""

from __future__ import annotations

import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field, field_validator

from milr import Critic, CriticParams, CriticResult, MilrUserError, hookimpl
from milr.checkpoints import check_loading_info, first_line, quiet_transformers
from milr.critic import require
from milr.critics._images import to_rgb
from milr.critics._judge_models import (
    generate_answers,
    rubric_results,
    yes_no_results,
    yes_no_scores,
    yes_no_tokens,
)
from milr.critics.rubrics import (
    YESNO_TEMPLATE,
    Rubric,
    get_rubric,
    load_template,
    template_sha256,
)
from milr.devices import resolve as resolve_devices
from milr.params import BatchSize, Device, VerdictThreshold, dtype_param

if TYPE_CHECKING:
    from PIL.Image import Image

#: The yes/no rubric's default wording (kept under its old name).
DEFAULT_QUESTION = YESNO_TEMPLATE
DTYPES = ("auto", "float32", "bfloat16", "float16")
RubricName = Literal["yesno", "wise", "likert5", "checklist"]


def parse_words(value: Any) -> tuple[str, ...]:
    """A list/tuple of words, or a ``|``-separated string (spec strings cannot hold lists)."""
    items = value.split("|") if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not all(isinstance(w, str) for w in items):
        raise ValueError("must be a list of words or 'word|Word'")
    words = tuple(w.strip() for w in items if w.strip())
    if not words:
        raise ValueError("holds no word")
    return words


class JudgeParams(CriticParams):
    """Parameters shared by the local judges (``judge``, ``self-judge``)."""

    rubric: RubricName = Field(
        "yesno", description="how the judge is asked and its answer scored (see rubrics)"
    )
    template: str | None = Field(
        None, description="the rubric's text with {prompt}; None: milr's default wording"
    )
    template_file: str | None = Field(
        None, description="path of a UTF-8 file holding the template (a paper's wording)"
    )
    batch_size: BatchSize = 8
    yes_words: tuple[str, ...] = Field(
        ("yes", "Yes"), description="yesno: answer words counted as yes ('a|b' in specs)"
    )
    no_words: tuple[str, ...] = Field(
        ("no", "No"), description="yesno: answer words counted as no ('a|b' in specs)"
    )
    threshold: VerdictThreshold = 0.5
    min_yes_no_share: float = Field(
        0.5,
        gt=0,
        le=1,
        description="yesno: least share of the next token's probability that yes and no "
        "together must hold to score from probabilities; below it the judge's greedy answer's "
        "first word decides, and an answer that is neither fails the image",
    )
    max_new_tokens: int | None = Field(
        None, ge=1, le=4096, description="written answers: token bound; None: the rubric's"
    )

    @field_validator("yes_words", "no_words", mode="before")
    @classmethod
    def _words(cls, value: Any) -> tuple[str, ...]:
        return parse_words(value)


def pop_question(kwargs: dict[str, Any], critic: str) -> dict[str, Any]:
    """Map the deprecated ``question=`` (the yes/no wording) onto ``template=``."""
    question = kwargs.pop("question", None)
    if question is not None:
        warnings.warn(
            f"{critic} critic: question= is deprecated; pass template= (or template_file=)",
            DeprecationWarning,
            stacklevel=3,
        )
        if kwargs.get("template") is None and not kwargs.get("template_file"):
            kwargs["template"] = question
    return kwargs


class RubricSetup:
    """What a local judge derives from `JudgeParams` in ``setup()``."""

    rubric: Rubric
    template: str
    template_sha256: str
    max_new_tokens: int

    def setup_rubric(self, params: JudgeParams, critic: str) -> None:
        self.rubric = get_rubric(params.rubric, critic)
        self.template = load_template(self.rubric, params.template, params.template_file, critic)
        self.template_sha256 = template_sha256(self.template)
        self.max_new_tokens = params.max_new_tokens or self.rubric.max_new_tokens

    def verdict_threshold(self, params: JudgeParams) -> float | None:
        """yesno: ``threshold``; wise/likert5: only a threshold set explicitly."""
        if self.rubric.name == "yesno" or "threshold" in params.model_fields_set:
            return params.threshold
        return None


def _placement(device_map: str | None, device: str) -> dict[str, Any]:
    """``from_pretrained`` placement: ``device_map="auto"`` when asked (accelerate required),
    straight onto an accelerator when accelerate is installed, else nothing (load, then move)."""
    import importlib.util

    has_accelerate = importlib.util.find_spec("accelerate") is not None
    if device_map == "auto":
        if not has_accelerate:
            raise MilrUserError(
                "judge critic: device_map=auto needs the accelerate package; install it with "
                "`pip install accelerate`, or drop device_map to load on one device"
            )
        return {"device_map": "auto"}
    if device == "cpu" or not has_accelerate:
        return {}
    return {"device_map": {"": device}}


def resolve_device_dtype(device: str | None, dtype: str, critic: str) -> tuple[str, Any]:
    """``device`` auto/None picks CUDA when present; ``dtype="auto"`` is bf16 on CUDA, fp32 on CPU.

    Spellings and errors are `milr.devices`' (the same for every generator and critic).
    """
    return resolve_devices(device, dtype, f"{critic} critic")


# (source, device, dtype) -> (model, processor): loaded once per process.
_MODELS: dict[tuple[str, str, str], tuple[Any, Any]] = {}
_MODELS_LOCK = threading.Lock()


class JudgeCritic(RubricSetup, Critic):
    """A local VLM judges each image under a rubric (default: P(yes), VQAScore).

    Parameters are declared in `JudgeCritic.Params` (``milr critics judge`` lists them).
    Deprecated and still accepted with a `DeprecationWarning`: ``question`` (now ``template``).
    """

    name: ClassVar[str] = "judge"
    description: ClassVar[str] = "Local VLM judge under a rubric (yesno, wise, likert5, checklist)"
    requires: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    extra: ClassVar[str | None] = None
    inputs: ClassVar[tuple[str, ...]] = ("image", "prompt", "Explanation")

    class Params(JudgeParams):
        model: str = Field(
            min_length=1,
            description="transformers image-text-to-text checkpoint: a Hub id (downloaded on "
            "first use) or a local directory",
            json_schema_extra={
                "hint": "a Hub id or checkpoint directory (e.g. Qwen2.5-VL), e.g. "
                "--critic judge:model=Qwen/Qwen2.5-VL-7B-Instruct"
            },
        )
        revision: str | None = Field(
            None, description="Hub revision (branch, tag or commit) of a model Hub id"
        )
        device: Device = "auto"
        dtype: dtype_param("auto", "float32", "bfloat16", "float16") = Field(  # type: ignore[valid-type]
            "auto", description="weights dtype; auto: bfloat16 on CUDA, float32 on CPU"
        )
        device_map: Literal["auto"] | None = Field(
            None,
            description="auto: spread a judge too large for one GPU over all visible GPUs "
            "(needs the accelerate package; device is then ignored); None: one device",
        )

    params: Params

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**pop_question(kwargs, self.name))

    def setup(self) -> None:
        self.setup_rubric(self.params, self.name)
        self.model_source = self.params.model

    def config(self) -> dict[str, Any]:
        """The parameters plus the SHA-256 of the template text (a file may change)."""
        return {**super().config(), "template_sha256": self.template_sha256}

    def load(self) -> tuple[Any, Any]:
        """The (model, processor) pair for this configuration, loaded once per process.

        ``model`` is a checkpoint directory or a Hub id downloaded on first use (`milr.hub`;
        ``revision`` pins it); weight files are checked whole before loading.
        """
        require("torch", self.extra, self.name)
        transformers = require("transformers", self.extra, self.name)
        from milr.hub import resolve
        from milr.weight_files import check_weights_path

        device, dtype = resolve_device_dtype(self.params.device, self.params.dtype, self.name)
        placement = _placement(self.params.device_map, device)  # accelerate: before any download
        local = Path(self.model_source).expanduser()
        if local.exists() and not local.is_dir():
            raise MilrUserError(
                f"judge critic: cannot load model={self.model_source!r}: it is not a "
                "directory. Pass the path of a checkpoint directory holding config.json, the "
                "weights and the processor files, or a Hub id"
            )
        source = str(
            resolve(
                self.model_source,
                who="judge critic",
                revision=self.params.revision,
                hint="pass a checkpoint directory or a Hub id (e.g. Qwen/Qwen2.5-VL-7B-Instruct)",
            ).path
        )
        key = (source, "auto" if self.params.device_map else device, str(dtype))
        with _MODELS_LOCK:
            if key in _MODELS:
                return _MODELS[key]
            check_weights_path(source, "judge critic")  # damaged files: one line
            try:  # a local directory now: nothing more is downloaded
                with quiet_transformers():
                    model, info = transformers.AutoModelForImageTextToText.from_pretrained(
                        source, dtype=dtype, local_files_only=True, output_loading_info=True,
                        **placement,
                    )  # fmt: skip
                    processor = transformers.AutoProcessor.from_pretrained(
                        source, local_files_only=True
                    )
            except (OSError, ValueError) as exc:
                raise MilrUserError(
                    f"judge critic: cannot load model={self.model_source!r} as an "
                    f"image-text-to-text checkpoint: {first_line(exc)}"
                ) from exc
            check_loading_info(info, source, "judge critic")  # missing tensors: one line
            if "device_map" not in placement:
                model.to(device)
            model.eval().requires_grad_(False)
            _MODELS[key] = (model, processor)
            return model, processor

    def prepare(self) -> None:
        """Load the judge model and its processor."""
        self.load()

    def weights_ids(self) -> list[str]:
        """The judge checkpoint (``model``, ``@revision`` when pinned)."""
        from milr.weight_sources import with_revision

        return [with_revision(self.model_source, self.params.revision)]

    def judge_text(self, prompt: str, metadata: dict[str, Any] | None = None) -> str:
        """The rubric's text for one prompt (before the chat template)."""
        return self.rubric.render(self.template, prompt, metadata)

    def build_text(
        self, processor: Any, prompt: str, metadata: dict[str, Any] | None = None
    ) -> tuple[str, bool]:
        """The model input text for one prompt, and whether the tokenizer should add specials."""
        question = self.judge_text(prompt, metadata)
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
        built = [self.build_text(processor, p, m) for p, m in zip(prompts, metadata, strict=True)]
        param = next(model.parameters())
        common = {
            "device": param.device,
            "dtype": param.dtype,
            "batch_size": self.params.batch_size,
            "add_special_tokens": built[0][1] if built else False,
        }
        texts = [t for t, _ in built]
        questions = [self.judge_text(p, m) for p, m in zip(prompts, metadata, strict=True)]
        threshold = self.verdict_threshold(self.params)
        if not self.rubric.generates:
            tokenizer = getattr(processor, "tokenizer", processor)
            yes_ids, no_ids = yes_no_tokens(
                tokenizer, self.params.yes_words, self.params.no_words, self.name
            )
            scores = yes_no_scores(model, processor, texts, rgb, yes_ids, no_ids, **common)

            def answer(rows: list[int]) -> list[str | None]:
                return list(
                    generate_answers(
                        model,
                        processor,
                        [texts[i] for i in rows],
                        [rgb[i] for i in rows],
                        max_new_tokens=self.max_new_tokens,
                        **common,
                    )
                )

            return yes_no_results(
                scores,
                questions,
                threshold,
                self.model_source,
                critic=self.name,
                min_share=self.params.min_yes_no_share,
                answer=answer,
                yes_words=self.params.yes_words,
                no_words=self.params.no_words,
            )
        answers = generate_answers(
            model, processor, texts, rgb, max_new_tokens=self.max_new_tokens, **common
        )
        return rubric_results(
            self.rubric,
            answers,
            questions,
            threshold,
            self.model_source,
            self.name,
            self.template_sha256,
        )


@hookimpl
def register_critics(register: Callable[[type[Critic]], None]) -> None:
    register(JudgeCritic)
