"""Timing shared by the critic batching benchmarks: one batched call against per-image calls."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any


def median_batched_vs_single(
    batched: Callable[[], Any], single: Callable[[], Any], repeats: int
) -> tuple[float, float]:
    """Median wall seconds of `batched()` and of `single()` over `repeats` rounds.

    Each round times `batched` then `single` (``time.perf_counter``), so both see the same
    machine state; warm-up (weight loading) is the caller's, before this call.
    """
    batched_s, single_s = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        batched()
        batched_s.append(time.perf_counter() - t)
        t = time.perf_counter()
        single()
        single_s.append(time.perf_counter() - t)
    return statistics.median(batched_s), statistics.median(single_s)
