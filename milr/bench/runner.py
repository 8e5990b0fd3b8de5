"""`run_bench`: run a suite through a solver (MILR by default), resumable and sharded.

For each (prompt, seed) the solver returns the base image (the model's first sample) and the
MILR image; both are scored by the *evaluation* critic (through the score cache) and one
record is appended, fsynced, to this rank's shard. Finished (prompt, seed) pairs found in any
shard are skipped, so a run killed at any moment resumes where it stopped, with the same
per-prompt seeds. Under torchrun the remaining work is split round-robin across ranks; rank 0
merges the shards and writes the summary and the report.
"""

from __future__ import annotations

import functools
import importlib
import os
import platform
import re
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from milr.bench.cache import ScoreCache, cached_evaluate, image_sha256
from milr.bench.distributed import DistContext, init_distributed, rank_device, shard
from milr.bench.records import (
    SCHEMA_VERSION,
    RecordShard,
    atomic_write_text,
    canonical_json,
    check_or_write_run,
    derive_seed,
    fingerprint,
    load_all_records,
    record_key,
    shard_path,
    write_files_durably,
    write_results,
)
from milr.bench.suites import BenchPrompt, Suite, load_suite
from milr.errors import MilrUserError

if TYPE_CHECKING:
    from PIL.Image import Image

    from milr.critic import Critic


# --- the solver protocol ------------------------------------------------------------------


@dataclass
class Outcome:
    """What a solver produced for one prompt and seed."""

    base_image: Image
    final_image: Image
    #: Summary of the optimisation: steps, stop_reason, rewards (per step, step 0 = base),
    #: passed (per step), critic_calls, timings. JSON-serialisable.
    trajectory: dict[str, Any] = field(default_factory=dict)
    #: The full result (e.g. `MILRResult.to_dict()`), written next to the images.
    full: dict[str, Any] | None = None


class Solver(Protocol):
    """Turns a prompt and a seed into base and improved images (MILR, or a baseline)."""

    def solve(self, prompt: BenchPrompt, seed: int) -> Outcome: ...


SolverFactory = Callable[["BenchOptions", "str | None"], Solver]


# --- options ------------------------------------------------------------------------------


@dataclass
class BenchOptions:
    """Everything `milr bench` takes. Fields marked in `RESULT_SETTINGS` enter the fingerprint."""

    suite: str
    model: str = "shapes"
    critic: list[str] = field(default_factory=lambda: ["shapes"])
    eval_critic: list[str] | None = None
    mode: str = "both"
    steps: int = 20
    seeds: int = 1
    seed: int = 42
    out: str | None = None
    limit: int | None = None
    format: str | None = None
    device: str | None = None
    dtype: str | None = None
    optimizer: dict[str, Any] = field(default_factory=dict)
    solver: str | None = None
    resume: bool = False
    force: bool = False
    retry_errors: bool = False
    progress: bool = True
    cache: str | None = None
    report: bool = True
    dist_timeout_s: float = 6 * 3600

    def eval_specs(self) -> list[str]:
        return list(self.eval_critic or self.critic)


def default_out(opts: BenchOptions) -> Path:
    stem = Path(opts.suite).stem or "suite"
    return Path("bench-runs") / f"{stem}-{re.sub(r'[^A-Za-z0-9_.-]', '_', Path(opts.model).name)}"


def result_settings(opts: BenchOptions, suite: Suite) -> dict[str, Any]:
    """The settings that determine results; a run directory never mixes two of these."""
    return {
        "benchmark": suite.format,
        "suite_sha256": suite.content_sha256,
        "model": opts.model,
        "critic": list(opts.critic),
        "eval_critic": opts.eval_specs(),
        "mode": opts.mode,
        "steps": opts.steps,
        "seeds": opts.seeds,
        "seed": opts.seed,
        "dtype": opts.dtype,
        "optimizer": dict(sorted(opts.optimizer.items())),
        "solver": opts.solver or "milr",
    }


def make_run(opts: BenchOptions, suite: Suite) -> dict[str, Any]:
    settings = result_settings(opts, suite)
    from milr import __version__

    return {
        "schema": SCHEMA_VERSION,
        "fingerprint": fingerprint(settings),
        "settings": settings,
        "suite_path": str(Path(suite.source).resolve()),
        "created": _now(),
        "milr_version": __version__,
    }


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- the default solver: MILR -------------------------------------------------------------


