"""`milr bench`: run a benchmark suite (resumable, torchrun-sharded) and summarise runs.

``milr bench SUITE_FILE ...`` runs (the ``run`` subcommand is implied); ``milr bench summary
DIR`` prints and rewrites a run's summary; ``milr bench rescore DIR --eval-critic SPEC``
re-evaluates a finished run's images with another evaluation critic; ``milr bench export DIR
DEST`` lays the images out for a benchmark's official evaluator.
"""

from __future__ import annotations

from typing import Any

import click

from milr.cli.common import (
    allow_missing_option,
    check_loop_options,
    compile_option,
    deprecated_short_option,
    dry_run_option,
    kv_cache_option,
    prompt_file_option,
    prompt_style_option,
    revision_option,
    use_deprecated,
)
from milr.errors import MilrUserError
from milr.modes import DEFAULT_MODE, MODES


class _DefaultGroup(click.Group):
    """A group whose first argument, when it is not a subcommand, goes to ``run``."""

    default_command = "run"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        if args and args[0] not in self.commands and args[0] not in ctx.help_option_names:
            _refuse_mistyped_subcommand(ctx, args[0], list(self.commands))
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def _refuse_mistyped_subcommand(ctx: click.Context, word: str, names: list[str]) -> None:
    """``milr bench sumary DIR``: a missing path close to a subcommand's name is a typo."""
    import difflib
    import os

    if word.startswith("-") or os.path.exists(word):
        return
    if difflib.get_close_matches(word, names, n=1):
        raise click.exceptions.NoSuchCommand(word, possibilities=names, ctx=ctx)


@click.group(cls=_DefaultGroup, context_settings={"help_option_names": ["-h", "--help"]})
def bench() -> None:
    """Benchmark MILR on GenEval, T2I-CompBench, WISE or ShapesEval.

    \b
        milr bench SUITE_FILE --model M --critic SPEC [--eval-critic SPEC] [--out DIR] ...
        milr bench geneval --model M --critic preset:geneval   (official prompts and protocol)
        milr bench summary DIR
        milr bench rescore DIR --eval-critic SPEC
        milr bench export DIR DEST [--side milr|base]
        torchrun --nproc-per-node K -m milr bench SUITE_FILE ...   (one shard per rank)
    """


def _parse_opt(items: tuple[str, ...]) -> dict[str, Any]:
    import json

    out: dict[str, Any] = {}
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise MilrUserError(f"--opt {item!r} is not KEY=VALUE (e.g. --opt lr=0.03)")
        try:
            out[key.strip()] = json.loads(raw)
        except ValueError:
            out[key.strip()] = raw
    return out


