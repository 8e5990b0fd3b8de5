"""`MILRConfig`: the MILR optimizer's hyper-parameters, validated at construction.

Cheap to import (no torch): the CLI validates a whole configuration before loading any model.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from milr.errors import MilrUserError
from milr.modes import MODES, modalities

SELECT = ("last", "best")


@dataclass
class MILRConfig:
    """MILR hyper-parameters; defaults are the authors' GenEval script (DESIGN §2).

    - ``mode``: ``both`` (one text and one image update per step, the paper's joint mode),
      ``text``, ``image``, or ``text_image`` / ``image_text`` (alternate one modality per step,
      starting with the first named).
    - ``text_k`` / ``image_k``: fraction of reasoning / image tokens optimised, in (0, 1]
      (at least one token each).
    - ``threshold``: stop when ``r = score − 1 > threshold``.
    - ``select``: ``last`` returns the last image (faithful), ``best`` the best-scoring one.
    - ``samples_per_step``: K > 1 draws K candidates per step in one batch and uses REINFORCE
      with a mean-reward baseline on the sampled prefix tokens.
    - ``stop_on_pass``: also stop when the critic's verdict passes.
    - ``max_reasoning_tokens``: cap on reasoning length (None: the generator's, 512 for Janus).
    - ``cfg_scale``: classifier-free guidance; None uses the checkpoint's recommendation
      (`Generator.default_cfg_scale`: 5.0, the paper's value, for Janus-Pro; a checkpoint's
      ``milr.json`` may set another, e.g. the small ``shapes`` model).
    """

    mode: str = "both"
    text_k: float = 0.1
    image_k: float = 0.01
    lr: float = 0.01
    max_steps: int = 20
    threshold: float = -0.1
    cfg_scale: float | None = None
    temperature: float = 1.0
    seed: int = 42
    select: str = "last"
    samples_per_step: int = 1
    stop_on_pass: bool = False
    max_reasoning_tokens: int | None = None
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
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise MilrUserError(f"seed={self.seed!r} must be an integer")

    @property
    def uses_text(self) -> bool:
        return self.mode != "image"

    @property
    def optimizes_image(self) -> bool:
        return self.mode != "text"

    def modalities(self, step: int) -> list[str]:
        """Which latents step `step` (1-based) updates."""
        return modalities(self.mode, step)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _positive(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
