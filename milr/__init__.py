"""milr: test-time latent reasoning (MILR) for unified text-and-image models.

Importing `milr` is cheap: torch, transformers and model libraries load only when a generator,
the optimizer or a model-backed critic is first used.
"""

from __future__ import annotations

from typing import Any

from milr.critic import Critic, CriticResult, evaluate
from milr.ensemble import Ensemble, Member, Route
from milr.errors import (
    ContractViolation,
    EnsembleError,
    ExternalServiceError,
    MilrError,
    MilrUserError,
    MissingDependencyError,
    SpecError,
    UnknownCriticError,
)
from milr.hookspecs import hookimpl
from milr.params import CriticParams, critic_parameters
from milr.registry import get_registry
from milr.specs import CriticSpec, build_critic, load_preset, load_spec_file, parse_spec

__version__ = "0.1.0"

# Heavy names resolve lazily (PEP 562) so `import milr` never imports torch.
_LAZY = {
    "MILR": "milr.optimizer",
    "MILRConfig": "milr.optimizer",
    "MILRResult": "milr.optimizer",
    "run_milr": "milr.optimizer",
    "Generator": "milr.generator",
    "load_generator": "milr.generator",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'milr' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "ContractViolation",
    "Critic",
    "CriticParams",
    "CriticResult",
    "CriticSpec",
    "Ensemble",
    "Member",
    "EnsembleError",
    "ExternalServiceError",
    "MilrError",
    "MilrUserError",
    "MissingDependencyError",
    "Route",
    "SpecError",
    "UnknownCriticError",
    "build_critic",
    "critic_parameters",
    "evaluate",
    "get_registry",
    "hookimpl",
    "load_preset",
    "load_spec_file",
    "parse_spec",
    *_LAZY,
]