class MILRSolver:
    """The MILR optimizer over a loaded generator, rewarded by the ``--critic`` ensemble.

    The base image is the optimizer's step-0 image (the model's own first sample under the
    prompt's seed); the MILR image is the one the optimizer returns (last, or best with
    ``--opt select=best``).
    """

    def __init__(self, opts: BenchOptions, device: str | None) -> None:
        from milr import build_critic
        from milr.generator import load_generator

        self.opts = opts
        self._config(0)  # bad optimizer options fail before the model loads
        self.critic = build_critic(list[Any](opts.critic))
        self.generator = load_generator(opts.model, device=device, dtype=opts.dtype)

    def _config(self, seed: int) -> Any:
        from milr.optimizer import MILRConfig

        kwargs: dict[str, Any] = {
            "mode": self.opts.mode,
            "max_steps": self.opts.steps,
            "seed": seed,
        }
        kwargs.update(self.opts.optimizer)
        try:
            return MILRConfig(**kwargs)
        except TypeError as exc:
            raise MilrUserError(f"bad optimizer option in {self.opts.optimizer}: {exc}") from None

    def solve(self, prompt: BenchPrompt, seed: int) -> Outcome:
        from milr.optimizer import MILR

        result = MILR(self.generator, self.critic, self._config(seed)).run(
            prompt.prompt, prompt.metadata
        )
        full = result.to_dict()
        if result.initial_image is None or result.image is None:
            raise RuntimeError(
                f"the optimizer returned no image (stop reason {result.stop_reason!r})"
            )
        return Outcome(
            base_image=result.initial_image,
            final_image=result.image,
            trajectory=summarize_result(full),
            full=full,
        )


def summarize_result(full: dict[str, Any]) -> dict[str, Any]:
    """The trajectory summary a record carries (the full `MILRResult.to_dict()` goes to a side file)."""
    steps = list(full.get("steps") or [])
    out: dict[str, Any] = {
        "steps": full.get("n_steps", max(0, len(steps) - 1)),
        "stop_reason": full.get("stop_reason"),
        "scores": [st.get("score") for st in steps],
        "rewards": [st.get("reward") for st in steps],
        "passed": [st.get("passed") for st in steps],
        "critic_calls": full.get("critic_calls"),
    }
    for key in (
        "images_scored",
        "tokens_generated",
        "best_step",
        "selected",
        "wall_seconds",
        "timings",
    ):
        if key in full:
            out[key] = full[key]
    if steps:
        out["reasoning"] = {
            "initial": steps[0].get("reasoning"),
            "final": steps[-1].get("reasoning"),
        }
    return out


def load_solver_factory(spec: str | None) -> SolverFactory:
    """``module:callable`` taking ``(options, device)`` and returning a solver; default MILR."""
    if not spec or spec == "milr":
        return MILRSolver
    module, sep, attr = spec.partition(":")
    if not sep or not module or not attr:
        raise MilrUserError(f"--solver {spec!r} must be 'module:callable'")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise MilrUserError(f"cannot load solver {spec!r}: {exc}") from None


# --- one prompt ---------------------------------------------------------------------------


def _safe(pid: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", pid) or "_"


def _json_bytes(value: Any) -> bytes:
    return canonical_json(value).encode("utf-8")


def _png_bytes(image: Image) -> bytes:
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)  # lossless; fast over small
    return buf.getvalue()


def _score_pair(
    critic: Critic,
    images: list[Image],
    prompt: BenchPrompt,
    cache: ScoreCache | None,
    hashes: list[str],
) -> list[dict[str, Any]]:
    """Score base and MILR images; a failure is recorded per image, never raised."""
    n = len(images)
    try:
        res = cached_evaluate(
            critic, images, [prompt.prompt] * n, [prompt.metadata] * n, cache, hashes
        )
        return [
            {"score": r.score, "passed": r.passed, "details": r.details, "error": None} for r in res
        ]
    except Exception:
        pass
    out: list[dict[str, Any]] = []
    for image, h in zip(images, hashes):  # retry one by one so one bad image does not sink both
        try:
            (r,) = cached_evaluate(critic, [image], [prompt.prompt], [prompt.metadata], cache, [h])
            out.append({"score": r.score, "passed": r.passed, "details": r.details, "error": None})
        except Exception as exc:
            out.append({"score": None, "passed": None, "details": {}, "error": _describe(exc)})
    return out


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