@bench.command("run")
@click.argument("suite_file", type=click.Path(dir_okay=True, path_type=str))
@click.option(
    "--model",
    "-M",
    default="shapes",
    show_default=True,
    help="Model name, checkpoint directory or hub id.",
)
@deprecated_short_option("-m", "model_old_flag")
@click.option(
    "--critic",
    "-c",
    "critic",
    multiple=True,
    show_default="shapes",
    help="Reward critic spec (repeatable).",
)
@click.option(
    "--eval-critic",
    "eval_critic",
    multiple=True,
    show_default="the reward critic: an oracle run",
    help="Evaluation critic spec (repeatable).",
)
@click.option(
    "--mode",
    default=DEFAULT_MODE,
    show_default=True,
    type=click.Choice(MODES),
    help="MILR mode.",
)
@click.option(
    "--steps", default=30, show_default=True, type=int, help="Maximum MILR steps per prompt."
)
@click.option(
    "--seeds",
    default=None,
    type=int,
    show_default="the protocol's: GenEval 4, T2I-CompBench 10, WISE 1; 1 for a file",
    help="Images (seeds) per prompt; another count is a non-standard protocol.",
)
@click.option(
    "--seed",
    default=42,
    show_default=True,
    type=int,
    help="Run seed; per-prompt seeds derive from it and the prompt id.",
)
@click.option(
    "--out", "-o", default=None, show_default="bench-runs/SUITE-MODEL", help="Run directory."
)
@click.option(
    "--limit", default=None, type=int, show_default="all", help="Only the first N prompts."
)
@click.option(
    "--format",
    "fmt",
    default=None,
    type=click.Choice(["geneval", "shapes", "t2i-compbench", "wise"]),
    help="Suite format when the file name does not tell.",
)
@click.option(
    "--device",
    default=None,
    help="cpu, cuda, cuda:1 ... (under torchrun, cuda means cuda:LOCAL_RANK).",
)
@click.option(
    "--dtype",
    default=None,
    show_default="bf16 on GPU, fp32 on CPU",
    help="Model dtype: bf16, fp16, fp32, or float64 (CPU only: exact batched-vs-unbatched runs).",
)
@click.option(
    "--batch-prompts",
    "batch_prompts",
    default="1",
    show_default=True,
    metavar="B|auto",
    help="Optimise up to B prompts at once (batched engine; 'auto' sizes B from free memory).",
)
@prompt_style_option
@prompt_file_option
@revision_option
@allow_missing_option
@kv_cache_option
@compile_option
@click.option(
    "--opt",
    "opt",
    multiple=True,
    metavar="KEY=VALUE",
    help="Extra optimizer setting (repeatable), e.g. --opt threshold=-0.2 --opt select=best.",
)
@click.option(
    "--resume",
    is_flag=True,
    help="Require an existing run in --out and continue it (continuing is automatic anyway).",
)
@click.option(
    "--force", is_flag=True, help="Continue a run directory made with different settings."
)
@click.option("--retry-errors", is_flag=True, help="Redo records that carry an error.")
@click.option(
    "--cache",
    default=None,
    show_default="OUT/score_cache.sqlite",
    help="Score cache file; share one across runs.",
)
@click.option(
    "--control",
    default=None,
    type=click.Choice(["resample", "best-of-n"]),
    help="Also run a control beside MILR on each prompt and seed: resample (the same loop "
    "without the latent update) or best-of-n (steps+1 draws, the reward critic picks).",
)
@click.option(
    "--solver",
    default=None,
    metavar="MODULE:CALLABLE",
    show_default="MILR",
    help="Advanced: another solver factory.",
)
@click.option(
    "--no-progress", "--quiet", "-q", "no_progress", is_flag=True, help="No progress bar."
)
@click.option("--no-report", is_flag=True, help="Skip contact sheets and plots.")
@dry_run_option
@click.option(
    "--dist-timeout",
    default=6 * 3600.0,
    show_default=True,
    type=float,
    help="Seconds a rank waits for the others at the end (torchrun).",
)
def run_cmd(
    suite_file: str,
    model: str,
    model_old_flag: str | None,
    critic: tuple[str, ...],
    eval_critic: tuple[str, ...],
    mode: str,
    steps: int,
    seeds: int | None,
    seed: int,
    out: str | None,
    limit: int | None,
    fmt: str | None,
    device: str | None,
    dtype: str | None,
    batch_prompts: str,
    prompt_style: str | None,
    prompt_file: str | None,
    revision: str | None,
    allow_missing: bool,
    kv_cache: str | None,
    compile_steps: bool,
    opt: tuple[str, ...],
    resume: bool,
    force: bool,
    retry_errors: bool,
    cache: str | None,
    control: str | None,
    solver: str | None,
    no_progress: bool,
    no_report: bool,
    dry_run: bool,
    dist_timeout: float,
) -> None:
    """Run (or resume) SUITE_FILE: base and MILR images per prompt, scored by the evaluation critic.

    SUITE_FILE is a path, or an official suite by name, downloaded at a pinned commit:
    geneval, t2i-compbench (or t2i-compbench:color,shape,...), wise, wise-verified.
    """
    from milr.bench.runner import BenchOptions, default_out, run_bench
    from milr.bench.summary import to_markdown
    from milr.devices import dtype_name, resolve_device

    if device is not None:  # refused before the suite, critics or model are touched
        resolve_device("cuda" if device.startswith("cuda") else device)
    dtype_name(dtype, "--dtype")
    check_loop_options(kv_cache, compile_steps)
    if prompt_file is not None:
        from milr.models.janus_prompts import load_prompt_file

        load_prompt_file(prompt_file)

    ctx = click.get_current_context()
    model = use_deprecated(
        model_old_flag,
        "-m",
        model,
        "-M/--model",
        "-m means --metadata in generate and score",
        ctx.get_parameter_source("model") is click.core.ParameterSource.COMMANDLINE,
    )

    opts = BenchOptions(
        suite=suite_file,
        model=model,
        critic=list(critic) or ["shapes"],
        eval_critic=list(eval_critic) or None,
        mode=mode,
        steps=steps,
        seeds=seeds,
        seed=seed,
        out=out,
        limit=limit,
        format=fmt,
        device=device,
        dtype=dtype,
        allow_missing=allow_missing,
        kv_cache=kv_cache,
        compile=compile_steps,
        prompt_style=prompt_style,
        prompt_file=prompt_file,
        revision=revision,
        optimizer=_parse_opt(opt),
        solver=solver,
        control=control,
        resume=resume,
        force=force,
        retry_errors=retry_errors,
        cache=cache,
        progress=not no_progress,
        report=not no_report,
        dist_timeout_s=dist_timeout,
        batch_prompts=batch_prompts,
    )
    if dry_run:
        from milr.bench.plan import bench_plan
        from milr.preflight import format_plan

        plan, done = bench_plan(opts)
        click.echo(format_plan(plan, "milr bench"))
        if done:
            click.echo(f"already finished in the run directory (skipped): {done}")
        return
    summary = run_bench(opts)
    if summary is not None:
        from milr.bench.records import read_run

        target = opts.out or str(default_out(opts))
        from pathlib import Path

        click.echo(to_markdown(summary, read_run(Path(target))))
        click.echo(f"results: {target}/results.jsonl, summary: {target}/summary.md")
        _exit_on_failures(target)


