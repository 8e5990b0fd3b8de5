"""`run_bench`: run a suite through a solver (MILR by default), resumable and sharded.

For each (prompt, seed) the solver returns the base image (the model's first sample) and the
MILR image; both are scored by the *evaluation* critic (through the score cache) and one
record is appended, fsynced, to this rank's shard. Finished (prompt, seed) pairs found in any
shard are skipped, so a run killed at any moment resumes where it stopped, with the same
per-prompt seeds. Under torchrun each rank claims the next unfinished (prompt, seed) from a
counter in torch.distributed's store whenever it is free (`milr.bench.distributed.claim`), so
ranks finish close together however uneven the prompts are; rank 0 merges the shards and
writes the summary and the report.

The pieces live in modules named for what they hold: `options` (BenchOptions, run settings),
`solvers` (Outcome, MILRSolver), `scoring` (evaluation through the cache), `writer` (durable
records), `progress`, `rescore`, `record` (the typed record) and `summary` (`finalize`).
Their public names are re-exported here for code written against this module.
"""

from __future__ import annotations

import functools
import platform
import re
import sys
import time
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from milr.bench.cache import ScoreCache, image_sha256
from milr.bench.distributed import DistContext, claim, init_distributed, rank_device
from milr.bench.official import load as load_named_or_path
from milr.bench.options import BenchOptions, default_out, make_run, now, result_settings
from milr.bench.progress import Progress
from milr.bench.protocol import check_gradable, default_seeds
from milr.bench.record import BenchRecord, SideResult
from milr.bench.records import (
    SCHEMA_VERSION,
    RecordShard,
    canonical_json,
    check_or_write_resolved,
    check_or_write_run,
    derive_seed,
    shard_path,
)
from milr.bench.rescore import rescore
from milr.bench.scoring import describe, open_cache, score_pair
from milr.bench.solvers import (
    MILRSolver,
    Outcome,
    Solver,
    SolverFactory,
    load_solver_factory,
    summarize_result,
)
from milr.bench.suites import BenchPrompt, Suite
from milr.bench.summary import finalize
from milr.bench.writer import FileJob, RecordWriter, json_bytes, png_bytes
from milr.devices import use_device
from milr.errors import MilrUserError

if TYPE_CHECKING:
    from milr.critic import Critic
    from milr.preflight import Critics

__all__ = [
    "BenchOptions",
    "MILRSolver",
    "Outcome",
    "RecordWriter",
    "Solver",
    "SolverFactory",
    "default_out",
    "finalize",
    "load_solver_factory",
    "make_run",
    "open_cache",
    "plan_items",
    "rescore",
    "result_settings",
    "run_bench",
    "run_one",
    "summarize_result",
]


