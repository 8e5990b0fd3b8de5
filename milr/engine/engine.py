"""`BatchedMILR`: many prompts optimised concurrently, each exactly as `milr.optimizer.MILR` would.

Each prompt runs the one-prompt optimizer's own loop, `MILR.steps` (so every mode and option
behaves as in `MILR.run`): a Python generator that yields its two expensive calls —
generating candidates and scoring them — as requests instead of running them. The engine
resumes the prompts one at a time, in its own thread, until each has yielded its next
request, then runs each phase once for all of them: reasoning and image tokens through the
generator's batched protocol methods (`Generator.continue_reasoning_batch`,
`Generator.sample_image_tokens_batch`), decoding in chunks, and one critic ``score_batch``
over every candidate image. The prompts' latent updates (`milr.phases.UpdateRequest`) and
head reads for their next prefixes (`milr.prefixes.PrefixRequest`) are requests too, answered
with one head forward (and backward) per round for all of them. No other thread runs torch: on a CPU, a second thread that has
run a parallel torch op makes every later op of the first one several times slower (each
thread keeps its own OpenMP team; measured 2.7× on the `shapes` image loop). A prompt that
stops (threshold, verdict, max steps, an error) leaves and the next job joins before the next
round (continuous batching).

Every prompt keeps its own latents, Adam state, `torch.Generator` (seeded from its config as
the one-prompt optimizer seeds it), reward history and stopping state; the batched generator
methods draw each row from its prompt's generator. So a prompt's trajectory does not depend on
which prompts share its batch — exactly so in float64, up to the rounding of batched matrix
products in lower precision — and a batch of one is bitwise the one-prompt path.

Out of memory: a generation phase that raises `torch.OutOfMemoryError` is retried in halves
(the generators' states are restored first, so the draws are the same) and the batch limit
stays halved for the rest of the run. Any other failure of a batched phase is retried one
prompt at a time, so it fails only the prompt that causes it.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from milr.engine.batch_phases import generate_batch, score_batch
from milr.engine.memory import MemoryLimit, auto_batch, phase_bytes
from milr.errors import MilrUserError
from milr.optimizer import MILR, resume_steps
from milr.optimizer_config import MILRConfig
from milr.phases import (
    GenRequest,
    ScoreRequest,
    Timer,
    UpdateRequest,
    serve,
    update_latents_pooled,
)
from milr.prefixes import PrefixRequest, read_heads_pooled

if TYPE_CHECKING:
    from milr.critic import Critic
    from milr.generator import Generator
    from milr.results import MILRResult


@dataclass
class Job:
    """One prompt to optimise: its text, metadata (for the critic) and full configuration."""

    prompt: str
    metadata: dict[str, Any] = field(default_factory=dict)
    config: MILRConfig = field(default_factory=MILRConfig)
    #: Anything the caller uses to recognise the job (e.g. a suite index); returned as is.
    key: Any = None


@dataclass
class JobResult:
    """A finished job: its `MILRResult`, or the exception that ended it (``result`` is then
    the partial result the optimizer attached, if any)."""

    job: Job
    result: MILRResult | None
    error: BaseException | None
    #: Seconds from joining the batch to leaving it (other prompts ran meanwhile).
    seconds: float


def parse_batch_prompts(value: Any) -> int | str:
    """``auto`` or a positive integer; `MilrUserError` naming the value otherwise."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    try:
        n = int(value)
    except (TypeError, ValueError):
        n = 0
    if isinstance(value, bool) or n < 1 or (isinstance(value, float) and value != n):
        raise MilrUserError(
            f"--batch-prompts {value!r} must be a positive integer or 'auto' (from free memory)"
        )
    return n


