"""Evaluating a record's two images with the evaluation critic, through the score cache."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

from milr.bench.cache import ScoreCache, cached_evaluate
from milr.bench.record import SideResult
from milr.bench.suites import BenchPrompt
from milr.errors import ExternalServiceError, MilrUserError

if TYPE_CHECKING:
    from PIL.Image import Image

    from milr.critic import Critic, CriticResult


def describe(exc: BaseException) -> str:
    """``Type: message``, the form errors take in records."""
    return f"{type(exc).__name__}: {exc}"


def score_pair(
    critic: Critic,
    images: list[Image],
    prompt: BenchPrompt,
    cache: ScoreCache | None,
    hashes: list[str],
) -> tuple[list[SideResult], str | None]:
    """Score the base and MILR images; raises only `MilrUserError` (a setup fault).

    Both images go to the critic in one batch. When that batch fails, the batch's error is
    returned as the second value, for the record's ``eval_batch_error``, and each image without
    a result is scored alone (so one bad image does not sink both); an image that also fails
    alone carries its own error. An image the critic did score before failing at an external
    service (`ExternalServiceError.results`) keeps that result and is not sent again: a paid
    judge call is never repeated. Returned results hold only the evaluation fields of
    `SideResult`.
    """
    n = len(images)
    kept: dict[int, CriticResult] = {}
    try:
        res = cached_evaluate(
            critic, images, [prompt.prompt] * n, [prompt.metadata] * n, cache, hashes
        )
        return [SideResult(score=r.score, passed=r.passed, details=r.details) for r in res], None
    except ExternalServiceError as exc:
        batch_error = describe(exc)
        kept = exc.kept()
    except MilrUserError:
        raise  # a setup fault, the same for every image: stops the run
    except Exception as exc:
        batch_error = describe(exc)
    out: list[SideResult] = []
    for k, (image, h) in enumerate(zip(images, hashes)):
        if k in kept:
            r = kept[k]
            out.append(SideResult(score=r.score, passed=r.passed, details=r.details))
            continue
        try:
            (r,) = cached_evaluate(critic, [image], [prompt.prompt], [prompt.metadata], cache, [h])
            out.append(SideResult(score=r.score, passed=r.passed, details=r.details))
        except MilrUserError:
            raise
        except Exception as exc:
            out.append(SideResult(error=describe(exc)))
    return out, batch_error


def open_cache(path: str | Path) -> ScoreCache | None:
    """The score cache, or None (with a warning) when the file cannot serve as one."""
    import sqlite3

    try:
        return ScoreCache(path)
    except (sqlite3.Error, OSError) as exc:
        print(f"warning: score cache {path} unusable ({exc}); running without it", file=sys.stderr)
        return None
