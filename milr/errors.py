"""Exception types. `MilrUserError` and its subclasses are the user's to fix (CLI exit code 2)."""

from __future__ import annotations


class MilrError(Exception):
    """Base class of every error milr raises on purpose."""


class MilrUserError(MilrError, ValueError):
    """Bad input: the message names the offending value and the fix. The CLI exits with code 2."""


class SpecError(MilrUserError):
    """A malformed critic spec string or spec file."""


class UnknownCriticError(MilrUserError, KeyError):
    """A critic name that no loaded plugin registered."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class MissingDependencyError(MilrUserError, ImportError):
    """An optional dependency is not installed; the message carries the install command."""


class ContractViolation(MilrError):
    """A critic broke the critic contract (score outside [0, 1], NaN, wrong batch length...)."""


class EnsembleError(MilrError, RuntimeError):
    """An ensemble has no score to give (every member failed or weighs 0); names each failure.

    Also a `RuntimeError`, which is what it was raised as before 0.2.
    """


class PluginError(MilrError):
    """A plugin failed to load or register (raised only in strict mode; otherwise recorded)."""


class DuplicateNameError(MilrError):
    """Two plugins registered the same name; the message names both sources."""


class UnsupportedOperation(MilrUserError, NotImplementedError):
    """An optional protocol method the chosen generator does not implement (e.g. `understand`)."""


class CheckpointError(MilrUserError):
    """A checkpoint that is not what it claims: missing or unexpected tensors, broken tokenizer."""


class GenerationError(MilrError, RuntimeError):
    """The generator or optimizer produced no usable output (no image, no tokens)."""
