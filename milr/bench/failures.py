"""What went wrong in a run's records: counts and the first reason of each kind.

`milr bench` prints these lines after the summary and exits 1 when there are any, so a run in
which images failed never looks like a success in a script or a CI job.
"""

from __future__ import annotations

from collections.abc import Iterable

from milr.bench.record import BenchRecord


def failure_kinds(records: Iterable[BenchRecord]) -> tuple[int, dict[str, str]]:
    """``(failed records, {kind: first reason})``.

    A record fails when its solver failed (kind ``generation: TYPE``) or evaluating either of
    its images failed (kind ``evaluation: TYPE``); TYPE is the exception's class name, the
    reason the record's ``Type: message`` text of the first record of that kind, in order.
    """
    failed = 0
    kinds: dict[str, str] = {}
    for rec in records:
        if not rec.any_error:
            continue
        failed += 1
        errors = [("generation", rec.error)] if rec.error else []
        errors += [("evaluation", s.error) for _, s in rec.sides() if s is not None and s.error]
        for stage, text in errors:
            kind = f"{stage}: {str(text).split(':', 1)[0]}"
            kinds.setdefault(kind, f"prompt {rec.prompt_id} seed {rec.seed_index}: {text}")
    return failed, kinds


def failure_lines(records: Iterable[BenchRecord]) -> list[str]:
    """The lines `milr bench` prints on stderr (empty when no record failed)."""
    recs = list(records)
    failed, kinds = failure_kinds(recs)
    if not failed:
        return []
    lines = [f"error: {failed} of {len(recs)} records failed; first of each kind:"]
    for kind, reason in kinds.items():
        lines.append(f"  {kind}: {_one_line(reason)}")
    return lines


def _one_line(text: str, limit: int = 300) -> str:
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."
