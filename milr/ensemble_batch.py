"""One batch through the members of an `milr.Ensemble` or `milr.Route`, and their results
combined per image: the weighted mean, the verdict, the breakdown, and which images a member's
failure at an external service leaves without a score (nothing else is lost)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from milr.critic import Critic, CriticResult, evaluate
from milr.errors import ContractViolation, EnsembleError, ExternalServiceError

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(frozen=True)
class Member:
    """One critic of an `Ensemble` or `Route`, with how much it counts and when.

    - ``weight``: float >= 0 (default 1); in an ensemble, the weight for images whose tag is not
      in ``weights_by_tag``; in a route, the weight among the members chosen for one image.
    - ``weights_by_tag``: ``{tag: weight}`` (ensembles only), replacing ``weight`` for images
      whose tag (see `TAG_FIELDS`) is a key.
    - ``when``: the metadata values routed to this member (routes only).
    - ``label``: the member's name in the per-critic breakdown; default the critic's name,
      ``name#2``, ``name#3``... for repeats.
    """

    critic: Critic
    weight: float = 1.0
    weights_by_tag: Mapping[str, float] | None = None
    when: tuple[str, ...] | None = None
    label: str | None = None


#: Per member label, per image index: the member's result, or the text of its error.
MemberResults = dict[str, dict[int, "CriticResult | str"]]


@dataclass
class _Outcome:
    """What the members produced for one batch."""

    results: MemberResults
    #: labels of members that failed at an external service -> (error, {image: its reason})
    external: dict[str, tuple[ExternalServiceError, dict[int, str]]]


def run_members(
    members: list[tuple[str, Member]],
    subsets: dict[str, list[int]],
    images: list[Image],
    prompts: list[str],
    metadata: list[dict[str, Any]],
    on_error: str,
) -> _Outcome:
    """Each member's results on its subset of images (one batch call), or its error texts.

    A member that fails at an external service for some images (`ExternalServiceError`) keeps
    its results for the others whatever the policy, and the other members still run, so the
    images that every member scored keep their score (`raise_external` reports the rest).
    """
    outcome = _Outcome({}, {})
    for label, m in members:
        idx = subsets[label]
        if not idx:
            continue
        try:
            res = evaluate(
                m.critic,
                [images[i] for i in idx],
                [prompts[i] for i in idx],
                [metadata[i] for i in idx],
            )
        except ContractViolation:
            raise
        except ExternalServiceError as exc:
            kept, reasons = exc.kept(), dict(exc.failures)
            lost = {
                i: reasons.get(j, "not scored: the batch failed")
                for j, i in enumerate(idx)
                if j not in kept
            }
            outcome.external[label] = (exc, lost)
            outcome.results[label] = {
                i: kept[j] if j in kept else f"{type(exc).__name__}: {exc.service}: {lost[i]}"
                for j, i in enumerate(idx)
            }
            continue
        except Exception as exc:
            if on_error == "raise":
                raise
            text = f"{type(exc).__name__}: {exc}"
            outcome.results[label] = dict.fromkeys(idx, text)
            continue
        outcome.results[label] = dict(zip(idx, res))
    return outcome


def _combine(
    i: int, chosen: list[tuple[str, float]], results: MemberResults
) -> tuple[float, bool | None, dict[str, Any]]:
    """Weighted mean, verdict and breakdown of image ``i`` over ``(label, weight)`` pairs."""
    total = weight_sum = 0.0
    verdicts: list[bool] = []
    critics: dict[str, Any] = {}
    for label, w in chosen:
        r = results[label][i]
        if isinstance(r, str):
            critics[label] = {"score": None, "weight": w, "passed": None, "error": r}
            continue
        critics[label] = {"score": r.score, "weight": w, "passed": r.passed, "details": r.details}
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
    return score, (all(verdicts) if verdicts else None), critics


def combine_or_none(
    i: int, chosen: list[tuple[str, float]], outcome: _Outcome
) -> tuple[float, bool | None, dict[str, Any]] | None:
    """`_combine`, or None when image ``i`` has no score because members failed at an external
    service for it (no other failure is excused: `EnsembleError` as before)."""
    try:
        return _combine(i, chosen, outcome.results)
    except EnsembleError:
        if any(i in outcome.external.get(lb, (None, {}))[1] for lb, _ in chosen):
            return None
        raise


def external_failure(
    i: int, labels: list[str], outcome: _Outcome, on_error: str, combined: bool
) -> dict[str, str] | None:
    """``{member label: reason}`` when image ``i`` fails because members failed at an external
    service: under ``raise`` any such member fails the image; under ``skip`` only when no
    member is left to score it (``combined`` is False)."""
    failed = {
        lb: outcome.external[lb][1][i]
        for lb in labels
        if lb in outcome.external and i in outcome.external[lb][1]
    }
    if not failed or (on_error == "skip" and combined):
        return None
    return failed


def raise_external(
    kind: str,
    failed: dict[int, dict[str, str]],
    out: list[CriticResult | None],
    outcome: _Outcome,
) -> None:
    """Raise one `ExternalServiceError` for the images in `failed` (image -> {label: reason}),
    keeping the combined results `out` of the others."""
    labels = sorted({lb for per in failed.values() for lb in per})
    if len(labels) == 1:  # one member failed: its error, restated for the ensemble's batch
        exc = outcome.external[labels[0]][0]
        failures = [(i, per[labels[0]]) for i, per in sorted(failed.items())]
        raise exc.like(exc.service, failures, out)
    service = f"{kind} ({', '.join(labels)})"
    failures = [
        (i, "; ".join(f"{outcome.external[lb][0].service}: {why}" for lb, why in per.items()))
        for i, per in sorted(failed.items())
    ]
    raise ExternalServiceError(service, failures, out)