def _safe(pid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", pid) or "_"


def run_one(
    solver: Solver,
    eval_critic: Critic,
    prompt: BenchPrompt,
    seed_index: int,
    opts: BenchOptions,
    suite: Suite,
    out: Path,
    cache: ScoreCache | None,
    rank: int,
) -> tuple[BenchRecord, list[FileJob]]:
    """Solve and evaluate one (prompt, seed): its record and the files it points at (unwritten)."""
    t0 = time.perf_counter()
    record = new_record(prompt, seed_index, opts, suite)
    assert record.seed is not None
    t = time.perf_counter()
    outcome: Outcome | BaseException
    try:
        outcome = solver.solve(prompt, record.seed)
    except MilrUserError:
        raise  # the user's to fix, the same for every prompt: stop, record nothing
    except Exception as exc:
        outcome = exc
    opt_s = time.perf_counter() - t
    return complete_record(
        record, outcome, opt_s, eval_critic, prompt, seed_index, out, cache, rank, t0
    )


def new_record(
    prompt: BenchPrompt, seed_index: int, opts: BenchOptions, suite: Suite
) -> BenchRecord:
    """The record of (prompt, seed index) before it is solved (ids, seed, metadata)."""
    return BenchRecord(
        prompt_id=prompt.id,
        seed_index=seed_index,
        seed=derive_seed(opts.seed, prompt.id, seed_index),
        prompt=prompt.prompt,
        group=prompt.group,
        benchmark=suite.format,
        metadata=prompt.metadata,
        suite_index=suite.index_of(prompt.id),
        schema=SCHEMA_VERSION,
    )


def complete_record(
    record: BenchRecord,
    outcome: Outcome | BaseException,
    opt_s: float,
    eval_critic: Critic,
    prompt: BenchPrompt,
    seed_index: int,
    out: Path,
    cache: ScoreCache | None,
    rank: int,
    t0: float,
) -> tuple[BenchRecord, list[FileJob]]:
    """Evaluate a solver's `outcome` (or record its error) and fill in the record's timings."""
    files: list[FileJob] = []
    eval_s = 0.0
    if isinstance(outcome, BaseException):
        record.error = describe(outcome)
        record.traceback = "".join(traceback.format_exception(outcome, limit=6))
    else:
        folder = Path("images") / _safe(prompt.id)
        names = ["base", "milr"]
        images = [outcome.base_image, outcome.final_image]
        if outcome.control_image is not None:  # --control: a third image, scored in the batch
            names.append("control")
            images.append(outcome.control_image)
        hashes = [image_sha256(im) for im in images]
        sides = []
        for name, image, h in zip(names, images, hashes):
            rel = folder / f"{seed_index}-{name}.png"
            files.append((out / rel, functools.partial(png_bytes, image)))
            sides.append(SideResult(image=rel.as_posix(), image_sha256=h))
        if outcome.full is not None:
            rel = folder / f"{seed_index}-trajectory.json"
            files.append((out / rel, functools.partial(json_bytes, outcome.full)))
            record.trajectory_file = rel.as_posix()
        if outcome.control_full is not None:
            rel = folder / f"{seed_index}-control-trajectory.json"
            files.append((out / rel, functools.partial(json_bytes, outcome.control_full)))
            record.control_trajectory_file = rel.as_posix()
        t = time.perf_counter()
        scored, record.eval_batch_error = score_pair(eval_critic, images, prompt, cache, hashes)
        eval_s = time.perf_counter() - t
        for side, evaluation in zip(sides, scored):
            side.set_evaluation(evaluation)
        record.base, record.milr = sides[:2]
        if len(sides) > 2:
            record.control = sides[2]
            record.control_trajectory = outcome.control_trajectory
        record.trajectory = outcome.trajectory
    total = time.perf_counter() - t0
    record.timings = {
        "optimizer_s": opt_s,
        "eval_s": eval_s,
        "harness_s": max(0.0, total - opt_s - eval_s),
        "total_s": total,
    }
    record.rank = rank
    record.host = platform.node()
    record.finished_at = now()
    return record, files


def plan_items(suite: Suite, opts: BenchOptions) -> list[tuple[BenchPrompt, int]]:
    """Every (prompt, seed index) the run covers, in suite order."""
    prompts = suite.prompts[: opts.limit] if opts.limit is not None else suite.prompts
    return [(p, s) for p in prompts for s in range(opts.seeds or 1)]


def _check_specs(specs: list[str]) -> None:
    """Fail fast on an unknown critic name or a malformed spec, before any model loads."""
    from milr.registry import get_registry
    from milr.specs import resolve_specs

    parsed, _ = resolve_specs(list(specs))
    registry = get_registry()
    for spec in parsed:
        registry.critic_entry(spec.name)


def run_bench(
    opts: BenchOptions, solver_factory: SolverFactory | None = None
) -> dict[str, Any] | None:
    """Run (or resume) a benchmark; returns the summary on rank 0 and None on other ranks."""
    opts.validate()
    _check_specs(list(opts.critic) + opts.eval_specs())
    ctx = init_distributed(opts.device, opts.dist_timeout_s)
    try:
        return _run(opts, ctx, solver_factory)
    finally:
        ctx.close()


def _finished(out: Path, retry_errors: bool) -> set[tuple[str, int]]:
    """(prompt id, seed index) pairs already in the run (errored ones too, unless retried;
    never those that hold a setup fault, which an earlier milr recorded per prompt)."""
    from milr.bench.record import load_records
    from milr.preflight import is_setup_error

    return {
        rec.key
        for rec in load_records(out)
        if not (retry_errors and rec.any_error)
        and not any(is_setup_error(e) for e in (rec.error, *(s.error for _, s in rec.sides() if s)))
    }


def _run(
    opts: BenchOptions, ctx: DistContext, solver_factory: SolverFactory | None
) -> dict[str, Any] | None:
    suite = load_named_or_path(opts.suite, opts.format)  # a path, or geneval, wise, ...
    if opts.seeds is None:  # the named suite's protocol (GenEval 4, T2I-CompBench 10), else 1
        opts.seeds = default_seeds(suite)
    check_gradable(suite, opts.eval_specs())  # a category no evaluator grades: refused now
    out = Path(opts.out) if opts.out else default_out(opts)
    if opts.resume and not (out / "run.json").exists():
        raise MilrUserError(f"--resume: {out} holds no run to resume (no run.json)")
    run = make_run(opts, suite)
    error = None
    done: set[tuple[str, int]] = set()
    if ctx.is_main:
        try:
            check_or_write_run(out, run, force=opts.force)
            done = _finished(out, opts.retry_errors)
        except MilrUserError as exc:
            error = str(exc)
    error, done = ctx.broadcast((error, done))
    if error:
        raise MilrUserError(error)
    todo = [it for it in plan_items(suite, opts) if (it[0].id, it[1]) not in done]
    if ctx.is_main and done:
        print(f"resuming {out}: {len(done)} finished, {len(todo)} to do", file=sys.stderr)
    critics = _preflight(opts, ctx, todo, bool(todo))
    ctx.run_key = f"milr-{run['fingerprint']}"  # abort and done keys of this run in the store
    if todo:  # each rank claims the next unfinished (prompt, seed) as it frees up
        share = -(-len(todo) // ctx.world_size)
        items = claim(todo, ctx, f"claimed-{run['fingerprint']}")
        try:
            with use_device(rank_device(opts.device, ctx)):  # critics' auto: the generator's
                _work(opts, ctx, suite, out, items, share, solver_factory, critics)
        except Exception as exc:  # every other rank stops at its next claim, or at the end
            ctx.abort(str(exc) if isinstance(exc, MilrUserError) else _describe(exc))
            raise
    ctx.finish()
    if not ctx.is_main:
        return None
    return finalize(out, report=opts.report)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"[:300]


def _preflight(
    opts: BenchOptions, ctx: DistContext, todo: list[tuple[BenchPrompt, int]], works: bool
) -> Critics | None:
    """Build, prepare and check the critics before the generator loads (`milr.preflight`);
    a fault on any rank stops every rank with its one line, before any record is written."""
    from milr.preflight import prepare_critics

    critics, error = None, None
    if works:
        unique = {p.id: p for p, _ in todo}.values()
        items = [(p.id, p.prompt, p.metadata) for p in unique]
        try:
            with use_device(rank_device(opts.device, ctx)):
                critics = prepare_critics(list(opts.critic), items, opts.eval_specs())
        except MilrUserError as exc:
            error = str(exc)
    error = ctx.first_error(error)
    if error:
        raise MilrUserError(error)
    return critics


def _work(
    opts: BenchOptions,
    ctx: DistContext,
    suite: Suite,
    out: Path,
    items: Iterator[tuple[BenchPrompt, int]],
    share: int,
    solver_factory: SolverFactory | None,
    critics: Critics | None = None,
) -> None:
    """Run the (prompt, seed) items this rank claims (`share`: about how many, for progress)."""
    from milr import build_critic

    device = rank_device(opts.device, ctx)
    factory = solver_factory or load_solver_factory(opts.solver)
    if factory is MILRSolver and critics is not None:
        solver: Solver = MILRSolver(opts, device, critic=critics.reward)
    else:
        solver = factory(opts, device)
    resolve = getattr(solver, "resolved_settings", None)
    if callable(resolve):  # what the loaded checkpoint made of the unset options
        check_or_write_resolved(out, resolve(), force=opts.force)
    reward_critic = getattr(solver, "critic", None)
    if critics is not None and critics.evaluation is not None and not critics.shared:
        eval_critic = critics.evaluation
        eval_critic.bind(generator=getattr(solver, "generator", None))
    elif reward_critic is not None and canonical_json(opts.eval_specs()) == canonical_json(
        list(opts.critic)
    ):
        eval_critic = reward_critic  # same critic: share its loaded weights
    else:
        eval_critic = build_critic(list[Any](opts.eval_specs()))
        eval_critic.bind(generator=getattr(solver, "generator", None))
    cache = open_cache(opts.cache or out / "score_cache.sqlite")
    progress = Progress(share, ctx, opts.progress)
    try:
        with RecordShard(shard_path(out, ctx.rank)) as store:
            writer = RecordWriter(store, progress.update)
            try:
                if _batched(opts, solver):
                    _work_batched(
                        solver, eval_critic, opts, suite, out, items, cache, ctx.rank, writer,
                        progress,
                    )  # fmt: skip
                    items = iter(())
                for prompt, seed_index in items:
                    writer.submit(
                        *run_one(
                            solver,
                            eval_critic,
                            prompt,
                            seed_index,
                            opts,
                            suite,
                            out,
                            cache,
                            ctx.rank,
                        )
                    )
            except BaseException:
                writer.close(raise_errors=False)
                raise
            writer.close()
    finally:
        progress.close()
        if cache is not None:
            cache.close()
    seconds = getattr(getattr(solver, "generator", None), "compile_s", 0.0)
    if opts.compile and seconds:  # the first call per step and shape (in the records' phases)
        print(
            f"rank {ctx.rank}: compiling the per-token steps took {seconds:.1f} s", file=sys.stderr
        )


def _batched(opts: BenchOptions, solver: Solver) -> bool:
    """Whether to run the batched engine (``--batch-prompts`` other than 1, a solver that can)."""
    if opts.batch_prompts == 1:
        return False
    if callable(getattr(solver, "solve_many", None)):
        return True
    print(
        f"warning: solver {type(solver).__name__} has no solve_many; --batch-prompts "
        f"{opts.batch_prompts} ignored, prompts run one at a time",
        file=sys.stderr,
    )
    return False


def _work_batched(
    solver: Any,
    eval_critic: Critic,
    opts: BenchOptions,
    suite: Suite,
    out: Path,
    items: Iterator[tuple[BenchPrompt, int]],
    cache: ScoreCache | None,
    rank: int,
    writer: RecordWriter,
    progress: Progress,
) -> None:
    """Solve `items` with the solver's batched engine; each record is written as its prompt
    finishes (any order), so a killed run resumes with the prompts not yet written. Items are
    claimed as the engine asks for the next job (a free slot), not up front."""
    claimed: list[tuple[BenchPrompt, int]] = []
    records: list[BenchRecord] = []

    def jobs() -> Iterator[tuple[BenchPrompt, Any]]:
        for p, s in items:
            claimed.append((p, s))
            records.append(new_record(p, s, opts, suite))
            yield p, records[-1].seed

    for index, outcome, seconds in solver.solve_many(jobs(), progress.set_active):  # type: ignore[arg-type]
        prompt, seed_index = claimed[index]
        t0 = time.perf_counter() - seconds
        writer.submit(
            *complete_record(
                records[index], outcome, seconds, eval_critic, prompt, seed_index, out, cache,
                rank, t0,
            )
        )  # fmt: skip
