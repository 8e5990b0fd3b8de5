"""`self-judge`: the paper's SelfReward — the run's own generator, in understanding mode, judges.

The critic owns no weights. The optimizer calls ``critic.bind(generator=gen)`` before the first
score (an `Ensemble` forwards the call to every member), and the critic then asks *that*
model — the same ``JanusForConditionalGeneration`` object that draws the images, so no second
copy is ever loaded — whether the image matches the prompt. The score is the judge critic's::

    score = P(yes) / (P(yes) + P(no))

read from the next-token distribution after the assistant turn starts. The paper's
SelfReward generates a JSON verdict and maps it to 0 / -1; the probability is a smooth
version of the same question (argmax of the two equals the generated answer when the model
answers with one of the words).

Any bound generator works if it implements the optional protocol methods
`milr.generator.Generator.understand` and ``tokenize`` (``supports_understanding = True``);
the Janus adapter does. Outside a run, bind one yourself::

    gen = milr.load_generator("/models/Janus-Pro-7B")
    critic = milr.build_critic("self-judge")
    critic.bind(generator=gen)
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from milr import Critic, CriticResult, MilrUserError, hookimpl
from milr.critic import require
from milr.critics._images import to_rgb
from milr.critics.judge import (
    DEFAULT_QUESTION,
    check_batch_size,
    check_question,
    check_threshold,
    parse_words,
    yes_no_results,
    yes_no_tokens,
)
from milr.errors import UnsupportedOperation

if TYPE_CHECKING:
    from PIL.Image import Image

#: Janus-Pro's DeepSeek SFT format with the image in the user turn.
DEFAULT_TEMPLATE = "<|User|>: {image}\n{question}\n\n<|Assistant|>:"


class SelfJudgeCritic(Critic):
    """P(yes) of the run's own generator asked whether the image shows the prompt.

    Parameters: ``question`` (with ``{prompt}``), ``template`` (the understanding-mode chat
    format with ``{image}`` and ``{question}``; default Janus-Pro's), ``add_bos`` (accepted for
    old specs and ignored: the generator puts BOS at position 0 itself), ``batch_size``, ``yes_words``/``no_words`` (lists or
    ``a|b`` strings), ``threshold`` (verdict; null for none).
    """

    name: ClassVar[str] = "self-judge"
    description: ClassVar[str] = "SelfReward: the run's own generator judges image vs prompt"
    requires: ClassVar[tuple[str, ...]] = ("torch", "transformers")
    extra: ClassVar[str | None] = None
    inputs: ClassVar[tuple[str, ...]] = ("image", "prompt")

    def __init__(
        self,
        question: str = DEFAULT_QUESTION,
        template: str = DEFAULT_TEMPLATE,
        add_bos: bool = True,
        batch_size: int = 8,
        yes_words: Any = ("yes", "Yes"),
        no_words: Any = ("no", "No"),
        threshold: float | None = 0.5,
    ) -> None:
        self.question = check_question(question, self.name)
        if (
            not isinstance(template, str)
            or "{image}" not in template
            or "{question}" not in template
        ):
            raise MilrUserError(
                f"self-judge critic: template={template!r} must contain {{image}} and {{question}}, "
                f"e.g. {DEFAULT_TEMPLATE!r}"
            )
        self.template = template
        self.add_bos = bool(add_bos)
        self.batch_size = check_batch_size(batch_size, self.name)
        self.yes_words = parse_words(yes_words, "yes_words", self.name)
        self.no_words = parse_words(no_words, "no_words", self.name)
        self.threshold = check_threshold(threshold, self.name)
        self._generator: Any = None
        self._config = {
            "question": self.question,
            "template": template,
            "add_bos": self.add_bos,
            "batch_size": self.batch_size,
            "yes_words": list(self.yes_words),
            "no_words": list(self.no_words),
            "threshold": self.threshold,
        }

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
        import torch

        rgb = [to_rgb(im, self.name) for im in images]
        yes_ids, no_ids = yes_no_tokens(_Vocabulary(gen), self.yes_words, self.no_words, self.name)
        questions = [self.question.replace("{prompt}", p) for p in prompts]
        logp = gen.understand(rgb, questions, template=self.template, batch_size=self.batch_size)
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
        model_name = getattr(gen, "checkpoint", None) or type(gen).__name__
        return yes_no_results(scores, prompts, self.question, self.threshold, str(model_name))


class _Vocabulary:
    """The generator's tokenizer as `yes_no_tokens` reads it (``encode`` and ``unk_token_id``)."""

    def __init__(self, generator: Any) -> None:
        self.generator = generator
        self.unk_token_id = generator.unk_token_id

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return list(self.generator.tokenize(text))


@hookimpl
def register_critics(register):
    register(SelfJudgeCritic)
