"""Exception types. `MilrUserError` and its subclasses are the user's to fix (CLI exit code 2)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from milr.critic_result import CriticResult


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

    ``results`` keeps what was computed before the failure, so nothing is paid for twice: one
    entry per image of the batch, the image's `milr.CriticResult`, or None for a failed image
    (and for any image the raiser did not keep). ``results`` itself is None when the raiser
    kept nothing (every image then counts as unscored). `milr.evaluate` checks the kept
    results against the critic contract before the error reaches its caller.
    """

    def __init__(
        self,
        service: str,
        failures: list[tuple[int, str]],
        results: Sequence[CriticResult | None] | None = None,
    ) -> None:
        self.service = service
        self.failures = [(int(i), str(reason)) for i, reason in failures]
        #: Per image of the batch, its result when one was computed, else None (see above).
        self.results: list[CriticResult | None] | None = (
            list(results) if results is not None else None
        )
        #: Names of the batch's images (file paths), set by a caller that knows them.
        self.names: list[str] | None = None
        super().__init__(self.describe())

    def kept(self) -> dict[int, CriticResult]:
        """``{index in the batch: result}`` of the images that were scored."""
        return {i: r for i, r in enumerate(self.results or ()) if r is not None}

    def in_batch(
        self,
        positions: Sequence[int],
        size: int,
        known: Mapping[int, CriticResult] | None = None,
    ) -> ExternalServiceError:
        """This error restated for a larger batch of `size` images, of which this error's batch
        was the images at `positions` (image ``j`` here is image ``positions[j]`` there).
        `known` adds results for the larger batch's other images (e.g. from a cache)."""
        results: list[CriticResult | None] = [None] * size
        for i, r in (known or {}).items():
            results[i] = r
        for j, r in self.kept().items():
            results[positions[j]] = r
        failures = [(positions[j], reason) for j, reason in self.failures]
        return self.like(self.service, failures, results)

    def like(
        self,
        service: str,
        failures: list[tuple[int, str]],
        results: Sequence[CriticResult | None] | None,
    ) -> ExternalServiceError:
        """A new error of this one's class (e.g. ``JudgeReplyError``) with other contents; the
        base class when a subclass takes other constructor arguments."""
        try:
            return type(self)(service, failures, results)
        except TypeError:
            return ExternalServiceError(service, failures, results)

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
        return (type(self), (self.service, self.failures, self.results))


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
