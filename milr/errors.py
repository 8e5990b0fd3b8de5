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


class ExternalServiceError(MilrError):
    """A server or external program a critic calls failed for some images.

    Neither the user's input nor a milr bug: the CLI prints one line per failed image (naming
    the image, the service and its reason) and exits 1. ``service`` names the critic and where
    it called (``"api-judge at http://host/v1/chat/completions"``, ``"ocr (tesseract)"``);
    ``failures`` holds ``(index in the batch, one-line reason)`` pairs. Texts must already be
    free of secrets.
    """

    def __init__(self, service: str, failures: list[tuple[int, str]]) -> None:
        self.service = service
        self.failures = [(int(i), str(reason)) for i, reason in failures]
        #: Names of the batch's images (file paths), set by a caller that knows them.
        self.names: list[str] | None = None
        super().__init__(self.describe())

    def describe(self, names: list[str] | None = None) -> str:
        """One ``; ``-joined text; `names` replaces batch indices with image names."""

        parts = [f"{self.label(i, names)}: {reason}" for i, reason in self.failures[:3]]
        more = len(self.failures) - 3
        tail = f" (and {more} more images)" if more > 0 else ""
        return f"{self.service}: " + "; ".join(parts) + tail

    def label(self, index: int, names: list[str] | None = None) -> str:
        """The image's name when known (`names`, else `self.names`), else ``image INDEX``."""
        names = names if names is not None else self.names
        return names[index] if names is not None and 0 <= index < len(names) else f"image {index}"

    def lines(self) -> list[str]:
        """One line per failed image: ``NAME: SERVICE: REASON``."""
        return [f"{self.label(i)}: {self.service}: {reason}" for i, reason in self.failures]

    def __reduce__(self):  # picklable across processes (torchrun ranks, pools)
        return (type(self), (self.service, self.failures))


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