FileJob = tuple[Path, Callable[[], bytes]]


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
) -> tuple[dict[str, Any], list[FileJob]]:
    """Solve and evaluate one (prompt, seed): its record and the files it points at (unwritten)."""
    t0 = time.perf_counter()
    seed = derive_seed(opts.seed, prompt.id, seed_index)
    record: dict[str, Any] = {
        "schema": SCHEMA_VERSION,
        "prompt_id": prompt.id,
        "seed_index": seed_index,
        "seed": seed,
        "prompt": prompt.prompt,
        "group": prompt.group,
        "benchmark": suite.format,
        "metadata": prompt.metadata,
        "base": None,
        "milr": None,
        "trajectory": None,
        "error": None,
    }
    files: list[FileJob] = []
    opt_s = eval_s = 0.0
    t = time.perf_counter()
    try:
        outcome = solver.solve(prompt, seed)
        opt_s = time.perf_counter() - t
    except Exception as exc:
        opt_s = time.perf_counter() - t
        record["error"] = _describe(exc)
        record["traceback"] = traceback.format_exc(limit=6)
    else:
        folder = Path("images") / _safe(prompt.id)
        images = [outcome.base_image, outcome.final_image]
        hashes = [image_sha256(im) for im in images]
        sides = []
        for side, image, h in zip(("base", "milr"), images, hashes):
            rel = folder / f"{seed_index}-{side}.png"
            files.append((out / rel, functools.partial(_png_bytes, image)))
            sides.append({"image": rel.as_posix(), "image_sha256": h})
        if outcome.full is not None:
            rel = folder / f"{seed_index}-trajectory.json"
            files.append((out / rel, functools.partial(_json_bytes, outcome.full)))
            record["trajectory_file"] = rel.as_posix()
        t = time.perf_counter()
        scored = _score_pair(eval_critic, images, prompt, cache, hashes)
        eval_s = time.perf_counter() - t
        for side, meta, sc in zip(("base", "milr"), sides, scored):
            record[side] = {**meta, **sc}
        record["trajectory"] = outcome.trajectory
    total = time.perf_counter() - t0
    record["timings"] = {
        "optimizer_s": opt_s,
        "eval_s": eval_s,
        "harness_s": max(0.0, total - opt_s - eval_s),
        "total_s": total,
    }
    record["rank"] = rank
    record["host"] = platform.node()
    record["finished_at"] = _now()
    return record, files


class RecordWriter:
    """A background thread that makes records durable in order, overlapping I/O with compute.

    For each submitted record it encodes and writes the record's files (temp, fsync, rename),
    then appends the record (fsync), so a record never points at a file that is not on disk.
    At most `depth` records wait; `close` writes what is queued (also after Ctrl-C).
    """

    def __init__(
        self, store: RecordShard, on_written: Callable[[dict[str, Any]], None], depth: int = 4
    ) -> None:
        import queue
        import threading

        self.store = store
        self.on_written = on_written
        self.error: BaseException | None = None
        self._queue: queue.Queue[tuple[dict[str, Any], list[FileJob]] | None] = queue.Queue(
            maxsize=depth
        )
        self._thread = threading.Thread(target=self._loop, name="milr-bench-writer", daemon=True)
        self._thread.start()

    def submit(self, record: dict[str, Any], files: list[FileJob]) -> None:
        if self.error is not None:
            raise self.error
        self._queue.put((record, files))

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            if self.error is not None:
                continue
            record, files = item
            try:
                t = time.perf_counter()
                write_files_durably([(path, make()) for path, make in files])
                record["timings"]["write_s"] = time.perf_counter() - t
                self.store.append(record)
                self.on_written(record)
            except BaseException as exc:  # surfaced to the main thread on the next submit/close
                self.error = exc

    def close(self, raise_errors: bool = True) -> None:
        self._queue.put(None)
        self._thread.join()
        if raise_errors and self.error is not None:
            raise self.error


# --- progress -----------------------------------------------------------------------------


