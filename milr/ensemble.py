"""Weighted ensembles of critics. Weights live here, never inside the critics."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

from milr.critic import Critic, CriticResult, critic_label, evaluate
from milr.errors import ContractViolation, EnsembleError, MilrUserError

if TYPE_CHECKING:
    from PIL.Image import Image

ON_ERROR_POLICIES = ("raise", "skip")


class Ensemble(Critic):
    """A critic made of ``(critic, weight)`` members: the weighted mean of their scores.

    - Score: ``sum(w_i * s_i) / sum(w_i)`` over the members that produced a result.
    - Verdict: True when every member that gives a verdict passes, None when none gives one.
    - ``on_error="raise"`` (default) re-raises a member's exception; ``"skip"`` records it in the
      details and leaves the member out of that image's mean. When every member is skipped the
      ensemble raises, since there is no score to give.
    - Contract violations always raise: a critic that returns NaN must not be averaged away.
    """

    name: ClassVar[str] = "ensemble"
    description: ClassVar[str] = "Weighted mean of several critics"

    def __init__(self, members: list[tuple[Critic, float]], on_error: str = "raise") -> None:
        if not members:
            raise MilrUserError("an ensemble needs at least one critic")
        if on_error not in ON_ERROR_POLICIES:
            raise MilrUserError(
                f"on_error={on_error!r} is not a policy; use one of {', '.join(ON_ERROR_POLICIES)}"
            )
        labels: dict[str, int] = {}
        self.members: list[tuple[str, Critic, float]] = []
        for critic, weight in members:
            w = float(weight)
            if math.isnan(w) or w < 0:
                raise MilrUserError(
                    f"weight {weight!r} for critic {critic_label(critic)!r} must be >= 0"
                )
            base = critic_label(critic)
            labels[base] = labels.get(base, 0) + 1
            label = base if labels[base] == 1 else f"{base}#{labels[base]}"
            self.members.append((label, critic, w))
        if sum(w for _, _, w in self.members) <= 0:
            raise MilrUserError(
                "ensemble weights sum to 0; give at least one critic a positive weight"
            )
        self.on_error = on_error

    @property
    def labels(self) -> list[str]:
        return [label for label, _, _ in self.members]

    def bind(self, *, generator: Any = None) -> None:
        for _, critic, _ in self.members:
            critic.bind(generator=generator)

    def config(self) -> dict[str, Any]:
        return {
            "on_error": self.on_error,
            "members": [
                {"label": label, "name": type(c).name, "weight": w, "config": c.config()}
                for label, c, w in self.members
            ],
        }

    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[CriticResult]:
        n = len(images)
        per_member: dict[str, list[CriticResult] | str] = {}
        for label, critic, _ in self.members:
            try:
                per_member[label] = evaluate(critic, images, prompts, metadata)
            except ContractViolation:
                raise
            except Exception as exc:
                if self.on_error == "raise":
                    raise
                per_member[label] = f"{type(exc).__name__}: {exc}"
        out: list[CriticResult] = []
        for i in range(n):
            total = 0.0
            weight_sum = 0.0
            verdicts: list[bool] = []
            critics: dict[str, Any] = {}
            for label, _, w in self.members:
                res = per_member[label]
                if isinstance(res, str):
                    critics[label] = {"score": None, "weight": w, "passed": None, "error": res}
                    continue
                r = res[i]
                critics[label] = {
                    "score": r.score,
                    "weight": w,
                    "passed": r.passed,
                    "details": r.details,
                }
                total += w * r.score
                weight_sum += w
                if r.passed is not None:
                    verdicts.append(r.passed)
            if weight_sum <= 0:
                errors = {k: v.get("error") for k, v in critics.items()}
                raise EnsembleError(
                    f"image {i}: every critic in the ensemble failed or has weight 0: {errors}"
                )
            score = min(1.0, max(0.0, total / weight_sum))
            passed = all(verdicts) if verdicts else None
            out.append(CriticResult(score=score, passed=passed, details={"critics": critics}))
        return out
