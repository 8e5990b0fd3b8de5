"""`MILRConfig`: the MILR optimizer's hyper-parameters, validated at construction.

Cheap to import (no torch): the CLI validates a whole configuration before loading any model.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from milr.errors import MilrUserError
from milr.modes import MODES, SEQUENTIAL, StepPlan, plan, total_steps

if TYPE_CHECKING:
    import torch

SELECT = ("last", "best")
TEXT_PREFIX_RULES = ("paper", "at_least_one")
LATENT_DTYPES = ("model", "float32")
#: The controls: the MILR loop with the latent update switched off (`MILRConfig.control`).
CONTROLS = ("resample", "best-of-n")


@dataclass
class MILRConfig:
    """MILR hyper-parameters; defaults are the authors' GenEval script.

    - ``mode``: one of `milr.modes.MODES`: ``both`` (one text and one image update per step,
      the paper's joint mode), ``text``, ``image``, the authors' sequential ``text_image`` /
      ``image_text`` (``text_steps`` steps of one modality, then ``image_steps`` of the other;
      each budget defaults to ``max_steps``) and ``interleaved`` (text, image, text, ...).
    - ``text_k`` / ``image_k``: fraction of reasoning / image tokens optimised, in (0, 1].
      ``N = max(1, int(image_k · n_image_tokens))``. ``text_prefix`` chooses the text rule:
      ``paper`` (faithful: ``M = int(text_k · L)``, ``L`` counting the latent that predicted
      EOS; ``M = 0`` means no text optimisation — in ``both`` and ``text`` the prompt is then
      left unoptimised, stop reason ``no_text_prefix``) or ``at_least_one`` (milr 0.1:
      ``max(1, int(text_k · n))`` over the ``n`` reasoning tokens); None (default) takes the
      checkpoint's recommendation (`Generator.default_text_prefix`: ``paper`` for Janus-Pro,
      ``at_least_one`` for the ``shapes`` model, whose 5-20 token plans would otherwise give
      ``M = 0`` for most prompts).
    - ``latent_dtype``: ``model`` (faithful: the latents and Adam state in the model's dtype,
      bf16 for Janus-Pro on GPU) or ``float32``.
    - ``threshold``: stop when ``r = score − 1 > threshold``.
    - ``select``: ``last`` returns the last image (faithful), ``best`` the best-scoring one.
    - ``samples_per_step``: K > 1 draws K candidates per step in one batch and uses REINFORCE
      with a mean-reward baseline on the sampled prefix tokens.
    - ``stop_on_pass``: also stop when the critic's verdict passes.
    - ``max_reasoning_tokens``: cap on reasoning length (None: the generator's, 512 for Janus).
    - ``cfg_scale``: classifier-free guidance; None uses the checkpoint's recommendation
      (`Generator.default_cfg_scale`: 5.0, the paper's value, for Janus-Pro; a checkpoint's
      ``milr.json`` may set another, e.g. the small ``shapes`` model).
    - ``control``: None (MILR) or a control run of the same loop with the latent update
      switched off, for measuring what the update adds: ``resample`` keeps the reasoning, the
      stop rule and the step budget, so each step draws a fresh image from the unoptimised
      latents until the critic passes; ``best-of-n`` draws ``N = total_steps + 1`` images (no
      early stop, not even for ``M = 0``) and returns the one the reward critic scores
      highest. Both consume the run's random streams exactly as MILR does (same seed:
      common random numbers), so a step whose prefixes the update did not change gives
      MILR's image bit for bit.
    """

    mode: str = "both"
    text_k: float = 0.1
    image_k: float = 0.01
    lr: float = 0.01
    max_steps: int = 30
    threshold: float = -0.1
    cfg_scale: float | None = None
    temperature: float = 1.0
    seed: int = 42
    select: str = "last"
    samples_per_step: int = 1
    stop_on_pass: bool = False
    max_reasoning_tokens: int | None = None
    text_steps: int | None = None
    image_steps: int | None = None
    text_prefix: str | None = None
    latent_dtype: str = "model"
    control: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise `MilrUserError` naming the bad value and the allowed range."""
        if self.mode not in MODES:
            raise MilrUserError(
                f"mode={self.mode!r} is not a MILR mode; use one of {', '.join(MODES)}"
            )
        for name in ("text_k", "image_k"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not (0 < v <= 1):
                raise MilrUserError(f"{name}={v!r} must lie in (0, 1] (a fraction of the tokens)")
        if not _positive(self.lr):
            raise MilrUserError(f"lr={self.lr!r} must be a positive number (paper: 0.01 or 0.03)")
        if (
            isinstance(self.max_steps, bool)
            or not isinstance(self.max_steps, int)
            or self.max_steps < 1
        ):
            raise MilrUserError(f"max_steps={self.max_steps!r} must be a positive integer")
        if not isinstance(self.threshold, (int, float)) or not (-1.0 <= self.threshold <= 0.0):
            raise MilrUserError(
                f"threshold={self.threshold!r} must lie in [-1, 0] (rewards are score − 1)"
            )
        if self.cfg_scale is not None and not _positive(self.cfg_scale):
            raise MilrUserError(f"cfg_scale={self.cfg_scale!r} must be a positive number")
        if not _positive(self.temperature):
            raise MilrUserError(f"temperature={self.temperature!r} must be a positive number")
        if self.select not in SELECT:
            raise MilrUserError(f"select={self.select!r}; use 'last' or 'best'")
        k = self.samples_per_step
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise MilrUserError(f"samples_per_step={k!r} must be an integer >= 1")
        m = self.max_reasoning_tokens
        if m is not None and (isinstance(m, bool) or not isinstance(m, int) or m < 1):
            raise MilrUserError(f"max_reasoning_tokens={m!r} must be a positive integer or None")
        for name in ("text_steps", "image_steps"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 0):
                raise MilrUserError(f"{name}={v!r} must be an integer >= 0 or None")
            if v is not None and self.mode not in SEQUENTIAL:
                raise MilrUserError(
                    f"{name}={v!r} applies only to the sequential modes "
                    f"{' and '.join(SEQUENTIAL)}; mode is {self.mode!r}: drop it or pick one of those modes"
                )
        if self.text_prefix is not None and self.text_prefix not in TEXT_PREFIX_RULES:
            raise MilrUserError(
                f"text_prefix={self.text_prefix!r}; use one of {', '.join(TEXT_PREFIX_RULES)}"
            )
        if self.latent_dtype not in LATENT_DTYPES:
            raise MilrUserError(
                f"latent_dtype={self.latent_dtype!r}; use one of {', '.join(LATENT_DTYPES)}"
            )
        if self.control is not None and self.control not in CONTROLS:
            raise MilrUserError(
                f"control={self.control!r}; use one of {', '.join(CONTROLS)} (or None for MILR)"
            )
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise MilrUserError(f"seed={self.seed!r} must be an integer")

    @property
    def uses_text(self) -> bool:
        return self.mode != "image"

    @property
    def optimizes_image(self) -> bool:
        return self.mode != "text"

    @property
    def updates(self) -> bool:
        """Whether the latents are updated (False for a control)."""
        return self.control is None

    @property
    def early_stop(self) -> bool:
        """Whether the stop rule applies (``best-of-n`` always draws every image)."""
        return self.control != "best-of-n"

    @property
    def selection(self) -> str:
        """The image returned: ``select``, except ``best`` for ``best-of-n``."""
        return "best" if self.control == "best-of-n" else self.select

    @property
    def total_steps(self) -> int:
        """Steps this configuration runs at most (sequential modes: both budgets)."""
        return total_steps(self.mode, self.max_steps, self.text_steps, self.image_steps)

    def plan(self, step: int) -> StepPlan:
        """What step `step` (1-based) does (`milr.modes.plan`)."""
        return plan(self.mode, step, self.max_steps, self.text_steps, self.image_steps)

    def modalities(self, step: int) -> list[str]:
        """Which latents step `step` (1-based) updates."""
        return list(self.plan(step).update)

    def text_prefix_length(self, n_tokens: int, ended_with_eos: bool) -> int:
        """M for a reasoning of `n_tokens` tokens (see ``text_prefix``)."""
        if self.text_prefix == "at_least_one":
            return min(n_tokens, max(1, int(self.text_k * n_tokens)))
        latents = n_tokens + (1 if ended_with_eos else 0)  # the EOS-predicting latent counts
        return min(latents, int(self.text_k * latents))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def latent_dtype(rule: str, model_dtype: torch.dtype) -> torch.dtype:
    """The dtype of the optimised latents and their Adam state.

    ``model`` keeps the model's dtype, as the authors do (bf16 for Janus-Pro on GPU); ``float32``
    is milr's option. A float16 model is the exception: float16 cannot hold Adam's ``eps``
    (1e-8 rounds to 0) nor small squared gradients, so its latents stay in float32 (a
    `UserWarning` says so) instead of turning into NaN after the first step.
    """
    import torch

    if rule != "model":
        return torch.float32
    if model_dtype == torch.float16:
        warnings.warn(
            "latent_dtype='model' with a float16 model: the latents and Adam state stay in "
            "float32 (float16 underflows Adam's eps and squared gradients); load the model "
            "in bf16 for the authors' setting",
            UserWarning,
            stacklevel=3,
        )
        return torch.float32
    return model_dtype