class Progress:
    """A per-rank tqdm bar: prompts done, pass rate of base and MILR images so far, ETA."""

    def __init__(self, total: int, ctx: DistContext, enabled: bool) -> None:
        self.bar: Any = None
        self.counts: dict[str, list[int]] = {"base": [0, 0], "milr": [0, 0]}
        self.errors = 0
        if enabled and total:
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=total,
                desc=f"rank {ctx.rank}/{ctx.world_size}" if ctx.distributed else "bench",
                position=ctx.local_rank if ctx.distributed else None,
                unit="prompt",
                file=sys.stderr,
                dynamic_ncols=True,
                leave=True,
            )

    def update(self, record: dict[str, Any]) -> None:
        if record.get("error"):
            self.errors += 1
        for side in ("base", "milr"):
            s = record.get(side) or {}
            if s.get("error"):
                self.errors += 1
            if s.get("passed") is not None:
                self.counts[side][0] += int(bool(s["passed"]))
                self.counts[side][1] += 1
        if self.bar is not None:
            post = {}
            for side in ("base", "milr"):
                p, n = self.counts[side]
                post[side] = f"{p / n:.2f}" if n else "-"
            post["err"] = str(self.errors)
            self.bar.set_postfix(post, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# --- the run ------------------------------------------------------------------------------


def plan_items(suite: Suite, opts: BenchOptions) -> list[tuple[BenchPrompt, int]]:
    prompts = suite.prompts[: opts.limit] if opts.limit is not None else suite.prompts
    return [(p, s) for p in prompts for s in range(opts.seeds)]


def _validate(opts: BenchOptions) -> None:
    if opts.steps < 0:
        raise MilrUserError(f"--steps {opts.steps} must be >= 0")
    if opts.seeds < 1:
        raise MilrUserError(f"--seeds {opts.seeds} must be >= 1")
    if opts.limit is not None and opts.limit < 1:
        raise MilrUserError(f"--limit {opts.limit} must be >= 1")
    if not opts.critic:
        raise MilrUserError("no reward critic; pass --critic SPEC (see `milr critics`)")


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
    _validate(opts)
    _check_specs(list(opts.critic) + opts.eval_specs())
    ctx = init_distributed(opts.device, opts.dist_timeout_s)
    try:
        return _run(opts, ctx, solver_factory)
    finally:
        ctx.close()


def _run(
    opts: BenchOptions, ctx: DistContext, solver_factory: SolverFactory | None
) -> dict[str, Any] | None:
    suite = load_suite(opts.suite, opts.format)
    out = Path(opts.out) if opts.out else default_out(opts)
    if opts.resume and not (out / "run.json").exists():
        raise MilrUserError(f"--resume: {out} holds no run to resume (no run.json)")
    run = make_run(opts, suite)
    error = None
    done: set[tuple[str, int]] = set()
    if ctx.is_main:
        try:
            check_or_write_run(out, run, force=opts.force)
            for rec in load_all_records(out):
                if opts.retry_errors and (
                    rec.get("error")
                    or (rec.get("base") or {}).get("error")
                    or (rec.get("milr") or {}).get("error")
                ):
                    continue
                done.add(record_key(rec))
        except MilrUserError as exc:
            error = str(exc)
    error, done = ctx.broadcast((error, done))
    if error:
        raise MilrUserError(error)
    todo = [it for it in plan_items(suite, opts) if (it[0].id, it[1]) not in done]
    mine = shard(todo, ctx.rank, ctx.world_size)
    if ctx.is_main and done:
        print(f"resuming {out}: {len(done)} finished, {len(todo)} to do", file=sys.stderr)
    if mine:
        _work(opts, ctx, suite, out, mine, solver_factory)
    ctx.barrier()
    if not ctx.is_main:
        return None
    return finalize(out, report=opts.report)


def _work(
    opts: BenchOptions,
    ctx: DistContext,
    suite: Suite,
    out: Path,
    items: list[tuple[BenchPrompt, int]],
    solver_factory: SolverFactory | None,
) -> None:
    from milr import build_critic

    device = rank_device(opts.device, ctx)
    factory = solver_factory or load_solver_factory(opts.solver)
    solver = factory(opts, device)
    reward_critic = getattr(solver, "critic", None)
    if reward_critic is not None and canonical_json(opts.eval_specs()) == canonical_json(
        list(opts.critic)
    ):
        eval_critic = reward_critic  # same critic: share its loaded weights
    else:
        eval_critic = build_critic(list[Any](opts.eval_specs()))
        eval_critic.bind(generator=getattr(solver, "generator", None))
    cache = open_cache(opts.cache or out / "score_cache.sqlite")
    progress = Progress(len(items), ctx, opts.progress)
    try:
        with RecordShard(shard_path(out, ctx.rank)) as store:
            writer = RecordWriter(store, progress.update)
            try:
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


def open_cache(path: str | Path) -> ScoreCache | None:
    """The score cache, or None (with a warning) when the file cannot serve as one."""
    import sqlite3

    try:
        return ScoreCache(path)
    except (sqlite3.Error, OSError) as exc:
        print(f"warning: score cache {path} unusable ({exc}); running without it", file=sys.stderr)
        return None


def finalize(out: str | Path, report: bool = True) -> dict[str, Any]:
    """Merge the shards into ``results.jsonl``, write the summary and (optionally) the report."""
    from milr.bench.summary import write_summary

    out = Path(out)
    records = load_all_records(out)
    write_results(out, records)
    summary = write_summary(out, records)
    if report:
        try:
            from milr.bench.report import write_report

            write_report(out, records, summary)
        except Exception as exc:  # a broken plot must not lose a finished benchmark
            print(f"warning: report not written: {_describe(exc)}", file=sys.stderr)
            if os.environ.get("MILR_DEBUG"):
                traceback.print_exc()
    return summary


def options_dict(opts: BenchOptions) -> dict[str, Any]:
    return asdict(opts)


def rescore(
    out: str | Path, eval_critic: list[str], *, cache: str | None = None, report: bool = True
) -> dict[str, Any]:
    """Re-evaluate a finished run's images with another evaluation critic; no image is regenerated.

    Each shard is rewritten atomically; ``run.json`` is updated last, so an interrupted rescore
    is simply run again (the score cache makes the finished part free).
    """
    import json

    from PIL import Image as PILImage

    from milr import build_critic
    from milr.bench.records import RUN_FILE, read_jsonl, read_run, shard_files

    out = Path(out)
    run = read_run(out)
    if run is None:
        raise MilrUserError(f"{out} holds no bench run (no {RUN_FILE})")
    critic = build_critic(list[Any](eval_critic))
    score_cache = open_cache(cache or out / "score_cache.sqlite")
    try:
        for path in shard_files(out):
            recs = read_jsonl(path)
            for rec in recs:
                if rec.get("error"):
                    continue
                prompt = BenchPrompt(
                    str(rec["prompt_id"]),
                    rec["prompt"],
                    rec.get("group", ""),
                    rec.get("metadata") or {},
                )
                images, hashes = [], []
                for side in ("base", "milr"):
                    with PILImage.open(out / rec[side]["image"]) as im:
                        images.append(
                            im.convert("RGB") if im.mode not in ("RGB", "L") else im.copy()
                        )
                    hashes.append(rec[side].get("image_sha256") or image_sha256(images[-1]))
                t = time.perf_counter()
                scored = _score_pair(critic, images, prompt, score_cache, hashes)
                for side, sc in zip(("base", "milr"), scored):
                    rec[side] = {**rec[side], **sc}
                rec.setdefault("timings", {})["eval_s"] = time.perf_counter() - t
            text = "".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in recs)
            atomic_write_text(path, text)
        if score_cache is not None:
            print(
                f"score cache: {score_cache.hits} hits, {score_cache.misses} misses",
                file=sys.stderr,
            )
    finally:
        if score_cache is not None:
            score_cache.close()
    settings = dict(run["settings"])
    old_eval = settings.get("eval_critic")
    settings["eval_critic"] = list(eval_critic)
    history = list(run.get("history", []))
    history.append({"rescored_from": old_eval, "fingerprint": run.get("fingerprint"), "at": _now()})
    run.update(settings=settings, fingerprint=fingerprint(settings), history=history)
    atomic_write_text(out / RUN_FILE, json.dumps(run, indent=2, sort_keys=True) + "\n")
    return finalize(out, report=report)
