"""`self-judge`: the paper's SelfReward — the run's own generator, in understanding mode, judges.

The critic owns no weights. The optimizer calls ``critic.bind(generator=gen)`` before the first
score (an `Ensemble` forwards the call to every member), and the critic then asks *that*
model — the same ``JanusForConditionalGeneration`` object that draws the images, so no second
copy is ever loaded — to judge the image under a rubric (`milr.critics.rubrics`):

- ``rubric="yesno"`` (default): ``score = P(yes) / (P(yes) + P(no))`` read from the
  next-token distribution after the assistant turn starts (no text generated), when yes and
  no together hold at least ``min_yes_no_share`` (default 0.5) of it; below that the model
  writes its greedy answer and its first word decides (yes 1.0, no 0.0), and any other answer
  fails the image (`JudgeReplyError` quoting the answer and the share), as for ``judge``.
- ``rubric="checklist"``: the paper's SelfReward. The model writes (greedily, at most
  ``max_new_tokens`` tokens) a check of each requirement of the prompt and JSON
  ``{"Score": 0}`` (match) or ``{"Score": -1}``; milr's score is ``Score + 1`` and an
  unreadable answer counts as a fail (MILR, arXiv 2509.22761 §4).
- ``rubric="wise" | "likert5"``: written answers scored by those rubrics.

The question sits in ``chat_format`` (default: Janus-Pro's DeepSeek SFT format, with
``{image}`` and ``{question}``). Any bound generator works if it implements the optional
protocol methods `milr.generator.Generator.understand` (next-token probabilities),
``answer`` (written answers) and ``tokenize`` (``supports_understanding = True``); the Janus
adapter does, and puts BOS and its processor's specials where the model expects them. Outside
a run, bind one yourself::

    gen = milr.load_generator("/models/Janus-Pro-7B")
    critic = milr.build_critic("self-judge:rubric=checklist")
    critic.bind(generator=gen)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field, field_validator

from milr import Critic, CriticResult, MilrUserError, hookimpl
from milr.critic import require
from milr.critics._images import to_rgb
from milr.critics.judge import (
    JudgeParams,
    RubricSetup,
    pop_question,
    rubric_results,
    yes_no_results,
    yes_no_tokens,
)
from milr.errors import UnsupportedOperation

if TYPE_CHECKING:
    from PIL.Image import Image

#: Janus-Pro's DeepSeek SFT format with the image in the user turn.
DEFAULT_CHAT_FORMAT = "<|User|>: {image}\n{question}\n\n<|Assistant|>:"
#: Old name of `DEFAULT_CHAT_FORMAT`.
DEFAULT_TEMPLATE = DEFAULT_CHAT_FORMAT


class SelfJudgeCritic(RubricSetup, Critic):
    """The run's own generator judges image vs prompt under a rubric (SelfReward: checklist).

    Parameters are declared in `SelfJudgeCritic.Params` (``milr critics self-judge``).
    Deprecated and still accepted with a `DeprecationWarning`: ``question`` (now ``template``)
    and ``template`` holding a chat format with ``{image}`` and ``{question}`` (now
    ``chat_format``).
    """

    name: ClassVar[str] = "self-judge"
    description: ClassVar[str] = "SelfReward: the run's own generator judges image vs prompt"
    requires: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    extra: ClassVar[str | None] = None
    inputs: ClassVar[tuple[str, ...]] = ("image", "prompt", "Explanation")

    class Params(JudgeParams):
        chat_format: str = Field(
            DEFAULT_CHAT_FORMAT,
            description="understanding-mode chat format with {image} and {question}",
        )
        add_bos: bool = Field(
            True, description="accepted for old specs; the generator places BOS (at position 0)"
        )

        @field_validator("chat_format")
        @classmethod
        def _placeholders(cls, value: str) -> str:
            if "{image}" not in value or "{question}" not in value:
                raise ValueError("must contain {image} and {question}")
            return value

    params: Params

    def __init__(self, **kwargs: Any) -> None:
        template = kwargs.get("template")
        if (
            isinstance(template, str)
            and "{image}" in template
            and "{question}" in template
            and "{prompt}" not in template
        ):
            warnings.warn(
                "self-judge critic: template= with {image} and {question} is the chat format, "
                "now called chat_format=; template= holds the rubric's text with {prompt}",
                DeprecationWarning,
                stacklevel=2,
            )
            kwargs["chat_format"] = kwargs.pop("template")
        self._generator: Any = None
        super().__init__(**pop_question(kwargs, self.name))

    def setup(self) -> None:
        self.setup_rubric(self.params, self.name)

    def config(self) -> dict[str, Any]:
        """The parameters plus the SHA-256 of the template text (a file may change)."""
        return {**super().config(), "template_sha256": self.template_sha256}

    @property
    def generator(self) -> Any:
        """The bound generator, or None before `bind`."""
        return self._generator

    def bind(self, *, generator: Any = None) -> None:
        """Keep a reference to the run's generator (``None`` unbinds); nothing is copied."""
        if generator is not None and not getattr(generator, "supports_understanding", False):
            raise UnsupportedOperation(
                f"self-judge critic: generator {type(generator).__name__} has no "
                "image-understanding mode (Generator.understand); self-judge needs one "
                "(the Janus adapter implements it)"
            )
        self._generator = generator

    def judge_text(self, prompt: str, metadata: dict[str, Any] | None = None) -> str:
        """The rubric's text for one prompt (before the chat format)."""
        return self.rubric.render(self.template, prompt, metadata)

    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[CriticResult]:
        gen = self._generator
        if gen is None:
            raise MilrUserError(
                "self-judge critic is not bound to a generator: it judges with the run's own "
                "model, so use it inside `milr generate` / the MILR optimizer (which bind it), "
                "or call critic.bind(generator=milr.load_generator(PATH)) before scoring"
            )
        require("torch", self.extra, self.name)
        rgb = [to_rgb(im, self.name) for im in images]
        questions = [self.judge_text(p, m) for p, m in zip(prompts, metadata, strict=True)]
        layout = {"template": self.params.chat_format, "batch_size": self.params.batch_size}
        model_name = str(getattr(gen, "checkpoint", None) or type(gen).__name__)
        threshold = self.verdict_threshold(self.params)
        if not self.rubric.generates:
            import torch

            yes_ids, no_ids = yes_no_tokens(
                _Vocabulary(gen), self.params.yes_words, self.params.no_words, self.name
            )
            logp = gen.understand(rgb, questions, **layout)  # [B, V] log-probabilities
            lp_yes = torch.logsumexp(logp[:, yes_ids], dim=-1)
            lp_no = torch.logsumexp(logp[:, no_ids], dim=-1)
            scores = [
                {"score": float(s), "p_yes": float(y), "p_no": float(n)}
                for s, y, n in zip(
                    torch.sigmoid(lp_yes - lp_no).tolist(),
                    lp_yes.exp().tolist(),
                    lp_no.exp().tolist(),
                    strict=True,
                )
            ]

            def answer(rows: list[int]) -> list[str | None]:
                try:
                    return list(
                        gen.answer(
                            [rgb[i] for i in rows],
                            [questions[i] for i in rows],
                            max_new_tokens=self.max_new_tokens,
                            **layout,
                        )
                    )
                except UnsupportedOperation:  # a generator that reads but cannot write
                    return [None] * len(rows)

            return yes_no_results(
                scores,
                questions,
                threshold,
                model_name,
                critic=self.name,
                min_share=self.params.min_yes_no_share,
                answer=answer,
                yes_words=self.params.yes_words,
                no_words=self.params.no_words,
            )
        answers = gen.answer(rgb, questions, max_new_tokens=self.max_new_tokens, **layout)
        return rubric_results(
            self.rubric,
            answers,
            questions,
            threshold,
            model_name,
            self.name,
            self.template_sha256,
        )


class _Vocabulary:
    """The generator's tokenizer as `yes_no_tokens` reads it (``encode`` and ``unk_token_id``)."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator
        self.unk_token_id = generator.unk_token_id

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self.generator.tokenize(text))


@hookimpl
def register_critics(register: Callable[[type[Critic]], None]) -> None:
    register(SelfJudgeCritic)
