"""The batched MILR engine: many prompts optimised concurrently, each as the one-prompt optimizer.

``BatchedMILR(generator, critic, batch_prompts=16).run(jobs)`` yields a `JobResult` per `Job`
as each finishes; `run_batched` collects them in job order. ``milr bench --batch-prompts``
drives it. See docs/bench.md ("Batched runs") for what is reproducible and what is not.
"""

from __future__ import annotations

from milr.engine.engine import BatchedMILR, Job, JobResult, parse_batch_prompts, run_batched
from milr.engine.memory import MemoryLimit, auto_batch

__all__ = [
    "BatchedMILR",
    "Job",
    "JobResult",
    "MemoryLimit",
    "auto_batch",
    "parse_batch_prompts",
    "run_batched",
]
