"""`BatchedMILR`: many prompts optimised concurrently, each exactly as `milr.optimizer.MILR` would.

Each prompt runs the unmodified `MILR` loop (so every mode and option behaves as in the
one-prompt optimizer) in its own thread, but its two expensive calls — generating candidates
and scoring them — are handed to the engine instead of running there. The engine resumes the
prompts one at a time (never two at once) until each has parked on its next call, then runs
each phase once for all of them: reasoning and image tokens through the generator's batched
protocol methods (`Generator.continue_reasoning_batch`, `Generator.sample_image_tokens_batch`),
decoding in chunks, and one critic ``score_batch`` over every candidate image. A prompt that
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

import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from milr.engine.batch_phases import GenRequest, ScoreRequest, generate_batch, score_batch
from milr.engine.memory import MemoryLimit, auto_batch, phase_bytes
from milr.errors import MilrUserError
from milr.optimizer import MILR
from milr.optimizer_config import MILRConfig

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
    `milr.engine.memory`). `memory_limit` (bytes) caps the memory ``auto`` plans with and makes
    a larger batch raise `torch.OutOfMemoryError` (simulated) before it runs. `on_active` is
    called with the number of prompts in flight at each round (progress bars).
    """

    def __init__(
        self,
        generator: Generator,
        critic: Critic,
        batch_prompts: int | str = "auto",
        *,
        memory_limit: int | None = None,
        decode_chunk: int = 16,
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
        #: Seconds per phase over the run, plus ``prompt_side`` (the prompts' own work:
        #: updates, proposals, records), ``rounds`` and ``ooms``.
        self.stats: dict[str, float] = {}

    # -- the loop ----------------------------------------------------------------------------
    def run(self, jobs: Iterable[Job]) -> Iterator[JobResult]:
        """Yield each job's `JobResult` as it finishes (not in job order)."""
        pending = iter(jobs)
        active: list[_Worker] = []
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
                    worker = _Worker(self, job)
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
                    worker.reply = _Raise(_EngineStopped("the batched run stopped"))
                    worker.resume()

    def _round(self, active: list[_Worker]) -> None:
        """Generation for every prompt waiting on it, then scoring for every prompt waiting."""
        waiting = [w for w in active if isinstance(w.request, GenRequest)]
        if waiting:
            replies = self._generate([w.request for w in waiting])  # type: ignore[misc]
            for worker, reply in zip(waiting, replies):
                worker.reply = _Raise(reply) if isinstance(reply, BaseException) else reply
                self._resume(worker)
        waiting = [w for w in active if not w.finished and isinstance(w.request, ScoreRequest)]
        if waiting:
            t = time.perf_counter()
            errors = score_batch([w.request for w in waiting])  # type: ignore[misc]
            self._add("critic", time.perf_counter() - t)
            for worker, error in zip(waiting, errors):
                worker.reply = None if error is None else _Raise(error)
                self._resume(worker)

    def _resume(self, worker: _Worker) -> None:
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


@dataclass
class _Raise:
    exc: BaseException


class _Worker:
    """One prompt's `MILR` loop in a thread that parks on every generation and scoring call."""

    def __init__(self, engine: BatchedMILR, job: Job) -> None:
        self.engine, self.job = engine, job
        self.request: GenRequest | ScoreRequest | None = None
        self.reply: Any = None
        self.finished = False
        self.result: MILRResult | None = None
        self.error: BaseException | None = None
        self.t0 = time.perf_counter()
        self.seconds = 0.0
        self._go = threading.Semaphore(0)
        self._parked = threading.Semaphore(0)
        self._thread = threading.Thread(target=self._main, name="milr-prompt", daemon=True)
        self._thread.start()

    def _main(self) -> None:
        self._go.acquire()
        try:
            milr = _EngineMILR(self.engine.generator, self.engine.critic, self.job.config, self)
            self.result = milr.run(self.job.prompt, self.job.metadata)
        except BaseException as exc:
            self.error = exc
            self.result = getattr(exc, "milr_result", None)
        finally:
            self.finished = True
            self.seconds = time.perf_counter() - self.t0
            self._parked.release()

    def call(self, request: GenRequest | ScoreRequest) -> Any:
        """(prompt thread) Park with `request`; return the engine's reply or raise its error."""
        self.request = request
        self._parked.release()
        self._go.acquire()
        reply, self.reply, self.request = self.reply, None, None
        if isinstance(reply, _Raise):
            raise reply.exc
        return reply

    def resume(self) -> None:
        """(engine thread) Let the prompt run until it parks again or finishes."""
        self._go.release()
        self._parked.acquire()
        if self.finished:
            self._thread.join()

    def outcome(self) -> JobResult:
        return JobResult(self.job, self.result, self.error, self.seconds)


class _EngineMILR(MILR):
    """`MILR` whose generation and scoring calls go to the batched engine."""

    def __init__(self, generator: Generator, critic: Critic, config: MILRConfig, worker: _Worker):
        super().__init__(generator, critic, config)
        self._worker = worker

    def _generate(self, prompt, text_prefixes, image_prefixes, rng, timer, capture, result):
        cfg = self.config
        request = GenRequest(
            prompt, text_prefixes, image_prefixes, rng, capture, cfg.uses_text,
            self.cfg_scale, cfg.temperature, cfg.max_reasoning_tokens,
        )  # fmt: skip
        generated, timings = self._worker.call(request)
        for key, sec in timings.items():  # the shared batch's seconds
            timer.t[key] = timer.t.get(key, 0.0) + sec
        result.tokens_generated += generated.tokens_generated
        return generated.candidates, generated.latents

    def _score(self, cands, prompt, metadata, result) -> None:
        self._worker.call(ScoreRequest(self.critic, cands, prompt, metadata))
        result.critic_calls += 1
        result.images_scored += len(cands)


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