def _exit_on_failures(target: str) -> None:
    """Exit 1, after printing the count and the first reason of each kind, when records failed."""
    from milr.bench.failures import failure_lines
    from milr.bench.record import load_records

    lines = failure_lines(load_records(target))
    for line in lines:
        click.echo(line, err=True)
    if lines:
        import sys

        sys.exit(1)  # click's Exit would be swallowed by standalone_mode=False


@bench.command("summary")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option("--no-report", is_flag=True, help="Only the summary, no contact sheets and plots.")
@click.option("--json", "as_json", is_flag=True, help="Print summary.json instead of the table.")
def summary_cmd(run_dir: str, no_report: bool, as_json: bool) -> None:
    """Re-merge RUN_DIR's shards, print its summary, rewrite summary.md/summary.json (and the report)."""
    import json
    from pathlib import Path

    from milr.bench.records import read_run
    from milr.bench.runner import finalize
    from milr.bench.summary import to_markdown

    summary = finalize(run_dir, report=not no_report)
    if as_json:
        click.echo(json.dumps(summary, indent=2))
    else:
        click.echo(to_markdown(summary, read_run(Path(run_dir))))


@bench.command("rescore")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.option(
    "--eval-critic",
    "eval_critic",
    multiple=True,
    required=True,
    help="New evaluation critic spec (repeatable).",
)
@click.option(
    "--cache",
    default=None,
    show_default="RUN_DIR/score_cache.sqlite",
    help="Score cache file.",
)
@click.option("--no-report", is_flag=True, help="Only the summary, no contact sheets and plots.")
def rescore_cmd(
    run_dir: str, eval_critic: tuple[str, ...], cache: str | None, no_report: bool
) -> None:
    """Re-evaluate RUN_DIR's saved images with another evaluation critic (no regeneration)."""
    from pathlib import Path

    from milr.bench.records import read_run
    from milr.bench.runner import rescore
    from milr.bench.summary import to_markdown

    summary = rescore(run_dir, list(eval_critic), cache=cache, report=not no_report)
    click.echo(to_markdown(summary, read_run(Path(run_dir))))


@bench.command("export")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=str))
@click.argument("dest", type=click.Path(file_okay=False, path_type=str))
@click.option(
    "--side",
    default="milr",
    show_default=True,
    type=click.Choice(["milr", "base"]),
    help="Which images to export.",
)
def export_cmd(run_dir: str, dest: str, side: str) -> None:
    """Copy RUN_DIR's images into DEST in the benchmark's official layout (GenEval folders, WISE ids)."""
    from milr.bench.export import export_run

    n = export_run(run_dir, dest, side)
    click.echo(f"exported {n} {side} images to {dest}")
