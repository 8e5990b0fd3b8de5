"""The critic contract: what every reward critic, first- or third-party, implements."""

from __future__ import annotations

import importlib
import json
import math
import re
import warnings
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from milr.critic_result import CriticResult  # noqa: F401 - defined below both critic and errors
from milr.errors import ContractViolation, ExternalServiceError, MissingDependencyError
from milr.params import CriticParams, dump_params, validate_params

if TYPE_CHECKING:
    from PIL.Image import Image

NAME_RE = re.compile(r"^[a-z0-9_-]+$")


class Critic(ABC):
    """Base class of reward critics.

    Subclasses set `name` (registry name, `[a-z0-9_-]+`) and `description`, declare their
    parameters as a nested ``Params(milr.CriticParams)`` class, derive state in `setup()`, and
    implement `score_batch`. Heavy imports and weight loading belong in `prepare()` (called
    before generation) or the first call, never in `__init__`/`setup()` or at module import;
    `check_item()` refuses suite items the critic can never judge.

    ``Critic(**kwargs)`` validates the keywords against ``Params`` (see `milr.params`): a bad or
    unknown keyword raises a one-line `MilrUserError` naming the critic and the parameter. The
    frozen result is ``self.params``; `config()` returns it as JSON, secrets excluded.

    Old style, deprecated: a critic that overrides ``__init__`` without declaring ``Params``
    still works; its `config()` reads ``self._config`` (written by the registry when absent).
    """

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    #: Deprecated, always True: scores are 1-best by contract (see `__init_subclass__`).
    higher_is_better: ClassVar[bool] = True
    #: Import names the critic needs at use time (checked cheaply by `milr critics`).
    requires: ClassVar[tuple[str, ...]] = ()
    #: The extra that installs `requires`, used in install hints: ``pip install 'milr[EXTRA]'``.
    extra: ClassVar[str | None] = None
    #: Metadata keys the critic reads (documentation; the ensemble passes metadata to every member).
    inputs: ClassVar[tuple[str, ...]] = ("image", "prompt")
    #: True for critics that call a paid or rate-limited service once per image (``--dry-run``
    #: counts those calls separately).
    calls_api: ClassVar[bool] = False
    #: The parameter declaration; override with a nested ``class Params(CriticParams)``.
    Params: ClassVar[type[CriticParams]] = CriticParams

    #: The validated, frozen parameters (set by `Critic.__init__`).
    params: CriticParams

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Refuse ``higher_is_better = False``; warn on any other declaration of it.

        milr's contract has one direction: every score is in [0, 1] with 1 best, so the flag
        (torchmetrics' spelling) carries no information and is not honoured. A critic whose raw
        measure is lower-is-better maps it inside ``score_batch`` (e.g. ``1 - x``).
        """
        super().__init_subclass__(**kwargs)
        if "higher_is_better" not in cls.__dict__:
            return
        if cls.__dict__["higher_is_better"] is not True:
            raise TypeError(
                f"critic class {cls.__qualname__} sets higher_is_better="
                f"{cls.__dict__['higher_is_better']!r}, which milr does not honour: scores are "
                "always in [0, 1] with 1 best; return 1 - score from score_batch and drop the "
                "attribute"
            )
        warnings.warn(
            f"critic class {cls.__qualname__}: higher_is_better is deprecated and ignored "
            "(scores are always 1-best); drop the attribute",
            DeprecationWarning,
            stacklevel=2,
        )

    def __init__(self, **kwargs: Any) -> None:
        cls = type(self)
        self.params = validate_params(cls.Params, cls.name or cls.__name__, kwargs)
        self.setup()

    if not TYPE_CHECKING:  # hidden from mypy so typos in attribute names stay errors

        def __getattr__(self, name: str) -> Any:
            # Before 0.2 first-party critics kept their parameters as attributes
            # (``critic.tolerance``); read them from ``critic.params`` now.
            params = self.__dict__.get("params")
            if isinstance(params, CriticParams) and name in type(params).model_fields:
                warnings.warn(
                    f"{type(self).__name__}.{name} is deprecated; read "
                    f"{type(self).__name__}.params.{name}",
                    DeprecationWarning,
                    stacklevel=2,
                )
                return getattr(params, name)
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def setup(self) -> None:
        """Derive state from ``self.params`` (parse a colour, resolve a path...); cheap, no weights.

        Raise `MilrUserError` with a one-line message for a problem validation cannot see.
        """

    @classmethod
    def declares_params(cls) -> bool:
        """True for new-style critics: a ``Params`` class, or no ``__init__`` of their own."""
        return cls.Params is not CriticParams or cls.__init__ is Critic.__init__

    @abstractmethod
    def score_batch(
        self, images: list[Image], prompts: list[str], metadata: list[dict[str, Any]]
    ) -> list[CriticResult]:
        """Score a batch; one `CriticResult` per image, in order."""

    def score(
        self, image: Image, prompt: str, metadata: dict[str, Any] | None = None
    ) -> CriticResult:
        """Score one image (built on `score_batch`, with the contract checked)."""
        return evaluate(self, [image], [prompt], [metadata or {}])[0]

    def bind(self, *, generator: Any = None) -> None:
        """Receive run context before scoring; the optimizer passes its generator.

        Critics that judge with the run's own model (``self-judge``) keep the reference;
        others ignore it. Ensembles forward it to every member.
        """

    def prepare(self) -> None:
        """Load everything the critic needs before the first image exists; default: nothing.

        Called once by `milr generate`/`milr bench` (`milr.preflight`) before the generator
        draws its first token, and by ``milr download``: load weights (downloading them on
        first use), check API keys, spaCy pipelines and other files. Raise `MilrUserError`
        with a one-line message naming the value and the fix for anything the user must
        change; the command then exits 2 before writing any record. Must be idempotent (a
        second call costs nothing) and must not depend on `bind` having been called.
        """

    def check_item(self, prompt: str, metadata: dict[str, Any]) -> None:
        """Raise `MilrUserError` when this critic can never judge `prompt` with `metadata`.

        Called for every suite item after `prepare` and before generation, so a class the
        detector does not know or a prompt the critic cannot parse stops the run with one
        line instead of failing every record. Cheap (no image, no model call); default:
        accept everything.
        """

    def weights_ids(self) -> list[str]:
        """The checkpoints the critic loads, as given (Hub ids, paths or library names).

        Used by ``--dry-run`` (what would be downloaded) and ``milr download``; nothing is
        loaded. Default: the string values of parameters whose name ends in ``weights``, each
        pinned (`milr.weight_sources.with_revision`: ``OWNER/NAME@REV``) to the parameter of
        the same prefix ending in ``revision`` (``weights`` / ``revision``, ``clip_weights`` /
        ``clip_revision``) when that is set.
        """
        params = self.__dict__.get("params")
        if not isinstance(params, CriticParams):
            return []
        from milr.weight_sources import with_revision

        out = []
        for key in type(params).model_fields:
            value = getattr(params, key, None)
            if key.endswith("weights") and isinstance(value, str) and value.strip():
                rev = getattr(params, key[: -len("weights")] + "revision", None)
                out.append(with_revision(value, rev if isinstance(rev, str) else None))
        return out

    def config(self) -> dict[str, Any]:
        """The critic's parameters, JSON-serialisable, secrets excluded (provenance, cache keys)."""
        params = self.__dict__.get("params")
        if isinstance(params, CriticParams) and (
            type(self).declares_params() or not hasattr(self, "_config")
        ):
            return dump_params(params)
        return dict(getattr(self, "_config", {}))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    @classmethod
    def missing_dependencies(cls) -> list[str]:
        """Import names from `requires` that cannot be found (cheap: no module is imported)."""
        from importlib.util import find_spec

        missing = []
        for mod in cls.requires:
            try:
                if find_spec(mod) is None:
                    missing.append(mod)
            except (ImportError, ValueError):
                missing.append(mod)
        return missing

    @classmethod
    def install_hint(cls) -> str | None:
        return f"pip install 'milr[{cls.extra}]'" if cls.extra else None


def require(module: str, extra: str | None, critic: str) -> Any:
    """Import `module` at use time, or raise `MissingDependencyError` with the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = f"pip install 'milr[{extra}]'" if extra else f"pip install {module}"
        raise MissingDependencyError(
            f"critic {critic!r} needs the Python package {module!r}, which failed to import "
            f"({exc}); install it with: {hint}"
        ) from exc


def _check_json(value: Any, critic: str) -> None:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ContractViolation(
            f"critic {critic!r} returned details that are not JSON-serialisable: {exc}"
        ) from exc


def validate_results(critic_name: str, results: Any, expected: int) -> list[CriticResult]:
    """Check a critic's output against the contract; raise `ContractViolation` naming the value."""
    if not isinstance(results, Sequence) or isinstance(results, (str, bytes)):
        raise ContractViolation(
            f"critic {critic_name!r} returned {type(results).__name__}, expected a list of CriticResult"
        )
    if len(results) != expected:
        raise ContractViolation(
            f"critic {critic_name!r} returned {len(results)} results for a batch of {expected} images"
        )
    out = []
    for i, res in enumerate(results):
        if not isinstance(res, CriticResult):
            raise ContractViolation(
                f"critic {critic_name!r} returned {type(res).__name__} at index {i}, expected CriticResult"
            )
        try:
            s = float(res.score)
        except (TypeError, ValueError) as exc:
            raise ContractViolation(
                f"critic {critic_name!r} returned a non-numeric score {res.score!r} at index {i}"
            ) from exc
        if math.isnan(s) or not 0.0 <= s <= 1.0:
            raise ContractViolation(
                f"critic {critic_name!r} returned score {s!r} at index {i}; scores must lie in [0, 1]"
            )
        if res.passed is not None and not isinstance(res.passed, bool):
            raise ContractViolation(
                f"critic {critic_name!r} returned passed={res.passed!r} at index {i}; expected bool or None"
            )
        if not isinstance(res.details, dict):
            raise ContractViolation(
                f"critic {critic_name!r} returned details of type {type(res.details).__name__}; expected dict"
            )
        _check_json(res.details, critic_name)
        out.append(CriticResult(score=s, passed=res.passed, details=res.details))
    return out


def evaluate(
    critic: Critic,
    images: list[Image],
    prompts: list[str],
    metadata: list[dict[str, Any]] | None = None,
) -> list[CriticResult]:
    """Run `critic.score_batch` and enforce the contract. Use this instead of calling it directly."""
    if metadata is None:
        metadata = [{} for _ in images]
    if not (len(images) == len(prompts) == len(metadata)):
        raise ValueError(
            f"batch lengths differ: {len(images)} images, {len(prompts)} prompts, {len(metadata)} metadata"
        )
    try:
        results = critic.score_batch(list(images), list(prompts), list(metadata))
    except ExternalServiceError as exc:  # what was scored before the failure is kept, checked
        if exc.results is not None:
            exc.results = _validate_kept(critic_label(critic), exc, len(images))
        raise
    return validate_results(critic_label(critic), results, len(images))


def _validate_kept(
    critic_name: str, exc: ExternalServiceError, expected: int
) -> list[CriticResult | None]:
    """The contract for an `ExternalServiceError`'s kept results: one entry per image, None for
    every failed image, a valid `CriticResult` (or None) for the others."""
    kept = exc.results or []
    if len(kept) != expected:
        raise ContractViolation(
            f"critic {critic_name!r} raised {type(exc).__name__} keeping {len(kept)} results for "
            f"a batch of {expected} images"
        ) from exc
    failed = {i for i, _ in exc.failures}
    if not all(0 <= i < expected for i in failed):
        raise ContractViolation(
            f"critic {critic_name!r} raised {type(exc).__name__} for image indices "
            f"{sorted(failed)} outside a batch of {expected}"
        ) from exc
    wrong = sorted(i for i in failed if kept[i] is not None)
    if wrong:
        raise ContractViolation(
            f"critic {critic_name!r} raised {type(exc).__name__} with results kept for the "
            f"failed images {wrong}"
        ) from exc
    scored = [i for i, r in enumerate(kept) if r is not None]
    checked = validate_results(critic_name, [kept[i] for i in scored], len(scored))
    out: list[CriticResult | None] = [None] * expected
    for i, r in zip(scored, checked):
        out[i] = r
    return out


def critic_label(critic: Critic) -> str:
    return getattr(critic, "label", None) or type(critic).name or type(critic).__name__
