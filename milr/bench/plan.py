"""``milr bench --dry-run``: the plan of a run (`milr.preflight.Plan`) without loading a model."""

from __future__ import annotations

from pathlib import Path

from milr.bench.options import BenchOptions, default_out
from milr.bench.protocol import check_gradable, default_seeds
from milr.bench.runner import _finished, load_named_or_path, plan_items
from milr.errors import MilrUserError
from milr.preflight import Plan, run_plan


def bench_plan(opts: BenchOptions) -> tuple[Plan, int]:
    """The plan of ``milr bench`` with `opts`, and how many (prompt, seed) pairs its ``--out``
    already holds as finished (skipped, so not counted in the plan). Reads the suite and the
    run directory; builds the critics without preparing them; loads no model."""
    from milr.optimizer_config import MILRConfig

    opts.validate()
    suite = load_named_or_path(opts.suite, opts.format)  # a path, or geneval, wise, ...
    if opts.seeds is None:  # the named suite's protocol, as the run resolves it
        opts.seeds = default_seeds(suite)
    check_gradable(suite, opts.eval_specs())
    out = Path(opts.out) if opts.out else default_out(opts)
    done = _finished(out, opts.retry_errors) if out.is_dir() else set()
    todo = [(p, s) for p, s in plan_items(suite, opts) if (p.id, s) not in done]
    try:
        config = MILRConfig(mode=opts.mode, max_steps=opts.steps, **opts.optimizer)
    except TypeError as exc:
        raise MilrUserError(f"bad optimizer option in {opts.optimizer}: {exc}") from None
    from milr.weight_sources import with_revision

    plan = run_plan(
        model=with_revision(opts.model, opts.revision) if opts.model else opts.model,
        reward_specs=list(opts.critic),
        eval_specs=opts.eval_specs(),
        prompts=len({p.id for p, _ in todo}),
        seeds=opts.seeds,
        records=len(todo),
        config=config,
    )
    return plan, len(done)
