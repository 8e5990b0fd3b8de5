"""`CriticResult`, one image's judgement (also importable as ``milr.critic.CriticResult``).

It lives in a module of its own, below both `milr.critic` and `milr.errors` (whose
`ExternalServiceError` carries the results a failing batch still produced), so neither imports
the other for it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class CriticResult:
    """One image's judgement: `score` in [0, 1] (1 best), an optional verdict, and what was seen."""

    score: float
    passed: bool | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "passed": self.passed, "details": self.details}