class BatchedMILR:
    """Optimise many prompts at once: ``BatchedMILR(gen, critic, batch_prompts=16).run(jobs)``.

    `batch_prompts` is the most prompts in flight (``"auto"``: from free device memory, see
    `milr.engine.memory`). `decode_chunk` is the most images per VQ decode call (None: 16 on
    CUDA, on a CPU by image size; `milr.engine.batch_phases.decode_in_chunks`).
    `memory_limit` (bytes) caps the memory ``auto`` plans with and makes a larger batch raise
    `torch.OutOfMemoryError` (simulated) before it runs. `on_active` is called with the
    number of prompts in flight at each round (progress bars).
    """

    def __init__(
        self,
        generator: Generator,
        critic: Critic,
        batch_prompts: int | str = "auto",
        *,
        memory_limit: int | None = None,
        decode_chunk: int | None = None,
        on_active: Callable[[int], Any] | None = None,
    ) -> None:
        self.generator = generator
        self.critic = critic
        self.requested = parse_batch_prompts(batch_prompts)
        self.memory = MemoryLimit(memory_limit)
        self.decode_chunk = decode_chunk
        self.on_active = on_active
        #: The batch limit in force (set at the first job for ``auto``; halved on OOM).
        self.limit: int | None = None if self.requested == "auto" else int(self.requested)
        #: Seconds per phase over the run (``update``: the pooled latent updates,
        #: ``prefixes``: the pooled head reads for the next prefixes), plus ``prompt_side``
        #: (the prompts' own work: draws, records), ``rounds`` and ``ooms``.
        self.stats: dict[str, float] = {}

    # -- the loop ----------------------------------------------------------------------------
    def run(self, jobs: Iterable[Job]) -> Iterator[JobResult]:
        """Yield each job's `JobResult` as it finishes (not in job order)."""
        pending = iter(jobs)
        active: list[_Prompt] = []
        exhausted = False
        try:
            while True:
                while not exhausted and (self.limit is None or len(active) < self.limit):
                    job = next(pending, None)
                    if job is None:
                        exhausted = True
                        break
                    if self.limit is None:
                        self.limit = auto_batch(
                            self.generator, job.config.samples_per_step, self.memory
                        )
                    worker = _Prompt(self, job)
                    self._resume(worker)
                    if worker.finished:
                        yield worker.outcome()
                    else:
                        active.append(worker)
                if not active:
                    return
                if self.on_active is not None:
                    self.on_active(len(active))
                self._add("rounds", 1)
                self._round(active)
                still = []
                for worker in active:
                    if worker.finished:
                        yield worker.outcome()
                    else:
                        still.append(worker)
                active = still
        finally:
            for worker in active:  # interrupted: unwind the prompts still in flight
                if not worker.finished:
                    worker.error_in = _EngineStopped("the batched run stopped")
                    with contextlib.suppress(BaseException):  # a 2nd Ctrl-C: keep unwinding
                        worker.resume()

    def _round(self, active: list[_Prompt]) -> None:
        """Generation for every prompt waiting on it, then scoring for every prompt waiting."""
        waiting = [w for w in active if isinstance(w.request, GenRequest)]
        if waiting:
            replies = self._generate([w.request for w in waiting])  # type: ignore[misc]
            for worker, reply in zip(waiting, replies):
                if isinstance(reply, BaseException):
                    worker.error_in = reply
                else:
                    generated, timings = reply
                    _add_timings(worker.request, timings)  # the shared batch's seconds
                    worker.reply = generated
                self._resume(worker)
        waiting = [w for w in active if not w.finished and isinstance(w.request, ScoreRequest)]
        if waiting:
            t = time.perf_counter()
            errors = score_batch([w.request for w in waiting])  # type: ignore[misc]
            sec = time.perf_counter() - t
            self._add("critic", sec)
            for worker, error in zip(waiting, errors):
                _add_timings(worker.request, {"critic": sec})
                worker.error_in = error
                self._resume(worker)
        waiting = [w for w in active if not w.finished and isinstance(w.request, UpdateRequest)]
        if waiting:  # every prompt's latent update in one head forward/backward
            self._pooled(waiting, update_latents_pooled, "update")
        waiting = [w for w in active if not w.finished and isinstance(w.request, PrefixRequest)]
        if waiting:  # every prompt's head reads for its next prefixes in one forward per head
            self._pooled(waiting, read_heads_pooled, "prefixes")

    def _pooled(self, waiting: list[_Prompt], pooled: Callable[..., list[Any]], key: str) -> None:
        """Answer the `UpdateRequest` (or `PrefixRequest`) of every prompt in `waiting` with
        `pooled` (one alone: as `MILR.run` would); a failure falls back to one prompt at a
        time. The seconds go to ``stats[key]`` and to each prompt's ``update`` timing."""
        requests = [w.request for w in waiting]
        t = time.perf_counter()
        try:
            if len(requests) == 1:
                timer = Timer(self.generator.device)
                replies: list[Any] = [serve(self.generator, requests[0], timer)]  # type: ignore[arg-type]
            else:
                replies = pooled(self.generator, requests)
        except Exception as exc:
            if len(requests) == 1:  # into the prompt: its step fails as it would alone
                waiting[0].error_in = exc
                self._resume(waiting[0])
                return
            for worker in waiting:
                self._pooled([worker], pooled, key)
            return
        sec = time.perf_counter() - t
        self._add(key, sec)
        for worker, reply in zip(waiting, replies):
            _add_timings(worker.request, {"update": sec})
            worker.reply = reply
            self._resume(worker)

    def _resume(self, worker: _Prompt) -> None:
        t = time.perf_counter()
        worker.resume()
        self._add("prompt_side", time.perf_counter() - t)

    def _add(self, key: str, value: float) -> None:
        self.stats[key] = self.stats.get(key, 0.0) + value

    # -- generation with fallbacks -----------------------------------------------------------
    def _generate(self, requests: list[GenRequest]) -> list[Any]:
        """``(Generated, timings)`` per request, or the exception that request must raise."""
        import torch

        if self.limit is not None and len(requests) > self.limit:  # the limit fell (OOM)
            return [
                reply
                for start in range(0, len(requests), self.limit)
                for reply in self._generate(requests[start : start + self.limit])
            ]
        streams = {id(r.rng): r.rng for r in requests}
        saved = {key: g.get_state() for key, g in streams.items()}
        try:
            rows = sum(r.image_rows() for r in requests)
            self.memory.check(phase_bytes(self.generator, rows), rows)
            out = generate_batch(self.generator, requests, decode_chunk=self.decode_chunk)
        except torch.OutOfMemoryError as exc:
            for key, g in streams.items():
                g.set_state(saved[key])
            if len(requests) == 1:
                return [exc]
            self._add("ooms", 1)
            smaller = max(1, len(requests) // 2)
            if self.limit is None or smaller < self.limit:
                print(
                    f"milr: out of memory with {len(requests)} prompts in a batch; "
                    f"continuing with at most {smaller}",
                    file=sys.stderr,
                )
                self.limit = smaller
            if str(getattr(self.generator, "device", "")).startswith("cuda"):
                torch.cuda.empty_cache()
            replies: list[Any] = []
            for start in range(0, len(requests), smaller):
                replies.extend(self._generate(requests[start : start + smaller]))
            return replies
        except Exception as exc:
            for key, g in streams.items():
                g.set_state(saved[key])
            if len(requests) == 1:
                return [exc]
            return [reply for r in requests for reply in self._generate([r])]
        for name, sec in out.timings.items():
            self._add(name, sec)
        return [(g, out.timings) for g in out.generated]


class _EngineStopped(Exception):
    """Raised into the prompts still in flight when the batched run is closed early."""


def _add_timings(request: Any, timings: dict[str, float]) -> None:
    timer = getattr(request, "timer", None)
    if timer is not None:
        for key, sec in timings.items():
            timer.t[key] = timer.t.get(key, 0.0) + sec


class _Prompt:
    """One prompt's `MILR.steps`, resumed by the engine with each reply until it finishes."""

    def __init__(self, engine: BatchedMILR, job: Job) -> None:
        self.engine, self.job = engine, job
        self.request: GenRequest | ScoreRequest | UpdateRequest | PrefixRequest | None = None
        #: What the next `resume` sends in: the reply, or the error to raise at the request.
        self.reply: Any = None
        self.error_in: BaseException | None = None
        self.finished = False
        self.result: MILRResult | None = None
        self.error: BaseException | None = None
        self.t0 = time.perf_counter()
        self.seconds = 0.0
        self._steps: Any = None

    def resume(self) -> None:
        """Run the prompt's own work until its next request (or its end)."""
        reply, error = self.reply, self.error_in
        self.reply = self.error_in = self.request = None
        try:
            if self._steps is None:
                cfg = self.job.config
                milr = MILR(self.engine.generator, self.engine.critic, cfg)
                self._steps = milr.steps(self.job.prompt, self.job.metadata)
            self.request = resume_steps(self._steps, reply, error)
        except StopIteration as done:
            self._finish(done.value, None)
        except BaseException as exc:
            self._finish(getattr(exc, "milr_result", None), exc)
            if not isinstance(exc, Exception):  # Ctrl-C, SystemExit: the whole run stops
                raise

    def _finish(self, result: MILRResult | None, error: BaseException | None) -> None:
        self.result, self.error, self.finished = result, error, True
        self.seconds = time.perf_counter() - self.t0

    def outcome(self) -> JobResult:
        return JobResult(self.job, self.result, self.error, self.seconds)


def run_batched(
    generator: Generator,
    critic: Critic,
    jobs: Iterable[Job],
    batch_prompts: int | str = "auto",
    **options: Any,
) -> list[JobResult]:
    """Run every job with `BatchedMILR`; results in job order."""
    jobs = list(jobs)
    order = {id(j): i for i, j in enumerate(jobs)}
    done = list(BatchedMILR(generator, critic, batch_prompts, **options).run(jobs))
    return sorted(done, key=lambda r: order[id(r.job)])
